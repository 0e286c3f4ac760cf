//! `POST/GET /v1/chaos/faults` and `DELETE /v1/chaos/faults/{id}`: inject faults on a function,
//! a dependency or the store, list them, end one early. Admin only, and 404 unless `[chaos]
//! enabled = true`. Faults are stored: every node applies them within a second.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_core::chaos::{check, Fault, FaultRequest, Kind, Known, Target};
use keel_core::clock::rfc3339;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::openapi;
use crate::problem::Problem;
use crate::state::Shared;

fn disabled() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "chaos-disabled",
        "Chaos disabled",
        "fault injection is off: set `[chaos] enabled = true` in keel.toml to use these routes",
    )
}

/// Inject a fault.
///
/// `{"target": {"function": NAME} | {"dependency": NAME} | {"store": true}, "kind": "latency" |
/// "error" | "abort" | "timeout" | "crash", "latency": "300ms" | {"min", "max"}, "status": 503,
/// "rate": 0.3, "duration": "60s"}`. `error` answers the call with `status` (503 when absent)
/// in the target's place; `abort` resets the connection; `timeout` hangs the call until its
/// timeout; `crash` kills a running instance of a `command` function; the store takes latency
/// and error (its writes slowed or failed). `rate` (default 1) is the share of calls hit. The
/// fault expires after `duration` (at most 24h) and applies on every node within a second.
#[utoipa::path(
    post,
    path = "/v1/chaos/faults",
    operation_id = "injectChaosFault",
    tag = "chaos",
    request_body(description = "The fault.", content(("application/json"))),
    responses(
        (status = 201, description = "Injected.", body = ChaosFault),
        (status = 400, description = "The body is not a fault (`invalid-input`, with `errors`: each member's \
            JSON Pointer `path` and `message`)."),
        (status = 404, description = "Chaos is not enabled (`chaos-disabled`)."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn inject(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    body: super::body::RequestBody,
) -> Result<Response, Problem> {
    if !shared.chaos.enabled() {
        return Err(disabled());
    }
    let body = body.read()?;
    shared.limits.check_json("the body", &body)?;
    let request: FaultRequest =
        serde_json::from_slice(&body).map_err(|e| Problem::bad_request(format!("the body is not a fault: {e}")))?;
    let now = shared.clock.now_ms();
    let checked = {
        let config = &shared.config;
        let known = Known {
            functions: &|f| config.functions.contains_key(f),
            commands: &|f| config.functions.get(f).is_some_and(|f| f.command().is_some()),
            dependencies: &|d| config.dependencies.contains_key(d),
        };
        check(&request, &known, keel_core::id::new_ordered_id(now), now)
    };
    let fault = checked.map_err(|problems| {
        let errors: Vec<keel_core::schema::SchemaError> = problems
            .into_iter()
            .map(|p| keel_core::schema::SchemaError { path: p.path.to_owned(), message: p.message })
            .collect();
        Problem::invalid_input("the body is not a fault", &errors)
    })?;
    let (shared2, stored) = (shared.clone(), fault.clone());
    super::admit_fully(async move {
        shared2.store.add_fault(stored.clone()).await?;
        crate::chaos::refresh(&shared2).await;
        actor
            .record(&shared2, "chaos.inject", &stored.id, serde_json::to_value(view(&stored)).unwrap_or_default())
            .await;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view(&fault))).into_response())
}

/// The faults in force, oldest first.
#[utoipa::path(
    get,
    path = "/v1/chaos/faults",
    operation_id = "listChaosFaults",
    tag = "chaos",
    responses(
        (status = 200, description = "The faults not expired.", body = ChaosFaultList),
        (status = 404, description = "Chaos is not enabled (`chaos-disabled`)."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<ChaosFaultList>, Problem> {
    if !shared.chaos.enabled() {
        return Err(disabled());
    }
    let faults = shared.store.faults(shared.clock.now_ms()).await?;
    Ok(Json(ChaosFaultList { items: faults.iter().map(view).collect(), next_cursor: None }))
}

/// End a fault now.
#[utoipa::path(
    delete,
    path = "/v1/chaos/faults/{id}",
    operation_id = "clearChaosFault",
    tag = "chaos",
    params(("id" = String, Path, description = "The fault.")),
    responses(
        (status = 204, description = "Removed: no node applies it after its next look (within a second)."),
        (status = 404, description = "No fault with that id (`not-found`), or chaos is not enabled \
            (`chaos-disabled`)."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn clear(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if !shared.chaos.enabled() {
        return Err(disabled());
    }
    let shared2 = shared.clone();
    super::admit_fully(async move {
        if !shared2.store.remove_fault(&id).await? {
            return Err(Problem::not_found(format!("chaos fault {id} not found")));
        }
        crate::chaos::refresh(&shared2).await;
        actor.record(&shared2, "chaos.clear", &id, serde_json::json!({})).await;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The faults in force.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChaosFaultList {
    items: Vec<ChaosFault>,
    /// Always absent: the list is never paginated.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

/// A fault.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChaosFault {
    id: String,
    /// `{"function": NAME}`, `{"dependency": NAME}` or `{"store": true}`.
    #[schema(value_type = Object)]
    target: Value,
    /// `latency`, `error`, `abort`, `timeout` or `crash`.
    kind: String,
    /// For latency: the least and most added, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    latency_ms: Option<LatencyRange>,
    /// For error: the status answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    status: Option<u16>,
    /// The share of calls hit.
    rate: f64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// A latency range in milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatencyRange {
    min: u64,
    max: u64,
}

fn view(fault: &Fault) -> ChaosFault {
    let target = match &fault.target {
        Target::Function(name) => serde_json::json!({ "function": name }),
        Target::Dependency(name) => serde_json::json!({ "dependency": name }),
        Target::Store => serde_json::json!({ "store": true }),
    };
    ChaosFault {
        id: fault.id.clone(),
        target,
        kind: fault.kind.name().to_owned(),
        latency_ms: match fault.kind {
            Kind::Latency { min_ms, max_ms } => Some(LatencyRange { min: min_ms, max: max_ms }),
            _ => None,
        },
        status: match fault.kind {
            Kind::Error { status } => Some(status),
            _ => None,
        },
        rate: fault.rate,
        created_at: rfc3339(fault.created_at),
        expires_at: rfc3339(fault.expires_at),
    }
}
