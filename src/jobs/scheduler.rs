//! The in-service scheduler: every instance checks periodically whether a daily job is due, and
//! the one that takes the job's advisory lock runs it, so a job runs once across instances. The
//! lock is transaction-scoped and held on a connection of its own for the run, so it also works
//! behind PgBouncer in transaction mode, and a crashed runner's lock goes with its connection.

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::PgPool;

use super::{servicing, JobRun, Session};
use crate::error::ApiError;

/// `pg_try_advisory_xact_lock` key of loan servicing ("lakehouse:servicing" as an integer).
pub const SERVICING_LOCK: i64 = 0x6c61_6b65_7376_6301;

/// Runs forever: servicing catches up to today whenever it is behind, checked every `period`.
pub async fn run(pool: PgPool, session: Session, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match service_if_due(&pool, &session).await {
            Ok(Some(run)) => {
                tracing::info!(job_id = %run.job_id, status = %run.status, "servicing ran")
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(?error, "servicing check failed; retrying next period"),
        }
    }
}

/// Runs servicing from the day after the last successful run through today, unless it is up to
/// date or another instance holds its lock. Returns the run, if there was one.
pub async fn service_if_due(pool: &PgPool, session: &Session) -> Result<Option<JobRun>, ApiError> {
    let mut guard = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SERVICING_LOCK)
        .fetch_one(&mut *guard)
        .await?;
    if !locked {
        return Ok(None);
    }
    let mut tx = session.begin().await?;
    let today: NaiveDate = sqlx::query_scalar("SELECT core.business_date(now())")
        .fetch_one(&mut *tx)
        .await?;
    let last: Option<NaiveDate> = sqlx::query_scalar(
        "SELECT max((parameters->>'to')::date) FROM metadata.job_execution \
         WHERE job_name = $1 AND status = 'SUCCEEDED'",
    )
    .bind(servicing::SPEC.name)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if last.is_some_and(|last| last >= today) {
        return Ok(None);
    }
    let earliest = today - chrono::Days::new(servicing::MAX_DAYS as u64 - 1);
    let from = last
        .and_then(|last| last.succ_opt())
        .map_or(today, |next| next.max(earliest));
    let run = servicing::run(session, from, today).await?;
    guard.commit().await?;
    Ok(Some(run))
}
