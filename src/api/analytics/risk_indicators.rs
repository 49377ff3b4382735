//! `/v1/analytics/risk-indicators`: the current risk indicators, and their refresh.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::jobs::{self, JobRun};
use crate::platform::auth::RequestTx;
use crate::platform::auth::{Analysts, Authorized};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::pagination::{IdCursor, Page, PageQuery, PageRequest};
use crate::platform::state::AppState;

/// Recompute every risk indicator (analysts, administrators); the previous run's are replaced.
#[utoipa::path(
    post,
    path = "/v1/analytics/risk-indicators/refresh",
    responses((status = 200, description = "The run", body = JobRun), responses::Common, responses::Conflict)
)]
pub(super) async fn refresh_risk_indicators(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<Analysts>,
) -> Result<Json<JobRun>, ApiError> {
    let (_place, session) = jobs::requested_run(&state.jobs, caller)?;
    Ok(Json(jobs::risk_indicators::refresh(&session).await?))
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
    /// The business date the indicator is of.
    pub as_of: NaiveDate,
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
    /// A business date's indicators, as that day's refresh left them (kept for
    /// `RISK_INDICATORS_RETENTION_DAYS`). Default: the latest day's, while they have not expired.
    pub date: Option<NaiveDate>,
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

/// Risk indicators of a business date (analysts, administrators): by default the latest
/// refresh's, while current (unexpired).
#[utoipa::path(
    get,
    path = "/v1/analytics/risk-indicators",
    params(RiskIndicatorQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<RiskIndicator>), responses::Common)
)]
pub(super) async fn list_risk_indicators(
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
    let rows: Vec<RiskIndicator> = sqlx::query_as!(
        RiskIndicator,
        r#"
        SELECT indicator_id, entity_type, entity_id, indicator_type, indicator_value,
        threshold_value, alert_level, as_of, calculated_at, expires_at, metadata
        FROM analytics.risk_indicators
        WHERE as_of = coalesce($5, (SELECT max(as_of) FROM analytics.risk_indicators))
        AND ($5 IS NOT NULL OR expires_at > now()) AND ($1::text IS NULL OR alert_level = $1)
        AND ($2::text IS NULL OR entity_type = $2) AND ($3::uuid IS NULL OR indicator_id > $3)
        ORDER BY indicator_id LIMIT $4
        "#,
        query.alert_level.as_deref(),
        query.entity_type.as_deref(),
        after.map(|c| c.after),
        page.fetch(),
        query.date,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.answer(page.page(rows, |r| IdCursor {
        after: r.indicator_id,
    })?)
    .await
}
