//! lakehouse-api: the transactional REST API in front of the lending core's PostgreSQL.
//!
//! Every request runs in one transaction as the caller's database role (see [`auth::RequestTx`]),
//! so PostgreSQL's row-level security, not only this code, keeps each customer to their rows.

pub mod analytics;
pub mod app;
pub mod auth;
pub mod books;
pub mod conditional;
pub mod config;
pub mod customer_record;
pub mod customers;
pub mod db;
#[cfg(feature = "devtools")]
pub mod devtools;
pub mod dues;
pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod identities;
pub mod imports;
pub mod jobs;
pub mod ledger;
pub mod loans;
pub mod metadata;
pub mod money;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod payments;
pub mod pii;
pub mod product_terms;
pub mod products;
pub mod retry;
pub mod risk;
pub mod server;
pub mod state;
pub mod telemetry;

/// The error type of command-line paths, which only report their failure.
pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
