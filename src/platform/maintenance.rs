//! Periodic upkeep of the service's own memory: forgetting callers whose rate buckets are full.
//! (Partitions and retention are jobs the scheduler runs: `crate::domain::jobs::scheduler`.)

use std::sync::Arc;
use std::time::Duration;

use crate::platform::edge::RateLimits;

const PERIOD: Duration = Duration::from_secs(3600);

/// Runs forever: once at start-up, then hourly.
pub async fn run(rate_limits: Arc<RateLimits>) {
    let mut ticker = tokio::time::interval(PERIOD);
    loop {
        ticker.tick().await;
        rate_limits.forget_idle();
    }
}
