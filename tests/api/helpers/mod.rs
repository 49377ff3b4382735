//! The test harness: one PostgreSQL server per test run, one database per test, and a `TestApp`
//! that sends requests through the real router (every middleware included).
//!
//! Without `DATABASE_URL` the first test starts a throwaway cluster from the installed PostgreSQL
//! binaries, migrates a template database once, and every test then gets a copy of it
//! (`CREATE DATABASE … TEMPLATE`, milliseconds). A watchdog removes the cluster when the test
//! process exits. With `DATABASE_URL`, that server is used the same way and each test drops its
//! database when it ends.

mod app;
mod bouncer;
mod builders;
mod commands;
mod http;
mod own_cluster;
mod served;
mod server;

pub use app::*;
pub use builders::*;
pub use commands::*;
pub use http::*;
pub use own_cluster::*;
pub use server::*;

pub const JWT_SECRET: &str = "test-jwt-secret-test-jwt-secret-0123456789";
pub const DEFAULT_APP_PASSWORD: &str = "test-app-password-0123456789";
