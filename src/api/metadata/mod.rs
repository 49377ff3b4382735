//! `/v1/metadata`: job runs and data lineage, for analysts and administrators.

use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::jobs::{JobRun, JobStatus};
use crate::platform::auth::Analysts;
use crate::platform::auth::RequestTx;
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::pagination::{Page, PageQuery, PageRequest, TimeCursor};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(list_lineage))
        .tagged("metadata")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    pub job_name: Option<String>,
    pub status: Option<JobStatus>,
}

/// Job runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/metadata/jobs",
    params(JobQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<JobRun>), responses::Common)
)]
async fn list_jobs(
    mut tx: RequestTx<Analysts>,
    AppQuery(query): AppQuery<JobQuery>,
    page: PageRequest<TimeCursor>,
) -> Result<Json<Page<JobRun>>, ApiError> {
    let after = page.after;
    let rows: Vec<JobRun> = sqlx::query_as!(
        JobRun,
        r#"
        SELECT job_id, job_name, status AS "status: _", parameters, started_at, finished_at, records_read,
        records_written, records_failed, error_message, triggered_by
        FROM metadata.job_execution
        WHERE ($1::text IS NULL OR job_name = $1) AND ($2::text IS NULL OR status = $2)
        AND ($3::timestamptz IS NULL OR (started_at, job_id) < ($3, $4))
        ORDER BY started_at DESC, job_id DESC LIMIT $5
        "#,
        query.job_name.as_deref(),
        query.status.map(JobStatus::as_str),
        after.as_ref().map(|c| c.at),
        after.as_ref().map(|c| c.id),
        page.fetch(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.answer(page.page(rows, |j| TimeCursor {
        at: j.started_at,
        id: j.job_id,
    })?)
    .await
}

/// One data movement.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Lineage {
    pub lineage_id: Uuid,
    pub source_system: String,
    pub source_table: String,
    pub target_system: String,
    pub target_table: String,
    pub transformation_type: Option<String>,
    pub transformation_logic: Option<String>,
    pub pipeline_id: Option<String>,
    pub job_id: Option<Uuid>,
    pub execution_timestamp: DateTime<Utc>,
    pub record_count: Option<i64>,
    pub success_flag: bool,
    pub error_message: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LineageQuery {
    pub job_id: Option<Uuid>,
    /// e.g. analytics.customer_metrics
    pub target_table: Option<String>,
}

/// Data lineage, newest first.
#[utoipa::path(
    get,
    path = "/v1/metadata/lineage",
    params(LineageQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<Lineage>), responses::Common)
)]
async fn list_lineage(
    mut tx: RequestTx<Analysts>,
    AppQuery(query): AppQuery<LineageQuery>,
    page: PageRequest<TimeCursor>,
) -> Result<Json<Page<Lineage>>, ApiError> {
    let after = page.after;
    let rows: Vec<Lineage> = sqlx::query_as!(
        Lineage,
        r#"
        SELECT lineage_id, source_system, source_table, target_system, target_table,
        transformation_type, transformation_logic, pipeline_id, job_id, execution_timestamp,
        record_count, success_flag, error_message
        FROM metadata.data_lineage
        WHERE ($1::uuid IS NULL OR job_id = $1) AND ($2::text IS NULL OR target_table = $2)
        AND ($3::timestamptz IS NULL OR (execution_timestamp, lineage_id) < ($3, $4))
        ORDER BY execution_timestamp DESC, lineage_id DESC LIMIT $5
        "#,
        query.job_id,
        query.target_table.as_deref(),
        after.as_ref().map(|c| c.at),
        after.as_ref().map(|c| c.id),
        page.fetch(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.answer(page.page(rows, |l| TimeCursor {
        at: l.execution_timestamp,
        id: l.lineage_id,
    })?)
    .await
}
