//! Daily servicing of every active loan, set-based in `core.service_loans` (migration 0012):
//! interest falling due becomes receivable, late fees, default and cure. This module runs one
//! batch; `jobs::servicing` runs days and batches and records the run.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

/// How many loans one batch locks: a repayment on one of them waits at most one batch.
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

/// Services the active loans after `after` (by id), at most [`BATCH`] of them, for `day`.
/// Returns what it did and the last loan of the batch (`None` when there were none).
pub async fn service_batch(
    conn: &mut PgConnection,
    day: NaiveDate,
    after: Option<Uuid>,
) -> Result<(Serviced, Option<Uuid>), sqlx::Error> {
    let batch = sqlx::query!(
        r#"
        SELECT last_loan, loans AS "loans!", interest_entries AS "interest_entries!",
               late_fees AS "late_fees!", defaulted AS "defaulted!", cured AS "cured!"
        FROM core.service_loans($1, $2, $3)
        "#,
        day,
        after,
        BATCH,
    )
    .fetch_one(conn)
    .await?;
    Ok((
        Serviced {
            loans: batch.loans,
            interest_entries: batch.interest_entries,
            late_fees: batch.late_fees,
            defaulted: batch.defaulted,
            cured: batch.cured,
        },
        batch.last_loan,
    ))
}

/// The business day now.
pub async fn today(conn: &mut PgConnection) -> Result<NaiveDate, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.business_date(now()) AS "today!""#)
        .fetch_one(conn)
        .await
}
