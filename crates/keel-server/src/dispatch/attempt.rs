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

use tokio::sync::OwnedSemaphorePermit;

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
    let decided = match exhausted_before_attempt(policy, &invocation) {
        Some(next) => exhausted(&shared, &function, &invocation, next, pass.probe),
        None => {
            let call = AttemptCall::next_of(config, &invocation, config.timeout);
            let report = shared.runtime.call(call, shared.clock.as_ref()).await;
            decide(&shared, &function, &invocation, report, pass.probe, Sent::Alone)
        }
    };
    // The function is done: its slot goes to the next attempt now, not after the commit. The
    // invocation stays `running` until the outcome is recorded, so nothing leases it twice, and
    // `unrecorded` keeps a drain waiting for the record, and bounds how many answered attempts
    // may await their commit (backpressure: waiting here keeps the slot).
    let unrecorded = hold_unrecorded(&shared, &function, 1).await;
    drop(permit);
    drop(pass);
    function.slot_freed();
    let lease_expires_at = invocation.lease.as_ref().map(|l| l.expires_at);
    // Nobody waits on a plain completion: it may share its commit with others. Effects (events to
    // deliver, KV writes to see) and an ordered delivery (the next one waits behind it) may not.
    let unhurried = decided.completion.effects.is_none() && !is_ordered(&invocation) && function.busy();
    crate::faults::crash_point(&shared, crate::faults::CrashPoint::BeforeComplete);
    let step = invocation.workflow.as_ref();
    let recorded = record(&shared, decided.completion.clone(), step, lease_expires_at, unhurried).await;
    settle(&shared, &function, &invocation, decided, recorded, unhurried).await;
    drop(unrecorded);
}

/// What an attempt (or an invocation whose budget was used up) came to: the completion to record,
/// and the report it was decided on (`None` when no call was made).
#[derive(Debug)]
pub(super) struct Decided {
    pub(super) completion: Completion,
    pub(super) report: Option<AttemptReport>,
}

/// No attempt is made: the budget was used up by interrupted attempts. A probe of the breaker it
/// held goes to another.
pub(super) fn exhausted(
    shared: &Shared,
    function: &Function,
    invocation: &Invocation,
    next: Transition,
    probe: bool,
) -> Decided {
    function.flow.cancel_probes(usize::from(probe));
    Decided { completion: completion_of(shared, invocation, None, next, None), report: None }
}

/// Whether an attempt went to its function alone or as an item of a batch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    Alone,
    InBatch,
}

/// Decides what follows `report`, an attempt of `invocation` (alone, or an item of a batch): its
/// effects checked and made ready to commit, the retry decision, flow control told, counted and
/// logged. Each attempt logs `attempt finished` at `info`, except an item of a batch that
/// succeeded: at `debug`, its batch's `batch finished` line speaking for it (a batch of 100 no
/// longer writes 100 lines, a tenth of the server's CPU in `async-batch`).
pub(super) fn decide(
    shared: &Shared,
    function: &Function,
    invocation: &Invocation,
    mut report: AttemptReport,
    probe: bool,
    sent: Sent,
) -> Decided {
    let config = &function.config;
    let now = shared.clock.now_ms();
    let effects = match report.effects.as_ref().map(|e| events::commit_effects(shared, invocation, e, now)) {
        Some(Ok(effects)) => Some(effects),
        Some(Err(why)) => {
            refuse(&mut report, Outcome::Permanent, why);
            None
        }
        None => None,
    };
    let policy = shared.retry_policy(function, invocation);
    let next = after_attempt(policy, invocation, &report, now, shared.sample());
    flow_after(function, &report, now, probe);
    shared.metrics.attempt_finished(&config.name, &report);
    crate::telemetry::record_attempt(&report.attempt, Some(&next));
    let retry_delay_ms = match &next {
        Transition::Retry { delay_ms, .. } => Some(*delay_ms),
        _ => None,
    };
    macro_rules! finished {
        ($level:ident) => {
            tracing::$level!(
                invocation_id = %invocation.id,
                function = %config.name,
                attempt = report.attempt.number,
                outcome = report.attempt.outcome.as_str(),
                status = report.attempt.http_status,
                duration_ms = report.attempt.ended_at - report.attempt.started_at,
                retry_delay_ms = retry_delay_ms,
                "attempt finished"
            )
        };
    }
    if sent == Sent::InBatch && report.attempt.outcome == Outcome::Success {
        finished!(debug);
    } else {
        finished!(info);
    }
    Decided {
        completion: completion_of(shared, invocation, Some(report.attempt.clone()), next, effects),
        report: Some(report),
    }
}

/// Takes `n` of the function's unrecorded permits (see [`Function::unrecorded`]); when they are
/// not free, the answered attempts held back for company are committed now, and this waits.
pub(super) async fn hold_unrecorded(shared: &Shared, function: &Function, n: u32) -> Option<OwnedSemaphorePermit> {
    match function.unrecorded.clone().try_acquire_many_owned(n) {
        Ok(permit) => Some(permit),
        Err(_) => {
            shared.store.hurry();
            function.unrecorded.clone().acquire_many_owned(n).await.ok()
        }
    }
}

/// Whether `invocation` is an ordered delivery: the next one of its key waits behind it.
pub(super) fn is_ordered(invocation: &Invocation) -> bool {
    invocation.delivery.as_ref().is_some_and(|d| d.ordering_key.is_some())
}

/// What follows the record of an attempt's outcome: its transition counted and, when it carried
/// effects, their deliveries woken; a failed precondition of its effects turns the attempt into a
/// conflict, decided and recorded again; then the dispatcher is told of what may now be due.
pub(super) async fn settle(
    shared: &Shared,
    function: &Function,
    invocation: &Invocation,
    decided: Decided,
    recorded: Recorded,
    unhurried: bool,
) {
    let Decided { mut completion, report } = decided;
    if let Recorded::Yes = recorded {
        recorded_as(shared, invocation, &completion);
        if let Some(effects) = &completion.effects {
            shared.metrics.deliveries_admitted(Some(effects));
            events::wake_subscribers(shared, effects);
        }
    }
    if let Recorded::Conflict(why) = recorded {
        // A precondition of the effects failed: nothing was applied. The attempt is a conflict,
        // retried with backoff like any transient failure.
        if let Some(mut report) = report {
            refuse(&mut report, Outcome::Conflict, format!("conflict: {why}"));
            let now = shared.clock.now_ms();
            let policy = shared.retry_policy(function, invocation);
            completion.next = after_attempt(policy, invocation, &report, now, shared.sample());
            completion.attempt = Some(report.attempt);
            completion.effects = None;
            completion.now = now;
            let (step, lease_expires_at) =
                (invocation.workflow.as_ref(), invocation.lease.as_ref().map(|l| l.expires_at));
            if let Recorded::Yes = record(shared, completion.clone(), step, lease_expires_at, unhurried).await {
                recorded_as(shared, invocation, &completion);
            }
        }
    }
    if is_ordered(invocation) {
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

pub(super) fn completion_of(
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

/// What became of a completion.
pub(super) enum Recorded {
    Yes,
    /// Refused (the lease was lost) or given up on: the invocation will run again.
    No,
    /// An effects precondition failed: nothing was applied.
    Conflict(String),
}

/// How many times a step's completion is decided again at once when its run keeps changing;
/// past that it waits between tries like any store error.
const STALE_TRIES: u64 = 20;

/// Records the completion, trying again while the store is unavailable (a database outage) until
/// the lease expires: past that the completion would be refused anyway, and the invocation runs
/// again once its lease is taken back.
pub(super) async fn record(
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

/// What a store's refusal of the completion of `id` means, or the error back when it is worth
/// trying again (the store unavailable, the outcome unknown).
pub(super) fn refused(id: &str, e: Error) -> Result<Recorded, Error> {
    match e {
        Error::PreconditionFailed(why) => Ok(Recorded::Conflict(why)),
        e @ (Error::LeaseLost(_) | Error::InvalidState(_) | Error::NotFound { .. }) => {
            tracing::warn!(invocation_id = %id, error = %e, "completion refused");
            Ok(Recorded::No)
        }
        e @ Error::Bug(_) => {
            tracing::error!(invocation_id = %id, error = %e, "completion cannot be recorded; the lease will expire and the invocation run again");
            Ok(Recorded::No)
        }
        e => Err(e),
    }
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
            Err(e) => match refused(&completion.id, e) {
                Ok(recorded) => return recorded,
                Err(e) => {
                    if shared.clock.now_ms() >= give_up_at {
                        break;
                    }
                    tracing::warn!(invocation_id = %completion.id, error = %e, try_ = tries, "recording the completion failed");
                    let pause = (COMPLETE_RETRY_STEP_MS * tries).min(COMPLETE_RETRY_MAX_MS);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            },
        }
    }
    tracing::error!(invocation_id = %completion.id, "completion not recorded; the lease will expire and the invocation run again");
    Recorded::No
}
