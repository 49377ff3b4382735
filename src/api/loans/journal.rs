//! `GET /v1/loans/{id}/journal`: a loan's double-entry journal and its account balances.
//! Row-level security decides which loans' journals a caller sees; a customer sees only their
//! own.

use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::ledger::journal::{Account, EntryKind};
use crate::domain::money::Amount;
use crate::platform::auth::{LoanReaders, RequestTx};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;

/// One line of an entry: a debit when positive, a credit when negative.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalLine {
    pub account: Account,
    pub amount: Amount,
}

/// One journal entry; its lines sum to zero.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalEntry {
    pub entry_id: Uuid,
    /// DISBURSEMENT, REPAYMENT, PAYOFF, FEE, INTEREST_DUE, LATE_FEE, WRITE_OFF, RECOVERY or
    /// REVERSAL.
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
    params(("id" = Uuid, Path, description = "Loan id")),
    responses((status = 200, description = "The journal", body = LoanJournal), responses::Common, responses::NotFound)
)]
pub(super) async fn get_loan_journal(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<LoanJournal>, ApiError> {
    // The loan must be visible to the caller (a customer's own), journal or not.
    let visible: Option<Uuid> = sqlx::query_scalar!(
        r#"
            SELECT l.loan_id FROM core.loans l
            WHERE (l.loan_id, l.application_date) =
            (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)
        "#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    visible.ok_or(ApiError::NotFound)?;
    let rows: Vec<EntryRow> = sqlx::query!(
        r#"
        SELECT e.entry_id, e.kind AS "kind: EntryKind", e.business_date, e.payment_id,
               e.installment_number, e.reverses, e.posted_at, e.posted_by,
               l.account AS "account: Account", l.amount
        FROM core.journal_entries e JOIN core.journal_lines l ON l.entry_id = e.entry_id
        WHERE e.loan_id = $1
        ORDER BY e.entry_number, l.line_number
        "#,
        id,
    )
    .map(|r| {
        (
            r.entry_id,
            r.kind,
            r.business_date,
            r.payment_id,
            r.installment_number,
            r.reverses,
            r.posted_at,
            r.posted_by,
            r.account,
            r.amount,
        )
    })
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
