//! The pool's pure bookkeeping: cold-start latencies (count, last, median) and the restart
//! backoff that keeps a crash-looping program from spinning.

use std::collections::VecDeque;
use std::time::Duration;

/// Cold starts kept for the median.
const LATENCY_WINDOW: usize = 128;
/// First delay before restarting after a crash or a failed start; doubles per failure in a row.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// An instance that was ready this long before it died ends a crash streak: its death is news,
/// not a loop.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Cold starts: process start → ready.
#[derive(Debug, Default, Clone)]
pub(crate) struct ColdStarts {
    pub(crate) count: u64,
    pub(crate) last: Option<Duration>,
    recent: VecDeque<Duration>,
}

impl ColdStarts {
    pub(super) fn record(&mut self, latency: Duration) {
        self.count += 1;
        self.last = Some(latency);
        if self.recent.len() == LATENCY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(latency);
    }

    /// The median of the last [`LATENCY_WINDOW`] cold starts (the lower middle of an even count).
    pub(crate) fn p50(&self) -> Option<Duration> {
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get(sorted.len().saturating_sub(1) / 2).copied()
    }
}

/// Failures in a row (crashes, failed starts) and the delay they earn before the next start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct CrashStreak {
    pub(super) failures: u32,
}

impl CrashStreak {
    /// Counts a failure; `stable` says the instance had been ready for [`STABLE_AFTER`].
    pub(super) fn failed(&mut self, stable: bool) {
        self.failures = if stable { 1 } else { self.failures.saturating_add(1) };
    }

    /// How long to wait after the latest failure before starting again: none before the first
    /// failure, then 100 ms, 200 ms, 400 ms … up to 30 s.
    pub(super) fn restart_delay(self) -> Duration {
        match self.failures {
            0 => Duration::ZERO,
            n => FIRST_RESTART_DELAY.saturating_mul(1 << (n - 1).min(16)).min(MAX_RESTART_DELAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_over_recent_cold_starts() {
        let mut starts = ColdStarts::default();
        assert_eq!(starts.p50(), None);
        for ms in [30, 10, 20, 1000] {
            starts.record(Duration::from_millis(ms));
        }
        assert_eq!((starts.count, starts.last), (4, Some(Duration::from_millis(1000))));
        assert_eq!(starts.p50(), Some(Duration::from_millis(20)));
        for _ in 0..LATENCY_WINDOW {
            starts.record(Duration::from_millis(5));
        }
        assert_eq!(starts.p50(), Some(Duration::from_millis(5)));
        assert_eq!(starts.count, 4 + LATENCY_WINDOW as u64);
    }

    #[test]
    fn restart_delay_doubles_per_failure_in_a_row_up_to_a_cap() {
        let mut streak = CrashStreak::default();
        assert_eq!(streak.restart_delay(), Duration::ZERO);
        let delays: Vec<u64> = (0..4)
            .map(|_| {
                streak.failed(false);
                streak.restart_delay().as_millis() as u64
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800]);
        for _ in 0..40 {
            streak.failed(false);
        }
        assert_eq!(streak.restart_delay(), MAX_RESTART_DELAY);
        streak.failed(true);
        assert_eq!(streak.restart_delay(), Duration::from_millis(100));
    }
}
