//! One async attempt: call the function, decide what comes next, record both atomically.

use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::Millis;
use keel_core::invocation::{Completion, Invocation};
use keel_core::lifecycle::{after_attempt, exhausted_before_attempt};
use keel_core::Error;
use tokio::sync::OwnedSemaphorePermit;

use crate::functions::Function;
use crate::runtime::AttemptCall;
use crate::state::Shared;

/// Pause between tries to record a completion while the store is unavailable, growing to the cap.
const COMPLETE_RETRY_STEP_MS: u64 = 200;
const COMPLETE_RETRY_MAX_MS: u64 = 2_000;

pub(super) async fn run(
    shared: Arc<Shared>,
    function: Arc<Function>,
    invocation: Invocation,
    permit: OwnedSemaphorePermit,
) {
    let config = &function.config;
    let (attempt, next) = match exhausted_before_attempt(&config.retry, &invocation) {
        Some(next) => (None, next),
        None => {
            let call = AttemptCall {
                target: &config.target,
                function: &config.name,
                invocation_id: &invocation.id,
                number: invocation.attempt_count + 1,
                payload: &invocation.payload,
                content_type: invocation.content_type.as_deref(),
                traceparent: invocation.traceparent.as_deref(),
                timeout: config.timeout,
            };
            let report = shared.runtime.call(call, shared.clock.as_ref()).await;
            let now = shared.clock.now_ms();
            let next = after_attempt(&config.retry, &invocation, &report, now, fastrand::f64());
            tracing::info!(
                invocation_id = %invocation.id,
                function = %config.name,
                attempt = report.attempt.number,
                outcome = report.attempt.outcome.as_str(),
                status = report.attempt.http_status,
                duration_ms = report.attempt.ended_at - report.attempt.started_at,
                "attempt finished"
            );
            (Some(report.attempt), next)
        }
    };
    // The permit is held until the outcome is recorded, so a drain waits for it too.
    let completion = Completion {
        id: invocation.id.clone(),
        owner: shared.node_id.clone(),
        now: shared.clock.now_ms(),
        attempt,
        next,
    };
    record(&shared, completion, invocation.lease.as_ref().map(|l| l.expires_at)).await;
    drop(permit);
    function.wake.notify_one();
}

/// Records the completion, trying again while the store is unavailable (a database outage) until
/// the lease expires: past that the completion would be refused anyway, and the invocation runs
/// again once its lease is taken back.
async fn record(shared: &Shared, completion: Completion, lease_expires_at: Option<Millis>) {
    let give_up_at = lease_expires_at.unwrap_or(completion.now + 3_000);
    let mut tries: u64 = 0;
    loop {
        tries += 1;
        match shared.store.complete(completion.clone()).await {
            Ok(()) => return,
            Err(e @ Error::InvalidState(_)) | Err(e @ Error::NotFound { .. }) => {
                tracing::warn!(invocation_id = %completion.id, error = %e, "completion refused");
                return;
            }
            Err(e) => {
                if shared.clock.now_ms() >= give_up_at {
                    break;
                }
                tracing::warn!(invocation_id = %completion.id, error = %e, try_ = tries, "recording the completion failed");
                let pause = (COMPLETE_RETRY_STEP_MS * tries).min(COMPLETE_RETRY_MAX_MS);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
    tracing::error!(invocation_id = %completion.id, "completion not recorded; the lease will expire and the invocation run again");
}
