//! The middle layer: the lender's rules. Resources call these; nothing here knows a route.

pub mod contract;
pub mod credit_risk;
pub mod customer_record;
pub mod dues;
pub mod events;
pub mod four_eyes;
pub mod idempotency;
pub mod jobs;
pub mod ledger;
pub mod money;
pub mod product_terms;
