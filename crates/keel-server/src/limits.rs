//! `[server.limits]` held by the node: the limits, and the idempotency-key records each caller
//! may make a minute (429 + Retry-After). Each refusal names the limit and its value; the checks
//! themselves are `keel_core::limits`. The API's layer for a request's head is `api::limits`.

use std::sync::{Arc, Mutex, PoisonError};

use axum::http::StatusCode;
use keel_core::clock::Clock;
use keel_core::edge::Buckets;
use keel_core::flow::RateLimitConfig;
use keel_core::limits::{check_json_depth, LimitsConfig};

use crate::problem::Problem;

/// The limits, and the idempotency-key record budget of each caller.
#[derive(Debug)]
pub(crate) struct RequestLimits {
    pub(crate) config: LimitsConfig,
    clock: Arc<dyn Clock>,
    /// A std Mutex, not a tokio one: nothing awaits while it is held (one map lookup).
    key_records: Mutex<Buckets<String>>,
}

impl RequestLimits {
    pub(crate) fn new(config: LimitsConfig, clock: Arc<dyn Clock>) -> Self {
        let per_minute = config.idempotency_keys_per_minute;
        let rate = RateLimitConfig { per_second: f64::from(per_minute) / 60.0, burst: per_minute };
        Self { config, clock, key_records: Mutex::new(Buckets::new(rate)) }
    }

    /// 400 `json-too-deep` when `body` nests deeper than `max_json_depth`; `what` names it.
    pub(crate) fn check_json(&self, what: &str, body: &[u8]) -> Result<(), Problem> {
        check_json_depth(body, self.config.max_json_depth).map_err(|too_deep| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "json-too-deep",
                "JSON nested too deep",
                format!(
                    "{what} nests arrays and objects more than {} deep (server.limits.max_json_depth)",
                    too_deep.limit
                ),
            )
            .limit(too_deep.limit)
        })
    }

    /// One new idempotency-key record for `caller` (the record's scope), or 429 with the wait.
    pub(crate) fn admit_key_record(&self, caller: &str) -> Result<(), Problem> {
        let now = self.clock.now_ms();
        let taken = self.key_records.lock().unwrap_or_else(PoisonError::into_inner).try_take(&caller.to_owned(), now);
        taken.map_err(|at| {
            let secs = u64::try_from(at.saturating_sub(now)).unwrap_or(0).div_ceil(1_000).max(1);
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-idempotency-keys",
                "Too many idempotency keys",
                format!(
                    "this caller made server.limits.idempotency_keys_per_minute ({}) new Idempotency-Key records in \
                     the last minute; retry in {secs} s (a replay of a key already used is not counted)",
                    self.config.idempotency_keys_per_minute
                ),
            )
            .retry_after(secs)
        })
    }
}
