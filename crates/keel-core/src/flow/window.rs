//! Calls and failures over a sliding time window, kept in [`BUCKETS`] buckets of `window /
//! BUCKETS` each: a call counts until its bucket is `BUCKETS` buckets old, so it is remembered
//! for between 0.9 and 1 × the window. Memory stays fixed however many calls are made.

use std::time::Duration;

use crate::clock::Millis;

/// How finely the window slides.
pub(super) const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// `now / width` of the calls counted here; a bucket holding an older index is stale.
    index: i64,
    calls: u32,
    failures: u32,
}

const EMPTY: Bucket = Bucket { index: i64::MIN, calls: 0, failures: 0 };

#[derive(Debug, Clone)]
pub(super) struct Window {
    /// Milliseconds each bucket spans; at least 1.
    width: i64,
    buckets: [Bucket; BUCKETS],
}

/// Calls and failures in the window at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Totals {
    pub(super) calls: u32,
    pub(super) failures: u32,
}

impl Window {
    pub(super) fn new(window: Duration) -> Self {
        let millis = window.as_millis().div_ceil(BUCKETS as u128);
        let width = i64::try_from(millis).unwrap_or(i64::MAX).max(1);
        Self { width, buckets: [EMPTY; BUCKETS] }
    }

    pub(super) fn record(&mut self, now: Millis, failed: bool) {
        let index = now.div_euclid(self.width);
        let bucket = &mut self.buckets[index.rem_euclid(BUCKETS as i64) as usize];
        if bucket.index != index {
            *bucket = Bucket { index, ..EMPTY };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failed));
    }

    pub(super) fn totals(&self, now: Millis) -> Totals {
        let current = now.div_euclid(self.width);
        let live = |b: &&Bucket| b.index <= current && b.index > current.saturating_sub(BUCKETS as i64);
        self.buckets.iter().filter(live).fold(Totals { calls: 0, failures: 0 }, |sum, b| Totals {
            calls: sum.calls.saturating_add(b.calls),
            failures: sum.failures.saturating_add(b.failures),
        })
    }

    pub(super) fn clear(&mut self) {
        self.buckets = [EMPTY; BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_for_ten_buckets_then_drop_out() {
        // 10 s window: 1 s buckets. A call at 0.5 s lives in bucket 0, counted until 10 s.
        let mut window = Window::new(Duration::from_secs(10));
        window.record(500, true);
        window.record(1_200, false);
        assert_eq!(window.totals(1_200), Totals { calls: 2, failures: 1 });
        assert_eq!(window.totals(9_999), Totals { calls: 2, failures: 1 });
        assert_eq!(window.totals(10_000), Totals { calls: 1, failures: 0 });
        assert_eq!(window.totals(11_000), Totals { calls: 0, failures: 0 });
    }

    #[test]
    fn a_reused_bucket_forgets_its_old_calls() {
        let mut window = Window::new(Duration::from_secs(10));
        window.record(0, true);
        window.record(10_000, false);
        assert_eq!(window.totals(10_000), Totals { calls: 1, failures: 0 });
    }

    #[test]
    fn a_window_shorter_than_ten_milliseconds_has_one_millisecond_buckets() {
        let mut window = Window::new(Duration::from_millis(3));
        window.record(0, true);
        assert_eq!(window.totals(9), Totals { calls: 1, failures: 1 });
        assert_eq!(window.totals(10), Totals { calls: 0, failures: 0 });
    }
}
