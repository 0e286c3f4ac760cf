//! Invoking functions: sync (`/invoke`, the caller waits) and async (`/invocations`, 202 once
//! the invocation is on disk).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_core::id::new_id;
use keel_core::invocation::NewInvocation;
use serde_json::json;

use super::body;
use super::problem::Problem;
use crate::dispatch::sync::{self, SyncEnd, SyncRequest};
use crate::functions::Function;
use crate::state::Shared;
use crate::trace;

/// Longest `keel-delay` accepted.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Checks that come before any work: draining, the function, the body.
fn admit<'a>(
    shared: &'a Shared,
    name: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<(&'a Arc<Function>, Bytes), Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    let function = shared.functions.get(name).ok_or_else(|| Problem::unknown_function(name))?;
    Ok((function, body::read(body)?))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn traceparent(headers: &HeaderMap) -> String {
    header_str(headers, "traceparent").and_then(trace::parse_traceparent).unwrap_or_else(trace::new_traceparent)
}

/// `POST /v1/functions/{name}/invoke`
pub(crate) async fn invoke_sync(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (function, payload) = admit(&shared, &name, body)?;
    let request = SyncRequest {
        payload,
        content_type: header_str(&headers, "content-type").map(str::to_string),
        traceparent: traceparent(&headers),
    };
    let (inv, end) = sync::run(&shared, function, request).await;
    let attempts = inv.attempt_count;
    let problem = |status, kind, title| {
        Problem::new(status, kind, title, inv.error.clone().unwrap_or_default())
            .with("invocation_id", inv.id.clone())
            .with("attempts", attempts)
    };
    let passthrough = match (end, &inv.response) {
        (SyncEnd::Succeeded, Some(r)) => Some(r),
        (SyncEnd::Permanent, Some(r)) if (400..500).contains(&r.status) => Some(r),
        _ => None,
    };
    let mut response = match (passthrough, end) {
        (Some(r), _) => {
            let mut resp = (StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK), r.body.clone()).into_response();
            if let Some(ct) = r.content_type.as_deref().and_then(|ct| HeaderValue::from_str(ct).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp
        }
        (None, SyncEnd::DeadlineExceeded) => {
            problem(StatusCode::GATEWAY_TIMEOUT, "deadline-exceeded", "Deadline exceeded").into_response()
        }
        (None, SyncEnd::Exhausted) => {
            problem(StatusCode::BAD_GATEWAY, "retries-exhausted", "Retries exhausted").into_response()
        }
        (None, _) => problem(StatusCode::BAD_GATEWAY, "function-failed", "Function failed").into_response(),
    };
    let headers = response.headers_mut();
    headers.insert("keel-invocation-id", HeaderValue::from_str(&inv.id).expect("ULIDs are ASCII"));
    headers.insert("keel-attempts", HeaderValue::from(attempts));
    Ok(response)
}

/// `POST /v1/functions/{name}/invocations`
pub(crate) async fn invoke_async(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (function, payload) = admit(&shared, &name, body)?;
    let delay = match header_str(&headers, "keel-delay") {
        None => Duration::ZERO,
        Some(text) => humantime::parse_duration(text.trim()).ok().filter(|d| *d <= MAX_DELAY).ok_or_else(|| {
            Problem::bad_request(format!(
                "keel-delay {text:?} is not a duration like \"250ms\", \"30s\" or \"5m\" (at most 365 days)"
            ))
        })?,
    };
    let now = shared.clock.now_ms();
    let new = NewInvocation {
        id: new_id(now),
        function: function.config.name.clone(),
        payload,
        content_type: header_str(&headers, "content-type").map(str::to_string),
        created_at: now,
        due_at: now + delay.as_millis() as i64,
        idempotency_key: None,
        traceparent: Some(traceparent(&headers)),
    };
    let inv = shared.store.enqueue(new).await?;
    function.wake.notify_one();
    let location = format!("/v1/invocations/{}", inv.id);
    let mut response =
        (StatusCode::ACCEPTED, axum::Json(json!({"id": inv.id, "status": inv.status.as_str()}))).into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("ASCII"));
    response.headers_mut().insert("keel-invocation-id", HeaderValue::from_str(&inv.id).expect("ASCII"));
    Ok(response)
}
