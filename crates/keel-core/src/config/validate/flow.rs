//! Checks of a function's flow control keys: `max_waiting`, `max_queued`, `rate_limit`,
//! `concurrency_key` and `breaker` (DESIGN.md, "Flow control (functions)").

use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::{RawBreaker, RawConcurrencyKey, RawFunction, RawRateLimit};
use crate::flow::{BreakerConfig, ConcurrencyKeyConfig, FlowConfig, RateLimitConfig};

/// Largest value of the counting keys (`max_waiting`, `burst`, breaker counts).
const MAX_COUNT: i64 = 1_000_000;
/// Highest `rate_limit.per_second`: one turn a microsecond.
const MAX_PER_SECOND: f64 = 1_000_000.0;
/// `burst` when `rate_limit` leaves it out: turns strictly spaced, none banked.
pub(super) const DEFAULT_BURST: u32 = 1;
const RATE_LIMIT_EXAMPLE: &str = "rate_limit = { per_second = 50, burst = 10 }";
const CONCURRENCY_KEY_EXAMPLE: &str = r#"concurrency_key = { header = "x-tenant-id", limit = 2 }"#;

/// RFC 9110 `token`: what an HTTP field name may be made of.
pub(super) fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Checker {
    /// `concurrency` is the function's, `None` when it was itself invalid (already reported).
    pub(super) fn flow(&mut self, name: &str, raw: &RawFunction, concurrency: Option<u32>) -> Option<FlowConfig> {
        let at = |field: &str| key(&["functions", name, field]);
        let max_waiting = match raw.max_waiting {
            None => concurrency.map(|c| FlowConfig::unlimited(c).max_waiting),
            Some(n) => self.count(at("max_waiting"), Some(n), 0, 0, MAX_COUNT),
        };
        let max_queued = match raw.max_queued {
            None => Some(None),
            Some(n) if n >= 1 => Some(Some(n as u64)),
            Some(n) => {
                self.report(at("max_queued"), Anchor::Value, format!("must be at least 1 (got {n})"));
                None
            }
        };
        let rate_limit = match &raw.rate_limit {
            None => Some(None),
            Some(rate) => self.rate_limit(at("rate_limit"), rate).map(Some),
        };
        let concurrency_key = match &raw.concurrency_key {
            None => Some(None),
            Some(ck) => self.concurrency_key(at("concurrency_key"), ck, concurrency).map(Some),
        };
        let breaker = match &raw.breaker {
            None => Some(None),
            Some(breaker) => self.breaker(at("breaker"), breaker).map(Some),
        };
        Some(FlowConfig {
            max_waiting: max_waiting?,
            max_queued: max_queued?,
            rate_limit: rate_limit?,
            concurrency_key: concurrency_key?,
            breaker: breaker?,
        })
    }

    pub(super) fn rate_limit(&mut self, base: Vec<String>, raw: &RawRateLimit) -> Option<RateLimitConfig> {
        let at = |field: &str| [base.clone(), vec![field.to_owned()]].concat();
        let per_second = match raw.per_second {
            None => {
                let message = format!("missing required key `per_second`, like {RATE_LIMIT_EXAMPLE}");
                self.report(base.clone(), Anchor::Key, message);
                None
            }
            Some(n) if n.is_finite() && n > 0.0 && n <= MAX_PER_SECOND => Some(n),
            Some(n) => {
                let message = format!("must be a number above 0 and at most 1000000, like 50 or 0.5 (got {n})");
                self.report(at("per_second"), Anchor::Value, message);
                None
            }
        };
        let burst = self.count(at("burst"), raw.burst, DEFAULT_BURST, 1, MAX_COUNT);
        Some(RateLimitConfig { per_second: per_second?, burst: burst? })
    }

    fn concurrency_key(
        &mut self,
        base: Vec<String>,
        raw: &RawConcurrencyKey,
        concurrency: Option<u32>,
    ) -> Option<ConcurrencyKeyConfig> {
        let at = |field: &str| [base.clone(), vec![field.to_owned()]].concat();
        let header = match raw.header.as_deref() {
            None => {
                let message = format!("missing required key `header`, like {CONCURRENCY_KEY_EXAMPLE}");
                self.report(base.clone(), Anchor::Key, message);
                None
            }
            Some(header) if is_valid_header_name(header) => Some(header.to_ascii_lowercase()),
            Some(header) => {
                let message = format!(
                    r#"not a valid HTTP header name: expected letters, digits and any of !#$%&'*+-.^_`|~, like "x-tenant-id" (got "{header}")"#
                );
                self.report(at("header"), Anchor::Value, message);
                None
            }
        };
        let limit = match raw.limit {
            None => {
                let message = format!("missing required key `limit`, like {CONCURRENCY_KEY_EXAMPLE}");
                self.report(base.clone(), Anchor::Key, message);
                None
            }
            // More than the function's own concurrency would never bind.
            Some(n) => match concurrency {
                Some(c) if !(1..=i64::from(c)).contains(&n) => {
                    let message = format!("must be between 1 and the function's concurrency ({c}) (got {n})");
                    self.report(at("limit"), Anchor::Value, message);
                    None
                }
                _ => self.count(at("limit"), Some(n), 1, 1, MAX_COUNT),
            },
        };
        Some(ConcurrencyKeyConfig { header: header?, limit: limit? })
    }

    pub(super) fn breaker(&mut self, base: Vec<String>, raw: &RawBreaker) -> Option<BreakerConfig> {
        let at = |field: &str| [base.clone(), vec![field.to_owned()]].concat();
        let count = |check: &mut Self, field: &str, value: Option<i64>, default: u32| {
            check.count(at(field), value, default, 1, MAX_COUNT)
        };
        let consecutive_failures =
            count(self, "consecutive_failures", raw.consecutive_failures, BreakerConfig::DEFAULT_CONSECUTIVE_FAILURES);
        let failure_ratio = match raw.failure_ratio {
            None => Some(None),
            Some(r) if r > 0.0 && r <= 1.0 => Some(Some(r)),
            Some(r) => {
                let message = format!("must be a number above 0 and at most 1, like 0.5 (got {r})");
                self.report(at("failure_ratio"), Anchor::Value, message);
                None
            }
        };
        let min_calls = count(self, "min_calls", raw.min_calls, BreakerConfig::DEFAULT_MIN_CALLS);
        let window = self.positive_duration(at("window"), &raw.window, BreakerConfig::DEFAULT_WINDOW);
        let open_for = self.positive_duration(at("open_for"), &raw.open_for, BreakerConfig::DEFAULT_OPEN_FOR);
        let half_open_probes =
            count(self, "half_open_probes", raw.half_open_probes, BreakerConfig::DEFAULT_HALF_OPEN_PROBES);
        Some(BreakerConfig {
            consecutive_failures: consecutive_failures?,
            failure_ratio: failure_ratio?,
            min_calls: min_calls?,
            window: window?,
            open_for: open_for?,
            half_open_probes: half_open_probes?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_rfc_9110_tokens() {
        assert!(is_valid_header_name("x-tenant-id"));
        assert!(is_valid_header_name("X-Tenant_ID.v2"));
        assert!(!is_valid_header_name(""));
        assert!(!is_valid_header_name("x tenant"));
        assert!(!is_valid_header_name("x-tenant:"));
        assert!(!is_valid_header_name("tenant\n"));
        assert!(!is_valid_header_name("mañana"));
    }
}
