//! `lakehouse-export --follow`: how long to wait between runs.

use std::time::Duration;

/// The longest wait after failures, unless `min_gap` is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The least time between two runs' starts: `min_gap`, doubled for each failed run in a row, at
/// most an hour (or `min_gap`, if that is longer).
pub fn gap(min_gap: Duration, failures: u32) -> Duration {
    let backoff = min_gap.saturating_mul(1 << failures.min(16));
    backoff.min(MAX_BACKOFF.max(min_gap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_the_gap_up_to_an_hour() {
        let minute = Duration::from_secs(60);
        assert_eq!(gap(minute, 0), minute);
        assert_eq!(gap(minute, 1), 2 * minute);
        assert_eq!(gap(minute, 5), 32 * minute);
        assert_eq!(gap(minute, 6), MAX_BACKOFF);
        assert_eq!(gap(minute, u32::MAX), MAX_BACKOFF);
        assert_eq!(gap(Duration::ZERO, 3), Duration::ZERO);
        let two_hours = Duration::from_secs(7200);
        assert_eq!(gap(two_hours, 4), two_hours);
    }
}
