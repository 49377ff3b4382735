//! `/v1/admin/…`: the database report, a servicing run on demand and lake export requests.

pub mod database;
pub mod lake_exports;
pub mod servicing;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

/// Daily loan servicing on demand (a job route: the job timeout, no request retry).
pub fn job_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(servicing::run_servicing))
        .tagged("ops")
}

/// The administrators' database report and lake export requests (authenticated like every
/// `/v1` route).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(database::get_database_health))
        .merge(lake_exports::router())
        .tagged("ops")
}
