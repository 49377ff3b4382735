//! Development tooling for lakehouse-api, never part of the service: `dev` (on the throwaway
//! PostgreSQL cluster of `crates/cluster`, which the tests start too) and the seed (the lab data
//! and generated volume). It depends on the service library; the service never depends on it.

// Functions stay under 120 lines (clippy.toml); tests are exempt.
#![warn(clippy::too_many_lines)]

pub mod commands;
pub mod seed;

pub use lakehouse_cluster::TempCluster;
