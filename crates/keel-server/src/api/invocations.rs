//! Reading and cancelling invocations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_core::invocation::{Invocation, Status};

use super::body::{list_filter, PageQuery};
use super::idempotency::IdempotencyKeyHeader;
use super::openapi;
use super::view;
use crate::problem::Problem;
use crate::state::Shared;

/// How long a read waits for a sync invocation's record that is still being written.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) async fn find(shared: &Shared, id: &str) -> Result<Invocation, Problem> {
    if let Some(inv) = shared.store.get(id).await? {
        return Ok(inv);
    }
    // A sync call's record is written behind its reply: a client reading the id it was just
    // given waits for it rather than being told it does not exist. Read again whether or not
    // there was a wait: the record may have been committed between the read above and the look
    // at what is pending (a 404 for a call just answered, seen once in CI).
    shared.behind.wait_for(shared.store.as_ref(), id, RECORD_WAIT).await;
    if let Some(inv) = shared.store.get(id).await? {
        return Ok(inv);
    }
    Err(Problem::not_found(format!("invocation {id} not found")))
}

/// An invocation, with its attempt history and result.
#[utoipa::path(
    get,
    path = "/v1/invocations/{id}",
    tag = "invocations",
    operation_id = "getInvocation",
    params(("id" = String, Path, description = "The invocation.")),
    responses(
        (status = 200, description = "The invocation.", body = view::Invocation),
        (status = 404, description = "No invocation with that id."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<view::Invocation>, Problem> {
    Ok(Json(view::invocation(&find(&shared, &id).await?, true)))
}

/// The stored response of a succeeded invocation, raw.
///
/// Answered with the function's own status, content-type and body.
#[utoipa::path(
    get,
    path = "/v1/invocations/{id}/result",
    tag = "invocations",
    operation_id = "getInvocationResult",
    params(("id" = String, Path, description = "The invocation.")),
    responses(
        (status = "2XX", description = "The function's response, as it answered: status, content-type and body.",
            content(("*/*")),
            headers(("keel-invocation-id" = String, description = "The invocation."))),
        (status = 404, description = "No invocation with that id."),
        (status = 409, description = "The invocation has not succeeded, so it has no result (`no-result`, with \
            `invocation_id` and `invocation_status`)."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn result(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let inv = find(&shared, &id).await?;
    let response = match (&inv.response, inv.status) {
        (Some(r), Status::Succeeded) => r,
        _ => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "no-result",
                "No result",
                format!("invocation {id} is {}; only succeeded invocations have a result", inv.status),
            )
            .invocation(inv.id)
            .invocation_status(inv.status.as_str()))
        }
    };
    let mut resp =
        (StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK), response.body.clone()).into_response();
    if let Some(ct) = response.content_type.as_deref().and_then(crate::header_values::content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut().insert("keel-invocation-id", HeaderValue::from_str(&inv.id).expect("ASCII"));
    Ok(resp)
}

/// Invocations, newest first, filtered by function, subscription and status.
#[utoipa::path(
    get,
    path = "/v1/invocations",
    tag = "invocations",
    operation_id = "listInvocations",
    params(
        PageQuery,
        ("status" = Option<view::InvocationStatus>, Query, description = "Only invocations in this status."),
    ),
    responses(
        (status = 200, description = "A page of invocations (without attempts and results).",
            body = view::InvocationPage),
        (status = 400, description = "An unknown query parameter or status, a limit below 1, or a malformed cursor."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<view::InvocationPage>, Problem> {
    let filter = list_filter(&query, &["function", "subscription", "status", "limit", "cursor"])?;
    shared.behind.wait_for_current(shared.store.as_ref(), RECORD_WAIT).await;
    let page = shared.store.list(filter).await?;
    Ok(Json(view::page(&page.items, page.next_cursor)))
}

/// Cancel a queued or retrying invocation.
#[utoipa::path(
    post,
    path = "/v1/invocations/{id}/cancel",
    tag = "invocations",
    operation_id = "cancelInvocation",
    params(("id" = String, Path, description = "The invocation."), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "Cancelled: the invocation (without attempts and result).",
            body = view::Invocation,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = openapi::BAD_KEY),
        (status = 404, description = "No invocation with that id."),
        (status = 409, description = "It is neither queued nor retrying (`invalid-state`), or it is a workflow \
            step (`workflow-step`, with `run_id`: cancel the run), or a request with this \
            Idempotency-Key is still in progress (`idempotency-key-in-use`, with Retry-After).",
            headers(("Retry-After" = u64, description = "On `idempotency-key-in-use`: seconds to wait."))),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 422, description = openapi::KEY_REUSED),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<view::Invocation>, Problem> {
    // A workflow step is cancelled with its run, which then compensates what the run did: on
    // its own, the run would wait for it forever.
    if let Some(step) = shared.store.get(&id).await?.and_then(|inv| inv.workflow) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "workflow-step",
            "Conflict",
            format!("invocation {id} is a step of workflow run {}: cancel the run instead", step.run),
        )
        .run(step.run, None));
    }
    let inv = shared.store.cancel(&id, shared.clock.now_ms()).await?;
    Ok(Json(view::invocation(&inv, false)))
}
