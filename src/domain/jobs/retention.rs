//! Retention as a job: what is past its time goes, each kind in bounded batches that commit on
//! their own (`metadata.purge_batch`), so no delete holds many locks or holds them long.

use std::time::Duration;

use super::{Counts, JobRun, JobSpec, Session};
use crate::platform::config::RetentionConfig;
use crate::platform::error::ApiError;

pub const SPEC: JobSpec = JobSpec {
    name: "retention",
    source_system: "postgresql",
    source_table: "core.idempotency_keys, metadata.outbox_events, staging.customer_imports, \
        staging.loan_imports, analytics.risk_indicators, metadata.job_execution",
    target_system: "postgresql",
    target_table: "(deleted)",
    transformation_type: "PURGE",
    transformation_logic: "delete idempotency keys after 24 h, outbox events, staging rows of \
        completed imports, risk indicators of past business dates and finished job runs (with \
        their lineage) after their retention periods, in bounded batches",
};

/// Rows deleted per statement.
pub const BATCH: i32 = 1_000;

pub async fn run(
    session: &Session,
    retention: &RetentionConfig,
    batch: i32,
) -> Result<JobRun, ApiError> {
    let days = |d: Duration| d.as_secs() / 86_400;
    let parameters = serde_json::json!({
        "outbox_days": days(retention.outbox),
        "staging_days": days(retention.staging),
        "job_days": days(retention.jobs),
        "risk_indicator_days": days(retention.risk_indicators),
        "batch": batch,
    });
    let targets = [
        ("idempotency_keys", Duration::from_secs(86_400)),
        ("outbox_events", retention.outbox),
        ("staging_imports", retention.staging),
        ("loan_imports", retention.staging),
        ("risk_indicators", retention.risk_indicators),
        ("job_runs", retention.jobs),
    ];
    let batches = session.clone();
    super::run_in_batches(session, &SPEC, parameters, None, move |_| async move {
        let mut removed = 0i64;
        for (what, older_than) in targets {
            loop {
                let mut tx = batches.begin().await?;
                let gone: i64 = sqlx::query_scalar!(
                    r#"
                        SELECT metadata.purge_batch($1, make_interval(secs => $2), $3) AS "purged!"
                    "#,
                    what,
                    older_than.as_secs_f64(),
                    batch,
                )
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                removed += gone;
                if gone < i64::from(batch) {
                    break;
                }
            }
        }
        let counts = Counts {
            read: removed,
            written: removed,
            failed: 0,
        };
        Ok(counts)
    })
    .await
}
