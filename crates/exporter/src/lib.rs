//! The lake export: the journal, loans (type 2), installments and payments from the core's
//! PostgreSQL to Apache Iceberg tables that DuckDB, Trino and pyiceberg read, incrementally and
//! exactly once, reconciled to the trial balance, with nothing personal in them.
//!
//! Its own binary (`lakehouse-export`), so that the service and its tests never compile arrow,
//! parquet or avro (docs/decisions/0021-lake-export.md).

// Functions stay under 120 lines (clippy.toml); tests are exempt.
#![warn(clippy::too_many_lines)]

pub mod catalog;
pub mod columns;
pub mod control;
pub mod follow;
pub mod run;
pub mod storage;
pub mod tables;
pub mod tokens;

pub use run::{Export, Report};

/// Why a run stopped. A failed run commits nothing: the lake and its position stay as the last
/// good run left them.
#[derive(Debug)]
pub enum Failure {
    Config(String),
    /// Another run of the same lake holds it, or moved its position while this one ran.
    Busy(String),
    /// The lake's totals differ from the trial balance.
    ControlTotals(String),
    Database(sqlx::Error),
    Iceberg(iceberg::Error),
    Arrow(arrow_schema::ArrowError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Config(m) => write!(f, "configuration: {m}"),
            Failure::Busy(m) => write!(f, "{m}"),
            Failure::ControlTotals(m) => write!(f, "control totals differ: {m}"),
            Failure::Database(e) => write!(f, "database: {e}"),
            Failure::Iceberg(e) => write!(f, "iceberg: {e}"),
            Failure::Arrow(e) => write!(f, "arrow: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Database(e)
    }
}

impl From<iceberg::Error> for Failure {
    fn from(e: iceberg::Error) -> Self {
        Failure::Iceberg(e)
    }
}

impl From<arrow_schema::ArrowError> for Failure {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Failure::Arrow(e)
    }
}
