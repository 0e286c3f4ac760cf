//! How both stores keep a workflow run: its scalar fields in columns, its input, definition and
//! step states as JSON text.

use keel_core::workflow::{Definition, Run, RunStatus, StepState};
use keel_core::Error;

/// The JSON columns of a run.
pub(crate) struct RunJson {
    pub(crate) input: String,
    pub(crate) definition: String,
    pub(crate) steps: String,
}

impl RunJson {
    pub(crate) fn of(run: &Run) -> RunJson {
        RunJson {
            input: run.input.to_string(),
            definition: serde_json::to_string(&run.definition).unwrap_or_default(),
            steps: serde_json::to_string(&run.steps).unwrap_or_default(),
        }
    }
}

/// A run's columns as read back, in the order both stores select them.
pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) workflow: String,
    pub(crate) status: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) input: String,
    pub(crate) definition: String,
    pub(crate) steps: String,
    pub(crate) failed_step: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) cancel_requested: bool,
    pub(crate) traceparent: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) ended_at: Option<i64>,
    pub(crate) version: i64,
}

/// The run columns, in [`RunRow`]'s order.
pub(crate) const RUN_COLUMNS: &str = "id, workflow, status, idempotency_key, input, definition, steps, failed_step, \
     error, cancel_requested, traceparent, created_at, updated_at, ended_at, version";

impl RunRow {
    pub(crate) fn into_run(self) -> Result<Run, Error> {
        let bad = |what: &str, e: String| Error::Bug(format!("workflow run {}: unreadable {what}: {e}", self.id));
        let status = RunStatus::parse(&self.status).ok_or_else(|| bad("status", self.status.clone()))?;
        let input = serde_json::from_str(&self.input).map_err(|e| bad("input", e.to_string()))?;
        let definition: Definition =
            serde_json::from_str(&self.definition).map_err(|e| bad("definition", e.to_string()))?;
        let steps: Vec<StepState> = serde_json::from_str(&self.steps).map_err(|e| bad("steps", e.to_string()))?;
        Ok(Run {
            id: self.id,
            workflow: self.workflow,
            status,
            input,
            definition,
            steps,
            failed_step: self.failed_step,
            error: self.error,
            cancel_requested: self.cancel_requested,
            idempotency_key: self.idempotency_key,
            traceparent: self.traceparent,
            created_at: self.created_at,
            updated_at: self.updated_at,
            ended_at: self.ended_at,
            version: self.version as u64,
        })
    }
}

/// The refusal of a change decided on an older version of the run.
pub(crate) fn stale(id: &str, expected: u64) -> Error {
    Error::Stale(format!("workflow run {id} changed since version {expected}: read it again"))
}

/// The refusal to redrive a dead workflow step: its run compensated the steps before it when it
/// died, so running it again would redo work that was undone. (Its dead compensation, by
/// contrast, is redriven to resume the run's compensation.)
pub(crate) fn step_not_redriven(id: &str, step: &keel_core::workflow::StepRef) -> Error {
    Error::InvalidState(format!(
        "cannot redrive invocation {id}: it is step {:?} of workflow run {}, which compensated the steps before it \
         when it died; start a new run instead",
        step.step, step.run
    ))
}
