//! Batch delivery: the async attempts of a batch function (`batch = { max_size, max_wait }`) wait,
//! leased and holding their slots, in the function's [`BatchQueue`] for company — up to
//! `max_size` of them, no longer than `max_wait` after the first — and go out in one request of
//! `application/vnd.keel.batch+json`. Each item then goes through the same decision as a single
//! attempt ([`attempt::decide`]: its own attempt count, backoff, DLQ, effects, metrics), and the
//! batch's completions are recorded in one store transaction, each judged alone.
//!
//! `concurrency` counts a batch function's requests: at most that many batches are in flight
//! (the queue's `requests` permits), over `concurrency × max_size` attempt slots.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use keel_core::batch::{item_reports, request_body, Item};
use keel_core::config::BatchConfig;
use keel_core::invocation::{Completion, Invocation};
use keel_core::lifecycle::exhausted_before_attempt;
use keel_core::store::Urgency;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::attempt::{self, Decided, Recorded, Sent};
use crate::functions::{Function, Slot};
use crate::runtime::AttemptCall;
use crate::state::Shared;

/// A batch function's leased items on their way to a batch, and its requests in flight.
#[derive(Debug)]
pub(crate) struct BatchQueue {
    config: BatchConfig,
    items: mpsc::UnboundedSender<Queued>,
    /// The other end, taken once by [`collect`] when the node starts. A std Mutex: nothing
    /// awaits while it is held.
    waiting: Mutex<Option<mpsc::UnboundedReceiver<Queued>>>,
    /// One permit per batch request in flight: the function's `concurrency`.
    requests: Arc<Semaphore>,
}

/// An item waiting for its batch: a leased invocation and the slot its attempt holds.
#[derive(Debug)]
struct Queued {
    invocation: Invocation,
    slot: Slot,
}

impl BatchQueue {
    pub(crate) fn new(config: BatchConfig, concurrency: u32) -> Self {
        let (items, waiting) = mpsc::unbounded_channel();
        Self {
            config,
            items,
            waiting: Mutex::new(Some(waiting)),
            requests: Arc::new(Semaphore::new(concurrency as usize)),
        }
    }

    /// Queues the next attempt of `invocation` (leased by this node) for a batch.
    pub(crate) fn push(&self, invocation: Invocation, slot: Slot) {
        // Only a node that stopped has no collector: the item's lease runs out and it runs again.
        let _ = self.items.send(Queued { invocation, slot });
    }
}

/// Forms `function`'s batches as long as the node lives: takes the first waiting item, gathers
/// more until `max_size` or `max_wait`, waits for a request permit, and sends the batch in a task
/// of its own. Holds the node only while it sends a batch, so the queue ends with the node.
pub(crate) async fn collect(shared: Arc<Shared>, function: Arc<Function>) {
    let Some(queue) = &function.batch else { return };
    let Some(mut waiting) = queue.waiting.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
    let (config, requests) = (queue.config, queue.requests.clone());
    let (node, this) = (Arc::downgrade(&shared), Arc::downgrade(&function));
    drop((shared, function));
    while let Some(first) = waiting.recv().await {
        let mut items = vec![first];
        gather(&mut waiting, &mut items, config).await;
        let Ok(request) = requests.clone().acquire_owned().await else { return };
        // What arrived while a request was awaited goes along.
        while items.len() < config.max_size as usize {
            match waiting.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        let (Some(shared), Some(function)) = (node.upgrade(), this.upgrade()) else { return };
        let span = crate::telemetry::batch_span(&function.config.name, items.len());
        tokio::spawn(tracing::Instrument::instrument(run(shared, function, items, request), span));
    }
}

/// Adds to `items` what arrives until there are `max_size` or `max_wait` has passed.
async fn gather(waiting: &mut mpsc::UnboundedReceiver<Queued>, items: &mut Vec<Queued>, config: BatchConfig) {
    let until = tokio::time::Instant::now() + config.max_wait;
    while items.len() < config.max_size as usize {
        match waiting.try_recv() {
            Ok(item) => items.push(item),
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => match tokio::time::timeout_at(until, waiting.recv()).await {
                Ok(Some(item)) => items.push(item),
                Ok(None) | Err(_) => return,
            },
        }
    }
}

/// One batch: items whose budget is used up end without a call; the others go to the function in
/// one request, and each one's outcome is decided from its part of the answer. Their slots and
/// the request permit go back once the function answered; the completions are recorded together.
async fn run(shared: Arc<Shared>, function: Arc<Function>, items: Vec<Queued>, request: OwnedSemaphorePermit) {
    let mut ended: Vec<(Invocation, Decided)> = Vec::with_capacity(items.len());
    let mut slots: Vec<Slot> = Vec::with_capacity(items.len());
    let mut called: Vec<Queued> = Vec::with_capacity(items.len());
    for item in items {
        let policy = shared.retry_policy(&function, &item.invocation);
        match exhausted_before_attempt(policy, &item.invocation) {
            Some(next) => {
                let decided = attempt::exhausted(&shared, &function, &item.invocation, next, item.slot.pass.probe);
                ended.push((item.invocation, decided));
                slots.push(item.slot);
            }
            None => called.push(item),
        }
    }
    if !called.is_empty() {
        let reports = call(&shared, &function, &called).await;
        for (item, report) in called.into_iter().zip(reports) {
            let decided =
                attempt::decide(&shared, &function, &item.invocation, report, item.slot.pass.probe, Sent::InBatch);
            ended.push((item.invocation, decided));
            slots.push(item.slot);
        }
    }
    drop(request);
    // As for a single attempt: the slots go to the next attempts now, the records follow.
    let unrecorded = attempt::hold_unrecorded(&shared, &function, ended.len() as u32).await;
    drop(slots);
    function.slot_freed();
    crate::faults::crash_point(&shared, crate::faults::CrashPoint::BeforeComplete);
    record_all(&shared, &function, ended).await;
    drop(unrecorded);
}

/// Sends the batch of `called` and reads each item's report out of the answer.
async fn call(shared: &Shared, function: &Function, called: &[Queued]) -> Vec<keel_core::lifecycle::AttemptReport> {
    let config = &function.config;
    let invocations: Vec<&Invocation> = called.iter().map(|item| &item.invocation).collect();
    let body = Bytes::from(request_body(&invocations));
    let call = AttemptCall::batch_of(config, &invocations, &body);
    let report = shared.runtime.call_batch(call, &invocations, shared.clock.as_ref()).await;
    let items: Vec<Item<'_>> =
        invocations.iter().map(|inv| Item { id: &inv.id, number: inv.attempt_count + 1 }).collect();
    let reports = item_reports(&report, &items, shared.config.server.limits.max_json_depth);
    let failed = reports.iter().filter(|r| r.attempt.outcome != keel_core::outcome::Outcome::Success).count();
    tracing::info!(
        function = %config.name,
        items = items.len(),
        failed,
        outcome = report.attempt.outcome.as_str(),
        status = report.attempt.http_status,
        duration_ms = report.attempt.ended_at - report.attempt.started_at,
        "batch finished"
    );
    reports
}

/// Records the batch's completions in one transaction, then settles each item as a single attempt
/// is settled. A workflow step's completion moves its run on, decided against the run as it is:
/// each of those is recorded alone, as is any completion the transaction could not answer for.
async fn record_all(shared: &Shared, function: &Function, ended: Vec<(Invocation, Decided)>) {
    let unhurried =
        function.busy() && ended.iter().all(|(inv, d)| d.completion.effects.is_none() && !attempt::is_ordered(inv));
    let (steps, together): (Vec<_>, Vec<_>) = ended.into_iter().partition(|(inv, _)| inv.workflow.is_some());
    let completions: Vec<Completion> = together.iter().map(|(_, d)| d.completion.clone()).collect();
    let urgency = if unhurried { Urgency::Unhurried } else { Urgency::Now };
    let answers: Vec<Option<Recorded>> = match shared.store.complete_all(completions, urgency).await {
        Ok(answers) => answers
            .into_iter()
            .zip(&together)
            .map(|(answer, (inv, _))| match answer {
                Ok(()) => Some(Recorded::Yes),
                Err(e) => attempt::refused(&inv.id, e).ok(),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(function = %function.config.name, error = %e, items = together.len(), "recording a batch failed; recording its items one by one");
            together.iter().map(|_| None).collect()
        }
    };
    for ((invocation, decided), answer) in together.into_iter().zip(answers) {
        let recorded = match answer {
            Some(recorded) => recorded,
            None => {
                let lease_expires_at = invocation.lease.as_ref().map(|l| l.expires_at);
                attempt::record(shared, decided.completion.clone(), None, lease_expires_at, unhurried).await
            }
        };
        attempt::settle(shared, function, &invocation, decided, recorded, unhurried).await;
    }
    for (invocation, decided) in steps {
        let lease_expires_at = invocation.lease.as_ref().map(|l| l.expires_at);
        let step = invocation.workflow.as_ref();
        let recorded = attempt::record(shared, decided.completion.clone(), step, lease_expires_at, unhurried).await;
        attempt::settle(shared, function, &invocation, decided, recorded, unhurried).await;
    }
}
