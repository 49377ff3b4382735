//! `GET /v1/loans/{id}/statement`: a loan's statement for a range of business days, built from
//! its journal: the opening balance, each movement with a column per loan account and the total
//! outstanding after it, and the closing balance. JSON, or CSV with `Accept: text/csv`.
//!
//! Streamed: rows go out as PostgreSQL sends them, through a small channel, so neither a long
//! history nor a slow reader makes the service hold the statement in memory. The request's
//! connection and transaction stay open while it streams; [`stream_deadline`] bounds that.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use futures_util::{StreamExt, TryStreamExt};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::ledger::journal::EntryKind;
use crate::domain::money::Amount;
use crate::platform::auth::{LoanReaders, RequestTx};
use crate::platform::csv::{self, Format};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::{AppPath, AppQuery};
use crate::platform::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// First business day; default the day the loan was applied for.
    pub from: Option<NaiveDate>,
    /// Last business day; default today's (`BUSINESS_TIMEZONE`).
    pub to: Option<NaiveDate>,
}

/// The loan accounts' balances at a point of the statement.
#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
pub struct StatementBalance {
    pub principal: Amount,
    /// Interest due and unpaid (receivable).
    pub interest: Amount,
    pub fees: Amount,
    /// Late fees.
    pub penalties: Amount,
    /// Money paid beyond what was owed (negative: owed to the customer).
    pub overpayment: Amount,
    /// The sum of the five: what the customer owes.
    pub total_outstanding: Amount,
}

/// One journal entry's effect on the loan: each account's change, and the total after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementMovement {
    pub entry_id: Uuid,
    pub business_date: NaiveDate,
    /// DISBURSEMENT, REPAYMENT, PAYOFF, FEE, INTEREST_DUE, LATE_FEE, WRITE_OFF, RECOVERY or
    /// REVERSAL.
    pub kind: EntryKind,
    pub payment_id: Option<Uuid>,
    pub principal: Amount,
    pub interest: Amount,
    pub fees: Amount,
    pub penalties: Amount,
    pub overpayment: Amount,
    /// The change of the total outstanding.
    pub total: Amount,
    /// The total outstanding after this movement.
    pub total_outstanding: Amount,
}

/// A loan's statement (the JSON form; the CSV has an OPENING row, a row per movement and a
/// CLOSING row).
#[derive(Debug, Serialize, ToSchema)]
pub struct Statement {
    pub loan_id: Uuid,
    pub loan_number: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub opening_balance: StatementBalance,
    pub movements: Vec<StatementMovement>,
    pub closing_balance: StatementBalance,
}

/// A loan's journal entries through `$2`, in business-day order, each with its loan-account
/// changes. Days before the statement's first are folded into the opening balance as they
/// stream past.
struct MovementRow {
    entry_id: Uuid,
    business_date: NaiveDate,
    kind: EntryKind,
    payment_id: Option<Uuid>,
    principal: Decimal,
    interest: Decimal,
    fees: Decimal,
    penalties: Decimal,
    overpayment: Decimal,
}

impl StatementBalance {
    fn after(self, row: &MovementRow) -> Self {
        let add = |a: Amount, b: Decimal| Amount(a.0 + b);
        let change = row.principal + row.interest + row.fees + row.penalties + row.overpayment;
        Self {
            principal: add(self.principal, row.principal),
            interest: add(self.interest, row.interest),
            fees: add(self.fees, row.fees),
            penalties: add(self.penalties, row.penalties),
            overpayment: add(self.overpayment, row.overpayment),
            total_outstanding: add(self.total_outstanding, change),
        }
    }
}

const CSV_HEADER: &str = "row,business_date,kind,entry_id,payment_id,principal,interest,fees,\
penalties,overpayment,total_change,total_outstanding\r\n";

/// An amount as the JSON has it: two decimals.
fn money(amount: Amount) -> String {
    format!("{:.2}", amount.0)
}

fn csv_balance(label: &str, day: NaiveDate, b: &StatementBalance) -> String {
    csv::line(&[
        label.into(),
        day.to_string(),
        String::new(),
        String::new(),
        String::new(),
        money(b.principal),
        money(b.interest),
        money(b.fees),
        money(b.penalties),
        money(b.overpayment),
        String::new(),
        money(b.total_outstanding),
    ])
}

fn csv_movement(m: &StatementMovement) -> String {
    csv::line(&[
        "MOVEMENT".into(),
        m.business_date.to_string(),
        m.kind.as_str().into(),
        m.entry_id.to_string(),
        m.payment_id.map(|p| p.to_string()).unwrap_or_default(),
        money(m.principal),
        money(m.interest),
        money(m.fees),
        money(m.penalties),
        money(m.overpayment),
        money(m.total),
        money(m.total_outstanding),
    ])
}

/// Writes the statement as its rows arrive.
struct Writer {
    format: Format,
    buffer: Vec<u8>,
    movements: usize,
}

/// Bytes gathered before a chunk goes out.
const CHUNK: usize = 16 * 1024;

impl Writer {
    fn head(
        &mut self,
        statement: &StatementHead,
        opening: &StatementBalance,
    ) -> serde_json::Result<()> {
        match self.format {
            Format::Json => {
                self.buffer.extend_from_slice(b"{\"loan_id\":");
                serde_json::to_writer(&mut self.buffer, &statement.loan_id)?;
                self.buffer.extend_from_slice(b",\"loan_number\":");
                serde_json::to_writer(&mut self.buffer, &statement.loan_number)?;
                self.buffer.extend_from_slice(b",\"from\":");
                serde_json::to_writer(&mut self.buffer, &statement.from)?;
                self.buffer.extend_from_slice(b",\"to\":");
                serde_json::to_writer(&mut self.buffer, &statement.to)?;
                self.buffer.extend_from_slice(b",\"opening_balance\":");
                serde_json::to_writer(&mut self.buffer, opening)?;
                self.buffer.extend_from_slice(b",\"movements\":[");
            }
            Format::Csv => {
                self.buffer.extend_from_slice(CSV_HEADER.as_bytes());
                let line = csv_balance("OPENING", statement.from, opening);
                self.buffer.extend_from_slice(line.as_bytes());
            }
        }
        Ok(())
    }

    fn movement(&mut self, movement: &StatementMovement) -> serde_json::Result<()> {
        match self.format {
            Format::Json => {
                if self.movements > 0 {
                    self.buffer.push(b',');
                }
                serde_json::to_writer(&mut self.buffer, movement)?;
            }
            Format::Csv => self
                .buffer
                .extend_from_slice(csv_movement(movement).as_bytes()),
        }
        self.movements += 1;
        Ok(())
    }

    fn tail(&mut self, to: NaiveDate, closing: &StatementBalance) -> serde_json::Result<()> {
        match self.format {
            Format::Json => {
                self.buffer.extend_from_slice(b"],\"closing_balance\":");
                serde_json::to_writer(&mut self.buffer, closing)?;
                self.buffer.push(b'}');
            }
            Format::Csv => {
                let line = csv_balance("CLOSING", to, closing);
                self.buffer.extend_from_slice(line.as_bytes());
            }
        }
        Ok(())
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buffer))
    }
}

struct StatementHead {
    loan_id: Uuid,
    loan_number: String,
    from: NaiveDate,
    to: NaiveDate,
}

/// How long a statement may take from its first row to its last, the client's reading
/// included: the request's statement timeout (`STATEMENT_TIMEOUT_MS`) bounds the query, but a
/// slow reader stalls PostgreSQL's sending, where that timeout cannot act. Past this the
/// service stops, the response ends unfinished (the client sees a broken body, never a short
/// statement that looks whole), and the connection goes back to the pool.
fn stream_deadline(state: &AppState) -> Duration {
    state.db.statement_timeout.saturating_mul(2)
}

type Chunk = Result<Bytes, std::io::Error>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A loan's statement for a range of business days (loan readers; a customer: their own loan),
/// from the journal. JSON, or CSV with `Accept: text/csv` (cells that a spreadsheet would run
/// as a formula are escaped with a leading `'`). Streamed.
#[utoipa::path(
    get,
    path = "/v1/loans/{id}/statement",
    params(("id" = Uuid, Path, description = "Loan id"), StatementQuery),
    responses(
        (status = 200, description = "The statement",
         content((Statement = "application/json"), (String = "text/csv"))),
        responses::Common, responses::NotFound, responses::Unprocessable
    )
)]
pub(super) async fn get_loan_statement(
    State(state): State<AppState>,
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
    AppQuery(query): AppQuery<StatementQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of(&headers);
    // The loan must be visible to the caller (RLS: a customer's own).
    let loan = sqlx::query!(
        r#"
        SELECT l.loan_number, core.business_date(l.application_date) AS "applied_on!",
               core.business_date(now()) AS "today!"
        FROM core.loans l
        WHERE (l.loan_id, l.application_date) =
              (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)
        "#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    let (loan_number, applied_on, today) = (loan.loan_number, loan.applied_on, loan.today);
    let head = StatementHead {
        loan_id: id,
        loan_number,
        from: query.from.unwrap_or(applied_on),
        to: query.to.unwrap_or(today),
    };
    if head.from > head.to {
        return Err(ApiError::Unprocessable {
            detail: format!("from ({}) is after to ({})", head.from, head.to),
            errors: vec![crate::platform::error::FieldError::new(
                "from",
                "must not be after to",
            )],
        });
    }
    let (sender, receiver) = mpsc::channel::<Chunk>(4);
    let deadline = stream_deadline(&state);
    tokio::spawn(async move {
        let failure = sender.clone();
        match tokio::time::timeout(deadline, produce(tx, head, format, sender)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "statement stream failed");
                let _ = failure.send(Err(std::io::Error::other(error))).await;
            }
            Err(_) => {
                tracing::warn!(?deadline, "statement stream passed its deadline");
                let _ = failure
                    .send(Err(std::io::Error::other(
                        "the statement passed its deadline",
                    )))
                    .await;
            }
        }
    });
    // Fused: the compression layer polls a body once more after its end.
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
    .fuse();
    let content_type = match format {
        Format::Json => "application/json",
        Format::Csv => csv::CONTENT_TYPE,
    };
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

/// Reads the movements in the request's transaction and sends the statement in chunks. Ends
/// early, quietly, when the client goes away (the channel closes).
async fn produce(
    mut tx: RequestTx<LoanReaders>,
    head: StatementHead,
    format: Format,
    sender: mpsc::Sender<Chunk>,
) -> Result<(), BoxError> {
    let mut writer = Writer {
        format,
        buffer: Vec::with_capacity(CHUNK * 2),
        movements: 0,
    };
    let mut balance = StatementBalance::default();
    let mut opened = false;
    {
        // Each entry's movement on the loan accounts, oldest first.
        let mut rows = sqlx::query_as!(
            MovementRow,
            r#"
            SELECT e.entry_id, e.business_date, e.kind AS "kind: _", e.payment_id,
                   coalesce(sum(l.amount) FILTER (WHERE l.account = 'LOAN_PRINCIPAL'), 0) AS "principal!",
                   coalesce(sum(l.amount) FILTER (WHERE l.account = 'LOAN_INTEREST'), 0) AS "interest!",
                   coalesce(sum(l.amount) FILTER (WHERE l.account = 'LOAN_FEES'), 0) AS "fees!",
                   coalesce(sum(l.amount) FILTER (WHERE l.account = 'LOAN_PENALTIES'), 0) AS "penalties!",
                   coalesce(sum(l.amount) FILTER (WHERE l.account = 'LOAN_OVERPAYMENT'), 0) AS "overpayment!"
            FROM core.journal_entries e JOIN core.journal_lines l ON l.entry_id = e.entry_id
            WHERE e.loan_id = $1 AND e.business_date <= $2
            GROUP BY e.entry_id
            ORDER BY e.business_date, e.entry_number
            "#,
            head.loan_id,
            head.to,
        )
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            let after = balance.after(&row);
            if row.business_date < head.from {
                balance = after;
                continue;
            }
            if !opened {
                writer.head(&head, &balance)?;
                opened = true;
            }
            writer.movement(&StatementMovement {
                entry_id: row.entry_id,
                business_date: row.business_date,
                kind: row.kind,
                payment_id: row.payment_id,
                principal: Amount(row.principal),
                interest: Amount(row.interest),
                fees: Amount(row.fees),
                penalties: Amount(row.penalties),
                overpayment: Amount(row.overpayment),
                total: Amount(after.total_outstanding.0 - balance.total_outstanding.0),
                total_outstanding: after.total_outstanding,
            })?;
            balance = after;
            if writer.buffer.len() >= CHUNK && sender.send(Ok(writer.take())).await.is_err() {
                return Ok(());
            }
        }
    }
    if !opened {
        writer.head(&head, &balance)?;
    }
    writer.tail(head.to, &balance)?;
    tx.commit().await.map_err(|e| format!("commit: {e:?}"))?;
    let _ = sender.send(Ok(writer.take())).await;
    Ok(())
}
