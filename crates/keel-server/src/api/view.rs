//! The JSON shapes of invocations and attempts: one type each, serialized as answered and
//! described in the OpenAPI document by the same derive.

use keel_core::clock::rfc3339;
use keel_core::invocation::{self as core, StoredResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// An invocation. Lists leave out `attempts` and `result`; reading one alone has them.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Invocation {
    id: String,
    function: String,
    status: InvocationStatus,
    /// Attempts made so far, across redrives.
    attempt_count: u32,
    /// Times it was redriven from the DLQ.
    redrives: u32,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// When the next attempt is due (queued and retrying only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    next_attempt_at: Option<String>,
    /// The HTTP status of the function's final (or latest) response.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    result_status: Option<u16>,
    /// That response's body: inline when it is JSON, else as text. Only when read alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
    /// The subscription of an event delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    subscription: Option<String>,
    /// The event an event delivery delivers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    idempotency_key: Option<String>,
    /// The value of the function's `concurrency_key` header it came with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    concurrency_key: Option<String>,
    /// The workflow run step (or compensation) this invocation is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    workflow: Option<InvocationStep>,
    /// The attempt history, oldest first. Only when read alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    attempts: Option<Vec<Attempt>>,
}

/// Which step of which workflow run an invocation is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct InvocationStep {
    run_id: String,
    step: String,
    /// True for the step's compensation.
    compensation: bool,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum InvocationStatus {
    Queued,
    Running,
    Retrying,
    Succeeded,
    /// A sync call that did not succeed.
    Failed,
    /// In the DLQ.
    Dead,
    Cancelled,
    Discarded,
}

impl From<core::Status> for InvocationStatus {
    fn from(status: core::Status) -> Self {
        match status {
            core::Status::Queued => Self::Queued,
            core::Status::Running => Self::Running,
            core::Status::Retrying => Self::Retrying,
            core::Status::Succeeded => Self::Succeeded,
            core::Status::Failed => Self::Failed,
            core::Status::Dead => Self::Dead,
            core::Status::Cancelled => Self::Cancelled,
            core::Status::Discarded => Self::Discarded,
        }
    }
}

/// One attempt.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Attempt {
    /// 1-based, counted across redrives.
    number: u32,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    ended_at: String,
    duration_ms: i64,
    outcome: Outcome,
    /// The function's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    Success,
    Transient,
    Permanent,
    Timeout,
    Conflict,
}

impl From<keel_core::outcome::Outcome> for Outcome {
    fn from(outcome: keel_core::outcome::Outcome) -> Self {
        use keel_core::outcome::Outcome as O;
        match outcome {
            O::Success => Self::Success,
            O::Transient => Self::Transient,
            O::Permanent => Self::Permanent,
            O::Timeout => Self::Timeout,
            O::Conflict => Self::Conflict,
        }
    }
}

/// A page of invocations.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InvocationPage {
    items: Vec<Invocation>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// An invocation; with `detail`, its attempt history and result too.
pub(crate) fn invocation(inv: &core::Invocation, detail: bool) -> Invocation {
    Invocation {
        id: inv.id.clone(),
        function: inv.function.clone(),
        status: inv.status.into(),
        attempt_count: inv.attempt_count,
        redrives: inv.redrives,
        created_at: rfc3339(inv.created_at),
        updated_at: rfc3339(inv.updated_at),
        next_attempt_at: inv.due_at.map(rfc3339),
        result_status: inv.response.as_ref().map(|r| r.status),
        result: inv.response.as_ref().filter(|_| detail).map(result_value),
        error: inv.error.clone(),
        subscription: inv.delivery.as_ref().map(|d| d.subscription.clone()),
        event_id: inv.delivery.as_ref().map(|d| d.event_id.clone()),
        idempotency_key: inv.idempotency_key.clone(),
        concurrency_key: inv.concurrency_key.clone(),
        workflow: inv.workflow.as_ref().map(|w| InvocationStep {
            run_id: w.run.clone(),
            step: w.step.clone(),
            compensation: w.compensate,
        }),
        attempts: detail.then(|| inv.attempts.iter().map(attempt).collect()),
    }
}

fn attempt(a: &core::Attempt) -> Attempt {
    Attempt {
        number: a.number,
        started_at: rfc3339(a.started_at),
        ended_at: rfc3339(a.ended_at),
        duration_ms: a.ended_at - a.started_at,
        outcome: a.outcome.into(),
        status: a.http_status,
        error: a.error.clone(),
    }
}

/// A JSON result inline; anything else as text.
fn result_value(r: &StoredResponse) -> Value {
    let is_json = r.content_type.as_deref().is_some_and(|ct| ct.contains("json"));
    if is_json {
        if let Ok(v) = serde_json::from_slice(&r.body) {
            return v;
        }
    }
    Value::String(String::from_utf8_lossy(&r.body).into_owned())
}

/// `{"items": [...], "next_cursor": ...}`.
pub(crate) fn page(items: &[core::Invocation], next_cursor: Option<String>) -> InvocationPage {
    InvocationPage { items: items.iter().map(|i| invocation(i, false)).collect(), next_cursor }
}
