//! Workflows: `GET /v1/workflows` (what is declared), `POST /v1/workflows/{name}/runs` (start a
//! run, once per Idempotency-Key), `GET /v1/workflow-runs[/{id}]` and
//! `POST /v1/workflow-runs/{id}/cancel` (compensates what the run did).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::store::RunFilter;
use keel_core::workflow::{self as core, RunStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::body::{parse_cursor, parse_limit};
use super::idempotency::{self, IdempotencyKeyHeader};
use super::openapi;
use crate::problem::Problem;
use crate::state::Shared;
use crate::workflows::CancelError;

/// Every declared workflow, with its steps.
#[utoipa::path(
    get,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "listWorkflows",
    responses((status = 200, description = "Every configured workflow, by name.", body = WorkflowList))
)]
pub(crate) async fn list_workflows(State(shared): State<Arc<Shared>>) -> Json<WorkflowList> {
    let items = shared
        .config
        .workflows
        .values()
        .map(|w| Workflow {
            name: w.name.clone(),
            steps: w.definition.steps.iter().map(step_def).collect(),
            notify_topic: w.definition.notify_topic.clone(),
        })
        .collect();
    Json(WorkflowList { items, next_cursor: None })
}

fn step_def(s: &core::StepDef) -> StepDef {
    StepDef { name: s.name.clone(), function: s.function.clone(), compensate: s.compensate.clone() }
}

/// Start a run of a workflow.
///
/// The body (any JSON; empty means `null`) is the run's input: the first step's body. With an
/// Idempotency-Key, a second request with the same key (for this workflow) starts nothing and
/// answers the run the first one started, with `idempotent-replayed: true` (another input with
/// the same key → 422). The key is kept with the run.
#[utoipa::path(
    post,
    path = "/v1/workflows/{name}/runs",
    tag = "workflows",
    operation_id = "startWorkflowRun",
    params(
        ("name" = String, Path, description = "The workflow."),
        IdempotencyKeyHeader,
        ("traceparent" = Option<String>, Header, nullable = false,
            description = "W3C trace context: the run and every step attempt join this trace."),
    ),
    request_body(description = "The run's input (JSON).", content(("application/json"))),
    responses(
        (status = 202, description = "Started (or, replayed, the run this key started).", body = WorkflowRun,
            headers(
                ("Location" = String, description = "`/v1/workflow-runs/{id}`"),
                ("idempotent-replayed" = String, description = "`true` on a replayed answer."),
            )),
        (status = 400, description = "The body is not JSON, is nested deeper than `server.limits.max_json_depth`, \
            or cannot be read; or the Idempotency-Key is malformed or sent twice."),
        (status = 404, description = "No workflow of that name is configured (`unknown-workflow`)."),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 422, description = openapi::KEY_REUSED),
        (status = 503, description = openapi::UNAVAILABLE_OR_DRAINING, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn start(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: super::body::RequestBody,
) -> Result<Response, Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    let workflow = shared.config.workflows.get(&name).ok_or_else(|| unknown_workflow(&name))?.clone();
    let body = body.read()?;
    shared.limits.check_json("the body", &body)?;
    let input: Value = match body.iter().all(u8::is_ascii_whitespace) {
        true => Value::Null,
        false => {
            serde_json::from_slice(&body).map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))?
        }
    };
    let key = idempotency::key_from(&headers)?;
    if key.is_some() {
        shared.limits.admit_key_record(&actor.principal.actor())?;
    }
    // The request's context (the HTTP layer set it): the run's span is its child.
    let request_trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::trace::parse_traceparent)
        .unwrap_or_else(crate::trace::new_traceparent);
    let (span, traceparent) = crate::telemetry::run_span(&workflow.name, &request_trace);
    // In a task of its own: once stored, the first step's dispatcher must be woken even if the
    // client went away meanwhile.
    let (shared2, given) = (shared.clone(), input.clone());
    let (run, replayed) =
        super::admit_fully(
            async move { Ok(crate::workflows::start(&shared2, &workflow, given, key, traceparent).await?) },
        )
        .await?;
    span.record("run_id", run.id.as_str());
    if replayed && run.input != input {
        return Err(idempotency::mismatch());
    }
    let location = format!("/v1/workflow-runs/{}", run.id);
    let mut response = (StatusCode::ACCEPTED, Json(view(&run))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_str(&location).expect("ASCII"));
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// One run, with each step's status, invocation and output.
#[utoipa::path(
    get,
    path = "/v1/workflow-runs/{id}",
    tag = "workflows",
    operation_id = "getWorkflowRun",
    params(("id" = String, Path, description = "The run.")),
    responses(
        (status = 200, description = "The run.", body = WorkflowRun),
        (status = 404, description = "No run with that id."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn get_run(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowRun>, Problem> {
    let run = shared.store.get_run(&id).await?.ok_or_else(|| run_not_found(&id))?;
    Ok(Json(view(&run)))
}

/// Runs, newest first, filtered by workflow and status.
#[utoipa::path(
    get,
    path = "/v1/workflow-runs",
    tag = "workflows",
    operation_id = "listWorkflowRuns",
    params(RunQuery),
    responses(
        (status = 200, description = "A page of runs.", body = WorkflowRunPage),
        (status = 400, description = "An unknown query parameter or status, a limit below 1, or a malformed cursor."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn list_runs(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<WorkflowRunPage>, Problem> {
    let mut filter = RunFilter::default();
    for (key, value) in &query {
        match key.as_str() {
            "workflow" => filter.workflow = Some(value.clone()),
            "status" => {
                filter.status = Some(RunStatus::parse(value).ok_or_else(|| {
                    let valid: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                    Problem::bad_request(format!("status {value:?} is not one of: {}", valid.join(", ")))
                })?)
            }
            "limit" => filter.limit = parse_limit(value)?,
            "cursor" => filter.cursor = Some(parse_cursor(value)?),
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {other:?}; expected one of: workflow, status, limit, cursor"
                )))
            }
        }
    }
    let page = shared.store.list_runs(filter).await?;
    Ok(Json(WorkflowRunPage { items: page.items.iter().map(view).collect(), next_cursor: page.next_cursor }))
}

/// Cancel a running run: what it did is compensated.
///
/// Between attempts of its current step, that step's invocation is cancelled and the
/// compensations of the steps that succeeded start at once (the run answers `compensating`, or
/// `compensated` when nothing needs undoing). While an attempt runs, the run is marked
/// (`cancel_requested`) and that attempt's end starts the compensation (a step that succeeded
/// is compensated too).
#[utoipa::path(
    post,
    path = "/v1/workflow-runs/{id}/cancel",
    tag = "workflows",
    operation_id = "cancelWorkflowRun",
    params(("id" = String, Path, description = "The run.")),
    responses(
        (status = 202, description = "Cancelled (or marked for cancel): the run as it is now.", body = WorkflowRun),
        (status = 404, description = "No run with that id."),
        (status = 409, description = "The run is not running (`run-not-running`, with `run_status`)."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn cancel(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let shared2 = shared.clone();
    let run = super::admit_fully(async move {
        let run = match crate::workflows::cancel(&shared2, &id).await {
            Ok(run) => run,
            Err(CancelError::Store(keel_core::Error::NotFound { .. })) => return Err(run_not_found(&id)),
            Err(CancelError::Store(e)) => return Err(e.into()),
            Err(CancelError::NotRunning(why)) => {
                return Err(Problem::new(StatusCode::CONFLICT, "run-not-running", "Conflict", why.to_string())
                    .run(id.clone(), Some(why.0.as_str())))
            }
        };
        actor.record(&shared2, "workflow.cancel", &id, serde_json::json!({ "status": run.status.as_str() })).await;
        Ok(run)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(view(&run))).into_response())
}

fn unknown_workflow(name: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-workflow",
        "Unknown workflow",
        format!("no workflow named {name:?} is configured"),
    )
}

fn run_not_found(id: &str) -> Problem {
    Problem::not_found(format!("workflow run {id} not found"))
}

/// The declared workflows.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkflowList {
    items: Vec<Workflow>,
    /// Always absent: the list is never paginated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

/// A declared workflow.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Workflow {
    name: String,
    steps: Vec<StepDef>,
    /// Gets `keel.workflow.succeeded|compensated|failed` when a run ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    notify_topic: Option<String>,
}

/// A declared step.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StepDef {
    name: String,
    function: String,
    /// The function that undoes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    compensate: Option<String>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkflowRunPage {
    items: Vec<WorkflowRun>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

/// A workflow run.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkflowRun {
    id: String,
    workflow: String,
    status: RunStatusView,
    /// The run's input.
    input: Value,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// When it succeeded, was compensated, or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    ended_at: Option<String>,
    /// The step whose failure (or cancel) started the compensation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    failed_step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
    /// Cancelled while a step's attempt ran: that attempt's end starts the compensation.
    cancel_requested: bool,
    steps: Vec<WorkflowStep>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunStatusView {
    Running,
    Succeeded,
    /// A step failed (or the run was cancelled): completed steps are being undone, in reverse.
    Compensating,
    Compensated,
    /// A compensation is dead: redrive it from the DLQ to resume.
    Failed,
}

/// Where a step of a run is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StepStatusView {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Compensating,
    Compensated,
    CompensationFailed,
}

/// One step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkflowStep {
    name: String,
    function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    compensate: Option<String>,
    status: StepStatusView,
    /// The step's invocation (its key is `{run_id}/{step}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    invocation_id: Option<String>,
    /// What the function answered (its body as JSON, or as a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    ended_at: Option<String>,
    /// The compensation's invocation (its key is `{run_id}/{step}/compensate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    compensation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    compensated_at: Option<String>,
}

/// The query of `GET /v1/workflow-runs`, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "parameters for the OpenAPI document; the query is read by `list_runs`")]
pub(crate) struct RunQuery {
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// Only runs in this status.
    status: Option<RunStatusView>,
    /// Page size: a whole number of at least 1; 100 by default, at most 1,000.
    #[param(value_type = Option<String>, pattern = "^[0-9]*[1-9][0-9]*$", example = "100")]
    limit: Option<u64>,
    /// The `next_cursor` of the previous page, as answered.
    #[param(value_type = Option<String>, pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    cursor: Option<String>,
}

pub(crate) fn view(run: &core::Run) -> WorkflowRun {
    let steps = run
        .steps
        .iter()
        .zip(&run.definition.steps)
        .map(|(s, def)| WorkflowStep {
            name: s.name.clone(),
            function: def.function.clone(),
            compensate: def.compensate.clone(),
            status: match s.status {
                core::StepStatus::Pending => StepStatusView::Pending,
                core::StepStatus::Running => StepStatusView::Running,
                core::StepStatus::Succeeded => StepStatusView::Succeeded,
                core::StepStatus::Failed => StepStatusView::Failed,
                core::StepStatus::Cancelled => StepStatusView::Cancelled,
                core::StepStatus::Compensating => StepStatusView::Compensating,
                core::StepStatus::Compensated => StepStatusView::Compensated,
                core::StepStatus::CompensationFailed => StepStatusView::CompensationFailed,
            },
            invocation_id: s.invocation_id.clone(),
            output: s.output.clone(),
            error: s.error.clone(),
            started_at: s.started_at.map(rfc3339),
            ended_at: s.ended_at.map(rfc3339),
            compensation_id: s.compensation_id.clone(),
            compensated_at: s.compensated_at.map(rfc3339),
        })
        .collect();
    WorkflowRun {
        id: run.id.clone(),
        workflow: run.workflow.clone(),
        status: match run.status {
            RunStatus::Running => RunStatusView::Running,
            RunStatus::Succeeded => RunStatusView::Succeeded,
            RunStatus::Compensating => RunStatusView::Compensating,
            RunStatus::Compensated => RunStatusView::Compensated,
            RunStatus::Failed => RunStatusView::Failed,
        },
        input: run.input.clone(),
        created_at: rfc3339(run.created_at),
        updated_at: rfc3339(run.updated_at),
        ended_at: run.ended_at.map(rfc3339),
        failed_step: run.failed_step.clone(),
        error: run.error.clone(),
        cancel_requested: run.cancel_requested,
        steps,
    }
}
