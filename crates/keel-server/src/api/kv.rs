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

use super::problem::Problem;
use super::{body, openapi};
use crate::state::Shared;

fn check(ns: &str, key: &str) -> Result<(), Problem> {
    kv::check_name("ns", ns).and_then(|_| kv::check_name("key", key)).map_err(Problem::bad_request)
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits")
}

/// The precondition headers of a write, for the OpenAPI document (read by [`precondition`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "parameters for the OpenAPI document; the headers are read by `precondition`")]
pub(crate) struct PreconditionHeaders {
    /// Write only if the current version is this ETag (`"7"`); else 412. Not with If-None-Match.
    #[param(rename = "If-Match", example = "\"7\"", nullable = false)]
    if_match: Option<String>,
    /// `*`: write only if the key is absent; else 412. Not with If-Match.
    #[param(rename = "If-None-Match", example = "*", nullable = false)]
    if_none_match: Option<String>,
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

/// Read a value: the value itself as the JSON body, its version as the ETag.
#[utoipa::path(
    get,
    path = "/v1/kv/{ns}/{key}",
    tag = "kv",
    params(
        ("ns" = String, Path, description = "The namespace."),
        ("key" = String, Path, description = "The key; the rest of the path, so it may contain `/`."),
    ),
    responses(
        (status = 200, description = "The value.", body = serde_json::Value, content_type = "application/json",
            headers(("ETag" = String, description = "The version, quoted: `\"7\"`."))),
        (status = 400, description = "The namespace or key is not a valid name."),
        (status = 404, description = "No value under that key."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
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

/// Write a value, optionally on a precondition.
#[utoipa::path(
    put,
    path = "/v1/kv/{ns}/{key}",
    tag = "kv",
    params(
        ("ns" = String, Path, description = "The namespace."),
        ("key" = String, Path, description = "The key; the rest of the path, so it may contain `/`."),
        PreconditionHeaders,
    ),
    request_body(content = serde_json::Value, content_type = "application/json", description = "The value: any JSON."),
    responses(
        (status = 200, description = "Replaced.", body = schema::Written,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 201, description = "Created (version 1).", body = schema::Written,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 400, description = "An invalid name, precondition header or JSON body."),
        (status = 412, description = "The precondition failed (`precondition-failed`): nothing was written."),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
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

/// Delete a value, optionally on a precondition.
#[utoipa::path(
    delete,
    path = "/v1/kv/{ns}/{key}",
    tag = "kv",
    params(
        ("ns" = String, Path, description = "The namespace."),
        ("key" = String, Path, description = "The key; the rest of the path, so it may contain `/`."),
        PreconditionHeaders,
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "An invalid name or precondition header."),
        (status = 404, description = "No value under that key (without a precondition)."),
        (status = 412, description = "The precondition failed (`precondition-failed`): nothing was deleted."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
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

/// The JSON built above, written down for the OpenAPI document.
pub(super) mod schema {
    #![allow(dead_code, reason = "schemas for the OpenAPI document; the JSON is built with `json!`")]

    /// The answer of a write.
    #[derive(utoipa::ToSchema)]
    pub(crate) struct Written {
        ns: String,
        key: String,
        /// The new version (also the ETag).
        version: i64,
    }
}
