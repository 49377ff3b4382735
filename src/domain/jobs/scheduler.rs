//! The in-service scheduler: every instance checks periodically which jobs are due, and the one
//! that takes a job's advisory lock runs it, so a job runs once across instances. The lock is
//! transaction-scoped and held on a connection of its own for the run, so it also works behind
//! PgBouncer in transaction mode, and a crashed runner's lock goes with its connection. Each
//! check also marks failed the runs whose runner is gone (`metadata.fail_abandoned_jobs`).
//!
//! | job | every | what |
//! |---|---|---|
//! | `loan_servicing` | business day | catches up to today (interest due, late fees, default) |
//! | `customer_metrics` | 24 h | today's figures per customer |
//! | `risk_indicators` | 12 h | indicators expire after 24 h, so the list is never empty |
//! | `loan_analytics` | 24 h | each loan's position on the business day, after its servicing |
//! | `partition_upkeep` | 24 h | partitions around today |
//! | `retention` | 1 h | deletes what is past its retention, in batches |
//!
//! With `LAKE_EXPORT_AFTER_CLOSE`, each round also asks for an export of the lake once servicing
//! has closed today (once per business day); `lakehouse-export --follow` runs it.

use std::time::Duration;

use chrono::NaiveDate;
use sqlx::PgPool;

use super::{
    customer_metrics, lake_export, loan_analytics, partitions, retention, risk_indicators,
    servicing, JobRun, Session,
};
use crate::platform::config::RetentionConfig;
use crate::platform::error::ApiError;

/// `pg_try_advisory_xact_lock` key of loan servicing ("lakehouse:servicing" as an integer).
pub const SERVICING_LOCK: i64 = 0x6c61_6b65_7376_6301;

/// The periodic jobs besides servicing: (job name, lock key, period).
const PERIODIC: [(&str, i64, Duration); 5] = [
    (
        customer_metrics::SPEC.name,
        0x6c61_6b65_6d65_7401,
        Duration::from_secs(24 * 3600),
    ),
    (
        risk_indicators::SPEC.name,
        0x6c61_6b65_7269_7301,
        Duration::from_secs(12 * 3600),
    ),
    (
        loan_analytics::SPEC.name,
        0x6c61_6b65_6c61_6e01,
        Duration::from_secs(24 * 3600),
    ),
    (
        partitions::SPEC.name,
        0x6c61_6b65_7061_7201,
        Duration::from_secs(24 * 3600),
    ),
    (
        retention::SPEC.name,
        0x6c61_6b65_7265_7401,
        Duration::from_secs(3600),
    ),
];

/// What the scheduler runs, and how.
pub struct Schedule {
    pub period: Duration,
    pub retention: RetentionConfig,
    pub servicing_workers: usize,
    /// The lake to ask an export of after each daily close, if any.
    pub lake_after_close: Option<String>,
}

/// Runs forever: every `schedule.period`, whatever is due.
pub async fn run(pool: PgPool, session: Session, schedule: Schedule) {
    let mut ticker = tokio::time::interval(schedule.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for run in run_due(&pool, &session, &schedule).await {
            tracing::info!(job = %run.job_name, job_id = %run.job_id, status = %run.status, "scheduled job ran");
        }
    }
}

/// One round: fails abandoned runs, then runs each job that is due and whose lock this instance
/// gets, then asks for the lake's export if the day is closed. Returns the runs it made;
/// failures are logged and retried next round.
pub async fn run_due(pool: &PgPool, session: &Session, schedule: &Schedule) -> Vec<JobRun> {
    let (retention, servicing_workers) = (&schedule.retention, schedule.servicing_workers);
    match super::fail_abandoned(pool).await {
        Ok(0) => {}
        Ok(failed) => tracing::warn!(failed, "job runs whose runner was gone marked failed"),
        Err(error) => tracing::warn!(%error, "checking for abandoned job runs failed"),
    }
    let mut runs = Vec::new();
    match service_if_due(pool, session, servicing_workers).await {
        Ok(run) => runs.extend(run),
        Err(error) => tracing::warn!(?error, "servicing failed; retrying next round"),
    }
    for (name, lock, every) in PERIODIC {
        match run_if_due(pool, session, name, lock, every, retention).await {
            Ok(run) => runs.extend(run),
            Err(error) => tracing::warn!(
                job = name,
                ?error,
                "scheduled job failed; retrying next round"
            ),
        }
    }
    if let Some(catalog) = &schedule.lake_after_close {
        match lake_export::ask_after_close(session, catalog).await {
            Ok(Some(request_id)) => {
                tracing::info!(%request_id, "asked for the lake's export after the close");
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(?error, "asking for the lake's export failed"),
        }
    }
    runs
}

/// Takes `lock` on a connection of its own for as long as `work` runs; `None` when another
/// instance holds it.
async fn exclusively<F, Fut>(pool: &PgPool, lock: i64, work: F) -> Result<Option<JobRun>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<JobRun>, ApiError>>,
{
    let Some(guard) = super::JobLock::try_acquire(pool, lock).await? else {
        return Ok(None);
    };
    let run = work().await;
    guard.release().await;
    run
}

async fn run_if_due(
    pool: &PgPool,
    session: &Session,
    name: &'static str,
    lock: i64,
    every: Duration,
    retention: &RetentionConfig,
) -> Result<Option<JobRun>, ApiError> {
    exclusively(pool, lock, || async move {
        let mut tx = session.begin().await?;
        let state = sqlx::query!(
            r#"
            SELECT NOT EXISTS (SELECT 1 FROM metadata.job_execution
                               WHERE job_name = $1 AND status = 'SUCCEEDED'
                                 AND started_at > now() - make_interval(secs => $2)) AS "due!",
                   core.business_date(now()) AS "today!"
            "#,
            name,
            every.as_secs_f64(),
        )
        .fetch_one(&mut *tx)
        .await?;
        let (due, today) = (state.due, state.today);
        tx.commit().await?;
        if !due {
            return Ok(None);
        }
        let run = match name {
            n if n == customer_metrics::SPEC.name => {
                customer_metrics::refresh(session, today).await?
            }
            n if n == risk_indicators::SPEC.name => risk_indicators::refresh(session).await?,
            n if n == partitions::SPEC.name => partitions::run(session).await?,
            n if n == loan_analytics::SPEC.name => loan_analytics::snapshot(session, today).await?,
            _ => retention::run(session, retention, retention::BATCH).await?,
        };
        Ok(Some(run))
    })
    .await
}

/// Runs servicing from the day after the last successful run through today, unless it is up to
/// date. If another instance holds its lock, this instance's workers help with the day that run
/// has open instead. Returns the run, if there was one.
pub async fn service_if_due(
    pool: &PgPool,
    session: &Session,
    workers: usize,
) -> Result<Option<JobRun>, ApiError> {
    let Some(guard) = super::JobLock::try_acquire(pool, SERVICING_LOCK).await? else {
        let helped = servicing::help(session, workers).await?;
        if helped.loans > 0 {
            tracing::info!(
                loans = helped.loans,
                "helped another instance's servicing run"
            );
        }
        return Ok(None);
    };
    let run = run_servicing_if_due(session, workers).await;
    guard.release().await;
    run
}

async fn run_servicing_if_due(
    session: &Session,
    workers: usize,
) -> Result<Option<JobRun>, ApiError> {
    let mut tx = session.begin().await?;
    let today: NaiveDate = sqlx::query_scalar!(r#"SELECT core.business_date(now()) AS "today!""#)
        .fetch_one(&mut *tx)
        .await?;
    let last: Option<NaiveDate> = sqlx::query_scalar!(
        r#"
                SELECT max((parameters->>'to')::date) FROM metadata.job_execution
                WHERE job_name = $1 AND status = 'SUCCEEDED'
            "#,
        servicing::SPEC.name,
    )
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
    let days = servicing::Days {
        from,
        to: today,
        rehearsal: false,
    };
    Ok(Some(servicing::run(session, days, workers).await?))
}
