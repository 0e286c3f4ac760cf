//! One async attempt: call the function, decide what comes next, and record both — with the
//! attempt's effects — atomically. A failed effects precondition makes the attempt a conflict.

use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::Millis;
use keel_core::invocation::{truncate_error, Attempt, CommitEffects, Completion, Invocation, Transition};
use keel_core::lifecycle::{after_attempt, exhausted_before_attempt, AttemptReport};
use keel_core::outcome::Outcome;
use keel_core::store::Urgency;
use keel_core::workflow::StepRef;
use keel_core::Error;

use crate::events;
use crate::functions::{Function, Slot};
use crate::runtime::AttemptCall;
use crate::state::Shared;

/// Pause between tries to record a completion while the store is unavailable, growing to the cap.
const COMPLETE_RETRY_STEP_MS: u64 = 200;
const COMPLETE_RETRY_MAX_MS: u64 = 2_000;

pub(super) async fn run(shared: Arc<Shared>, function: Arc<Function>, invocation: Invocation, slot: Slot) {
    let Slot { permit, pass } = slot;
    let config = &function.config;
    let policy = shared.retry_policy(&function, &invocation);
    let (mut completion, report) = match exhausted_before_attempt(policy, &invocation) {
        Some(next) => {
            // No attempt is made: a probe of the breaker it held goes to another.
            function.flow.cancel_probes(usize::from(pass.probe));
            (completion_of(&shared, &invocation, None, next, None), None)
        }
        None => {
            let call = AttemptCall::next_of(config, &invocation, config.timeout);
            let mut report = shared.runtime.call(call, shared.clock.as_ref()).await;
            let now = shared.clock.now_ms();
            let effects = match report.effects.as_ref().map(|e| events::commit_effects(&shared, &invocation, e, now)) {
                Some(Ok(effects)) => Some(effects),
                Some(Err(why)) => {
                    refuse(&mut report, Outcome::Permanent, why);
                    None
                }
                None => None,
            };
            let next = after_attempt(policy, &invocation, &report, now, shared.sample());
            flow_after(&function, &report, now, pass.probe);
            shared.metrics.attempt_finished(&config.name, &report);
            crate::telemetry::record_attempt(&report.attempt, Some(&next));
            tracing::info!(
                invocation_id = %invocation.id,
                function = %config.name,
                attempt = report.attempt.number,
                outcome = report.attempt.outcome.as_str(),
                status = report.attempt.http_status,
                duration_ms = report.attempt.ended_at - report.attempt.started_at,
                "attempt finished"
            );
            (completion_of(&shared, &invocation, Some(report.attempt.clone()), next, effects), Some(report))
        }
    };
    // The function is done: its slot goes to the next attempt now, not after the commit. The
    // invocation stays `running` until the outcome is recorded, so nothing leases it twice, and
    // `unrecorded` keeps a drain waiting for the record, and bounds how many answered attempts
    // may await their commit (backpressure: waiting here keeps the slot).
    let unrecorded = match function.unrecorded.clone().try_acquire_owned() {
        Ok(permit) => Ok(permit),
        Err(_) => {
            // The answered attempts before this one are held back for company: commit them now.
            shared.store.hurry();
            function.unrecorded.clone().acquire_owned().await
        }
    };
    drop(permit);
    drop(pass);
    function.slot_freed();
    let lease_expires_at = invocation.lease.as_ref().map(|l| l.expires_at);
    // Nobody waits on a plain completion: it may share its commit with others. Effects (events to
    // deliver, KV writes to see) and an ordered delivery (the next one waits behind it) may not.
    let ordered = invocation.delivery.as_ref().is_some_and(|d| d.ordering_key.is_some());
    let unhurried = completion.effects.is_none() && !ordered && function.busy();
    crate::faults::crash_point(&shared, crate::faults::CrashPoint::BeforeComplete);
    let step = invocation.workflow.as_ref();
    let recorded = record(&shared, completion.clone(), step, lease_expires_at, unhurried).await;
    if let Recorded::Yes = recorded {
        recorded_as(&shared, &invocation, &completion);
        if let Some(effects) = &completion.effects {
            shared.metrics.deliveries_admitted(Some(effects));
            events::wake_subscribers(&shared, effects);
        }
    }
    if let Recorded::Conflict(why) = recorded {
        // A precondition of the effects failed: nothing was applied. The attempt is a conflict,
        // retried with backoff like any transient failure.
        if let Some(mut report) = report {
            refuse(&mut report, Outcome::Conflict, format!("conflict: {why}"));
            let now = shared.clock.now_ms();
            completion.next = after_attempt(policy, &invocation, &report, now, shared.sample());
            completion.attempt = Some(report.attempt);
            completion.effects = None;
            completion.now = now;
            if let Recorded::Yes = record(&shared, completion.clone(), step, lease_expires_at, unhurried).await {
                recorded_as(&shared, &invocation, &completion);
            }
        }
    }
    drop(unrecorded);
    if ordered {
        // The next delivery of the same ordering key may be leased now.
        function.work_queued();
    } else if let Transition::Retry { .. } = completion.next {
        // The retry may come due earlier than the dispatcher's timer.
        function.wake.notify_one();
    }
}

/// What follows a recorded completion: its transition counted, and a dead end announced on
/// `keel.system`.
fn recorded_as(shared: &Shared, invocation: &Invocation, completion: &Completion) {
    shared.metrics.transitioned(&invocation.function, &completion.next);
    if let Transition::Die { error, .. } = &completion.next {
        let attempts = completion.attempt.as_ref().map_or(invocation.attempt_count, |a| a.number);
        shared.system_events.invocation_dead(shared, invocation, attempts, error);
    }
}

/// Tells flow control how the attempt went: its duration (for the expected wait of sync
/// callers) and its outcome (for the breaker, counted and logged when it changes state).
pub(crate) fn flow_after(function: &Function, report: &AttemptReport, now: Millis, probe: bool) {
    let attempt = &report.attempt;
    let took = Duration::from_millis((attempt.ended_at - attempt.started_at).max(0) as u64);
    function.flow.observe(took);
    function.flow.attempt_ended(now, attempt.outcome, probe);
    if probe {
        // A probe's result decides what the dispatcher may start: it need not sleep out its wait.
        function.wake.notify_one();
    }
}

/// Turns a successful report into a failure of `outcome` (its response is not the result).
fn refuse(report: &mut AttemptReport, outcome: Outcome, why: String) {
    report.attempt.outcome = outcome;
    report.attempt.error = Some(truncate_error(why));
    report.response = None;
    report.effects = None;
}

fn completion_of(
    shared: &Shared,
    invocation: &Invocation,
    attempt: Option<Attempt>,
    next: Transition,
    effects: Option<CommitEffects>,
) -> Completion {
    Completion {
        id: invocation.id.clone(),
        owner: shared.node_id.clone(),
        fence: invocation.attempt_count,
        now: shared.clock.now_ms(),
        attempt,
        next,
        effects,
        run: None,
    }
}

/// Records the completion, trying again while the store is unavailable (a database outage) until
/// the lease expires: past that the completion would be refused anyway, and the invocation runs
/// again once its lease is taken back.
/// Returns the failed precondition's text when the effects could not be applied.
/// What became of a completion.
enum Recorded {
    Yes,
    /// Refused (the lease was lost) or given up on: the invocation will run again.
    No,
    /// An effects precondition failed: nothing was applied.
    Conflict(String),
}

/// How many times a step's completion is decided again at once when its run keeps changing;
/// past that it waits between tries like any store error.
const STALE_TRIES: u64 = 20;

async fn record(
    shared: &Shared,
    completion: Completion,
    step: Option<&StepRef>,
    lease_expires_at: Option<Millis>,
    unhurried: bool,
) -> Recorded {
    let recorded = record_once(shared, completion, step, lease_expires_at, unhurried).await;
    if let (Some(step), Recorded::No) = (step, &recorded) {
        // Perhaps recorded after all (a commit whose confirmation was lost, then refused as a
        // lease lost): the run may have moved on without this node waking what it started.
        crate::workflows::wake_in_flight(shared, &step.run).await;
    }
    recorded
}

async fn record_once(
    shared: &Shared,
    mut completion: Completion,
    step: Option<&StepRef>,
    lease_expires_at: Option<Millis>,
    unhurried: bool,
) -> Recorded {
    let give_up_at = lease_expires_at.unwrap_or(completion.now + 3_000);
    let mut tries: u64 = 0;
    loop {
        tries += 1;
        // A workflow step's end moves its run on in the same commit: decided on the run as it is
        // now, and again if the run changed before the commit (an operator's cancel).
        let recorded = match step {
            Some(step) => match crate::workflows::decide(shared, step, &completion).await {
                Ok(update) => {
                    completion.run = update;
                    shared.store.complete(completion.clone(), Urgency::Now).await
                }
                Err(e) => Err(e),
            },
            None => {
                shared
                    .store
                    .complete(completion.clone(), if unhurried { Urgency::Unhurried } else { Urgency::Now })
                    .await
            }
        };
        match recorded {
            Ok(()) => {
                if let Some(update) = &completion.run {
                    crate::workflows::after(shared, update);
                }
                return Recorded::Yes;
            }
            Err(Error::Stale(why)) if tries < STALE_TRIES => {
                tracing::debug!(invocation_id = %completion.id, why, "the workflow run moved on: deciding again");
                continue;
            }
            Err(Error::PreconditionFailed(why)) => return Recorded::Conflict(why),
            Err(e @ (Error::LeaseLost(_) | Error::InvalidState(_) | Error::NotFound { .. })) => {
                tracing::warn!(invocation_id = %completion.id, error = %e, "completion refused");
                return Recorded::No;
            }
            Err(e @ Error::Bug(_)) => {
                tracing::error!(invocation_id = %completion.id, error = %e, "completion cannot be recorded; the lease will expire and the invocation run again");
                return Recorded::No;
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
    Recorded::No
}
