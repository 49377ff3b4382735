//! The books: a loan's journal (`GET /v1/loans/{id}/journal`) and the trial balance of the
//! whole journal (`GET /v1/ledger/trial-balance`). Row-level security decides which loans'
//! journals a caller sees; a customer sees only their own.

mod statement;

use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Analysts, LoanReaders, RequestTx};
use crate::error::{responses, ApiError};
use crate::extract::{AppPath, AppQuery};
use crate::ledger::journal::{Account, EntryKind};
use crate::money::Amount;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_loan_journal))
        .routes(routes!(get_trial_balance))
        .routes(routes!(statement::get_loan_statement))
}

/// One line of an entry: a debit when positive, a credit when negative.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalLine {
    #[schema(value_type = String)]
    pub account: Account,
    pub amount: Amount,
}

/// One journal entry; its lines sum to zero.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalEntry {
    pub entry_id: Uuid,
    /// DISBURSEMENT, REPAYMENT, PAYOFF, FEE, INTEREST_DUE, LATE_FEE, WRITE_OFF, RECOVERY or
    /// REVERSAL.
    #[schema(value_type = String)]
    pub kind: EntryKind,
    /// The business day it belongs to.
    pub business_date: NaiveDate,
    pub payment_id: Option<Uuid>,
    pub installment_number: Option<i32>,
    /// The entry a REVERSAL undoes.
    pub reverses: Option<Uuid>,
    pub posted_at: DateTime<Utc>,
    pub posted_by: String,
    pub lines: Vec<JournalLine>,
}

/// A loan account's balance according to the journal.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBalance {
    #[schema(value_type = String)]
    pub account: Account,
    pub balance: Amount,
}

/// A loan's journal in posting order, and the balance of each of its loan accounts.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoanJournal {
    pub loan_id: Uuid,
    pub entries: Vec<JournalEntry>,
    /// LOAN_PRINCIPAL, LOAN_INTEREST, LOAN_FEES, LOAN_PENALTIES and LOAN_OVERPAYMENT: what the
    /// loan's balance columns show.
    pub balances: Vec<AccountBalance>,
}

type EntryRow = (
    Uuid,
    EntryKind,
    NaiveDate,
    Option<Uuid>,
    Option<i32>,
    Option<Uuid>,
    DateTime<Utc>,
    String,
    Account,
    Decimal,
);

const LOAN_ACCOUNTS: [Account; 5] = [
    Account::LoanPrincipal,
    Account::LoanInterest,
    Account::LoanFees,
    Account::LoanPenalties,
    Account::LoanOverpayment,
];

/// A loan's journal: every entry with its lines (staff, analysts, administrators, and the
/// customer for their own loan).
#[utoipa::path(
    get,
    path = "/v1/loans/{id}/journal",
    tag = "loans",
    operation_id = "get_loan_journal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Loan id")),
    responses((status = 200, description = "The journal", body = LoanJournal), responses::Common, responses::NotFound)
)]
async fn get_loan_journal(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<LoanJournal>, ApiError> {
    // The loan must be visible to the caller (a customer's own), journal or not.
    let visible: Option<Uuid> = sqlx::query_scalar(
        "SELECT l.loan_id FROM core.loans l \
         WHERE (l.loan_id, l.application_date) = \
               (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    visible.ok_or(ApiError::NotFound)?;
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT e.entry_id, e.kind, e.business_date, e.payment_id, e.installment_number, \
                e.reverses, e.posted_at, e.posted_by, l.account, l.amount \
         FROM core.journal_entries e JOIN core.journal_lines l ON l.entry_id = e.entry_id \
         WHERE e.loan_id = $1 \
         ORDER BY e.entry_number, l.line_number",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut entries: Vec<JournalEntry> = Vec::new();
    let mut balances = [Decimal::ZERO; LOAN_ACCOUNTS.len()];
    for (
        entry_id,
        kind,
        business_date,
        payment_id,
        installment,
        reverses,
        at,
        by,
        account,
        amount,
    ) in rows
    {
        if let Some(i) = LOAN_ACCOUNTS.iter().position(|a| *a == account) {
            balances[i] += amount;
        }
        let line = JournalLine {
            account,
            amount: Amount(amount),
        };
        match entries.last_mut() {
            Some(last) if last.entry_id == entry_id => last.lines.push(line),
            _ => entries.push(JournalEntry {
                entry_id,
                kind,
                business_date,
                payment_id,
                installment_number: installment,
                reverses,
                posted_at: at,
                posted_by: by,
                lines: vec![line],
            }),
        }
    }
    Ok(Json(LoanJournal {
        loan_id: id,
        entries,
        balances: LOAN_ACCOUNTS
            .iter()
            .zip(balances)
            .map(|(account, balance)| AccountBalance {
                account: *account,
                balance: Amount(balance),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrialBalanceQuery {
    /// Entries of business days up to and including this one; default all.
    pub as_of: Option<NaiveDate>,
}

/// One account of the trial balance.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TrialBalanceRow {
    #[schema(value_type = String)]
    pub account: Account,
    pub debits: Amount,
    pub credits: Amount,
    /// Debits minus credits.
    pub balance: Amount,
}

/// Every account's debits and credits; the totals are equal, so the balances sum to zero.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialBalance {
    pub as_of: Option<NaiveDate>,
    pub accounts: Vec<TrialBalanceRow>,
    pub total_debits: Amount,
    pub total_credits: Amount,
    /// True when the total debits equal the total credits.
    pub balanced: bool,
}

/// The trial balance of the whole journal (analysts, administrators).
#[utoipa::path(
    get,
    path = "/v1/ledger/trial-balance",
    tag = "ledger",
    operation_id = "get_trial_balance",
    security(("bearer" = [])),
    params(TrialBalanceQuery),
    responses((status = 200, description = "The trial balance", body = TrialBalance), responses::Common)
)]
async fn get_trial_balance(
    mut tx: RequestTx<Analysts>,
    AppQuery(query): AppQuery<TrialBalanceQuery>,
) -> Result<Json<TrialBalance>, ApiError> {
    let accounts: Vec<TrialBalanceRow> = sqlx::query_as(
        "SELECT l.account, \
                coalesce(sum(l.amount) FILTER (WHERE l.amount > 0), 0) AS debits, \
                coalesce(-sum(l.amount) FILTER (WHERE l.amount < 0), 0) AS credits, \
                sum(l.amount) AS balance \
         FROM core.journal_lines l \
         WHERE $1::date IS NULL OR EXISTS ( \
             SELECT 1 FROM core.journal_entries e \
             WHERE e.entry_id = l.entry_id AND e.business_date <= $1) \
         GROUP BY l.account ORDER BY l.account",
    )
    .bind(query.as_of)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let total_debits: Decimal = accounts.iter().map(|a| a.debits.0).sum();
    let total_credits: Decimal = accounts.iter().map(|a| a.credits.0).sum();
    Ok(Json(TrialBalance {
        as_of: query.as_of,
        accounts,
        total_debits: Amount(total_debits),
        total_credits: Amount(total_credits),
        balanced: total_debits == total_credits,
    }))
}
