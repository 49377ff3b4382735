//! `analytics.loan_analytics`: each loan's position at the close of a business day, the past the
//! portfolio reports read (issue 29). Taken on the day itself: balances and installments hold
//! only the present, so a day missed is not taken later.

use chrono::NaiveDate;

use super::{Counts, JobRun, JobSpec, Session};
use crate::platform::error::ApiError;

pub const SPEC: JobSpec = JobSpec {
    name: "loan_analytics",
    source_system: "postgresql",
    source_table: "core.loans, core.loan_installments, core.loan_terms",
    target_system: "postgresql",
    target_table: "analytics.loan_analytics",
    transformation_type: "SNAPSHOT",
    transformation_logic: "every DISBURSED or DEFAULTED loan's balances and days past due \
        (analytics.loan_positions) on the business day, upserted on (snapshot_date, loan_id)",
};

/// Takes `day`'s snapshot (today's business day); a re-run the same day replaces it.
pub async fn snapshot(session: &Session, day: NaiveDate) -> Result<JobRun, ApiError> {
    let parameters = serde_json::json!({ "snapshot_date": day });
    let work = session.clone();
    let alone = super::OneAtATime {
        name: "loan_analytics",
        busy: "a loan snapshot is under way: its result will be there when it ends",
    };
    super::run_in_batches(
        session,
        &SPEC,
        parameters,
        Some(alone),
        move |_| async move {
            let mut tx = work.begin().await?;
            let written = sqlx::query!(
                r#"
            INSERT INTO analytics.loan_analytics AS a (snapshot_date, loan_id, loan_number,
                customer_id, branch_id, product_code, status, principal_outstanding,
                interest_outstanding, fees_outstanding, penalties_outstanding, days_past_due)
            SELECT $1, p.loan_id, p.loan_number, p.customer_id, p.branch_id, p.product_code,
                   p.status, p.principal_outstanding, p.interest_outstanding,
                   p.fees_outstanding, p.penalties_outstanding, p.days_past_due
            FROM analytics.loan_positions($1) p
            ON CONFLICT (snapshot_date, loan_id) DO UPDATE
            SET status = EXCLUDED.status, principal_outstanding = EXCLUDED.principal_outstanding,
                interest_outstanding = EXCLUDED.interest_outstanding,
                fees_outstanding = EXCLUDED.fees_outstanding,
                penalties_outstanding = EXCLUDED.penalties_outstanding,
                days_past_due = EXCLUDED.days_past_due, taken_at = now()
            "#,
                day
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            let written = i64::try_from(written).unwrap_or(i64::MAX);
            Ok(Counts {
                read: written,
                written,
                failed: 0,
            })
        },
    )
    .await
}
