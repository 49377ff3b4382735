//! Lake exports asked for by the service. The export itself is `lakehouse-export`, a binary of
//! its own that logs in as the owner (docs/lake.md): the service only leaves a request in
//! `metadata.lake_export_requests`; `lakehouse-export --follow` runs while one waits, and a run
//! answers the requests whose earlier commits all lie below its horizon. Until one answers it, a
//! request shows the lake's latest attempt since it was made.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{JobRun, JobStatus, Session};
use crate::platform::error::ApiError;

crate::closed_set! {
    /// Where a request stands: `PENDING` (no run has tried since it was made, or the last one
    /// could not answer it: a transaction older than the run was open), `RUNNING` (a run that
    /// started after it is running), `FAILED` (the last run since it failed; `--follow` tries
    /// again, later after each failure), `SUCCEEDED` (a run answered it).
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
    /// The business day whose close it also serves (the scheduler's); null when only a person
    /// asked.
    pub closed_day: Option<NaiveDate>,
    pub status: LakeExportStatus,
    /// When a run answered it.
    pub taken_at: Option<DateTime<Utc>>,
    /// The run that answered it; until then the lake's latest run since it was made, if any:
    /// its status, rows written and error.
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
        LEFT JOIN LATERAL (
            -- the run that answered it
            SELECT * FROM metadata.job_execution a WHERE a.job_id = r.job_id
            UNION ALL
            -- or, while it waits, the lake's latest run since it was made
            (SELECT * FROM metadata.job_execution t
             WHERE r.job_id IS NULL AND t.job_name = 'lake_export'
               AND t.started_at >= r.requested_at AND t.parameters ->> 'catalog' = r.catalog_name
             ORDER BY t.started_at DESC LIMIT 1)
        ) j ON true
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
            LakeExportRequest {
                request_id: r.request_id,
                catalog: r.catalog_name,
                requested_at: r.requested_at,
                requested_by: r.requested_by,
                closed_day: r.closed_day,
                status: status(r.taken_at.is_some(), run.as_ref().map(|run| run.status)),
                taken_at: r.taken_at,
                run,
            }
        })
        .collect())
}

/// A request's status: answered, or its latest attempt's. A run that succeeded without
/// answering it (an older transaction held its horizon back) leaves it waiting.
fn status(answered: bool, latest_run: Option<JobStatus>) -> LakeExportStatus {
    match (answered, latest_run) {
        (true, _) => LakeExportStatus::Succeeded,
        (false, Some(JobStatus::Running)) => LakeExportStatus::Running,
        (false, Some(JobStatus::Failed)) => LakeExportStatus::Failed,
        (false, Some(JobStatus::Succeeded) | None) => LakeExportStatus::Pending,
    }
}

/// After the daily close: asks for an export of `catalog` once servicing has reached today,
/// once per business day. A request that waits already serves the close too (it is marked with
/// the day and now asks for everything committed so far). Returns the request, if it made or
/// marked one.
pub async fn ask_after_close(session: &Session, catalog: &str) -> Result<Option<Uuid>, ApiError> {
    let mut tx = session.begin().await?;
    let closed: Option<NaiveDate> = sqlx::query_scalar!(
        r#"
        SELECT closed.day FROM (SELECT max((parameters ->> 'to')::date) AS day
                                FROM metadata.job_execution
                                WHERE job_name = $1 AND status = 'SUCCEEDED') closed
        WHERE closed.day >= core.business_date(now())
        "#,
        super::servicing::SPEC.name,
    )
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let Some(day) = closed else {
        return Ok(None);
    };
    let marked = sqlx::query_scalar!(
        r#"
        UPDATE metadata.lake_export_requests
        SET closed_day = $2, requested_xmax = pg_snapshot_xmax(pg_current_snapshot())
        WHERE catalog_name = $1 AND job_id IS NULL
          AND (closed_day IS NULL OR closed_day < $2)
          AND NOT EXISTS (SELECT 1 FROM metadata.lake_export_requests
                          WHERE catalog_name = $1 AND closed_day = $2)
        RETURNING request_id
        "#,
        catalog,
        day,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let request = match marked {
        Some(id) => Some(id),
        // One per close, and one waiting at a time: either conflict means it is asked already.
        None => {
            sqlx::query_scalar!(
                r#"
                INSERT INTO metadata.lake_export_requests (catalog_name, closed_day)
                VALUES ($1, $2)
                ON CONFLICT DO NOTHING
                RETURNING request_id
                "#,
                catalog,
                day,
            )
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_shows_its_answer_or_its_latest_attempt() {
        use JobStatus::{Failed, Running, Succeeded};
        use LakeExportStatus as S;
        assert_eq!(status(true, Some(Succeeded)), S::Succeeded);
        assert_eq!(status(false, None), S::Pending);
        assert_eq!(status(false, Some(Running)), S::Running);
        assert_eq!(status(false, Some(Failed)), S::Failed);
        // A run that could not answer it: it waits for the next.
        assert_eq!(status(false, Some(Succeeded)), S::Pending);
    }
}
