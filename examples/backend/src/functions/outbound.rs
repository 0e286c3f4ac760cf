//! Calling a third-party provider through Keel's egress: `ctx.dependency(NAME)` posts to
//! `{KEEL_URL}/v1/egress/NAME/...`, and Keel forwards the call with its breaker, rate limit,
//! bulkhead and timeout around it, adding `idempotency-key: {invocation_id}/{NAME}/{n}` (the n-th
//! call of the attempt to NAME). A retried attempt makes the same calls in the same order, so it
//! sends the same keys, and the provider answers a key it has already served without sending or
//! charging twice. We send no key of our own on purpose: Keel's is the one providers see.
//!
//! A provider's 429/5xx is retryable, and so are Keel's own refusals (breaker open, rate
//! limited, bulkhead full, timeout, unreachable: the SDK's `EgressError`, with Keel's
//! `Retry-After`); the provider's other refusals are permanent.

use keel_sdk::{Ctx, Error};
use serde_json::Value;

/// POSTs `body` as JSON to `path` of `dependency` (declared in the function's `dependencies`).
pub(crate) async fn post(ctx: &Ctx, dependency: &str, path: &str, body: &Value) -> Result<Value, Error> {
    let response = ctx.dependency(dependency).post(path).json(body).send().await?;
    let status = response.status();
    let answer: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    match status {
        200..=299 => Ok(answer),
        429 | 500..=599 => Err(Error::retryable(format!("{dependency} answered {status}: {answer}"))),
        _ => Err(Error::permanent(format!("{dependency} refused the call ({status}): {answer}"))),
    }
}
