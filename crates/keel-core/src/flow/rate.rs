//! The generic cell rate algorithm (GCRA): one "theoretical arrival time" per limiter, advanced
//! by one emission interval per turn taken. Time is passed in, so every decision is exact and
//! testable without a clock; turns can be reserved in the future (async work is delayed, not
//! refused) or refused when they would come too late (a sync call's deadline).

use crate::clock::Millis;

use super::RateLimitConfig;

/// A rate limiter. SKELETON: the flow-core helper implements it (with exact unit tests).
#[derive(Debug, Clone)]
pub struct Gcra {
    config: RateLimitConfig,
}

impl Gcra {
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> RateLimitConfig {
        self.config
    }

    /// Takes a turn now if one is free; else `Err(when the next turn is free)`, and nothing is
    /// taken.
    pub fn try_take(&mut self, now: Millis) -> Result<(), Millis> {
        let _ = now;
        unimplemented!("flow-core")
    }

    /// Reserves the next turn unless it comes after `latest`: `Ok(when it comes)` (≥ `now`;
    /// `now` when one is free), or `Err(when it would come)` and nothing is taken.
    pub fn reserve_by(&mut self, now: Millis, latest: Millis) -> Result<Millis, Millis> {
        let _ = (now, latest);
        unimplemented!("flow-core")
    }

    /// How many turns could be taken right now, one after another, without waiting.
    pub fn ready(&self, now: Millis) -> u32 {
        let _ = now;
        unimplemented!("flow-core")
    }
}
