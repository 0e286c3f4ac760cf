//! KV over HTTP: `GET/PUT/DELETE /v1/kv/{ns}/{key}`, versions as ETags, `If-Match: "7"` and
//! `If-None-Match: *` as preconditions (412 when they fail).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_core::kv::{self, KvWrite, Precondition};
use serde_json::json;

use super::body;
use super::problem::Problem;
use crate::state::Shared;

fn check(ns: &str, key: &str) -> Result<(), Problem> {
    kv::check_name("ns", ns).and_then(|_| kv::check_name("key", key)).map_err(Problem::bad_request)
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits")
}

/// The precondition the request's `If-Match` / `If-None-Match` headers state.
fn precondition(headers: &HeaderMap) -> Result<Precondition, Problem> {
    let get = |name| headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or("").trim().to_string());
    match (get(header::IF_MATCH), get(header::IF_NONE_MATCH)) {
        (Some(_), Some(_)) => Err(Problem::bad_request("send If-Match or If-None-Match, not both")),
        (None, Some(v)) if v == "*" => Ok(Precondition::IfAbsent),
        (None, Some(v)) => Err(Problem::bad_request(format!("If-None-Match takes only * (got {v:?})"))),
        (Some(v), None) => v
            .trim_start_matches("W/")
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse::<i64>().ok())
            .map(Precondition::IfVersion)
            .ok_or_else(|| Problem::bad_request(format!("If-Match takes a version ETag like \"7\" (got {v:?})"))),
        (None, None) => Ok(Precondition::None),
    }
}

/// `GET /v1/kv/{ns}/{key}`: the value as the JSON body, its version as the ETag.
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response, Problem> {
    check(&ns, &key)?;
    let entry =
        shared.store.kv_get(&ns, &key).await?.ok_or_else(|| Problem::not_found(format!("{ns}/{key} not found")))?;
    let mut response = (StatusCode::OK, entry.value).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::ETAG, etag(entry.version));
    Ok(response)
}

/// `PUT /v1/kv/{ns}/{key}` with a JSON body.
pub(crate) async fn put(
    State(shared): State<Arc<Shared>>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    check(&ns, &key)?;
    let precondition = precondition(&headers)?;
    let body = body::read(body)?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|e| Problem::bad_request(format!("the value must be JSON: {e}")))?;
    let write = KvWrite { ns: ns.clone(), key: key.clone(), value: Some(body), precondition };
    let version = shared.store.kv_write(write, shared.clock.now_ms()).await?.unwrap_or_default();
    let status = if version == 1 { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, axum::Json(json!({"ns": ns, "key": key, "version": version}))).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    Ok(response)
}

/// `DELETE /v1/kv/{ns}/{key}`
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    check(&ns, &key)?;
    let precondition = precondition(&headers)?;
    if precondition == Precondition::None && shared.store.kv_get(&ns, &key).await?.is_none() {
        return Err(Problem::not_found(format!("{ns}/{key} not found")));
    }
    shared.store.kv_write(KvWrite { ns, key, value: None, precondition }, shared.clock.now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}
