//! The analytics jobs over HTTP: refresh customer metrics and risk indicators, and read them.
//! Analysts and administrators only.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::RequestTx;
use crate::auth::{Analysts, Authorized, Caller};
use crate::error::{responses, ApiError};
use crate::extract::{AppJson, AppQuery};
use crate::jobs::{self, JobRun, Session};
use crate::money::Amount;
use crate::pagination::{IdCursor, Page, PageQuery, PageRequest};
use crate::state::AppState;

fn analyst_session(state: &AppState, caller: Caller) -> Session {
    Session::Caller {
        pool: state.db.pool.clone(),
        caller,
        statement_timeout_ms: state.jobs.statement_timeout.as_millis(),
    }
}

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
    tag = "analytics",
    operation_id = "refresh_customer_metrics",
    security(("bearer" = [])),
    request_body = RefreshMetricsRequest,
    responses(
        (status = 200, description = "The run", body = JobRun),
        responses::Common, responses::JsonBody, responses::Unprocessable
    )
)]
async fn refresh_customer_metrics(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<Analysts>,
    AppJson(request): AppJson<RefreshMetricsRequest>,
) -> Result<Json<JobRun>, ApiError> {
    let session = analyst_session(&state, caller);
    let day = request.date.unwrap_or_else(|| Utc::now().date_naive());
    if !(1900..=2100).contains(&chrono::Datelike::year(&day)) {
        return Err(ApiError::invalid_field(
            "date",
            "must be between 1900 and 2100",
        ));
    }
    Ok(Json(jobs::metrics::refresh(&session, day).await?))
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
    tag = "analytics",
    operation_id = "list_customer_metrics",
    security(("bearer" = [])),
    params(MetricsQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<CustomerMetrics>), responses::Common)
)]
async fn list_customer_metrics(
    mut tx: RequestTx<Analysts>,
    AppQuery(query): AppQuery<MetricsQuery>,
    page: PageRequest<IdCursor>,
) -> Result<Json<Page<CustomerMetrics>>, ApiError> {
    let after = page.after;
    let day = query.date.unwrap_or_else(|| Utc::now().date_naive());
    let rows: Vec<CustomerMetrics> = sqlx::query_as(
        "SELECT customer_id, metric_date, total_loans, active_loans, total_borrowed, total_repaid, \
                current_outstanding, days_past_due, risk_score, ltv_ratio, created_at \
         FROM analytics.customer_metrics \
         WHERE metric_date = $1 AND ($2::uuid IS NULL OR customer_id = $2) \
           AND ($3::uuid IS NULL OR customer_id > $3) \
         ORDER BY customer_id LIMIT $4",
    )
    .bind(day)
    .bind(query.customer_id)
    .bind(after.map(|c| c.after))
    .bind(page.fetch())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(page.page(rows, |m| IdCursor {
        after: m.customer_id,
    })?))
}

/// Recompute every risk indicator (analysts, administrators); the previous run's are replaced.
#[utoipa::path(
    post,
    path = "/v1/analytics/risk-indicators/refresh",
    tag = "analytics",
    operation_id = "refresh_risk_indicators",
    security(("bearer" = [])),
    responses((status = 200, description = "The run", body = JobRun), responses::Common)
)]
async fn refresh_risk_indicators(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<Analysts>,
) -> Result<Json<JobRun>, ApiError> {
    let session = analyst_session(&state, caller);
    Ok(Json(jobs::risk::refresh(&session).await?))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RiskIndicator {
    pub indicator_id: Uuid,
    /// CUSTOMER, LOAN or PORTFOLIO (whose entity_id is the nil UUID).
    pub entity_type: String,
    pub entity_id: Uuid,
    /// DAYS_PAST_DUE, LOAN_TO_VALUE or PRODUCT_CONCENTRATION.
    pub indicator_type: String,
    #[schema(value_type = Option<String>)]
    pub indicator_value: Option<Decimal>,
    #[schema(value_type = Option<String>)]
    pub threshold_value: Option<Decimal>,
    /// LOW, MEDIUM, HIGH or CRITICAL.
    pub alert_level: Option<String>,
    pub calculated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<sqlx::types::JsonValue>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RiskIndicatorQuery {
    /// LOW, MEDIUM, HIGH or CRITICAL.
    pub alert_level: Option<String>,
    /// CUSTOMER, LOAN or PORTFOLIO.
    pub entity_type: Option<String>,
}

fn one_of(name: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::BadRequest(format!(
            "{name} must be one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Current (unexpired) risk indicators (analysts, administrators).
#[utoipa::path(
    get,
    path = "/v1/analytics/risk-indicators",
    tag = "analytics",
    operation_id = "list_risk_indicators",
    security(("bearer" = [])),
    params(RiskIndicatorQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<RiskIndicator>), responses::Common)
)]
async fn list_risk_indicators(
    mut tx: RequestTx<Analysts>,
    AppQuery(query): AppQuery<RiskIndicatorQuery>,
    page: PageRequest<IdCursor>,
) -> Result<Json<Page<RiskIndicator>>, ApiError> {
    one_of(
        "alert_level",
        &query.alert_level,
        &["LOW", "MEDIUM", "HIGH", "CRITICAL"],
    )?;
    one_of(
        "entity_type",
        &query.entity_type,
        &["CUSTOMER", "LOAN", "PORTFOLIO"],
    )?;
    let after = page.after;
    let rows: Vec<RiskIndicator> = sqlx::query_as(
        "SELECT indicator_id, entity_type, entity_id, indicator_type, indicator_value, \
                threshold_value, alert_level, calculated_at, expires_at, metadata \
         FROM analytics.risk_indicators \
         WHERE expires_at > now() AND ($1::text IS NULL OR alert_level = $1) \
           AND ($2::text IS NULL OR entity_type = $2) AND ($3::uuid IS NULL OR indicator_id > $3) \
         ORDER BY indicator_id LIMIT $4",
    )
    .bind(&query.alert_level)
    .bind(&query.entity_type)
    .bind(after.map(|c| c.after))
    .bind(page.fetch())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(page.page(rows, |r| IdCursor {
        after: r.indicator_id,
    })?))
}

/// The refresh routes (long-running: no request retry, the job timeout).
pub fn runs() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(refresh_customer_metrics))
        .routes(routes!(refresh_risk_indicators))
}

/// The read routes.
pub fn reads() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(list_customer_metrics))
        .routes(routes!(list_risk_indicators))
}
