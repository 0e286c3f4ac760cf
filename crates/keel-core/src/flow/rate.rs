//! The generic cell rate algorithm (GCRA): one "theoretical arrival time" per limiter, advanced
//! by one emission interval per turn taken. Time is passed in, so every decision is exact and
//! testable without a clock; turns can be reserved in the future (async work is delayed, not
//! refused) or refused when they would come too late (a sync call's deadline).
//!
//! Time is kept in nanoseconds inside (`i128`, so epoch times never overflow), so rates up to a
//! million a second and fractions such as 0.5 a second are exact to the nanosecond; the times
//! handed back are whole milliseconds rounded up, so a caller that waits until then finds its
//! turn free.

use crate::clock::Millis;

use super::RateLimitConfig;

const NANOS_PER_MILLI: i128 = 1_000_000;
const NANOS_PER_SECOND: f64 = 1e9;

/// A rate limiter: at most `per_second` turns a second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct Gcra {
    config: RateLimitConfig,
    /// The emission interval T = 1 / `per_second`, in nanoseconds (at least 1).
    interval: i128,
    /// How far ahead of now the theoretical arrival time may run: (`burst` − 1) × T.
    tolerance: i128,
    /// Theoretical arrival time of the next turn, in nanoseconds since the epoch. Starts in the
    /// distant past: a new limiter has its whole burst free.
    tat: i128,
}

impl Gcra {
    pub fn new(config: RateLimitConfig) -> Self {
        // Validation keeps per_second in (0, 1e6]; clamp anyway so that no input overflows.
        let interval = (NANOS_PER_SECOND / config.per_second).round();
        let interval =
            if interval.is_finite() { (interval as i128).clamp(1, i64::MAX as i128) } else { i64::MAX as i128 };
        let tolerance = interval * i128::from(config.burst.max(1) - 1);
        Self { config, interval, tolerance, tat: i128::from(i64::MIN) }
    }

    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// Takes a turn now if one is free; else `Err(when the next turn is free)`, and nothing is
    /// taken.
    pub fn try_take(&mut self, now: Millis) -> Result<(), Millis> {
        let now_ns = nanos(now);
        let turn = self.next_turn(now_ns);
        if turn > now_ns {
            return Err(millis_ceil(turn));
        }
        self.take(now_ns);
        Ok(())
    }

    /// Reserves the next turn unless it comes after `latest`: `Ok(when it comes)` (≥ `now`;
    /// `now` when one is free), or `Err(when it would come)` and nothing is taken.
    ///
    /// Reserved turns queue up: each reservation moves the next one a further 1 / `per_second`
    /// into the future.
    pub fn reserve_by(&mut self, now: Millis, latest: Millis) -> Result<Millis, Millis> {
        let now_ns = nanos(now);
        let turn = millis_ceil(self.next_turn(now_ns));
        if turn > latest {
            return Err(turn);
        }
        self.take(now_ns);
        Ok(turn)
    }

    /// How many turns could be taken right now, one after another, without waiting (0 to
    /// `burst`).
    pub fn ready(&self, now: Millis) -> u32 {
        let now_ns = nanos(now);
        // Turn k (0-based) is free at once when max(tat, now) + k·T − tolerance ≤ now.
        let slack = self.tolerance - (self.tat.max(now_ns) - now_ns);
        if slack < 0 {
            return 0;
        }
        let turns = slack / self.interval + 1;
        u32::try_from(turns).unwrap_or(u32::MAX).min(self.config.burst.max(1))
    }

    /// The earliest instant (ns) the next turn conforms: `now` if it is free.
    fn next_turn(&self, now_ns: i128) -> i128 {
        now_ns.max(self.tat - self.tolerance)
    }

    fn take(&mut self, now_ns: i128) {
        // An idle limiter's tat lies in the past; starting from now is what caps the bank at
        // `burst`.
        self.tat = self.tat.max(now_ns) + self.interval;
    }
}

fn nanos(ms: Millis) -> i128 {
    i128::from(ms) * NANOS_PER_MILLI
}

/// Rounds up, so that a caller told "at t" is not refused at t.
fn millis_ceil(ns: i128) -> Millis {
    let ms = ns.div_euclid(NANOS_PER_MILLI) + i128::from(ns.rem_euclid(NANOS_PER_MILLI) != 0);
    Millis::try_from(ms).unwrap_or(if ms > 0 { Millis::MAX } else { Millis::MIN })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcra(per_second: f64, burst: u32) -> Gcra {
        Gcra::new(RateLimitConfig { per_second, burst })
    }

    /// An arbitrary epoch time, so that nothing depends on starting at 0.
    const T0: Millis = 1_764_500_000_000;

    #[test]
    fn a_burst_is_free_at_once_then_turns_are_spaced_by_the_interval() {
        let mut limiter = gcra(20.0, 5);
        for _ in 0..5 {
            assert_eq!(limiter.try_take(T0), Ok(()));
        }
        assert_eq!(limiter.try_take(T0), Err(T0 + 50));
        assert_eq!(limiter.try_take(T0 + 49), Err(T0 + 50));
        assert_eq!(limiter.try_take(T0 + 50), Ok(()));
        assert_eq!(limiter.try_take(T0 + 50), Err(T0 + 100));
        assert_eq!(limiter.try_take(T0 + 100), Ok(()));
    }

    #[test]
    fn a_refused_take_changes_nothing() {
        let mut limiter = gcra(20.0, 1);
        assert_eq!(limiter.try_take(T0), Ok(()));
        for _ in 0..100 {
            assert_eq!(limiter.try_take(T0 + 10), Err(T0 + 50));
        }
        assert_eq!(limiter.try_take(T0 + 50), Ok(()));
        assert_eq!(limiter.try_take(T0 + 50), Err(T0 + 100));
    }

    #[test]
    fn reserved_turns_queue_up_one_interval_apart() {
        let mut limiter = gcra(20.0, 1);
        let far = T0 + 10_000;
        let turns: Vec<_> = (0..4).map(|_| limiter.reserve_by(T0, far)).collect();
        assert_eq!(turns, [Ok(T0), Ok(T0 + 50), Ok(T0 + 100), Ok(T0 + 150)]);
        // The queue also holds back try_take.
        assert_eq!(limiter.try_take(T0 + 100), Err(T0 + 200));
        assert_eq!(limiter.try_take(T0 + 200), Ok(()));
    }

    #[test]
    fn reservations_after_a_burst_start_one_interval_later() {
        let mut limiter = gcra(20.0, 5);
        let far = T0 + 10_000;
        let turns: Vec<_> = (0..7).map(|_| limiter.reserve_by(T0, far)).collect();
        assert_eq!(turns, [Ok(T0), Ok(T0), Ok(T0), Ok(T0), Ok(T0), Ok(T0 + 50), Ok(T0 + 100)]);
    }

    #[test]
    fn a_turn_after_the_deadline_is_refused_and_not_taken() {
        let mut limiter = gcra(20.0, 1);
        assert_eq!(limiter.reserve_by(T0, T0), Ok(T0));
        assert_eq!(limiter.reserve_by(T0, T0 + 49), Err(T0 + 50));
        assert_eq!(limiter.reserve_by(T0, T0 + 49), Err(T0 + 50), "the refusal took nothing");
        assert_eq!(limiter.reserve_by(T0, T0 + 50), Ok(T0 + 50), "a turn exactly at the deadline is in time");
        assert_eq!(limiter.reserve_by(T0 + 20, T0 + 99), Err(T0 + 100));
        assert_eq!(limiter.ready(T0 + 100), 1);
    }

    #[test]
    fn ready_counts_the_turns_free_back_to_back() {
        let mut limiter = gcra(20.0, 5);
        assert_eq!(limiter.ready(T0), 5);
        limiter.try_take(T0).unwrap();
        limiter.try_take(T0).unwrap();
        assert_eq!(limiter.ready(T0), 3);
        assert_eq!(limiter.ready(T0 + 49), 3);
        assert_eq!(limiter.ready(T0 + 50), 4);
        assert_eq!(limiter.ready(T0 + 100), 5);
        assert_eq!(limiter.ready(T0 + 1_000), 5);
        for _ in 0..3 {
            limiter.try_take(T0).unwrap();
        }
        assert_eq!(limiter.ready(T0), 0);
        // Reservations into the future count against what is ready.
        assert_eq!(limiter.reserve_by(T0, T0 + 1_000), Ok(T0 + 50));
        assert_eq!(limiter.ready(T0 + 50), 0);
        assert_eq!(limiter.ready(T0 + 100), 1);
    }

    #[test]
    fn ready_agrees_with_try_take() {
        let mut limiter = gcra(7.0, 4);
        for now in (T0..T0 + 3_000).step_by(37) {
            let ready = limiter.ready(now);
            let mut probe = limiter.clone();
            let taken = (0..10).take_while(|_| probe.try_take(now).is_ok()).count();
            assert_eq!(ready as usize, taken, "at {now}");
            let _ = limiter.try_take(now);
        }
    }

    #[test]
    fn fractional_rates_space_turns_by_more_than_a_second() {
        let mut limiter = gcra(0.5, 1);
        assert_eq!(limiter.try_take(T0), Ok(()));
        assert_eq!(limiter.try_take(T0 + 1_999), Err(T0 + 2_000));
        assert_eq!(limiter.try_take(T0 + 2_000), Ok(()));
        assert_eq!(limiter.reserve_by(T0 + 2_000, T0 + 10_000), Ok(T0 + 4_000));
    }

    #[test]
    fn intervals_that_are_not_whole_milliseconds_do_not_drift() {
        // 3 a second: T = 333.333… ms. Turns are due at 333.3, 666.6 and 1000 ms; each is handed
        // out at the millisecond rounded up, and three turns still take exactly a second.
        let mut limiter = gcra(3.0, 1);
        let far = T0 + 10_000;
        let turns: Vec<_> = (0..4).map(|_| limiter.reserve_by(T0, far)).collect();
        assert_eq!(turns, [Ok(T0), Ok(T0 + 334), Ok(T0 + 667), Ok(T0 + 1_000)]);
    }

    #[test]
    fn a_million_a_second_allows_a_thousand_a_millisecond() {
        let mut limiter = gcra(1_000_000.0, 1);
        let taken = (0..5_000).take_while(|_| limiter.try_take(T0).is_ok()).count();
        assert_eq!(taken, 1);
        let in_time = (0..5_000).take_while(|_| limiter.reserve_by(T0, T0 + 1).is_ok()).count();
        assert_eq!(in_time, 1_000, "turns at 1 µs, …, 1000 µs");
        assert_eq!(limiter.ready(T0 + 2), 1);
    }

    #[test]
    fn a_long_idle_spell_banks_no_more_than_the_burst() {
        let mut limiter = gcra(20.0, 3);
        limiter.try_take(T0).unwrap();
        let later = T0 + 24 * 3_600_000;
        assert_eq!(limiter.ready(later), 3);
        for _ in 0..3 {
            assert_eq!(limiter.try_take(later), Ok(()));
        }
        assert_eq!(limiter.try_take(later), Err(later + 50));
    }

    #[test]
    fn extreme_rates_do_not_overflow() {
        let mut slow = gcra(1e-12, u32::MAX);
        assert_eq!(slow.try_take(T0), Ok(()));
        assert_eq!(slow.ready(T0), u32::MAX - 1);
        let mut fast = gcra(1e12, 1);
        assert_eq!(fast.try_take(T0), Ok(()));
        assert_eq!(fast.try_take(T0), Err(T0 + 1));
    }
}
