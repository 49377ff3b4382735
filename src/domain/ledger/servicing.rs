//! Daily servicing of every active loan, set-based in PL/pgSQL (migration 0028): interest falling
//! due becomes receivable, late fees, default and cure. A day is opened (every active loan
//! queued), then serviced in batches that lock only loans nobody else holds; a money movement on a
//! loan still queued services it first ([`catch_up`]). This module runs one step; `jobs::servicing`
//! runs days and workers and records the run.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

/// How many queued loans one batch claims: a repayment on one of them waits at most one batch.
pub const BATCH: i32 = 500;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema, sqlx::FromRow)]
pub struct Serviced {
    /// Active loans looked at.
    pub loans: i32,
    /// Installments whose interest fell due (one journal entry each).
    pub interest_entries: i32,
    pub late_fees: i32,
    pub defaulted: i32,
    pub cured: i32,
}

impl std::ops::AddAssign for Serviced {
    fn add_assign(&mut self, other: Self) {
        self.loans += other.loans;
        self.interest_entries += other.interest_entries;
        self.late_fees += other.late_fees;
        self.defaulted += other.defaulted;
        self.cured += other.cured;
    }
}

/// One batch: what it did, the queued loans it left because another transaction held them, and
/// the claim cursor for the next batch (`None`: nothing left after `after`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch {
    pub serviced: Serviced,
    pub skipped: i32,
    pub last: Option<Uuid>,
}

/// Opens `day`: queues every active loan not queued for it already. Returns the loans queued.
pub async fn open_day(conn: &mut PgConnection, day: NaiveDate) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.open_servicing_day($1) AS "queued!""#, day)
        .fetch_one(conn)
        .await
}

/// Services the next batch of `day`'s queue after the cursor `after`, for the caller to commit.
pub async fn service_batch(
    conn: &mut PgConnection,
    day: NaiveDate,
    after: Option<Uuid>,
) -> Result<Batch, sqlx::Error> {
    let batch = sqlx::query!(
        r#"
        SELECT last_loan, loans AS "loans!", skipped AS "skipped!",
               interest_entries AS "interest_entries!", late_fees AS "late_fees!",
               defaulted AS "defaulted!", cured AS "cured!"
        FROM core.service_queued($1, $2, $3)
        "#,
        day,
        after,
        BATCH,
    )
    .fetch_one(conn)
    .await?;
    Ok(Batch {
        serviced: Serviced {
            loans: batch.loans,
            interest_entries: batch.interest_entries,
            late_fees: batch.late_fees,
            defaulted: batch.defaulted,
            cured: batch.cured,
        },
        skipped: batch.skipped,
        last: batch.last_loan,
    })
}

/// The earliest day opened and not finished (a run in progress, or one that stopped part way).
pub async fn open_day_in_progress(
    conn: &mut PgConnection,
) -> Result<Option<NaiveDate>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.servicing_day_open() AS "day""#)
        .fetch_one(conn)
        .await
}

/// Closes `day` if its queue is empty; whether it is closed.
pub async fn close_day(conn: &mut PgConnection, day: NaiveDate) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.close_servicing_day($1) AS "closed!""#, day)
        .fetch_one(conn)
        .await
}

/// Services `loan_id` for every opened day that has not reached it yet. The caller holds the
/// loan's lock. Returns the days serviced (usually 0).
pub(super) async fn catch_up(conn: &mut PgConnection, loan_id: Uuid) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.service_loan_now($1) AS "days!""#, loan_id)
        .fetch_one(conn)
        .await
}

/// The business day now.
pub async fn today(conn: &mut PgConnection) -> Result<NaiveDate, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.business_date(now()) AS "today!""#)
        .fetch_one(conn)
        .await
}
