//! The circuit breaker as a pure state machine: `closed` → (too many failures) → `open` →
//! (`open_for` passed) → `half-open` (up to `half_open_probes` calls let through) → `closed` when
//! every probe succeeded, `open` again when one failed. Time is passed in.

use std::time::Duration;

use crate::clock::Millis;

use super::BreakerConfig;

/// The three states, named as the API and metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// The `keel_breaker_state` gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// May a call go through now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go.
    Yes,
    /// Half-open: go, as one of the probes; report its result with `probe = true`.
    Probe,
    /// Open (or half-open with every probe out): not now; try again after `retry_after`.
    No { retry_after: Duration },
}

/// What `GET /v1/functions/{name}` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerView {
    pub state: BreakerState,
    /// When it entered that state.
    pub since: Millis,
    /// Failures counted toward opening (closed), or that opened it.
    pub failures: u32,
}

/// A breaker. SKELETON: the flow-core helper implements it (with exact unit tests).
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
}

impl Breaker {
    /// Closed, since `now`.
    pub fn new(config: BreakerConfig, now: Millis) -> Self {
        let _ = now;
        Self { config }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make a call now. Moves `open` to `half-open` once `open_for` has passed.
    pub fn admit(&mut self, now: Millis) -> Admit {
        let _ = now;
        unimplemented!("flow-core")
    }

    /// A probe that was admitted will not be made after all (its caller gave up): its place is
    /// free for another.
    pub fn cancel_probe(&mut self) {
        unimplemented!("flow-core")
    }

    /// Reports how an admitted call ended (`success`: the target answered as a working target
    /// does). Returns the new state when this result changed it. Results of calls admitted
    /// before the breaker last opened count for nothing.
    pub fn record(&mut self, now: Millis, success: bool, probe: bool) -> Option<BreakerState> {
        let _ = (now, success, probe);
        unimplemented!("flow-core")
    }

    /// The state now (an `open` breaker whose `open_for` passed shows `half-open`).
    pub fn view(&self, now: Millis) -> BreakerView {
        let _ = now;
        unimplemented!("flow-core")
    }
}
