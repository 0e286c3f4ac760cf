//! The last hour of each function's attempts, minute by minute, in memory: what the console's
//! overview charts (rate, errors, p50/p99) without asking the store or a Prometheus server.
//! Fed by `Metrics::attempt_finished`; one node's own attempts, forgotten at restart.

use std::collections::BTreeMap;
use std::sync::Mutex;

use keel_core::clock::Millis;

/// Minutes kept: the overview's hour.
pub(crate) const MINUTES: usize = 60;

/// Upper bounds (ms) of the latency buckets; a last bucket holds everything slower.
const BOUNDS_MS: [i64; 27] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1_000, 1_500, 2_000, 3_000, 5_000, 7_000,
    10_000, 15_000, 30_000, 60_000,
];
const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// One minute of one function's attempts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Minute {
    /// Which minute since the epoch this slot holds (a slot is reused an hour later).
    epoch_minute: i64,
    pub(crate) attempts: u32,
    /// Attempts whose outcome was not a success.
    pub(crate) errors: u32,
    latency: [u32; BUCKETS],
}

impl Minute {
    fn merge(&mut self, other: &Minute) {
        self.attempts += other.attempts;
        self.errors += other.errors;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }

    /// The upper bound (ms) of the bucket holding quantile `q`; `None` without attempts.
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<i64> {
        let total: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(BOUNDS_MS.get(i).copied().unwrap_or(i64::MAX));
            }
        }
        None
    }
}

/// Each configured function's ring of minutes.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// A std Mutex per function: held for a few additions, never across an await.
    functions: BTreeMap<String, Mutex<[Minute; MINUTES]>>,
}

impl Recent {
    pub(crate) fn new<'a>(functions: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            functions: functions.into_iter().map(|f| (f.clone(), Mutex::new([Minute::default(); MINUTES]))).collect(),
        }
    }

    /// One attempt of `function` that ended at `ended_at` after `duration_ms`.
    pub(crate) fn record(&self, function: &str, ended_at: Millis, duration_ms: i64, success: bool) {
        let Some(ring) = self.functions.get(function) else { return };
        let minute = ended_at.div_euclid(60_000);
        let bucket = BOUNDS_MS.iter().position(|&b| duration_ms <= b).unwrap_or(BOUNDS_MS.len());
        let mut ring = ring.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut ring[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.epoch_minute != minute {
            *slot = Minute { epoch_minute: minute, ..Minute::default() };
        }
        slot.attempts += 1;
        slot.errors += u32::from(!success);
        slot.latency[bucket] += 1;
    }

    /// The last hour of `function`, oldest minute first, the current (partial) minute last.
    pub(crate) fn hour(&self, function: &str, now: Millis) -> [Minute; MINUTES] {
        let mut hour = [Minute::default(); MINUTES];
        let Some(ring) = self.functions.get(function) else { return hour };
        let ring = ring.lock().unwrap_or_else(|e| e.into_inner());
        let current = now.div_euclid(60_000);
        for (i, out) in hour.iter_mut().enumerate() {
            let minute = current - (MINUTES - 1 - i) as i64;
            let slot = &ring[minute.rem_euclid(MINUTES as i64) as usize];
            if slot.epoch_minute == minute {
                *out = *slot;
            }
        }
        hour
    }

    /// The last `minutes` of `function` (the current one included) as one.
    pub(crate) fn summary(&self, function: &str, now: Millis, minutes: usize) -> Minute {
        let mut total = Minute::default();
        for minute in self.hour(function, now).iter().rev().take(minutes) {
            total.merge(minute);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_040_000; // a minute's start

    #[test]
    fn a_minute_counts_attempts_errors_and_latency_buckets() {
        let recent = Recent::new(&["f".to_owned()]);
        for ms in [4, 4, 4, 4, 4, 4, 4, 4, 4, 250] {
            recent.record("f", T0 + 1_000, ms, ms < 100);
        }
        recent.record("unknown", T0, 1, true);
        let now = recent.summary("f", T0 + 2_000, 5);
        assert_eq!((now.attempts, now.errors), (10, 1));
        assert_eq!(now.quantile_ms(0.5), Some(5));
        assert_eq!(now.quantile_ms(0.99), Some(300));
        assert_eq!(Minute::default().quantile_ms(0.5), None);
    }

    #[test]
    fn the_hour_slides_and_old_slots_are_forgotten() {
        let recent = Recent::new(&["f".to_owned()]);
        recent.record("f", T0, 10, true);
        recent.record("f", T0 + 60_000, 10, false);
        let hour = recent.hour("f", T0 + 60_000);
        assert_eq!((hour[MINUTES - 2].attempts, hour[MINUTES - 1].errors), (1, 1));
        // An hour on, the slot of T0 is reused: T0's attempt is gone, T0 + 1 min's is the oldest.
        recent.record("f", T0 + 3_600_000, 10, true);
        let later = recent.summary("f", T0 + 3_600_000, MINUTES);
        assert_eq!((later.attempts, later.errors), (2, 1));
        assert_eq!(recent.hour("f", T0 + 3_600_000)[0].errors, 1);
        assert_eq!(recent.summary("f", T0 + 3_600_000, 1).attempts, 1);
    }
}
