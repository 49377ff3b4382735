//! Periodic upkeep the service does for itself: partitions for the coming months, and removal
//! of idempotency keys past their 24 hours, and forgetting callers whose rate buckets are full.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::db;
use crate::edge::RateLimits;

const PERIOD: Duration = Duration::from_secs(3600);

/// Runs forever: once at start-up, then hourly. Failures are logged and retried next round, so a
/// database that is down at start-up does not stop the service.
pub async fn run(pool: PgPool, rate_limits: Arc<RateLimits>) {
    let mut ticker = tokio::time::interval(PERIOD);
    loop {
        ticker.tick().await;
        rate_limits.forget_idle();
        if let Err(error) = ensure_partitions(&pool).await {
            tracing::warn!(%error, "partition upkeep failed; retrying in an hour");
        }
        match crate::idempotency::purge(&pool).await {
            Ok(removed) => tracing::debug!(removed, "expired idempotency keys removed"),
            Err(error) => {
                tracing::warn!(%error, "idempotency key purge failed; retrying in an hour")
            }
        }
    }
}

async fn ensure_partitions(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    db::ensure_partitions(&mut tx).await?;
    tx.commit().await
}
