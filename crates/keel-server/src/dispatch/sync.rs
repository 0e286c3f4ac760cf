//! Sync invocations: the caller waits while attempts run in its request, retrying transient
//! failures until the function's `sync_timeout`. The finished invocation is recorded whole; a
//! success is recorded with its effects in the same transaction, and a failed effects
//! precondition turns that attempt into a conflict that is retried like a transient failure.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_core::clock::Millis;
use keel_core::id::new_id;
use keel_core::idempotency::{KeyClaim, KeyDecision, KeyRef, StoredReply};
use keel_core::invocation::{truncate_error, CommitEffects, Invocation, Lease, NewInvocation, Status};
use keel_core::lifecycle::{next_after, Failure, Next, Standing};
use keel_core::outcome::Outcome;
use keel_core::store::Urgency;
use keel_core::Error;
use tokio::time::Instant;

use crate::events;
use crate::flow::{KeyGuard, SyncPass};
use crate::functions::Function;
use crate::metric_definitions::{Admission, End};
use crate::problem::Problem;
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

impl From<Failure> for SyncEnd {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Permanent => SyncEnd::Permanent,
            Failure::Exhausted => SyncEnd::Exhausted,
            Failure::DeadlineExceeded => SyncEnd::DeadlineExceeded,
        }
    }
}

impl SyncEnd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SyncEnd::Succeeded => "succeeded",
            SyncEnd::Permanent => "permanent failure",
            SyncEnd::Exhausted => "retries exhausted",
            SyncEnd::DeadlineExceeded => "deadline exceeded",
        }
    }
}

/// A sync invocation that ended (`end`) but could not be recorded: with a key or effects, its
/// answer must not be sent as if it had been — the effects may not have been applied, and a
/// retry with the same key will find the key still held, then take the invocation over.
#[derive(Debug)]
pub(crate) struct Unrecorded {
    pub(crate) end: SyncEnd,
    pub(crate) error: Error,
}

/// What the request is for.
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest {
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<String>,
    pub(crate) traceparent: String,
    /// The value of the function's `concurrency_key` header.
    pub(crate) concurrency_key: Option<String>,
}

/// How the finished invocation is recorded.
enum Recorder<'a> {
    /// Inserted whole at the end: with effects, committed before the answer; without, history
    /// only, written behind the answer by [`run_plain`] (`behind` is then set).
    Plain { behind: &'a AtomicBool },
    /// Already stored `running`: updated, and its idempotency key completed with the reply.
    Keyed { key: KeyRef, holder: String, reply: &'a (dyn Fn(&Invocation, SyncEnd) -> StoredReply + Sync) },
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Recorder::Plain { .. } => "Recorder::Plain",
            Recorder::Keyed { .. } => "Recorder::Keyed",
        })
    }
}

impl Recorder<'_> {
    async fn record(
        &self,
        shared: &Shared,
        inv: &Invocation,
        end: SyncEnd,
        effects: Option<CommitEffects>,
    ) -> keel_core::Result<()> {
        match self {
            // Without effects the record is history only: `run_plain` writes it behind the reply.
            Recorder::Plain { behind } if effects.is_none() => {
                behind.store(true, Ordering::Relaxed);
                Ok(())
            }
            Recorder::Plain { behind } => {
                behind.store(false, Ordering::Relaxed);
                shared.store.record_finished(inv.clone(), effects, Urgency::Now).await
            }
            Recorder::Keyed { key, holder, reply } => {
                let reply = reply(inv, end);
                shared.store.finish_sync(inv.clone(), effects, key.clone(), holder.clone(), reply).await
            }
        }
    }
}

/// Asks flow control to admit a sync call now; a refusal is counted and answered at once.
pub(crate) fn gate<'f>(shared: &Shared, function: &'f Function) -> Result<SyncPass<'f>, Problem> {
    let slot_free = function.permits.available_permits() > 0;
    let now = shared.clock.now_ms();
    function.flow.gate_sync(now, function.config.sync_timeout, slot_free).map_err(|shed| {
        shed_counted(shared, function, &shed, now);
        Problem::shed(&function.config.name, &shed)
    })
}

/// A refusal by flow control: counted, and (debounced) announced on `keel.system`. A paused
/// function's refusals are not: its pause was announced.
pub(crate) fn shed_counted(shared: &Shared, function: &Function, shed: &crate::flow::Shed, now: Millis) {
    shared.metrics.shed(&function.config.name, shed);
    if !matches!(shed, crate::flow::Shed::Paused) {
        shared.system_events.shed(&function.config.name, shed.reason(), now);
    }
}

/// A keyed sync call, as the handler read it from the request.
pub(crate) struct KeyedCall<'a> {
    pub(crate) key: String,
    /// A claim on the key as of now (its lease and expiry run from the moment it is made).
    pub(crate) claim: &'a (dyn Fn() -> KeyClaim + Sync),
    /// `Prefer: wait`: how long to wait for another request holding the key.
    pub(crate) wait_until: Option<Instant>,
    /// The reply stored with the key when the invocation ends.
    pub(crate) reply: &'a (dyn Fn(&Invocation, SyncEnd) -> StoredReply + Sync),
}

/// What a keyed sync call came to.
#[derive(Debug)]
pub(crate) enum Keyed {
    /// The key's stored reply: the request was answered before.
    Replay(StoredReply),
    /// The key was used with another request.
    Mismatch,
    /// Another request holds the key, and `Prefer: wait` (if sent) ran out first.
    InFlight { lease_until: Millis },
    /// It ran here — new, or taken over from a holder that died — and ended so.
    Ran { inv: Box<Invocation>, ended: Result<SyncEnd, Unrecorded> },
}

/// The answer a key's stored record already gives — a replay, or a key reused with another
/// request (`Mismatch`) — read without a write (from the cache of completed records, else the
/// store); `None` when the request must claim the key.
pub(crate) async fn stored_answer(shared: &Shared, claim: &KeyClaim) -> keel_core::Result<Option<KeyDecision>> {
    let record = match shared.replays.get(&claim.key, claim.now) {
        Some(record) => Some(record),
        None => {
            let record = shared.store.peek_key(&claim.key).await?;
            if let Some(record) = &record {
                shared.replays.put(&claim.key, record);
            }
            record
        }
    };
    Ok(match keel_core::idempotency::decide(record.as_ref(), &claim.fingerprint, claim.now) {
        decision @ (KeyDecision::Replay(_) | KeyDecision::Mismatch) => Some(decision),
        _ => None,
    })
}

/// A keyed sync call: the invocation and its key record are stored before the first attempt, so
/// a retry of the request finds it — in flight, done, or orphaned by a crash and taken over.
/// While another request holds the key, waits (backing off from 10 to 200 ms) as long as
/// `Prefer: wait` allows. A new key record is counted against the caller's budget once, however
/// long the wait; a replay is answered whatever the load, new work is admitted by flow control.
pub(crate) async fn run_keyed(
    shared: &Shared,
    function: &Arc<Function>,
    request: SyncRequest,
    call: KeyedCall<'_>,
) -> Result<Keyed, Problem> {
    let mut pause = Duration::from_millis(10);
    let mut counted = false;
    loop {
        let claim = (call.claim)();
        match stored_answer(shared, &claim).await? {
            Some(KeyDecision::Replay(reply)) => return Ok(Keyed::Replay(reply)),
            Some(_) => return Ok(Keyed::Mismatch),
            None => {}
        }
        if !std::mem::replace(&mut counted, true) {
            shared.limits.admit_key_record(&claim.key.scope)?;
        }
        let pass = gate(shared, function)?;
        let mut inv = new_invocation(shared, function, request.clone(), Some(call.key.clone()));
        inv.lease = Some(Lease { owner: claim.holder.clone(), leased_at: claim.now, expires_at: claim.lease_until });
        let (key, holder) = (claim.key.clone(), claim.holder.clone());
        match shared.store.begin_sync(inv.clone(), claim).await? {
            KeyDecision::Replay(reply) => return Ok(Keyed::Replay(reply)),
            KeyDecision::Mismatch => return Ok(Keyed::Mismatch),
            KeyDecision::InFlight { lease_until } => match call.wait_until {
                Some(until) if Instant::now() + pause < until => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                _ => return Ok(Keyed::InFlight { lease_until }),
            },
            decision => {
                if let KeyDecision::TakeOver { invocation_id } = decision {
                    inv = shared
                        .store
                        .get(&invocation_id)
                        .await?
                        .ok_or_else(|| Problem::not_found("the invocation of this key is gone"))?;
                }
                let recorder = Recorder::Keyed { key, holder, reply: call.reply };
                let ended = run(shared, function, &mut inv, &recorder, pass).await;
                return Ok(Keyed::Ran { inv: Box::new(inv), ended });
            }
        }
    }
}

/// A new sync invocation, `running` from the start (its caller is waiting).
pub(crate) fn new_invocation(
    shared: &Shared,
    function: &Function,
    request: SyncRequest,
    key: Option<String>,
) -> Invocation {
    let now = shared.clock.now_ms();
    let mut inv = NewInvocation {
        id: new_id(now),
        function: function.config.name.clone(),
        payload: request.payload,
        content_type: request.content_type,
        created_at: now,
        due_at: now,
        idempotency_key: key,
        concurrency_key: request.concurrency_key,
        traceparent: Some(request.traceparent),
        delivery: None,
        lease: None,
        workflow: None,
    }
    .into_stored();
    inv.status = Status::Running;
    inv.sync = true;
    inv.due_at = None;
    inv
}

/// Runs an unkeyed sync invocation to its end ([`run`]) and makes its answer with `answer`;
/// then, when its record is history only (no effects to commit first), writes that record
/// behind. The invocation is handed over, not copied, and before the answer leaves, so a read
/// of its id made right after the answer still finds it. Past the records' bounds
/// ([`Bounds`](super::behind::Bounds)), the answer waits until its record is committed.
pub(crate) async fn run_plain<T>(
    shared: &Shared,
    function: &Arc<Function>,
    mut inv: Invocation,
    pass: SyncPass<'_>,
    answer: impl FnOnce(&Invocation, Result<SyncEnd, Unrecorded>) -> T,
) -> T {
    let behind = AtomicBool::new(false);
    let ended = run(shared, function, &mut inv, &Recorder::Plain { behind: &behind }, pass).await;
    let answered = answer(&inv, ended);
    if behind.load(Ordering::Relaxed) {
        if let Some(backlogged) = shared.behind.push(shared.store.clone(), inv) {
            backlogged.settled(&shared.behind).await;
        }
    }
    answered
}

/// Runs a sync invocation to its end ([`run_to_end`]), counting its admission and end. `pass`
/// is what flow control admitted it with ([`Flow::gate_sync`](crate::flow::Flow::gate_sync)).
async fn run(
    shared: &Shared,
    function: &Arc<Function>,
    inv: &mut Invocation,
    recorder: &Recorder<'_>,
    pass: SyncPass<'_>,
) -> Result<SyncEnd, Unrecorded> {
    let name = &function.config.name;
    shared.metrics.accepted(name, Admission::Sync);
    let ended = run_to_end(shared, function, inv, recorder, pass).await;
    let end = match &ended {
        Ok(end) | Err(Unrecorded { end, .. }) => *end,
    };
    shared.metrics.ended(name, if end == SyncEnd::Succeeded { End::Succeeded } else { End::Failed });
    ended
}

/// Runs attempts (numbered on from `inv.attempt_count`) until the invocation ends or the
/// function's `sync_timeout` passes, and records it; leaves `inv` in its final state. A record
/// that failed is [`Unrecorded`]: the caller must not be given the function's answer.
async fn run_to_end(
    shared: &Shared,
    function: &Arc<Function>,
    inv: &mut Invocation,
    recorder: &Recorder<'_>,
    mut pass: SyncPass<'_>,
) -> Result<SyncEnd, Unrecorded> {
    let deadline = Instant::now() + function.config.sync_timeout;
    let mut previous_delay = None;
    let first = inv.attempt_count;
    loop {
        let span = crate::telemetry::attempt_span(inv);
        let is_first = inv.attempt_count == first;
        let tried =
            tracing::Instrument::instrument(attempt(shared, function, inv, deadline, &mut pass, is_first), span).await;
        let (end, effects) = match tried {
            Tried::NoSlot => (SyncEnd::DeadlineExceeded, None),
            Tried::Attempt { retry_after, effects } => {
                match decide(shared, function, inv, first, &mut previous_delay, retry_after, deadline) {
                    ControlFlow::Continue(delay) => {
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    ControlFlow::Break(end) => (end, effects.filter(|_| end == SyncEnd::Succeeded)),
                }
            }
        };
        finalize(shared, inv, end);
        let emitted = effects.clone();
        match recorder.record(shared, inv, end, effects).await {
            Err(Error::PreconditionFailed(why)) => {
                // Nothing was applied: the attempt is a conflict, retried like a transient failure.
                let last = inv.attempts.last_mut().expect("a success has an attempt");
                last.outcome = Outcome::Conflict;
                last.error = Some(truncate_error(format!("conflict: {why}")));
                inv.error = last.error.clone();
                inv.response = None;
                inv.status = Status::Running;
                match decide(shared, function, inv, first, &mut previous_delay, None, deadline) {
                    ControlFlow::Continue(delay) => tokio::time::sleep(delay).await,
                    ControlFlow::Break(end) => {
                        finalize(shared, inv, end);
                        return match recorder.record(shared, inv, end, None).await {
                            Ok(()) => Ok(end),
                            Err(error) => Err(unrecorded(inv, end, error)),
                        };
                    }
                }
            }
            Err(error) => return Err(unrecorded(inv, end, error)),
            Ok(()) => {
                if let Some(effects) = &emitted {
                    events::wake_subscribers(shared, effects);
                    shared.metrics.deliveries_admitted(Some(effects));
                }
                return Ok(end);
            }
        }
    }
}

fn unrecorded(inv: &Invocation, end: SyncEnd, error: Error) -> Unrecorded {
    tracing::error!(invocation_id = %inv.id, error = %error, "recording a sync invocation failed; its caller is told the outcome is unknown");
    Unrecorded { end, error }
}

fn finalize(shared: &Shared, inv: &mut Invocation, end: SyncEnd) {
    inv.status = if end == SyncEnd::Succeeded { Status::Succeeded } else { Status::Failed };
    inv.due_at = None;
    inv.lease = None;
    inv.updated_at = shared.clock.now_ms();
}

/// What [`attempt`] did.
enum Tried {
    /// No slot freed before the deadline: no attempt was made.
    NoSlot,
    /// An attempt was made (the last of `inv.attempts`); on success, the effects to commit.
    Attempt { retry_after: Option<Duration>, effects: Option<CommitEffects> },
}

/// One attempt, recorded in `inv`: it waits for its turn under the rate limit, a concurrency
/// slot and room for its `concurrency_key` value, none past the deadline.
async fn attempt(
    shared: &Shared,
    function: &Arc<Function>,
    inv: &mut Invocation,
    deadline: Instant,
    pass: &mut SyncPass<'_>,
    is_first: bool,
) -> Tried {
    let config = &function.config;
    let now = shared.clock.now_ms();
    let turn_at = if is_first {
        pass.turn_at()
    } else {
        let latest = now + deadline.saturating_duration_since(Instant::now()).as_millis() as i64;
        match function.flow.retry_turn(now, latest) {
            Ok(at) => at,
            Err(_) => {
                inv.error =
                    Some("deadline exceeded: the rate limit has no turn for a retry before the deadline".into());
                return Tried::NoSlot;
            }
        }
    };
    if let Some(at) = turn_at {
        tokio::time::sleep(Duration::from_millis((at - now).max(0) as u64)).await;
    }
    let permit = match tokio::time::timeout_at(deadline, function.permits.acquire()).await {
        // A slot that frees at the deadline is no use: an attempt never starts past it.
        Ok(Ok(permit)) if Instant::now() < deadline => permit,
        _ => {
            inv.error = Some(format!(
                "deadline exceeded: no free slot within sync_timeout ({} in flight)",
                function.in_flight()
            ));
            return Tried::NoSlot;
        }
    };
    pass.seated();
    let _key = match (&inv.concurrency_key, &function.flow.keys) {
        (Some(key), Some(keys)) => {
            if !keys.enter_by(key, deadline).await {
                inv.error = Some(format!(
                    "deadline exceeded: {} attempts of concurrency key {key:?} stayed in flight until the deadline",
                    keys.limit()
                ));
                return Tried::NoSlot;
            }
            Some(KeyGuard::counted(function.clone(), key.clone()))
        }
        _ => None,
    };
    let probe = is_first && pass.used();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let call = AttemptCall::next_of(config, inv, config.timeout.min(remaining));
    let mut report = shared.runtime.call(call, shared.clock.as_ref()).await;
    drop(permit);
    let now = shared.clock.now_ms();
    crate::dispatch::attempt::flow_after(function, &report, now, probe);
    let effects = match report.effects.as_ref().map(|e| events::commit_effects(shared, inv, e, now)) {
        Some(Ok(effects)) => Some(effects),
        Some(Err(why)) => {
            report.attempt.outcome = Outcome::Permanent;
            report.attempt.error = Some(truncate_error(why));
            report.response = None;
            None
        }
        None => None,
    };
    shared.metrics.attempt_finished(&config.name, &report);
    crate::telemetry::record_attempt(&report.attempt, None);
    inv.attempt_count += 1;
    inv.error = (report.attempt.outcome != Outcome::Success).then(|| report.error_text());
    inv.attempts.push(report.attempt);
    if let Some(response) = report.response {
        inv.response = Some(response);
    }
    Tried::Attempt { retry_after: report.retry_after, effects }
}

/// What follows the last attempt of `inv` ([`next_after`], the decision async work takes too):
/// the pause before the next attempt, or how the invocation ends (with `inv.error` saying why).
fn decide(
    shared: &Shared,
    function: &Function,
    inv: &mut Invocation,
    first: u32,
    previous_delay: &mut Option<Duration>,
    retry_after: Option<Duration>,
    deadline: Instant,
) -> ControlFlow<SyncEnd, Duration> {
    let standing = Standing {
        made: inv.attempt_count - first,
        previous_delay: *previous_delay,
        time_left: Some(deadline.saturating_duration_since(Instant::now())),
    };
    let outcome = inv.attempts.last().map_or(Outcome::Transient, |a| a.outcome);
    let error = inv.error.clone().unwrap_or_default();
    match next_after(&function.config.retry, standing, outcome, &error, retry_after, shared.sample()) {
        Next::Succeed => ControlFlow::Break(SyncEnd::Succeeded),
        Next::Retry { delay } => {
            *previous_delay = Some(delay);
            ControlFlow::Continue(delay)
        }
        Next::Fail { failure, error } => {
            inv.error = Some(error);
            ControlFlow::Break(SyncEnd::from(failure))
        }
    }
}
