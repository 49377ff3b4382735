//! `/health/…`: the probes a load balancer and an orchestrator ask.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::platform::db;
use crate::platform::error::{responses, ApiError};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

/// The public probes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .tagged("ops")
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
    security(()),
    responses((status = 200, description = "Alive", body = Health))
)]
async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers and has every migration this binary expects, and the identity
/// provider's keys (when one is configured) have loaded at least once.
#[utoipa::path(
    get,
    path = "/health/ready",
    security(()),
    responses(
        (status = 200, description = "Ready for traffic", body = Health),
        responses::Common
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.auth.is_ready() && db::migrations_current(&state.db.pool).await? {
        Ok(Json(Health { status: "ok" }))
    } else {
        Err(ApiError::Unavailable {
            retry_after_secs: 5,
        })
    }
}
