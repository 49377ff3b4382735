//! Lake exports asked for by the service. The export itself is `lakehouse-export`, a binary of
//! its own that logs in as the owner (docs/lake.md): the service only leaves a request in
//! `metadata.lake_export_requests`, and the exporter's next run of that lake takes every pending
//! request. A request's status is then its run's.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{JobRun, JobStatus, Session};
use crate::platform::error::ApiError;

crate::closed_set! {
    /// Where a request stands: waiting for the exporter, then its run's status.
    pub enum LakeExportStatus {
        Pending = "PENDING",
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
    }
}

/// An export of the lake, asked for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LakeExportRequest {
    pub request_id: Uuid,
    /// The lake (its name in the Iceberg SQL catalog, `LAKE_CATALOG`).
    pub catalog: String,
    pub requested_at: DateTime<Utc>,
    /// The login that asked; `scheduler` after a daily close.
    pub requested_by: String,
    /// The business day whose close the scheduler asked for; null when an administrator asked.
    pub closed_day: Option<NaiveDate>,
    pub status: LakeExportStatus,
    /// When the exporter took it.
    pub taken_at: Option<DateTime<Utc>>,
    /// The run that took it (null while pending): its status, rows written and error.
    pub run: Option<JobRun>,
}

/// A position in the newest-first listing.
pub type Cursor = crate::platform::pagination::TimeCursor;

/// The pending request of `catalog`, made now unless one waits already; `true` when it is new.
pub async fn ask(
    conn: &mut PgConnection,
    catalog: &str,
) -> Result<(LakeExportRequest, bool), ApiError> {
    // A request that waits is the one to return. Between a conflict and the look-up the
    // exporter may take it; then asking again makes a new one.
    for _ in 0..3 {
        let made = sqlx::query_scalar!(
            r#"
            INSERT INTO metadata.lake_export_requests (catalog_name) VALUES ($1)
            ON CONFLICT DO NOTHING RETURNING request_id
            "#,
            catalog,
        )
        .fetch_optional(&mut *conn)
        .await?;
        let id = match made {
            Some(id) => Some(id),
            None => {
                sqlx::query_scalar!(
                    r#"
                SELECT request_id FROM metadata.lake_export_requests
                WHERE catalog_name = $1 AND job_id IS NULL
                "#,
                    catalog,
                )
                .fetch_optional(&mut *conn)
                .await?
            }
        };
        if let Some(request) = match id {
            Some(id) => find(conn, id).await?,
            None => None,
        } {
            return Ok((request, made.is_some()));
        }
    }
    Err(ApiError::Conflict {
        detail: "the lake's export requests are changing too fast; ask again".into(),
        errors: Vec::new(),
    })
}

/// One request, with its run.
pub async fn find(
    conn: &mut PgConnection,
    request_id: Uuid,
) -> Result<Option<LakeExportRequest>, ApiError> {
    Ok(rows(conn, Some(request_id), None, 1).await?.pop())
}

/// Requests of every lake, newest first, after `after`.
pub async fn list(
    conn: &mut PgConnection,
    after: Option<Cursor>,
    fetch: i64,
) -> Result<Vec<LakeExportRequest>, ApiError> {
    rows(conn, None, after, fetch).await
}

async fn rows(
    conn: &mut PgConnection,
    request_id: Option<Uuid>,
    after: Option<Cursor>,
    fetch: i64,
) -> Result<Vec<LakeExportRequest>, ApiError> {
    let rows = sqlx::query!(
        r#"
        SELECT r.request_id, r.catalog_name, r.requested_at, r.requested_by, r.closed_day,
               r.taken_at,
               j.job_id AS "job_id?", j.job_name AS "job_name?", j.status AS "job_status?: JobStatus",
               j.parameters, j.started_at AS "started_at?", j.finished_at, j.records_read,
               j.records_written, j.records_failed, j.error_message,
               j.triggered_by AS "triggered_by?"
        FROM metadata.lake_export_requests r
        LEFT JOIN metadata.job_execution j ON j.job_id = r.job_id
        WHERE ($1::uuid IS NULL OR r.request_id = $1)
          -- the page after the cursor's (requested_at, request_id)
          AND ($2::timestamptz IS NULL OR (r.requested_at, r.request_id) < ($2, $3))
        ORDER BY r.requested_at DESC, r.request_id DESC
        LIMIT $4
        "#,
        request_id,
        after.map(|c| c.at),
        after.map(|c| c.id),
        fetch,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let run = match (
                r.job_id,
                r.job_name,
                r.job_status,
                r.started_at,
                r.triggered_by,
            ) {
                (Some(job_id), Some(job_name), Some(status), Some(started_at), Some(by)) => {
                    Some(JobRun {
                        job_id,
                        job_name,
                        status,
                        parameters: r.parameters,
                        started_at,
                        finished_at: r.finished_at,
                        records_read: r.records_read,
                        records_written: r.records_written,
                        records_failed: r.records_failed,
                        error_message: r.error_message,
                        triggered_by: by,
                    })
                }
                _ => None,
            };
            let status = match run.as_ref().map(|run| run.status) {
                None => LakeExportStatus::Pending,
                Some(JobStatus::Running) => LakeExportStatus::Running,
                Some(JobStatus::Succeeded) => LakeExportStatus::Succeeded,
                Some(JobStatus::Failed) => LakeExportStatus::Failed,
            };
            LakeExportRequest {
                request_id: r.request_id,
                catalog: r.catalog_name,
                requested_at: r.requested_at,
                requested_by: r.requested_by,
                closed_day: r.closed_day,
                status,
                taken_at: r.taken_at,
                run,
            }
        })
        .collect())
}

/// After the daily close: asks for an export of `catalog` once servicing has reached today, once
/// per business day. Returns the request when it made one.
pub async fn ask_after_close(session: &Session, catalog: &str) -> Result<Option<Uuid>, ApiError> {
    let mut tx = session.begin().await?;
    let made = sqlx::query_scalar!(
        r#"
        INSERT INTO metadata.lake_export_requests (catalog_name, closed_day)
        SELECT $1, closed.day
        FROM (SELECT max((parameters ->> 'to')::date) AS day FROM metadata.job_execution
              WHERE job_name = $2 AND status = 'SUCCEEDED') closed
        WHERE closed.day >= core.business_date(now())
        ON CONFLICT DO NOTHING
        RETURNING request_id
        "#,
        catalog,
        super::servicing::SPEC.name,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(made)
}
