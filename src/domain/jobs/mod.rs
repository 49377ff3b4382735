//! Batch jobs (metrics, risk indicators, imports) and the bookkeeping every run leaves:
//! a `metadata.job_execution` row and a `metadata.data_lineage` row, failures included.
//!
//! The start of a run is recorded and committed first, the work runs in its own transactions (one,
//! or short batches that each commit), and the outcome is recorded after it — so a failed run is
//! still on record.

pub mod customer_metrics;
pub mod lake_export;
pub mod loan_analytics;
pub mod partitions;
pub mod reencrypt;
pub mod retention;
pub mod risk_indicators;
pub mod scheduler;
pub mod servicing;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::platform::auth;
use crate::platform::auth::Caller;
use crate::platform::error::ApiError;
use crate::platform::state::JobLimits;
use tokio::sync::OwnedSemaphorePermit;

/// Who a job runs as: a caller of the API (their database role, under RLS), or the owner (the
/// command line).
#[derive(Clone)]
pub enum Session {
    Caller {
        pool: PgPool,
        caller: Caller,
        statement_timeout_ms: u128,
    },
    Owner(PgPool),
}

impl Session {
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match self {
            Self::Caller {
                pool,
                caller,
                statement_timeout_ms,
            } => auth::begin_as(pool, caller, false, *statement_timeout_ms).await,
            Self::Owner(pool) => pool.begin().await,
        }
    }

    fn pool(&self) -> &PgPool {
        match self {
            Self::Caller { pool, .. } | Self::Owner(pool) => pool,
        }
    }
}

/// An advisory lock held for a job in a transaction of its own, on a connection of its own.
/// Transaction-scoped, so it works behind PgBouncer in transaction mode; the transaction switches
/// off the server's idle-in-transaction timeout for itself alone, as it stays idle while the work
/// runs on other connections, for as long as the work takes. Dropping it (a crash, a cut
/// network) ends the transaction and releases the lock.
pub(crate) struct JobLock {
    tx: Transaction<'static, Postgres>,
}

impl JobLock {
    async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query!("SET LOCAL idle_in_transaction_session_timeout = 0")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Waits for the lock.
    pub(crate) async fn acquire(pool: &PgPool, key: i64) -> Result<Self, sqlx::Error> {
        let mut tx = Self::begin(pool).await?;
        sqlx::query!("SELECT pg_advisory_xact_lock($1)", key)
            .execute(&mut *tx)
            .await?;
        Ok(Self { tx })
    }

    /// The lock if it is free now.
    pub(crate) async fn try_acquire(pool: &PgPool, key: i64) -> Result<Option<Self>, sqlx::Error> {
        let mut tx = Self::begin(pool).await?;
        let locked =
            sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#, key)
                .fetch_one(&mut *tx)
                .await?;
        Ok(locked.then_some(Self { tx }))
    }

    /// Also takes the lock named `alone.name` in the same transaction, or gives this one up and
    /// answers 409 when another run holds it.
    async fn also(mut self, alone: OneAtATime<'_>) -> Result<Self, ApiError> {
        let taken = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS "taken!""#,
            alone.name,
        )
        .fetch_one(&mut *self.tx)
        .await?;
        if taken {
            Ok(self)
        } else {
            self.release().await;
            Err(ApiError::Conflict {
                detail: alone.busy.to_owned(),
                errors: Vec::new(),
            })
        }
    }

    /// Releases the lock. The work under it is already committed and recorded, so a failure here
    /// is only logged: the transaction ends with its connection anyway.
    pub(crate) async fn release(self) {
        if let Err(error) = self.tx.commit().await {
            tracing::warn!(%error, "releasing a job lock");
        }
    }
}

/// The advisory lock a run holds while it runs (`runner_lock`): 63 bits of its id.
fn runner_lock(job_id: Uuid) -> i64 {
    let bytes = job_id.as_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..16]);
    i64::from_be_bytes(low) & i64::MAX
}

/// Where a job reads from and writes to, for lineage.
pub struct JobSpec {
    pub name: &'static str,
    pub source_system: &'static str,
    pub source_table: &'static str,
    pub target_system: &'static str,
    pub target_table: &'static str,
    pub transformation_type: &'static str,
    pub transformation_logic: &'static str,
}

/// What a job's work reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub read: i64,
    pub written: i64,
    pub failed: i64,
}

crate::closed_set! {
    /// Where a job run stands.
    pub enum JobStatus {
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
    }
}

/// A job run, as `metadata.job_execution` holds it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct JobRun {
    pub job_id: Uuid,
    pub job_name: String,
    /// RUNNING, SUCCEEDED or FAILED.
    pub status: JobStatus,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<sqlx::types::JsonValue>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub records_read: Option<i64>,
    pub records_written: Option<i64>,
    pub records_failed: Option<i64>,
    pub error_message: Option<String>,
    pub triggered_by: String,
}

/// Runs `work` as job `spec` in one transaction, and records the run and its lineage whatever
/// happens. The work gets the job id and a transaction, and hands the transaction back to be
/// committed. For work that can pass a second, use [`run_in_batches`].
pub async fn run<F, Fut>(
    session: &Session,
    spec: &JobSpec,
    parameters: serde_json::Value,
    work: F,
) -> Result<JobRun, ApiError>
where
    F: FnOnce(Uuid, Transaction<'static, Postgres>) -> Fut,
    Fut: Future<Output = Result<(Transaction<'static, Postgres>, Counts), ApiError>>,
{
    let transactions = session.clone();
    run_in_batches(session, spec, parameters, None, move |job_id| async move {
        let (tx, counts) = work(job_id, transactions.begin().await?).await?;
        tx.commit().await?;
        Ok(counts)
    })
    .await
}

/// A job run asked for over HTTP: a place among the runs this instance takes at once
/// (`MAX_CONCURRENT_JOBS`; beyond it, 429 with Retry-After) and a session on the jobs' own pool,
/// so that no run takes the connections requests need. Keep the place until the run ends.
pub fn requested_run(
    limits: &JobLimits,
    caller: Caller,
) -> Result<(OwnedSemaphorePermit, Session), ApiError> {
    let place = limits
        .runs
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyRequests {
            retry_after_secs: 5,
        })?;
    let session = Session::Caller {
        pool: limits.pool.clone(),
        caller,
        statement_timeout_ms: limits.statement_timeout.as_millis(),
    };
    Ok((place, session))
}

/// A name that one run at a time may hold, on every instance, and what a second run is told.
pub struct OneAtATime<'a> {
    pub name: &'a str,
    pub busy: &'a str,
}

/// Runs `work` as job `spec`, and records the run and its lineage whatever happens. The work gets
/// the job id and commits its own transactions, each short: no transaction stays open, idle or
/// busy, for the whole run, so none holds the events' horizon back or meets the server's
/// idle-in-transaction timeout. With `alone`, a run that finds the name held is refused with a
/// 409 and leaves no record.
pub async fn run_in_batches<F, Fut>(
    session: &Session,
    spec: &JobSpec,
    parameters: serde_json::Value,
    alone: Option<OneAtATime<'_>>,
    work: F,
) -> Result<JobRun, ApiError>
where
    F: FnOnce(Uuid) -> Fut,
    Fut: Future<Output = Result<Counts, ApiError>>,
{
    let job_id = Uuid::now_v7();
    // Held on a connection of its own until the outcome is recorded: while it is held the run
    // is alive; a crash or a cut connection releases it (see metadata.fail_abandoned_jobs).
    let lock = runner_lock(job_id);
    let runner = JobLock::acquire(session.pool(), lock).await?;
    let runner = match alone {
        None => runner,
        Some(alone) => runner.also(alone).await?,
    };
    let mut tx = session.begin().await?;
    sqlx::query!(
        r#"
            INSERT INTO metadata.job_execution (job_id, job_name, status, parameters, runner_lock)
            VALUES ($1, $2, 'RUNNING', $3, $4)
        "#,
        job_id,
        spec.name,
        &parameters,
        lock,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let outcome = work(job_id).await;
    let (status, counts, message) = match &outcome {
        Ok(counts) => ("SUCCEEDED", *counts, None),
        Err(error) => ("FAILED", Counts::default(), Some(describe(error))),
    };

    let mut tx = session.begin().await?;
    let recorded = sqlx::query_as!(
        JobRun,
        r#"
        UPDATE metadata.job_execution
        SET status = $2, finished_at = clock_timestamp(), records_read = $3,
            records_written = $4, records_failed = $5, error_message = $6
        WHERE job_id = $1
        RETURNING job_id, job_name, status AS "status: _", parameters, started_at, finished_at,
                  records_read, records_written, records_failed, error_message, triggered_by
        "#,
        job_id,
        status,
        counts.read,
        counts.written,
        counts.failed,
        message.as_deref(),
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        r#"
            INSERT INTO metadata.data_lineage (source_system, source_table, target_system, target_table,
            transformation_type, transformation_logic, pipeline_id, job_id, record_count, success_flag,
            error_message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        "#,
        spec.source_system,
        spec.source_table,
        spec.target_system,
        spec.target_table,
        spec.transformation_type,
        spec.transformation_logic,
        spec.name,
        job_id,
        counts.written,
        outcome.is_ok(),
        message.as_deref(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    runner.release().await;
    outcome.map(|_| recorded)
}

/// One chunk of a refresh by customer-id range: the rows it wrote and the range's upper bound
/// ([`Uuid::max`] for the last range).
pub(crate) type Chunk<'c> =
    std::pin::Pin<Box<dyn Future<Output = Result<(i64, Uuid), sqlx::Error>> + Send + 'c>>;

/// Runs `chunk` over consecutive ranges of customer ids, starting after the nil id, each in a
/// transaction of its own that commits, until a range ends at [`Uuid::max`]. No transaction of
/// the refresh is longer than one chunk, so none holds the events' horizon back for long.
/// Returns the rows written.
pub(crate) async fn in_customer_ranges(
    session: &Session,
    chunk: impl for<'c> Fn(&'c mut sqlx::PgConnection, Uuid) -> Chunk<'c>,
) -> Result<i64, ApiError> {
    let mut written = 0;
    let mut after = Uuid::nil();
    loop {
        let mut tx = session.begin().await?;
        let (count, upper) = chunk(&mut tx, after).await?;
        tx.commit().await?;
        written += count;
        if upper == Uuid::max() {
            return Ok(written);
        }
        after = upper;
    }
}

/// Marks failed every RUNNING run whose runner no longer holds its lock; returns how many.
pub async fn fail_abandoned(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let failed = sqlx::query_scalar!(r#"SELECT metadata.fail_abandoned_jobs() AS "failed!""#)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(failed)
}

/// A failure as recorded: what a client would be told, not internal detail.
fn describe(error: &ApiError) -> String {
    match error {
        ApiError::Internal(cause) => format!("internal error: {cause}"),
        other => format!("{other:?}"),
    }
}
