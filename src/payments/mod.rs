//! Payments: the money that moves on a loan.

pub mod model;
pub mod repo;
