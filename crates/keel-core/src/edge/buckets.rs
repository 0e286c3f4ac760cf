//! One GCRA limiter ([`Gcra`]) per key — an API key id, a client address — made on first use
//! and dropped once it is full again. A full limiter is exactly what a new one would be, so
//! dropping it changes no decision; and since one fills again `burst / per_second` after its
//! last turn, a scan from many addresses holds at most that long's worth of entries.

use std::collections::HashMap;
use std::hash::Hash;

use crate::clock::Millis;
use crate::flow::rate::Gcra;
use crate::flow::RateLimitConfig;

/// How often full limiters are swept out, at most.
const SWEEP_EVERY_MS: Millis = 1_000;

/// Limiters by key, all with one configuration.
#[derive(Debug)]
pub struct Buckets<K> {
    config: RateLimitConfig,
    limiters: HashMap<K, Gcra>,
    /// When the next sweep is due (the first take sweeps an empty map, which costs nothing).
    next_sweep: Millis,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config, limiters: HashMap::new(), next_sweep: Millis::MIN }
    }

    /// Takes a turn for `key` now if one is free; else `Err(when its next turn is free)`.
    pub fn try_take(&mut self, key: &K, now: Millis) -> Result<(), Millis> {
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now.saturating_add(SWEEP_EVERY_MS);
        }
        match self.limiters.get_mut(key) {
            Some(limiter) => limiter.try_take(now),
            None => {
                let mut limiter = Gcra::new(self.config);
                let taken = limiter.try_take(now);
                self.limiters.insert(key.clone(), limiter);
                taken
            }
        }
    }

    /// Drops every limiter that is full again.
    pub fn sweep(&mut self, now: Millis) {
        let burst = self.config.burst.max(1);
        self.limiters.retain(|_, limiter| limiter.ready(now) < burst);
    }

    /// Keys with a limiter now.
    pub fn len(&self) -> usize {
        self.limiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_764_500_000_000;

    fn buckets(per_second: f64, burst: u32) -> Buckets<u32> {
        Buckets::new(RateLimitConfig { per_second, burst })
    }

    #[test]
    fn each_key_has_its_own_burst() {
        let mut buckets = buckets(10.0, 2);
        assert_eq!(buckets.try_take(&1, T0), Ok(()));
        assert_eq!(buckets.try_take(&1, T0), Ok(()));
        assert_eq!(buckets.try_take(&1, T0), Err(T0 + 100));
        assert_eq!(buckets.try_take(&2, T0), Ok(()), "another key is not held back");
        assert_eq!(buckets.try_take(&1, T0 + 100), Ok(()));
    }

    #[test]
    fn full_limiters_are_swept_and_a_scan_stays_bounded() {
        // Refilled 1 s after the last turn (burst 10 at 10 a second).
        let mut buckets = buckets(10.0, 10);
        for second in 0..60 {
            for i in 0..1_000 {
                let key = second * 1_000 + i;
                assert_eq!(buckets.try_take(&key, T0 + Millis::from(second) * 1_000), Ok(()));
            }
        }
        assert!(buckets.len() <= 2_000, "{} limiters held", buckets.len());
        buckets.sweep(T0 + 60_000);
        assert!(buckets.is_empty());
    }

    #[test]
    fn a_limiter_still_filling_is_kept() {
        let mut buckets = buckets(1.0, 2);
        buckets.try_take(&1, T0).unwrap();
        buckets.try_take(&1, T0).unwrap();
        buckets.sweep(T0 + 1_000);
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets.try_take(&1, T0 + 1_000), Ok(()));
        assert_eq!(buckets.try_take(&1, T0 + 1_000), Err(T0 + 2_000), "its state survived the sweep");
        buckets.sweep(T0 + 3_000);
        assert!(buckets.is_empty());
    }
}
