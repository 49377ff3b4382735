//! The top layer: one folder per resource, named after its URL. A resource never imports
//! another; what two share lives in `domain` or `platform`.

pub mod admin;
pub mod analytics;
pub mod customers;
pub mod events;
pub mod health;
pub mod imports;
pub mod ledger;
pub mod loans;
pub mod me;
pub mod metadata;
pub mod offices;
pub mod payments;
pub mod products;
pub mod staff;

use utoipa_axum::router::OpenApiRouter;

use crate::platform::state::AppState;

/// The authenticated routes that answer within the request timeout.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(customers::router())
        .merge(me::router())
        .merge(products::router())
        .merge(loans::router())
        .merge(ledger::router())
        .merge(payments::router())
        .merge(analytics::router())
        .merge(events::router())
        .merge(imports::router())
        .merge(metadata::router())
        .merge(offices::router())
        .merge(staff::router())
        .merge(admin::router())
}

/// The authenticated routes that run batch jobs: they work for minutes, so they are not
/// buffered for retries and get the job timeout instead of the request timeout.
pub fn job_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(analytics::job_router())
        .merge(admin::job_router())
}

/// The upload routes: they stream their bodies under the import bound.
pub fn upload_routes() -> OpenApiRouter<AppState> {
    imports::upload_router()
}

/// The public probes.
pub fn health_routes() -> OpenApiRouter<AppState> {
    health::router()
}
