//! `POST /v1/imports/loans`: the ETL pipeline brings a loan book granted elsewhere.
//!
//! The body (NDJSON or a JSON array, one loan per record with its repayments) is streamed into
//! `staging.loan_imports` a thousand records per transaction, each checked on its own; then the
//! batch's good lines are replayed through the ledger a chunk at a time, each chunk one
//! transaction: booked, paid out, repaid and serviced as their history happened
//! (`domain::ledger::replay`). A loan whose history the ledger refuses, or whose replayed
//! balances differ from the source's by more than `LOAN_IMPORT_TOLERANCE`, keeps its error.
//! The source reference makes it idempotent: a loan imported once is never booked again, from
//! this batch or another.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures_util::StreamExt;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::records::{Format, RawRecord, RecordChunks, Splitter};
use super::{holds_nul, stored_report, upload_report, ImportQuery, ImportReport, Lines};
use crate::domain::jobs::{self, Counts, JobSpec, OneAtATime, Session};
use crate::domain::ledger::replay::{Outcome, Replay, SourceBalances, SourceLoan, SourceRepayment};
use crate::platform::auth::{Authorized, Caller, EtlOnly, RequestTx, Role};
use crate::platform::db::partitions::DateWindow;
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::AppPath;
use crate::platform::state::AppState;

/// Records staged per transaction.
const STAGE_CHUNK: usize = 1000;
/// Loans replayed per transaction.
const REPLAY_CHUNK: usize = 4000;
/// Chunks replayed at once, each on a connection of its own: the replay's work is mostly the
/// database's, and one chunk keeps one of its cores busy.
const REPLAY_WORKERS: usize = 2;
/// The longest single record accepted (a loan with its repayments).
const MAX_RECORD_BYTES: usize = 256 * 1024;
/// The most repayments one record carries.
const MAX_REPAYMENTS: usize = 2000;

pub const SPEC: JobSpec = JobSpec {
    name: "loan_import",
    source_system: "etl",
    source_table: "staging.loan_imports",
    target_system: "postgresql",
    target_table: "core.loans",
    transformation_type: "REPLAY",
    transformation_logic: "book each staged loan on its disbursement day with its contract's \
        schedule, apply its repayments in time order through the ledger after servicing to each \
        one's day, service to today, and import it if its balances equal the source's within \
        LOAN_IMPORT_TOLERANCE; once per source reference",
};

/// A repayment of the source's history.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepaymentRecord {
    /// When the money arrived (RFC 3339).
    pub paid_at: DateTime<Utc>,
    #[schema(value_type = String, example = "1100000")]
    pub amount: Decimal,
}

/// What the source says the loan owes at cut-over.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancesRecord {
    #[schema(value_type = String)]
    pub principal: Decimal,
    #[schema(value_type = String)]
    pub interest: Decimal,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub fees: Decimal,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub penalties: Decimal,
}

/// One loan of the source system, with its history.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoanImportRecord {
    /// The loan's reference in the source system: the import books it once.
    #[schema(example = "CORE-000123")]
    pub source_reference: String,
    /// The borrower, imported before (`POST /v1/imports/customers`).
    pub customer_code: String,
    /// The borrower's office code: must be the customer's.
    pub branch: Option<String>,
    pub product_code: String,
    /// The amount lent.
    #[schema(value_type = String, example = "12000000")]
    pub amount: Decimal,
    /// The contract's annual rate (a fraction, at most 4 decimals).
    #[schema(value_type = String, example = "0.18")]
    pub annual_interest_rate: Decimal,
    pub term_months: i32,
    /// The number of installments: required for BIWEEKLY and WEEKLY products.
    pub term_periods: Option<i32>,
    /// A broken first period's due date, as the contract says.
    pub first_repayment_date: Option<NaiveDate>,
    /// When the loan was paid out: in the past, within `BACKDATING_LIMIT_DAYS`.
    pub disbursed_at: DateTime<Utc>,
    /// The repayments made so far.
    #[serde(default)]
    pub repayments: Vec<RepaymentRecord>,
    /// What it owes at cut-over, by the source's books.
    pub balances: BalancesRecord,
}

/// The upload route (long-running: no request retry, the job timeout).
pub fn upload_router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(import_loans))
}

/// The report route.
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(get_loan_import))
}

/// Load a loan book (ETL). Send NDJSON (`application/x-ndjson`) or a JSON array
/// (`application/json`) of loans with their repayments. Each good loan is replayed through the
/// ledger and servicing up to today and imported if its balances equal the source's (within
/// `LOAN_IMPORT_TOLERANCE`); the rest are reported by line. A source reference is imported
/// once, whatever batch carries it again.
#[utoipa::path(
    post,
    path = "/v1/imports/loans",
    params(ImportQuery),
    request_body(content = Vec<LoanImportRecord>, content_type = "application/json",
                 description = "A JSON array of loans; or send `application/x-ndjson` with one \
                                loan per line (same fields)"),
    responses(
        (status = 200, description = "The batch after this upload", body = ImportReport),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
async fn import_loans(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<EtlOnly>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    let super::Upload {
        running: _running,
        deadline,
        format,
        batch,
        source,
        session,
    } = super::Upload::start(&state, &caller, query, &headers)?;
    // The replay writes the ledger as the service's administrator login would, with the ETL
    // principal as the actor of every row it writes.
    let replayer = Session::Caller {
        pool: state.db.pool.clone(),
        caller: Caller {
            role: Role::Admin,
            ..caller.clone()
        },
        statement_timeout_ms: state.jobs.statement_timeout.as_millis(),
    };
    let parameters = serde_json::json!({"batch_id": batch, "source_system": source});
    let alone = OneAtATime {
        name: &format!("loan_import:{batch}"),
        busy: &format!(
            "batch {batch} is being uploaded by another request: send it again once that one has \
             answered"
        ),
    };
    let upload = LoanUpload {
        session: &session,
        replayer: &replayer,
        state: &state,
        batch: &batch,
        source: &source,
        window: state.date_window,
    };
    let run = jobs::run_in_batches(&session, &SPEC, parameters, Some(alone), |job_id| {
        upload.run(job_id, body, format, deadline)
    })
    .await?;
    upload_report(&state, caller, Lines::Loans, &batch, run.job_id).await
}

struct LoanUpload<'a> {
    session: &'a Session,
    replayer: &'a Session,
    state: &'a AppState,
    batch: &'a str,
    source: &'a str,
    window: DateWindow,
}

impl LoanUpload<'_> {
    async fn run(
        &self,
        job_id: Uuid,
        body: Body,
        format: Format,
        deadline: tokio::time::Instant,
    ) -> Result<Counts, ApiError> {
        let mut tx = self.session.begin().await?;
        let taken = sqlx::query_scalar!(
            r#"SELECT staging.loan_batch_taken($1) AS "taken!""#,
            self.batch
        )
        .fetch_one(&mut *tx)
        .await?;
        if taken {
            return Err(ApiError::Conflict {
                detail: format!("batch {} was sent by another principal", self.batch),
                errors: vec![FieldError::new(
                    "batch_id",
                    "is another principal's: choose another",
                )],
            });
        }
        // Lines not imported are judged again: a loan refused for want of its customer goes in
        // once the customer is there. Imported lines stay, and are never booked twice.
        sqlx::query!(
            "DELETE FROM staging.loan_imports WHERE batch_id = $1 AND NOT processed",
            self.batch
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let read = self.stage(job_id, body, format, deadline).await?;
        let (written, failed) = self.replay().await?;
        Ok(Counts {
            read,
            written,
            failed,
        })
    }

    /// Reads the body and stages its records, a chunk per transaction.
    async fn stage(
        &self,
        job_id: Uuid,
        body: Body,
        format: Format,
        deadline: tokio::time::Instant,
    ) -> Result<i64, ApiError> {
        let splitter = Splitter::new(format, MAX_RECORD_BYTES);
        let limit = self.state.jobs.import_limit_bytes;
        let mut records = RecordChunks::new(body, splitter, limit, deadline, STAGE_CHUNK);
        let now = Utc::now();
        while let Some(chunk) = records.next().await? {
            let rows: Vec<Staged> = chunk
                .into_iter()
                .map(|r| staged(r, self.window, now))
                .collect();
            self.insert_staged(job_id, &rows).await?;
        }
        Ok(records.read())
    }

    async fn insert_staged(&self, job_id: Uuid, rows: &[Staged]) -> Result<(), ApiError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.session.begin().await?;
        sqlx::query!(
            r#"
            INSERT INTO staging.loan_imports (batch_id, source_system, job_id, line_number,
                                              source_reference, record, error_message)
            SELECT $1, $2, $3, t.*
            FROM unnest($4::int[], $5::text[], $6::jsonb[], $7::text[]) AS t
            ON CONFLICT ON CONSTRAINT loan_imports_pkey DO NOTHING
            "#,
            self.batch,
            self.source,
            job_id,
            &rows.iter().map(|r| r.line).collect::<Vec<i32>>(),
            &rows.iter().map(|r| r.reference.clone()).collect::<Vec<_>>() as &[Option<String>],
            &rows
                .iter()
                .map(|r| r.record.clone())
                .collect::<Vec<Value>>(),
            &rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>() as &[Option<String>],
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replays the batch's good lines a chunk per transaction; returns the loans imported and
    /// the lines failed.
    async fn replay(&self) -> Result<(i64, i64), ApiError> {
        // A reference on two lines of the batch goes in from the first only: chunks replay side
        // by side, so a clash between them is settled before they start.
        let mut tx = self.replayer.begin().await?;
        sqlx::query!(
            r#"
            UPDATE staging.loan_imports s
            SET error_message = 'source_reference ' || s.source_reference || ' is also on line '
                                || d.first_line
            FROM (SELECT source_reference, min(line_number) AS first_line
                  FROM staging.loan_imports WHERE batch_id = $1 AND error_message IS NULL
                  GROUP BY source_reference HAVING count(*) > 1) d
            WHERE s.batch_id = $1 AND s.source_reference = d.source_reference
              AND s.line_number > d.first_line AND NOT s.processed AND s.error_message IS NULL
            "#,
            self.batch,
        )
        .execute(&mut *tx)
        .await?;
        let lines: Vec<i32> = sqlx::query_scalar!(
            r#"
            SELECT line_number FROM staging.loan_imports
            WHERE batch_id = $1 AND NOT processed AND error_message IS NULL
            ORDER BY line_number
            "#,
            self.batch,
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let ranges: Vec<(i32, i32)> = lines
            .chunks(REPLAY_CHUNK)
            .filter_map(|c| Some((*c.first()?, *c.last()?)))
            .collect();
        let mut imported = 0;
        let mut chunks = futures_util::stream::iter(ranges)
            .map(|(first, last)| self.replay_chunk(first, last))
            .buffer_unordered(REPLAY_WORKERS);
        while let Some(chunk) = chunks.next().await {
            imported += chunk?;
        }
        drop(chunks);
        let mut tx = self.session.begin().await?;
        let failed = sqlx::query_scalar!(
            r#"
            SELECT count(*) AS "failed!" FROM staging.loan_imports
            WHERE batch_id = $1 AND error_message IS NOT NULL
            "#,
            self.batch,
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((imported, failed))
    }

    /// Replays the good lines from `first` to `last` in one transaction; returns the loans it
    /// imported.
    async fn replay_chunk(&self, first: i32, last: i32) -> Result<i64, ApiError> {
        let mut tx = self.replayer.begin().await?;
        let lines = sqlx::query!(
            r#"
            SELECT line_number, record FROM staging.loan_imports
            WHERE batch_id = $1 AND line_number BETWEEN $2 AND $3 AND NOT processed
              AND error_message IS NULL
            ORDER BY line_number
            "#,
            self.batch,
            first,
            last,
        )
        .fetch_all(&mut *tx)
        .await?;
        let records: Vec<(i32, LoanImportRecord)> = lines
            .into_iter()
            .filter_map(|l| {
                serde_json::from_value(l.record)
                    .ok()
                    .map(|r| (l.line_number, r))
            })
            .collect();
        let (loans, mut outcomes) = resolve(&mut tx, records).await?;
        self.ensure_partitions(&loans).await?;
        let today = crate::domain::ledger::business_date(&mut tx, Utc::now()).await?;
        let replay = Replay {
            source_system: self.source,
            batch_id: self.batch,
            today,
            tolerance: self.state.jobs.loan_import_tolerance,
        };
        let replayed = replay.run(&mut tx, &loans).await?;
        let mut imported = 0;
        for (loan, outcome) in loans.iter().zip(replayed) {
            if matches!(outcome, Outcome::Imported(_)) {
                imported += 1;
            }
            outcomes.push((loan.line_number, outcome));
        }
        mark(&mut tx, self.batch, &outcomes).await?;
        tx.commit().await?;
        Ok(imported)
    }

    /// The partitions the loans' rows go to: their disbursement years, the months of their
    /// payments.
    async fn ensure_partitions(&self, loans: &[SourceLoan]) -> Result<(), ApiError> {
        let mut years = HashMap::new();
        let mut months = HashMap::new();
        for loan in loans {
            years
                .entry(loan.disbursed_at.year())
                .or_insert(loan.disbursed_at);
            for at in
                std::iter::once(loan.disbursed_at).chain(loan.repayments.iter().map(|r| r.paid_at))
            {
                months.entry((at.year(), at.month())).or_insert(at);
            }
        }
        for at in years.into_values() {
            self.state.partitions.ensure_loans(at).await?;
        }
        for at in months.into_values() {
            self.state.partitions.ensure_payments(at).await?;
        }
        Ok(())
    }
}

/// Finds each record's customer and checks its office; the records that pass, as source loans,
/// and the refusals of the others.
async fn resolve(
    conn: &mut PgConnection,
    records: Vec<(i32, LoanImportRecord)>,
) -> Result<(Vec<SourceLoan>, Vec<(i32, Outcome)>), ApiError> {
    let codes: Vec<String> = records
        .iter()
        .map(|(_, r)| r.customer_code.clone())
        .collect();
    let customers: HashMap<String, (Uuid, String)> = sqlx::query!(
        r#"
        SELECT c.customer_code, c.customer_id, o.code AS office
        FROM core.customers c JOIN core.offices o ON o.office_id = c.branch_id
        WHERE c.customer_code = ANY ($1)
        "#,
        &codes,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|c| (c.customer_code, (c.customer_id, c.office)))
    .collect();
    let mut loans = Vec::with_capacity(records.len());
    let mut refused = Vec::new();
    for (line, record) in records {
        let Some((customer_id, office)) = customers.get(&record.customer_code) else {
            refused.push((
                line,
                Outcome::Refused(format!(
                    "customer_code: no customer {}",
                    record.customer_code
                )),
            ));
            continue;
        };
        if let Some(branch) = record.branch.as_deref().filter(|b| b != office) {
            refused.push((
                line,
                Outcome::Refused(format!(
                    "branch: {branch} is not the office of customer {} ({office})",
                    record.customer_code
                )),
            ));
            continue;
        }
        let mut repayments: Vec<SourceRepayment> = record
            .repayments
            .iter()
            .map(|r| SourceRepayment {
                paid_at: r.paid_at,
                amount: r.amount,
            })
            .collect();
        repayments.sort_by_key(|r| r.paid_at);
        loans.push(SourceLoan {
            line_number: line,
            source_reference: record.source_reference,
            customer_id: *customer_id,
            product_code: record.product_code,
            amount: record.amount,
            interest_rate: record.annual_interest_rate,
            term_months: record.term_months,
            term_periods: record.term_periods,
            first_repayment_date: record.first_repayment_date,
            disbursed_at: record.disbursed_at,
            repayments,
            balances: SourceBalances {
                principal: record.balances.principal,
                interest: record.balances.interest,
                fees: record.balances.fees,
                penalties: record.balances.penalties,
            },
        });
    }
    Ok((loans, refused))
}

/// Records each line's outcome: imported (with its loan) or refused (with why).
async fn mark(
    conn: &mut PgConnection,
    batch: &str,
    outcomes: &[(i32, Outcome)],
) -> Result<(), ApiError> {
    let lines: Vec<i32> = outcomes.iter().map(|(line, _)| *line).collect();
    let loans: Vec<Option<Uuid>> = outcomes
        .iter()
        .map(|(_, o)| match o {
            Outcome::Imported(id) | Outcome::AlreadyImported(id) => Some(*id),
            Outcome::Refused(_) => None,
        })
        .collect();
    let errors: Vec<Option<String>> = outcomes
        .iter()
        .map(|(_, o)| match o {
            Outcome::Refused(why) => Some(why.clone()),
            _ => None,
        })
        .collect();
    sqlx::query!(
        r#"
        UPDATE staging.loan_imports s
        SET processed = t.loan IS NOT NULL, loan_id = t.loan, error_message = t.error
        FROM unnest($2::int[], $3::uuid[], $4::text[]) AS t(line, loan, error)
        WHERE s.batch_id = $1 AND s.line_number = t.line
        "#,
        batch,
        &lines,
        &loans as &[Option<Uuid>],
        &errors as &[Option<String>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A record as it is staged: as sent, with its error if it was refused.
struct Staged {
    line: i32,
    reference: Option<String>,
    record: Value,
    error: Option<String>,
}

fn staged(record: RawRecord, window: DateWindow, now: DateTime<Utc>) -> Staged {
    let line = record.number;
    let unreadable = |shown: &str, error: String| Staged {
        line,
        reference: None,
        record: Value::String(shown.into()),
        error: Some(error),
    };
    let value: Value = match serde_json::from_slice(&record.bytes) {
        Ok(v) if holds_nul(&v) => {
            return unreadable(
                "<contains NUL>",
                "contains a NUL character (\\u0000), which cannot be stored".into(),
            )
        }
        Ok(v) => v,
        Err(e) => return unreadable("<not JSON>", format!("not valid JSON: {e}")),
    };
    let checked = serde_json::from_value::<LoanImportRecord>(value.clone())
        .map_err(|e| format!("not a loan record: {e}"))
        .and_then(|r| check(&r, window, now).map(|()| r));
    match checked {
        Ok(r) => Staged {
            line,
            reference: Some(r.source_reference),
            record: value,
            error: None,
        },
        Err(error) => Staged {
            line,
            reference: None,
            record: value,
            error: Some(error),
        },
    }
}

/// What a record must hold before it is replayed; the reason it is refused.
fn check(r: &LoanImportRecord, window: DateWindow, now: DateTime<Utc>) -> Result<(), String> {
    let printable = |s: &str| s.chars().all(|c| !c.is_control());
    if !(1..=100).contains(&r.source_reference.chars().count()) || !printable(&r.source_reference) {
        return Err("source_reference: 1 to 100 printable characters".into());
    }
    if r.amount <= Decimal::ZERO {
        return Err("amount: must be positive".into());
    }
    if r.annual_interest_rate.is_sign_negative()
        || r.annual_interest_rate >= Decimal::ONE
        || r.annual_interest_rate.scale() > 4
    {
        return Err("annual_interest_rate: a fraction from 0 up to 1, at most 4 decimals".into());
    }
    if !(1..=600).contains(&r.term_months) {
        return Err("term_months: 1 to 600".into());
    }
    if r.term_periods.is_some_and(|p| !(1..=2600).contains(&p)) {
        return Err("term_periods: 1 to 2600".into());
    }
    window
        .check("disbursed_at", r.disbursed_at, now)
        .map_err(|e| field_message(e, "disbursed_at"))?;
    if r.repayments.len() > MAX_REPAYMENTS {
        return Err(format!("repayments: at most {MAX_REPAYMENTS}"));
    }
    for (n, repayment) in r.repayments.iter().enumerate() {
        if repayment.amount <= Decimal::ZERO {
            return Err(format!("repayments[{n}].amount: must be positive"));
        }
        if repayment.paid_at < r.disbursed_at || repayment.paid_at > now {
            return Err(format!(
                "repayments[{n}].paid_at: between the disbursement and now"
            ));
        }
    }
    let b = &r.balances;
    if [b.principal, b.interest, b.fees, b.penalties]
        .iter()
        .any(|x| x.is_sign_negative())
    {
        return Err("balances: none may be negative".into());
    }
    Ok(())
}

fn field_message(error: ApiError, field: &str) -> String {
    match error {
        ApiError::Unprocessable { errors, .. } if !errors.is_empty() => {
            format!("{field}: {}", errors[0].message)
        }
        _ => format!("{field}: out of range"),
    }
}

/// Where a loan batch stands: lines, imported, failed, and the errors by line (ETL).
#[utoipa::path(
    get,
    path = "/v1/imports/loans/{batch_id}",
    params(("batch_id" = String, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The batch", body = ImportReport),
        responses::Common, responses::NotFound
    )
)]
async fn get_loan_import(
    tx: RequestTx<EtlOnly>,
    AppPath(batch): AppPath<String>,
) -> Result<Json<ImportReport>, ApiError> {
    stored_report(tx, Lines::Loans, &batch).await
}
