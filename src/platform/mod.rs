//! The bottom layer: what every resource stands on and no business rule lives in.

pub mod auth;
pub mod conditional;
pub mod config;
pub mod csv;
pub mod db;
pub mod edge;
pub mod error;
pub mod extract;
pub mod maintenance;
pub mod pagination;
pub mod pii;
pub mod retry;
pub mod routing;
pub mod server;
pub mod state;
pub mod telemetry;
