//! lakehouse-api: the transactional REST API in front of the lending core's PostgreSQL.
//!
//! Every request runs in one transaction as the caller's database role (see
//! [`platform::auth::RequestTx`]), so PostgreSQL's row-level security, not only this code, keeps
//! each customer to their rows.
//!
//! The layers are folders, each importing only from those below it:
//! - [`platform`]: configuration, the database, identity, the HTTP edge and errors;
//! - [`domain`]: money and the ledger (the one door for every movement), idempotency, jobs,
//!   credit risk, customer records and product terms;
//! - [`api`]: one folder per resource, named after its URL;
//! - [`app`] and [`openapi`] assemble the router and its document.

// Functions stay under 120 lines (clippy.toml); tests are exempt.
#![warn(clippy::too_many_lines)]

pub mod api;
pub mod app;
pub mod domain;
pub mod openapi;
pub mod platform;

/// The error type of command-line paths, which only report their failure.
pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
