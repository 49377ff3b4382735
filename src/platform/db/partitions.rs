//! Partitions on demand: a write for a year (loans) or month (payments) with no partition yet.
//!
//! Partitions for the near future are made ahead (`migrate` and the hourly upkeep). For anything
//! else a handler calls [`Partitions::ensure_loans`] / [`Partitions::ensure_payments`] before it
//! writes. Creation runs on a small pool of its own and commits at once, so the request's
//! transaction never holds the parent table's exclusive lock, and a request holding the last
//! connection of the main pool cannot starve it. Partitions known to exist are remembered, so
//! the common case costs one look into a set.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, Utc};
use sqlx::PgPool;

use crate::platform::error::ApiError;

/// The years the partition functions accept (migrations/0002_core.sql), whatever the caller.
pub const FIRST_YEAR: i32 = 1900;
pub const LAST_YEAR: i32 = 2100;

pub struct Partitions {
    pool: PgPool,
    loan_years: Mutex<HashSet<i32>>,
    payment_months: Mutex<HashSet<(i32, u32)>>,
    /// One creator at a time per process; the database's advisory lock covers other processes.
    creating: tokio::sync::Mutex<()>,
}

/// 400 for a date outside the years the schema keeps partitions for (a last line of defence:
/// requests are held to the narrower [`DateWindow`] first).
pub fn check_window(field: &str, at: DateTime<Utc>) -> Result<(), ApiError> {
    if (FIRST_YEAR..=LAST_YEAR).contains(&at.year()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{field} must be between {FIRST_YEAR}-01-01 and {LAST_YEAR}-12-31"
        )))
    }
}

/// The dates a client may give loans and payments: not in the future (beyond a small clock
/// skew) and not further back than the backdating limit. Each month or year inside the window
/// gets its partition on demand; owner paths (the lab data, the seed) write any date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateWindow {
    pub backdating_limit_days: u32,
}

/// How far ahead of the server's clock a client's "now" may be.
pub const CLOCK_SKEW_SECONDS: i64 = 300;

impl DateWindow {
    /// 422 naming `field` when `at` is outside the window at `now`.
    pub fn check(
        &self,
        field: &'static str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        if at > now + chrono::Duration::seconds(CLOCK_SKEW_SECONDS) {
            return Err(ApiError::invalid_field(field, "must not be in the future"));
        }
        let earliest = now - chrono::Duration::days(i64::from(self.backdating_limit_days));
        if at < earliest {
            return Err(ApiError::invalid_field(
                field,
                format!(
                    "must be no more than {} days in the past",
                    self.backdating_limit_days
                ),
            ));
        }
        Ok(())
    }
}

impl Partitions {
    /// `pool` is the dedicated maintenance pool (a connection or two as the service login).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            loan_years: Mutex::default(),
            payment_months: Mutex::default(),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn ensure_loans(&self, at: DateTime<Utc>) -> Result<(), ApiError> {
        check_window("application_date", at)?;
        let key = at.year();
        self.ensure(
            &self.loan_years,
            key,
            "SELECT core.ensure_loans_partition($1)",
            at,
        )
        .await
    }

    pub async fn ensure_payments(&self, at: DateTime<Utc>) -> Result<(), ApiError> {
        check_window("payment_date", at)?;
        let key = (at.year(), at.month());
        self.ensure(
            &self.payment_months,
            key,
            "SELECT core.ensure_payments_partition($1)",
            at,
        )
        .await
    }

    async fn ensure<K: std::hash::Hash + Eq + Copy>(
        &self,
        known: &Mutex<HashSet<K>>,
        key: K,
        sql: &'static str,
        at: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let is_known =
            |known: &Mutex<HashSet<K>>| known.lock().map(|set| set.contains(&key)).unwrap_or(false);
        if is_known(known) {
            return Ok(());
        }
        let _creator = self.creating.lock().await;
        if is_known(known) {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql).bind(at).execute(&mut *tx).await?;
        tx.commit().await?;
        if let Ok(mut set) = known.lock() {
            set.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_now_and_starts_at_the_backdating_limit() {
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        let window = DateWindow {
            backdating_limit_days: 10,
        };
        assert!(window.check("d", now, now).is_ok());
        assert!(window
            .check("d", now + chrono::Duration::seconds(60), now)
            .is_ok());
        assert!(window
            .check("d", now + chrono::Duration::minutes(10), now)
            .is_err());
        assert!(window
            .check("d", now - chrono::Duration::days(10), now)
            .is_ok());
        assert!(window
            .check("d", now - chrono::Duration::days(11), now)
            .is_err());
    }
}
