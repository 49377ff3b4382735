//! Development tooling, behind the `devtools` cargo feature (on by default, off in the
//! container image): the throwaway PostgreSQL cluster that `dev`, the tests and `bench/run`
//! start, and the seed (`lakehouse-api seed`: the lab data and generated volume).

pub mod cluster;
pub mod seed;

pub use cluster::TempCluster;
