//! Flow control, as pure decisions with time passed in: the circuit [`breaker`] (on functions and
//! egress dependencies), the GCRA [`rate`] limiter and a dependency's retry [`budget`]. The server
//! holds one of each per function or dependency that configures it and asks them before a call.

pub mod breaker;
pub mod budget;
pub mod rate;
mod window;

use std::time::Duration;

/// `rate_limit = { per_second = 50, burst = 10 }`: attempts started, at most `per_second` on
/// average with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Turns per second; above 0 (fractions allowed: 0.5 is one every 2 s).
    pub per_second: f64,
    /// Turns that may be taken at once after a quiet spell; at least 1.
    pub burst: u32,
}

/// `retry_budget = { ratio = 0.2, min_per_second = 10 }` of a dependency: retries stay within
/// `ratio` × calls plus `min_per_second` a second (see [`budget`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries per call, 0 to 1.
    pub ratio: f64,
    /// Retries a second allowed whatever the traffic.
    pub min_per_second: u32,
}

impl RetryBudgetConfig {
    pub const DEFAULT_RATIO: f64 = 0.2;
    pub const DEFAULT_MIN_PER_SECOND: u32 = 10;
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self { ratio: Self::DEFAULT_RATIO, min_per_second: Self::DEFAULT_MIN_PER_SECOND }
    }
}

/// `breaker = { … }`: when to stop calling a target that keeps failing, and how to try it again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Opens after this many failures in a row.
    pub consecutive_failures: u32,
    /// Also opens when failures / calls in the last `window` reach this (0 < ratio ≤ 1), once at
    /// least `min_calls` calls were made in it.
    pub failure_ratio: Option<f64>,
    pub min_calls: u32,
    pub window: Duration,
    /// How long it stays open before probes are let through.
    pub open_for: Duration,
    /// Calls let through half-open; it closes when they all succeed.
    pub half_open_probes: u32,
}

impl BreakerConfig {
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    pub const DEFAULT_MIN_CALLS: u32 = 20;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
    pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
    pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Self::DEFAULT_CONSECUTIVE_FAILURES,
            failure_ratio: None,
            min_calls: Self::DEFAULT_MIN_CALLS,
            window: Self::DEFAULT_WINDOW,
            open_for: Self::DEFAULT_OPEN_FOR,
            half_open_probes: Self::DEFAULT_HALF_OPEN_PROBES,
        }
    }
}

/// `concurrency_key = { header = "x-tenant-id", limit = 2 }`: at most `limit` attempts in flight
/// per value of that request header. Invocations without the header are not limited by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyKeyConfig {
    /// Lowercase header name.
    pub header: String,
    pub limit: u32,
}

/// A function's flow control. Every limit is off unless configured, but `max_waiting`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    /// Sync callers that may wait for a free slot; one more is answered 503 `overloaded`.
    pub max_waiting: u32,
    /// Queued and retrying async work admitted, at most; beyond, 429 `queue-full`.
    pub max_queued: Option<u64>,
    pub rate_limit: Option<RateLimitConfig>,
    pub concurrency_key: Option<ConcurrencyKeyConfig>,
    pub breaker: Option<BreakerConfig>,
}

impl FlowConfig {
    /// `max_waiting` when not configured: this many times `concurrency`.
    pub const DEFAULT_WAITING_PER_SLOT: u32 = 4;

    /// No limit but the default `max_waiting` of a function with `concurrency` slots.
    pub fn unlimited(concurrency: u32) -> Self {
        Self {
            max_waiting: concurrency.saturating_mul(Self::DEFAULT_WAITING_PER_SLOT),
            max_queued: None,
            rate_limit: None,
            concurrency_key: None,
            breaker: None,
        }
    }
}
