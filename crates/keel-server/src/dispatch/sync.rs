//! Sync invocations: the caller waits while attempts run in its request, retrying transient
//! failures until the function's `sync_timeout`. The finished invocation is then recorded whole.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_core::id::new_id;
use keel_core::invocation::{Invocation, NewInvocation, Status};
use keel_core::outcome::Outcome;
use keel_core::retry::NextStep;
use tokio::time::Instant;

use crate::functions::Function;
use crate::runtime::AttemptCall;
use crate::state::Shared;

/// How a sync invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncEnd {
    Succeeded,
    /// The function refused the request (a 4xx, or a response Keel cannot accept).
    Permanent,
    /// Transient failures used up the retry policy.
    Exhausted,
    /// The function's `sync_timeout` passed.
    DeadlineExceeded,
}

/// What the request is for.
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest {
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<String>,
    pub(crate) traceparent: String,
}

/// A new sync invocation, `running` from the start (its caller is waiting).
pub(crate) fn new_invocation(shared: &Shared, function: &Function, request: SyncRequest, key: Option<String>) -> Invocation {
    let now = shared.clock.now_ms();
    let mut inv = NewInvocation {
        id: new_id(now),
        function: function.config.name.clone(),
        payload: request.payload,
        content_type: request.content_type,
        created_at: now,
        due_at: now,
        idempotency_key: key,
        traceparent: Some(request.traceparent),
    }
    .into_queued();
    inv.status = Status::Running;
    inv.sync = true;
    inv.due_at = None;
    inv
}

/// Runs an unkeyed sync invocation to its end and records it. The invocation is returned even
/// when recording it failed (the failure is logged): the caller still gets the function's answer.
pub(crate) async fn run(shared: &Arc<Shared>, function: &Function, request: SyncRequest) -> (Invocation, SyncEnd) {
    let mut inv = new_invocation(shared, function, request, None);
    let end = run_attempts(shared, function, &mut inv).await;
    if let Err(e) = shared.store.record_finished(inv.clone()).await {
        tracing::error!(invocation_id = %inv.id, error = %e, "recording a sync invocation failed");
    }
    (inv, end)
}

/// Runs attempts (numbered on from `inv.attempt_count`) until the invocation ends or the
/// function's `sync_timeout` passes; leaves `inv` in its final state.
pub(crate) async fn run_attempts(shared: &Shared, function: &Function, inv: &mut Invocation) -> SyncEnd {
    let deadline = Instant::now() + function.config.sync_timeout;
    let end = attempt_until_done(shared, function, inv, deadline).await;
    inv.status = if end == SyncEnd::Succeeded { Status::Succeeded } else { Status::Failed };
    inv.due_at = None;
    inv.lease = None;
    inv.updated_at = shared.clock.now_ms();
    end
}

async fn attempt_until_done(shared: &Shared, function: &Function, inv: &mut Invocation, deadline: Instant) -> SyncEnd {
    let config = &function.config;
    let mut previous_delay = None;
    let first = inv.attempt_count;
    loop {
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, function.permits.acquire()).await else {
            inv.error = Some(format!(
                "deadline exceeded: no free slot within sync_timeout ({} in flight)",
                function.in_flight()
            ));
            return SyncEnd::DeadlineExceeded;
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let call = AttemptCall {
            target: &config.target,
            function: &config.name,
            invocation_id: &inv.id,
            number: inv.attempt_count + 1,
            payload: &inv.payload,
            content_type: inv.content_type.as_deref(),
            traceparent: inv.traceparent.as_deref(),
            timeout: config.timeout.min(remaining),
        };
        let report = shared.runtime.call(call, shared.clock.as_ref()).await;
        drop(permit);
        let outcome = report.attempt.outcome;
        inv.attempt_count += 1;
        inv.attempts.push(report.attempt.clone());
        if report.response.is_some() {
            inv.response = report.response.clone();
        }
        if outcome == Outcome::Success {
            inv.error = None;
            return SyncEnd::Succeeded;
        }
        let error = report.error_text();
        if !outcome.is_retryable() {
            inv.error = Some(format!("permanent failure: {error}"));
            return SyncEnd::Permanent;
        }
        if Instant::now() >= deadline {
            inv.error = Some(format!("deadline exceeded after {} attempts: {error}", inv.attempt_count - first));
            return SyncEnd::DeadlineExceeded;
        }
        match config.retry.next_step(inv.attempt_count - first, previous_delay, report.retry_after, fastrand::f64()) {
            NextStep::GiveUp => {
                inv.error = Some(format!("retries exhausted after {} attempts: {error}", inv.attempt_count - first));
                return SyncEnd::Exhausted;
            }
            NextStep::RetryAfter(delay) if Instant::now() + delay >= deadline => {
                inv.error = Some(format!(
                    "deadline exceeded: the next retry ({}) would start after sync_timeout; last error: {error}",
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                ));
                return SyncEnd::DeadlineExceeded;
            }
            NextStep::RetryAfter(delay) => {
                previous_delay = Some(delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}
