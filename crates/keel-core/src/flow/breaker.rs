//! The circuit breaker as a pure state machine: `closed` → (too many failures) → `open` →
//! (`open_for` passed) → `half-open` (up to `half_open_probes` calls let through) → `closed` when
//! every probe succeeded, `open` again when one failed. Time is passed in.
//!
//! Closed, it opens on `consecutive_failures` failures in a row, or — with a `failure_ratio` —
//! when the last `window` holds at least `min_calls` calls of which that share failed. The window
//! slides in tenths (see `window`): a call is remembered for between 0.9 and 1 × `window`. Its
//! `failures` are then the ones in a row, or the window's failures when the ratio opened it; a
//! failed probe reopens it with `failures` = 1. Half-open with every probe place taken, callers
//! are told to come back after [`Breaker::HALF_OPEN_RETRY_AFTER`] (or `open_for`, if shorter).

use std::time::Duration;

use crate::clock::Millis;

use super::window::Window;
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

/// A breaker. Results are reported by the caller; only results of calls admitted in the current
/// state count (a non-probe result while not closed, a probe result while not half-open, is
/// ignored), so calls in flight when it opened cannot reopen or close it.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    /// As last written; an `Open` whose `open_for` has passed is half-open (see [`Self::current`]).
    state: BreakerState,
    since: Millis,
    /// Closed: failures in a row so far. Open and half-open: the failures that opened it.
    failures: u32,
    /// Closed only: calls and failures of the last `window`.
    window: Window,
    /// Half-open only: probes handed out and not yet reported or cancelled.
    probes_out: u32,
    /// Half-open only: probes that succeeded.
    probes_ok: u32,
}

impl Breaker {
    /// The longest a caller refused while half-open (every probe place taken) is told to wait:
    /// the probes out usually answer within about that, and `Retry-After` counts whole seconds.
    /// Shorter when `open_for` is shorter.
    pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

    /// Closed, since `now`.
    pub fn new(config: BreakerConfig, now: Millis) -> Self {
        Self {
            window: Window::new(config.window),
            config,
            state: BreakerState::Closed,
            since: now,
            failures: 0,
            probes_out: 0,
            probes_ok: 0,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make a call now. Moves `open` to `half-open` once `open_for` has passed.
    pub fn admit(&mut self, now: Millis) -> Admit {
        self.advance(now);
        match self.state {
            BreakerState::Closed => Admit::Yes,
            BreakerState::Open => {
                let wait = self.reopens_at().saturating_sub(now).max(0);
                Admit::No { retry_after: Duration::from_millis(wait as u64) }
            }
            BreakerState::HalfOpen if self.probes_out < self.config.half_open_probes => {
                self.probes_out += 1;
                Admit::Probe
            }
            BreakerState::HalfOpen => Admit::No { retry_after: Self::HALF_OPEN_RETRY_AFTER.min(self.config.open_for) },
        }
    }

    /// A probe that was admitted will not be made after all (its caller gave up): its place is
    /// free for another.
    pub fn cancel_probe(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_out = self.probes_out.saturating_sub(1);
        }
    }

    /// Reports how an admitted call ended (`success`: the target answered as a working target
    /// does). Returns the new state when this result changed it. Results of calls admitted
    /// before the breaker last opened count for nothing.
    pub fn record(&mut self, now: Millis, success: bool, probe: bool) -> Option<BreakerState> {
        self.advance(now);
        match (self.state, probe) {
            (BreakerState::Closed, false) => self.record_closed(now, success),
            // A probe result counts only while a probe is out: one from an earlier half-open
            // spell (reopened since) finds none out and is ignored.
            (BreakerState::HalfOpen, true) if self.probes_out > 0 => {
                self.probes_out -= 1;
                if !success {
                    self.open(now, 1);
                    return Some(BreakerState::Open);
                }
                self.probes_ok += 1;
                if self.probes_ok < self.config.half_open_probes {
                    return None;
                }
                self.close(now);
                Some(BreakerState::Closed)
            }
            _ => None,
        }
    }

    /// The state now (an `open` breaker whose `open_for` passed shows `half-open`).
    pub fn view(&self, now: Millis) -> BreakerView {
        let (state, since) = self.current(now);
        BreakerView { state, since, failures: self.failures }
    }

    fn record_closed(&mut self, now: Millis, success: bool) -> Option<BreakerState> {
        self.window.record(now, !success);
        self.failures = if success { 0 } else { self.failures.saturating_add(1) };
        if self.failures >= self.config.consecutive_failures {
            self.open(now, self.failures);
            return Some(BreakerState::Open);
        }
        let ratio = self.config.failure_ratio?;
        // Checked after every call, a success included: the rule is about the window, and a
        // success can be the call that brings it to `min_calls`.
        let totals = self.window.totals(now);
        let ratio_reached = f64::from(totals.failures) / f64::from(totals.calls.max(1)) >= ratio;
        if totals.calls >= self.config.min_calls && ratio_reached {
            self.open(now, totals.failures);
            return Some(BreakerState::Open);
        }
        None
    }

    fn open(&mut self, now: Millis, failures: u32) {
        self.state = BreakerState::Open;
        self.since = now;
        self.failures = failures;
        self.window.clear();
        self.probes_out = 0;
        self.probes_ok = 0;
    }

    fn close(&mut self, now: Millis) {
        self.state = BreakerState::Closed;
        self.since = now;
        self.failures = 0;
        self.window.clear();
        self.probes_out = 0;
        self.probes_ok = 0;
    }

    /// Writes down the move from open to half-open once it is due.
    fn advance(&mut self, now: Millis) {
        let (state, since) = self.current(now);
        if state != self.state {
            self.state = state;
            self.since = since;
            self.probes_out = 0;
            self.probes_ok = 0;
        }
    }

    /// State and since at `now`: half-open from the instant `open_for` passed, whenever asked.
    fn current(&self, now: Millis) -> (BreakerState, Millis) {
        match self.state {
            BreakerState::Open if now >= self.reopens_at() => (BreakerState::HalfOpen, self.reopens_at()),
            state => (state, self.since),
        }
    }

    fn reopens_at(&self) -> Millis {
        self.since.saturating_add(millis_ceil(self.config.open_for))
    }
}

fn millis_ceil(duration: Duration) -> Millis {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    Millis::try_from(millis).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests;
