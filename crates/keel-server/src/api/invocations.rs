//! Reading and cancelling invocations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_core::invocation::{Invocation, Status};
use serde_json::Value;

use super::body::list_filter;
use super::problem::Problem;
use super::view;
use crate::state::Shared;

async fn find(shared: &Shared, id: &str) -> Result<Invocation, Problem> {
    shared.store.get(id).await?.ok_or_else(|| Problem::not_found(format!("invocation {id} not found")))
}

/// `GET /v1/invocations/{id}`
pub(crate) async fn get(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    Ok(Json(view::invocation(&find(&shared, &id).await?, true)))
}

/// `GET /v1/invocations/{id}/result`: the stored response, raw.
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
            .with("invocation_id", inv.id)
            .with("invocation_status", inv.status.as_str()))
        }
    };
    let mut resp =
        (StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK), response.body.clone()).into_response();
    if let Some(ct) = response.content_type.as_deref().and_then(|ct| HeaderValue::from_str(ct).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut().insert("keel-invocation-id", HeaderValue::from_str(&inv.id).expect("ASCII"));
    Ok(resp)
}

/// `GET /v1/invocations?function=&status=&limit=&cursor=`
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    let filter = list_filter(&query, &["function", "subscription", "status", "limit", "cursor"])?;
    let page = shared.store.list(filter).await?;
    Ok(Json(view::page(&page.items, page.next_cursor)))
}

/// `POST /v1/invocations/{id}/cancel`
pub(crate) async fn cancel(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    let inv = shared.store.cancel(&id, shared.clock.now_ms()).await?;
    Ok(Json(view::invocation(&inv, false)))
}
