//! The retry budget of a dependency, as in Finagle and linkerd: retries are paid for. Each call
//! deposits `ratio` of a token and each retry withdraws a whole one, so retries stay within
//! `ratio` × calls; a floor of `min_per_second` tokens a second, refilled continuously from the
//! moment the budget is made, lets a dependency with little traffic be retried at all.
//!
//! During a total outage the dependency therefore receives at most
//! `(1 + ratio) × calls + min_per_second × seconds` requests, `seconds` counted from the budget's
//! making: the floor starts empty and banks at most one second's worth. Deposits are forgotten
//! after [`RetryBudget::DEPOSIT_TTL`] (the balance never exceeds `ratio` × the calls of that
//! window), so a long healthy spell does not buy a retry storm later. Time is passed in.

use std::time::Duration;

use crate::clock::Millis;

use super::window::Window;
use super::RetryBudgetConfig;

#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// Tokens deposited by calls and not yet spent; at most `ratio` × the calls in `calls`.
    deposited: f64,
    /// Tokens of the per-second floor; at most `min_per_second`.
    floor: f64,
    /// When `floor` was last refilled.
    refilled_at: Millis,
    /// Calls of the last [`Self::DEPOSIT_TTL`], which cap `deposited`.
    calls: Window,
}

impl RetryBudget {
    /// How long a call's deposit can be spent.
    pub const DEPOSIT_TTL: Duration = Duration::from_secs(10);

    /// An empty budget at `now`: no deposits, the floor at 0 and filling.
    pub fn new(config: RetryBudgetConfig, now: Millis) -> Self {
        Self { config, deposited: 0.0, floor: 0.0, refilled_at: now, calls: Window::new(Self::DEPOSIT_TTL) }
    }

    pub fn config(&self) -> RetryBudgetConfig {
        self.config
    }

    /// A call was made (its first try, not a retry): deposits `ratio`.
    pub fn deposit(&mut self, now: Millis) {
        self.calls.record(now, false);
        self.deposited += self.config.ratio;
        self.expire(now);
    }

    /// Takes a token for one retry; false, and nothing taken, when there is none.
    pub fn try_withdraw(&mut self, now: Millis) -> bool {
        self.refill(now);
        self.expire(now);
        if self.deposited >= 1.0 {
            self.deposited -= 1.0;
            return true;
        }
        if self.floor >= 1.0 {
            self.floor -= 1.0;
            return true;
        }
        false
    }

    /// Whole retries that could be made now.
    pub fn available(&mut self, now: Millis) -> u64 {
        self.refill(now);
        self.expire(now);
        (self.deposited.floor() + self.floor.floor()) as u64
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = now.saturating_sub(self.refilled_at);
        if elapsed <= 0 {
            return;
        }
        let per_second = f64::from(self.config.min_per_second);
        self.floor = (self.floor + per_second * elapsed as f64 / 1000.0).min(per_second);
        self.refilled_at = now;
    }

    /// Forgets deposits older than the TTL: the balance is capped by the calls still in it.
    fn expire(&mut self, now: Millis) {
        let cap = self.config.ratio * f64::from(self.calls.totals(now).calls);
        self.deposited = self.deposited.min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_764_500_000_000;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig { ratio, min_per_second }, T0)
    }

    #[test]
    fn five_calls_at_a_fifth_pay_for_one_retry() {
        let mut b = budget(0.2, 0);
        for _ in 0..4 {
            b.deposit(T0);
        }
        assert!(!b.try_withdraw(T0), "0.8 of a token is not a retry");
        b.deposit(T0);
        assert_eq!(b.available(T0), 1);
        assert!(b.try_withdraw(T0));
        assert!(!b.try_withdraw(T0));
        assert_eq!(b.available(T0), 0);
    }

    #[test]
    fn the_floor_starts_empty_and_refills_at_min_per_second_up_to_one_second() {
        let mut b = budget(0.0, 10);
        assert!(!b.try_withdraw(T0));
        assert!(!b.try_withdraw(T0 + 99));
        assert!(b.try_withdraw(T0 + 100), "one token every 100 ms");
        assert!(!b.try_withdraw(T0 + 100));
        assert_eq!(b.available(T0 + 60_000), 10, "a quiet minute banks one second's worth");
        for _ in 0..10 {
            assert!(b.try_withdraw(T0 + 60_000));
        }
        assert!(!b.try_withdraw(T0 + 60_000));
    }

    #[test]
    fn deposits_expire_after_the_ttl() {
        let mut b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit(T0);
        }
        assert_eq!(b.available(T0), 5);
        assert_eq!(b.available(T0 + 9_999), 5);
        assert_eq!(b.available(T0 + 10_000), 0, "calls of the last 10 s back the balance");
        b.deposit(T0 + 10_000);
        b.deposit(T0 + 10_000);
        assert_eq!(b.available(T0 + 10_000), 1, "the old deposits do not come back");
    }

    #[test]
    fn a_refused_withdrawal_takes_nothing() {
        let mut b = budget(0.25, 0);
        for _ in 0..3 {
            b.deposit(T0);
        }
        for _ in 0..5 {
            assert!(!b.try_withdraw(T0));
        }
        b.deposit(T0);
        assert!(b.try_withdraw(T0));
    }

    /// The documented bound: a total outage, every call retried as often as the budget allows.
    #[test]
    fn retries_stay_within_ratio_of_calls_plus_the_floor_over_time() {
        for (ratio, floor, calls_per_second) in [(0.2, 10, 100), (0.2, 10, 5), (0.5, 3, 40), (1.0, 0, 7)] {
            let mut b = budget(ratio, floor);
            let (mut calls, mut retries) = (0u64, 0u64);
            let seconds = 30;
            for ms in 0..seconds * 1000 {
                let now = T0 + ms;
                if ms * calls_per_second % 1000 < calls_per_second {
                    b.deposit(now);
                    calls += 1;
                    // Up to 3 retries per call, each only if a token is there.
                    retries += (0..3).take_while(|_| b.try_withdraw(now)).count() as u64;
                }
            }
            let bound = ratio * calls as f64 + f64::from(floor) * seconds as f64;
            assert!(retries as f64 <= bound, "{ratio}/{floor}/{calls_per_second}: {retries} retries > {bound}");
            assert!(calls > 0);
        }
    }
}
