//! Workflows (sagas) as pure decisions: a run's state, and what follows each step's end.
//!
//! A workflow is a list of steps, each an ordinary invocation of a function, started only after
//! the previous one succeeded. When a step ends dead (or is cancelled), the compensations of the
//! steps that succeeded run in reverse order, one at a time; a compensation that ends dead leaves
//! the run `failed`, and redriving it resumes the compensation where it stopped.
//!
//! Nothing here does I/O: [`Run::step_ended`] and [`Run::cancel`] change a run and say which
//! invocation to start next; the store commits that change in the same transaction as the
//! step's completion, guarded by the run's `version` (see [`crate::store::workflows`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock::Millis;

/// One step of a workflow, as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDef {
    pub name: String,
    pub function: String,
    /// The function that undoes this step, run when a later step fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<String>,
}

/// A workflow as declared: a run keeps the definition it started with, so a config reload never
/// changes the steps of a run under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub steps: Vec<StepDef>,
    /// Gets `keel.workflow.succeeded|compensated|failed` when a run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_topic: Option<String>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Its steps are running, one after another.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed (or the run was cancelled): the completed steps are being undone.
    Compensating,
    /// Every completed step that has a compensation was undone.
    Compensated,
    /// A compensation ended dead: the run waits, in the DLQ, for that compensation's redrive.
    Failed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] =
        [RunStatus::Running, RunStatus::Succeeded, RunStatus::Compensating, RunStatus::Compensated, RunStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Compensating => "compensating",
            RunStatus::Compensated => "compensated",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Nothing of it runs any more (a `failed` run resumes only if its compensation is redriven).
    pub fn is_ended(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Compensated | RunStatus::Failed)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started (and never will be, once the run has moved past it).
    Pending,
    /// Its invocation is queued, running or retrying.
    Running,
    Succeeded,
    /// Its invocation ended dead.
    Failed,
    /// Cancelled with its run before it ended.
    Cancelled,
    /// Its compensation is queued, running or retrying.
    Compensating,
    Compensated,
    /// Its compensation ended dead (redrive it from the DLQ to resume).
    CompensationFailed,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Compensating => "compensating",
            StepStatus::Compensated => "compensated",
            StepStatus::CompensationFailed => "compensation_failed",
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub name: String,
    pub status: StepStatus,
    /// The step's invocation, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// What the function answered (its body as JSON, or as a string when it is not JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Millis>,
    /// The compensation's invocation, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensated_at: Option<Millis>,
}

impl StepState {
    fn pending(name: &str) -> StepState {
        StepState {
            name: name.to_owned(),
            status: StepStatus::Pending,
            invocation_id: None,
            output: None,
            error: None,
            started_at: None,
            ended_at: None,
            compensation_id: None,
            compensated_at: None,
        }
    }
}

/// A run of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    pub workflow: String,
    pub status: RunStatus,
    pub input: Value,
    pub definition: Definition,
    /// One per step of `definition`, in order.
    pub steps: Vec<StepState>,
    /// The step whose failure (or cancel) started the compensation.
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// Cancelled while a step was in flight: that step's end starts the compensation.
    pub cancel_requested: bool,
    pub idempotency_key: Option<String>,
    /// The run's span: every step's invocation is its child, so a run is one trace.
    pub traceparent: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub ended_at: Option<Millis>,
    /// Bumped by every change: a change decided on an older version is refused
    /// ([`crate::Error::Stale`]) and decided again.
    pub version: u64,
}

/// Which step (or compensation) of which run an invocation is. Its text form is the key the
/// function gets as `idempotency-key`: `{run_id}/{step}`, or `{run_id}/{step}/compensate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub run: String,
    pub step: String,
    pub compensate: bool,
}

const COMPENSATE_SUFFIX: &str = "/compensate";

impl StepRef {
    /// The key sent to the function, also what the store keeps.
    pub fn key(&self) -> String {
        match self.compensate {
            true => format!("{}/{}{COMPENSATE_SUFFIX}", self.run, self.step),
            false => format!("{}/{}", self.run, self.step),
        }
    }

    /// Reads [`StepRef::key`] back.
    pub fn parse(key: &str) -> Option<StepRef> {
        let split = |rest: &str, compensate: bool| {
            let (run, step) = rest.split_once('/')?;
            (!run.is_empty() && !step.is_empty() && !step.contains('/')).then(|| StepRef {
                run: run.to_owned(),
                step: step.to_owned(),
                compensate,
            })
        };
        // A step may itself be named `compensate`: `{run}/compensate` is that step.
        key.strip_suffix(COMPENSATE_SUFFIX).and_then(|rest| split(rest, true)).or_else(|| split(key, false))
    }
}

/// How a step's invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEnd {
    /// With the function's answer.
    Succeeded(Value),
    /// Dead, with its error.
    Failed(String),
    /// Cancelled (with the run) before it ended.
    Cancelled(String),
}

/// An invocation a decision starts: a step or a compensation.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStart {
    pub step: StepRef,
    pub function: String,
    pub invocation_id: String,
    pub payload: Value,
}

/// What a decision came to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Advance {
    /// The invocation to store with the change.
    pub start: Option<StepStart>,
    /// Set when the run ended with this change.
    pub ended: Option<RunStatus>,
    /// False when the end was stale (the run had moved on): nothing changed.
    pub changed: bool,
}

/// What cancelling a run comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// The step in flight was not running an attempt: its invocation (this id) is cancelled with
    /// the change, and the compensation starts now.
    Now { invocation_id: String, advance: Advance },
    /// An attempt of the step is running: the run is marked, and the step's end compensates.
    AfterAttempt,
}

/// Why a run cannot be cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCancellable(pub RunStatus);

impl fmt::Display for NotCancellable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RunStatus::Compensating => f.write_str("the run is already being compensated"),
            status => write!(f, "the run is {status}: only a running run can be cancelled"),
        }
    }
}

impl Run {
    /// A new run, and its first step to start. `new_id` names the invocations decisions start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        workflow: &str,
        definition: Definition,
        input: Value,
        idempotency_key: Option<String>,
        traceparent: Option<String>,
        now: Millis,
        new_id: &mut dyn FnMut() -> String,
    ) -> (Run, StepStart) {
        let steps = definition.steps.iter().map(|s| StepState::pending(&s.name)).collect();
        let mut run = Run {
            id,
            workflow: workflow.to_owned(),
            status: RunStatus::Running,
            input,
            definition,
            steps,
            failed_step: None,
            error: None,
            cancel_requested: false,
            idempotency_key,
            traceparent,
            created_at: now,
            updated_at: now,
            ended_at: None,
            version: 0,
        };
        let start = run.start_step(0, now, new_id);
        (run, start)
    }

    fn start_step(&mut self, index: usize, now: Millis, new_id: &mut dyn FnMut() -> String) -> StepStart {
        let payload = match index {
            0 => self.input.clone(),
            _ => json!({ "input": self.input, "steps": self.outputs() }),
        };
        let def = &self.definition.steps[index];
        let start = StepStart {
            step: StepRef { run: self.id.clone(), step: def.name.clone(), compensate: false },
            function: def.function.clone(),
            invocation_id: new_id(),
            payload,
        };
        let step = &mut self.steps[index];
        step.status = StepStatus::Running;
        step.invocation_id = Some(start.invocation_id.clone());
        step.started_at = Some(now);
        start
    }

    /// The outputs of the steps that succeeded (compensated ones included), by name.
    pub fn outputs(&self) -> Map<String, Value> {
        self.steps
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    StepStatus::Succeeded
                        | StepStatus::Compensating
                        | StepStatus::Compensated
                        | StepStatus::CompensationFailed
                )
            })
            .map(|s| (s.name.clone(), s.output.clone().unwrap_or(Value::Null)))
            .collect()
    }

    /// The step running now (forward), if any.
    pub fn current_step(&self) -> Option<&StepState> {
        self.steps.iter().find(|s| s.status == StepStatus::Running)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// What follows the end of `step`'s invocation. An end the run has moved past (a redriven
    /// step of a run already compensating, a duplicate) changes nothing.
    pub fn step_ended(
        &mut self,
        step: &StepRef,
        end: StepEnd,
        now: Millis,
        new_id: &mut dyn FnMut() -> String,
    ) -> Advance {
        let Some(i) = self.index_of(&step.step).filter(|_| step.run == self.id) else {
            return Advance::default();
        };
        let advance = match step.compensate {
            false => self.forward_ended(i, end, now, new_id),
            true => self.compensation_ended(i, end, now, new_id),
        };
        if advance.changed {
            self.updated_at = now;
            self.version += 1;
        }
        advance
    }

    fn forward_ended(&mut self, i: usize, end: StepEnd, now: Millis, new_id: &mut dyn FnMut() -> String) -> Advance {
        if self.status != RunStatus::Running || self.steps[i].status != StepStatus::Running {
            return Advance::default();
        }
        self.steps[i].ended_at = Some(now);
        let end_kind = match end {
            StepEnd::Cancelled(_) => EndKind::Cancelled,
            _ => EndKind::Other,
        };
        match end {
            StepEnd::Succeeded(output) => {
                self.steps[i].status = StepStatus::Succeeded;
                self.steps[i].output = Some(output);
                if self.cancel_requested {
                    self.failed_step = Some(self.steps[i].name.clone());
                    self.error = Some(CANCELLED.into());
                    self.compensate_from(Some(i), now, new_id)
                } else if i + 1 < self.steps.len() {
                    Advance { start: Some(self.start_step(i + 1, now, new_id)), ended: None, changed: true }
                } else {
                    self.end(RunStatus::Succeeded, now)
                }
            }
            StepEnd::Failed(error) | StepEnd::Cancelled(error) => {
                let cancelled = matches!(end_kind, EndKind::Cancelled);
                self.steps[i].status = if cancelled { StepStatus::Cancelled } else { StepStatus::Failed };
                self.steps[i].error = Some(error.clone());
                self.failed_step = Some(self.steps[i].name.clone());
                self.error = Some(error);
                self.compensate_from(i.checked_sub(1), now, new_id)
            }
        }
    }

    fn compensation_ended(
        &mut self,
        i: usize,
        end: StepEnd,
        now: Millis,
        new_id: &mut dyn FnMut() -> String,
    ) -> Advance {
        let resumable = matches!(self.status, RunStatus::Compensating | RunStatus::Failed);
        let step_in_flight = matches!(self.steps[i].status, StepStatus::Compensating | StepStatus::CompensationFailed);
        if !resumable || !step_in_flight {
            return Advance::default();
        }
        match end {
            StepEnd::Succeeded(_) => {
                let step = &mut self.steps[i];
                step.status = StepStatus::Compensated;
                step.compensated_at = Some(now);
                step.error = None;
                // A failed run resumes: its compensation was redriven and went through.
                self.status = RunStatus::Compensating;
                self.ended_at = None;
                self.compensate_from(i.checked_sub(1), now, new_id)
            }
            StepEnd::Failed(error) | StepEnd::Cancelled(error) => {
                if self.steps[i].status == StepStatus::CompensationFailed {
                    return Advance::default();
                }
                self.steps[i].status = StepStatus::CompensationFailed;
                self.steps[i].error = Some(error);
                self.end(RunStatus::Failed, now)
            }
        }
    }

    /// Starts the compensation of the latest step at or before `from` that succeeded and has one;
    /// with none left, the run is compensated.
    fn compensate_from(&mut self, from: Option<usize>, now: Millis, new_id: &mut dyn FnMut() -> String) -> Advance {
        self.status = RunStatus::Compensating;
        let Some(from) = from else { return self.end(RunStatus::Compensated, now) };
        let found = (0..=from)
            .rev()
            .find(|&k| self.steps[k].status == StepStatus::Succeeded && self.definition.steps[k].compensate.is_some());
        let Some(k) = found else { return self.end(RunStatus::Compensated, now) };
        let payload = json!({
            "input": self.input,
            "steps": self.outputs(),
            "failed_step": self.failed_step,
            "error": self.error,
        });
        let def = &self.definition.steps[k];
        let start = StepStart {
            step: StepRef { run: self.id.clone(), step: def.name.clone(), compensate: true },
            function: def.compensate.clone().unwrap_or_default(),
            invocation_id: new_id(),
            payload,
        };
        self.steps[k].status = StepStatus::Compensating;
        self.steps[k].compensation_id = Some(start.invocation_id.clone());
        Advance { start: Some(start), ended: None, changed: true }
    }

    fn end(&mut self, status: RunStatus, now: Millis) -> Advance {
        self.status = status;
        self.ended_at = Some(now);
        Advance { start: None, ended: Some(status), changed: true }
    }

    /// Cancels a running run. `attempt_running`: whether an attempt of the step in flight is
    /// running now (then the run is only marked, and the step's end compensates).
    pub fn cancel(
        &mut self,
        attempt_running: bool,
        now: Millis,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<Cancel, NotCancellable> {
        if self.status != RunStatus::Running {
            return Err(NotCancellable(self.status));
        }
        let Some(current) = self.current_step().cloned() else {
            return Err(NotCancellable(self.status));
        };
        if attempt_running || current.invocation_id.is_none() {
            if !self.cancel_requested {
                self.cancel_requested = true;
                self.updated_at = now;
                self.version += 1;
            }
            return Ok(Cancel::AfterAttempt);
        }
        self.cancel_requested = true;
        let step = StepRef { run: self.id.clone(), step: current.name.clone(), compensate: false };
        let advance = self.step_ended(&step, StepEnd::Cancelled(CANCELLED.into()), now, new_id);
        Ok(Cancel::Now { invocation_id: current.invocation_id.unwrap_or_default(), advance })
    }

    /// The data of the `keel.workflow.*` event sent when the run ends.
    pub fn ended_event_data(&self) -> Value {
        json!({
            "id": self.id,
            "workflow": self.workflow,
            "status": self.status.as_str(),
            "input": self.input,
            "steps": self.outputs(),
            "failed_step": self.failed_step,
            "error": self.error,
        })
    }
}

enum EndKind {
    Cancelled,
    Other,
}

/// The error of a step (and of its run) cancelled with its run.
pub const CANCELLED: &str = "cancelled: the workflow run was cancelled";

/// The CloudEvents `type` of a run's end: `keel.workflow.succeeded|compensated|failed`.
pub fn ended_event_type(status: RunStatus) -> String {
    format!("keel.workflow.{}", status.as_str())
}

/// A step's output as the next steps see it: the body as JSON, else as a string (null if empty).
pub fn output_of(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests;
