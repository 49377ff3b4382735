//! `/v1/analytics/customer-metrics`: each customer's figures of a day, and their refresh.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::jobs::{self, JobRun};
use crate::domain::money::Amount;
use crate::platform::auth::RequestTx;
use crate::platform::auth::{Analysts, Authorized};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::{AppJson, AppQuery};
use crate::platform::pagination::{IdCursor, Page, PageQuery, PageRequest};
use crate::platform::state::AppState;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshMetricsRequest {
    /// The day to compute (UTC); default today.
    pub date: Option<NaiveDate>,
}

/// Compute `analytics.customer_metrics` for a day (analysts, administrators). Re-running a day
/// replaces its figures. The run is recorded in `metadata.job_execution` and
/// `metadata.data_lineage`, whether it succeeds or fails.
#[utoipa::path(
    post,
    path = "/v1/analytics/customer-metrics/refresh",
    request_body = RefreshMetricsRequest,
    responses(
        (status = 200, description = "The run", body = JobRun),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
pub(super) async fn refresh_customer_metrics(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<Analysts>,
    AppJson(request): AppJson<RefreshMetricsRequest>,
) -> Result<Json<JobRun>, ApiError> {
    let (_place, session) = jobs::requested_run(&state.jobs, caller)?;
    let day = request.date.unwrap_or_else(|| Utc::now().date_naive());
    if !(1900..=2100).contains(&chrono::Datelike::year(&day)) {
        return Err(ApiError::invalid_field(
            "date",
            "must be between 1900 and 2100",
        ));
    }
    Ok(Json(jobs::customer_metrics::refresh(&session, day).await?))
}

/// One customer's figures for one day.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CustomerMetrics {
    pub customer_id: Uuid,
    pub metric_date: NaiveDate,
    pub total_loans: i32,
    pub active_loans: i32,
    pub total_borrowed: Amount,
    pub total_repaid: Amount,
    pub current_outstanding: Amount,
    pub days_past_due: i32,
    #[schema(value_type = Option<String>)]
    pub risk_score: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub ltv_ratio: Option<Decimal>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// The day (UTC); default today.
    pub date: Option<NaiveDate>,
    pub customer_id: Option<Uuid>,
}

/// Customer metrics of a day, by customer id (analysts, administrators).
#[utoipa::path(
    get,
    path = "/v1/analytics/customer-metrics",
    params(MetricsQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<CustomerMetrics>), responses::Common)
)]
pub(super) async fn list_customer_metrics(
    mut tx: RequestTx<Analysts>,
    AppQuery(query): AppQuery<MetricsQuery>,
    page: PageRequest<IdCursor>,
) -> Result<Json<Page<CustomerMetrics>>, ApiError> {
    let after = page.after;
    let day = query.date.unwrap_or_else(|| Utc::now().date_naive());
    let rows: Vec<CustomerMetrics> = sqlx::query_as!(
        CustomerMetrics,
        r#"
        SELECT customer_id, metric_date, total_loans, active_loans, total_borrowed, total_repaid,
        current_outstanding, days_past_due, risk_score, ltv_ratio, created_at
        FROM analytics.customer_metrics
        WHERE metric_date = $1 AND ($2::uuid IS NULL OR customer_id = $2)
        AND ($3::uuid IS NULL OR customer_id > $3)
        ORDER BY customer_id LIMIT $4
        "#,
        day,
        query.customer_id,
        after.map(|c| c.after),
        page.fetch(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.answer(page.page(rows, |m| IdCursor {
        after: m.customer_id,
    })?)
    .await
}
