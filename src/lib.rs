//! lakehouse-api: the transactional REST API in front of the lending core's PostgreSQL.
//!
//! Every request runs in one transaction as the caller's database role (see [`db::RequestTx`]),
//! so PostgreSQL's row-level security, not only this code, keeps each customer to their rows.

pub mod analytics;
pub mod app;
pub mod auth;
pub mod conditional;
pub mod config;
pub mod customers;
pub mod db;
pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod imports;
pub mod jobs;
pub mod loans;
pub mod metadata;
pub mod money;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod payments;
pub mod pg_cluster;
pub mod pii;
pub mod products;
pub mod retry;
pub mod seed;
pub mod server;
pub mod telemetry;

/// The error type of command-line paths, which only report their failure.
pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
