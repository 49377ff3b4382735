//! Black-box tests through the real router against a real PostgreSQL (see helpers.rs).

mod auth;
mod books;
mod cli;
mod customers;
mod docs;
mod edge;
mod errors;
mod events;
mod faults;
mod hardening;
mod helpers;
mod identity;
mod lakehouse;
mod loans;
mod money_core;
mod oidc;
mod openapi;
mod operations;
mod ops;
mod partitions;
mod payments;
mod pgbouncer;
mod rls;
mod schema;
mod structure;
mod tls;
