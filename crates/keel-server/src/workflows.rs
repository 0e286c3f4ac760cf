//! Workflow runs on a node: starting one with its first step, moving a run on when one of its
//! steps ends (the change rides in the step's completion, committed with it or not at all),
//! cancelling, and what follows a run's end (its metrics, its `keel.workflow.*` event, a log
//! line). The decisions are [`keel_core::workflow`]'s; this module reads, decides and writes.

use std::sync::Arc;

use bytes::Bytes;
use keel_core::clock::{rfc3339, Millis};
use keel_core::config::WorkflowConfig;
use keel_core::events::{CloudEvent, NewEvent};
use keel_core::id::new_id;
use keel_core::invocation::{CommitEffects, Completion, NewInvocation, Transition};
use keel_core::store::{RunStarted, RunUpdate};
use keel_core::workflow::{self, Cancel, NotCancellable, Run, RunStatus, StepEnd, StepRef, StepStart};
use keel_core::{Error, Result};
use metrics::{counter, histogram};
use serde_json::Value;

use crate::metric_definitions as m;
use crate::state::Shared;

/// Starts a run of `workflow` with `input`: stored with its first step's invocation. With an
/// idempotency key a run of this workflow already has, that run (and `true`: replayed).
pub(crate) async fn start(
    shared: &Arc<Shared>,
    workflow: &WorkflowConfig,
    input: Value,
    key: Option<String>,
    traceparent: String,
) -> Result<(Run, bool)> {
    let now = shared.clock.now_ms();
    let (run, first) = Run::new(
        new_id(now),
        &workflow.name,
        workflow.definition.clone(),
        input,
        key,
        Some(traceparent),
        now,
        &mut || new_id(now),
    );
    let invocation = invocation_of(&run, &first, now);
    match shared.store.start_run(run, invocation).await? {
        RunStarted::Started(run) => {
            counter!(m::WORKFLOW_RUNS_STARTED_TOTAL, "workflow" => run.workflow.clone()).increment(1);
            tracing::info!(run_id = %run.id, workflow = %run.workflow, "workflow run started");
            shared.functions.wake(&first.function);
            Ok((run, false))
        }
        RunStarted::Existing(run) => {
            // The first request may have been stored without its answer (an unknown outcome):
            // its step may be waiting for a wake-up nobody sent.
            wake_run(shared, &run);
            Ok((run, true))
        }
    }
}

/// The invocation a decision starts: its key is the step's (`{run_id}/{step}`), its trace the run's.
fn invocation_of(run: &Run, start: &StepStart, now: Millis) -> NewInvocation {
    NewInvocation {
        id: start.invocation_id.clone(),
        function: start.function.clone(),
        payload: Bytes::from(start.payload.to_string()),
        content_type: Some("application/json".into()),
        created_at: now,
        due_at: now,
        idempotency_key: Some(start.step.key()),
        traceparent: run.traceparent.clone(),
        delivery: None,
        concurrency_key: None,
        lease: None,
        workflow: Some(start.step.clone()),
    }
}

/// The change to `step`'s run that `completion` makes, decided on the run as stored now; `None`
/// when it makes none (a retry, or an end the run has moved past). A retry of a step whose run
/// was cancelled meanwhile ends the step: its invocation is cancelled with the change.
pub(crate) async fn decide(shared: &Shared, step: &StepRef, completion: &Completion) -> Result<Option<Box<RunUpdate>>> {
    let Some(run) = shared.store.get_run(&step.run).await? else {
        tracing::warn!(run_id = %step.run, invocation_id = %completion.id, "a step's run is gone");
        return Ok(None);
    };
    let mut cancel_invocation = None;
    let end = match &completion.next {
        Transition::Succeed { response } => StepEnd::Succeeded(workflow::output_of(&response.body)),
        Transition::Die { error, .. } => StepEnd::Failed(error.clone()),
        Transition::Retry { .. } if run.cancel_requested && !step.compensate => {
            cancel_invocation = Some(completion.id.clone());
            StepEnd::Cancelled(workflow::CANCELLED.into())
        }
        Transition::Retry { .. } | Transition::Requeue => return Ok(None),
    };
    let now = completion.now;
    let mut after = run.clone();
    let advance = after.step_ended(step, end, now, &mut || new_id(now));
    if !advance.changed {
        return Ok(None);
    }
    Ok(Some(Box::new(update_of(shared, after, run.version, advance, cancel_invocation, now))))
}

fn update_of(
    shared: &Shared,
    run: Run,
    expected_version: u64,
    advance: workflow::Advance,
    cancel_invocation: Option<String>,
    now: Millis,
) -> RunUpdate {
    let start = advance.start.as_ref().map(|s| invocation_of(&run, s, now));
    let events = match (&run.definition.notify_topic, advance.ended) {
        (Some(topic), Some(status)) => vec![ended_event(shared, &run, topic, status, now)],
        _ => Vec::new(),
    };
    RunUpdate { run, expected_version, start, cancel_invocation, events }
}

/// `keel.workflow.succeeded|compensated|failed` to the workflow's `notify_topic`. Its id names
/// the run, the end and the run's version: a run that fails, is redriven and fails again sends
/// two events, a retried commit of the same change one.
fn ended_event(shared: &Shared, run: &Run, topic: &str, status: RunStatus, now: Millis) -> NewEvent {
    let mut extensions = std::collections::BTreeMap::new();
    if let Some(tp) = &run.traceparent {
        extensions.insert("traceparent".to_string(), tp.clone());
    }
    let event = CloudEvent {
        id: format!("{}/{}/{}", run.id, status.as_str(), run.version),
        source: format!("/keel/workflows/{}", run.workflow),
        ty: workflow::ended_event_type(status),
        subject: Some(run.id.clone()),
        time: Some(rfc3339(now)),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        data: Bytes::from(run.ended_event_data().to_string()),
        extensions,
    };
    crate::events::new_event(shared, topic, event, 0, now)
}

/// What follows a committed change: the started step's dispatcher woken, the run's event
/// delivered, and its end counted and logged.
pub(crate) fn after(shared: &Shared, update: &RunUpdate) {
    if let Some(start) = &update.start {
        shared.functions.wake(&start.function);
    }
    if !update.events.is_empty() {
        let effects = CommitEffects { kv: Vec::new(), events: update.events.clone() };
        shared.metrics.deliveries_admitted(Some(&effects));
        crate::events::wake_subscribers(shared, &effects);
    }
    let run = &update.run;
    if let (true, Some(ended_at)) = (run.status.is_ended(), run.ended_at) {
        let labels = [("workflow", run.workflow.clone()), ("status", run.status.as_str().to_owned())];
        counter!(m::WORKFLOW_RUNS_TOTAL, &labels).increment(1);
        let took = (ended_at - run.created_at).max(0) as f64 / 1000.0;
        histogram!(m::WORKFLOW_RUN_DURATION_SECONDS, &labels).record(took);
        tracing::info!(
            run_id = %run.id,
            workflow = %run.workflow,
            status = run.status.as_str(),
            failed_step = run.failed_step.as_deref(),
            duration_ms = ended_at - run.created_at,
            "workflow run ended"
        );
    }
}

/// Wakes the dispatcher of whatever run `id` has in flight (a step or a compensation).
pub(crate) async fn wake_in_flight(shared: &Shared, id: &str) {
    match shared.store.get_run(id).await {
        Ok(Some(run)) => wake_run(shared, &run),
        Ok(None) => {}
        Err(e) => tracing::warn!(run_id = %id, error = %e, "reading a workflow run to wake its step"),
    }
}

fn wake_run(shared: &Shared, run: &Run) {
    for (state, def) in run.steps.iter().zip(&run.definition.steps) {
        match state.status {
            workflow::StepStatus::Running => shared.functions.wake(&def.function),
            workflow::StepStatus::Compensating => {
                shared.functions.wake(def.compensate.as_deref().unwrap_or_default());
            }
            _ => {}
        }
    }
}

/// How many times a cancel decides again when the run keeps changing under it.
const CANCEL_TRIES: usize = 5;

/// Cancels a running run: at once when its step is between attempts (the step's invocation is
/// cancelled with the change and the compensation starts), else when that attempt ends.
pub(crate) async fn cancel(shared: &Shared, id: &str) -> std::result::Result<Run, CancelError> {
    for _ in 0..CANCEL_TRIES {
        let run =
            shared.store.get_run(id).await?.ok_or_else(|| Error::NotFound { what: "workflow run", id: id.into() })?;
        let now = shared.clock.now_ms();
        let in_flight = match run.current_step().and_then(|s| s.invocation_id.clone()) {
            Some(invocation) => shared.store.get(&invocation).await?.is_some_and(|i| !is_between_attempts(&i)),
            None => true,
        };
        let mut changed = run.clone();
        let update = match changed.cancel(in_flight, now, &mut || new_id(now)).map_err(CancelError::NotRunning)? {
            Cancel::Now { invocation_id, advance } => {
                update_of(shared, changed, run.version, advance, Some(invocation_id), now)
            }
            Cancel::AfterAttempt if changed.version == run.version => return Ok(changed),
            Cancel::AfterAttempt => RunUpdate {
                run: changed,
                expected_version: run.version,
                start: None,
                cancel_invocation: None,
                events: Vec::new(),
            },
        };
        match shared.store.update_run(update.clone()).await {
            Ok(()) => {
                tracing::info!(run_id = %id, status = update.run.status.as_str(), "workflow run cancelled");
                after(shared, &update);
                return Ok(update.run);
            }
            // The run moved on, or its step was leased since the look: decide again.
            Err(Error::Stale(_) | Error::InvalidState(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Unavailable(format!("workflow run {id} kept changing while being cancelled; try again")).into())
}

fn is_between_attempts(inv: &keel_core::invocation::Invocation) -> bool {
    use keel_core::invocation::Status;
    matches!(inv.status, Status::Queued | Status::Retrying)
}

/// Why a cancel was refused.
#[derive(Debug)]
pub(crate) enum CancelError {
    NotRunning(NotCancellable),
    Store(Error),
}

impl From<Error> for CancelError {
    fn from(e: Error) -> Self {
        CancelError::Store(e)
    }
}
