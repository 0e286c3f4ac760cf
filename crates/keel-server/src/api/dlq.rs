//! The dead-letter queue: inspect, redrive (one or in bulk), discard.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use keel_core::invocation::Status;
use keel_core::store::{ListFilter, MAX_LIMIT};
use serde_json::{json, Value};

use super::body::{self, list_filter};
use super::problem::Problem;
use super::view;
use crate::state::Shared;

/// `GET /v1/dlq?function=&limit=&cursor=`
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    let mut filter = list_filter(&query, &["function", "subscription", "limit", "cursor"])?;
    filter.status = Some(Status::Dead);
    let page = shared.store.list(filter).await?;
    Ok(Json(view::page(&page.items, page.next_cursor)))
}

/// `POST /v1/dlq/{id}/redrive`: back to `queued`, same id, history kept.
pub(crate) async fn redrive(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    let inv = shared.store.redrive(&id, shared.clock.now_ms()).await?;
    shared.functions.wake(&inv.function);
    Ok(Json(view::invocation(&inv, false)))
}

/// The body of a bulk redrive.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveFilter {
    function: Option<String>,
    subscription: Option<String>,
    limit: Option<usize>,
}

/// `POST /v1/dlq/redrive` with `{"function"?, "limit"?}`: every match (or `limit` of them).
pub(crate) async fn redrive_matching(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let body = body::read(body)?;
    let filter: RedriveFilter = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveFilter::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Problem::bad_request(format!(
                "the body must be a JSON object like {{\"function\": \"charge\", \"limit\": 100}}: {e}"
            ))
        })?
    };
    if filter.limit == Some(0) {
        return Err(Problem::bad_request("limit must be at least 1"));
    }
    let mut left = filter.limit.unwrap_or(usize::MAX);
    let mut redriven = 0;
    while left > 0 {
        let asked = left.min(MAX_LIMIT);
        let batch = ListFilter {
            function: filter.function.clone(),
            subscription: filter.subscription.clone(),
            limit: asked,
            ..Default::default()
        };
        let done = shared.store.redrive_matching(batch, shared.clock.now_ms()).await?;
        for inv in &done {
            shared.functions.wake(&inv.function);
        }
        redriven += done.len();
        left -= done.len();
        if done.len() < asked {
            break;
        }
    }
    Ok(Json(json!({ "redriven": redriven })))
}

/// `DELETE /v1/dlq/{id}`
pub(crate) async fn discard(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    let inv = shared.store.discard(&id, shared.clock.now_ms()).await?;
    Ok(Json(view::invocation(&inv, false)))
}
