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
pub mod proposals;
pub mod reports;
pub mod staff;

use utoipa_axum::router::OpenApiRouter;

use crate::domain::four_eyes::{Action, Executors};
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
        .merge(proposals::router(executors()))
        .merge(reports::router())
        .merge(offices::router())
        .merge(staff::router())
        .merge(admin::router())
}

/// What makes each kind of approved proposal take effect: the resources' own commands.
fn executors() -> Executors {
    Executors::default()
        .with(Action::LoanApproval, loans::execute_approval)
        .with(Action::Disbursement, loans::execute_disbursement)
        .with(Action::WriteOff, loans::execute_write_off)
        .with(Action::ProductChange, products::execute_change)
        .with(Action::IdentityLink, customers::execute_identity_link)
        .with(Action::Reversal, payments::execute_reversal)
        .with(Action::Refund, loans::execute_refund)
        .with(Action::StaffChange, staff::execute_change)
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

#[cfg(test)]
mod tests {
    use crate::domain::four_eyes::Action;
    use crate::platform::config::CHECKABLE_ACTIONS;

    #[test]
    fn every_action_that_can_need_a_checker_has_what_makes_it_take_effect() {
        let executors = super::executors();
        for name in CHECKABLE_ACTIONS {
            let action: Action = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(action.as_str(), name);
            assert!(executors.get(action).is_ok(), "{name}");
        }
    }
}
