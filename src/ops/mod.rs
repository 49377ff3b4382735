//! Health probes and background upkeep.

pub mod admin;
pub mod maintenance;
pub mod metrics;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::db;
use crate::error::{responses, ApiError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(prometheus))
        .routes(routes!(admin::get_database_health))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when the probe passes.
    pub status: &'static str,
}

/// The process is up. Touches nothing else.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "ops",
    operation_id = "live",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers and has every migration this binary expects.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "ops",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready for traffic", body = Health),
        responses::Common
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if db::migrations_current(&state.pool).await? {
        Ok(Json(Health { status: "ok" }))
    } else {
        Err(ApiError::Unavailable {
            retry_after_secs: 5,
        })
    }
}

/// Prometheus metrics: `http_requests_total` and `http_request_duration_seconds` by route
/// template, method and status; `http_requests_in_flight`; `db_pool_connections`, `db_pool_idle`,
/// `db_pool_in_use`, `db_pool_acquire_waiting`; `db_errors_total` by class.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
async fn prometheus(state: State<AppState>) -> axum::response::Response {
    metrics::render(state).await
}
