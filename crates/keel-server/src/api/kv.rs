//! KV over HTTP: `GET/PUT/DELETE /v1/kv/{ns}/{key}`, versions as ETags, `If-Match: "7"` and
//! `If-None-Match: *` as preconditions (412 when they fail); `GET /v1/kv/{ns}` lists a namespace's
//! keys in byte order, by prefix, paged by a cursor (the last key of the previous page).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_core::kv::{self, KvItem, KvWrite, Precondition};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{body, openapi};
use crate::problem::Problem;
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
    /// Write only if the current version is this strong ETag: digits in double quotes (`"7"`);
    /// else 412. A weak ETag (`W/"7"`) never matches for a write: 412. Anything else is a 400.
    /// Cannot be combined with If-None-Match (400).
    #[param(rename = "If-Match", example = "\"7\"", nullable = false, pattern = "^(W/)?\"[0-9]{1,18}\"$")]
    if_match: Option<String>,
    /// Only `*`: write only if the key is absent; else 412. Cannot be combined with If-Match (400).
    #[param(rename = "If-None-Match", example = "*", nullable = false, pattern = "^\\*$")]
    if_none_match: Option<String>,
}

/// The conditional header of a read, for the OpenAPI document (read by [`none_match_hits`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "a parameter for the OpenAPI document; the header is read by `none_match_hits`")]
pub(crate) struct ReadCondition {
    /// `*` or ETags (`"7"`, `W/"7"`, comma-separated): 304 without a body when one matches the
    /// current version.
    #[param(rename = "If-None-Match", example = "\"7\"", nullable = false)]
    if_none_match: Option<String>,
}

/// The one value of a precondition header, trimmed; 400 when it is sent more than once.
fn single<'h>(headers: &'h HeaderMap, name: &header::HeaderName) -> Result<Option<&'h str>, Problem> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Problem::bad_request(format!("{name} is sent more than once; send it once")));
    }
    Ok(first.map(|v| v.to_str().unwrap_or("").trim()))
}

/// A version ETag, `"7"`: 1–18 digits between quotes, nothing else (no sign, no list).
fn strong_version(tag: &str) -> Option<i64> {
    let digits = tag.strip_prefix('"')?.strip_suffix('"')?;
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The precondition the request's `If-Match` / `If-None-Match` headers state. A weak ETag
/// (`W/"7"`) never matches for a write (RFC 9110, 13.1.1: If-Match uses the strong comparison):
/// 412 at once.
fn precondition(headers: &HeaderMap) -> Result<Precondition, Problem> {
    match (single(headers, &header::IF_MATCH)?, single(headers, &header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(Problem::bad_request("send If-Match or If-None-Match, not both")),
        (None, Some("*")) => Ok(Precondition::IfAbsent),
        (None, Some(v)) => Err(Problem::bad_request(format!("If-None-Match takes only * on a write (got {v:?})"))),
        (Some(v), None) if v.strip_prefix("W/").and_then(strong_version).is_some() => {
            Err(Problem::from(keel_core::Error::PreconditionFailed(format!(
                "If-Match {v:?} is a weak ETag, and a weak ETag never matches for a write; send the version as \"7\""
            ))))
        }
        (Some(v), None) => strong_version(v).map(Precondition::IfVersion).ok_or_else(|| {
            Problem::bad_request(format!(
                "If-Match takes a version ETag: digits in double quotes, like \"7\" (got {v:?})"
            ))
        }),
        (None, None) => Ok(Precondition::None),
    }
}

/// Whether a GET's `If-None-Match` (`*`, or a list of ETags compared weakly) matches `version`.
fn none_match_hits(headers: &HeaderMap, version: i64) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |tag| {
            let tag = tag.trim();
            tag == "*" || strong_version(tag.trim_start_matches("W/")) == Some(version)
        },
    )
}

/// Read a value: the value itself as the JSON body, its version as the ETag.
#[utoipa::path(
    get,
    path = "/v1/kv/{ns}/{key}",
    tag = "kv",
    operation_id = "getKvValue",
    params(
        ("ns" = String, Path, min_length = 1, max_length = 255, pattern = "^[^/\\u0000-\\u001f\\u007f-\\u009f]+$",
            description = "The namespace: 1–255 bytes of UTF-8 (as many characters in ASCII), without control \
            characters or `/`."),
        ("key" = String, Path, min_length = 1, max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
            description = "The key: 1–255 bytes of UTF-8 (as many characters in ASCII), without control characters; \
            the rest of the path, so it may contain `/`."),
        ReadCondition,
    ),
    responses(
        (status = 200, description = "The value.", body = serde_json::Value, content_type = "application/json",
            headers(("ETag" = String, description = "The version, quoted: `\"7\"`."))),
        (status = 304, description = "If-None-Match matched the current version: no body.",
            headers(("ETag" = String, description = "The version, quoted: `\"7\"`."))),
        (status = 400, description = "The namespace or key is not a valid name."),
        (status = 404, description = "No value under that key."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    check(&ns, &key)?;
    let entry =
        shared.store.kv_get(&ns, &key).await?.ok_or_else(|| Problem::not_found(format!("{ns}/{key} not found")))?;
    if none_match_hits(&headers, entry.version) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag(entry.version));
        return Ok(response);
    }
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
    operation_id = "putKvValue",
    params(
        ("ns" = String, Path, min_length = 1, max_length = 255, pattern = "^[^/\\u0000-\\u001f\\u007f-\\u009f]+$",
            description = "The namespace: 1–255 bytes of UTF-8 (as many characters in ASCII), without control \
            characters or `/`."),
        ("key" = String, Path, min_length = 1, max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
            description = "The key: 1–255 bytes of UTF-8 (as many characters in ASCII), without control characters; \
            the rest of the path, so it may contain `/`."),
        PreconditionHeaders,
    ),
    request_body(content = serde_json::Value, content_type = "application/json", description = "The value: any JSON."),
    responses(
        (status = 200, description = "Replaced.", body = Written,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 201, description = "Created (version 1).", body = Written,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 400, description = "An invalid name, precondition header or JSON body, or If-Match together \
            with If-None-Match; or a value nested deeper than `server.limits.max_json_depth` (`json-too-deep`, naming \
            `limit`)."),
        (status = 404, description = "The path names no key (an empty key)."),
        (status = 412, description = "The precondition failed (`precondition-failed`): nothing was written."),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn put(
    State(shared): State<Arc<Shared>>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: body::RequestBody,
) -> Result<Response, Problem> {
    check(&ns, &key)?;
    let precondition = precondition(&headers)?;
    let body = body.read()?;
    shared.limits.check_json("the value", &body)?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|e| Problem::bad_request(format!("the value must be JSON: {e}")))?;
    let write = KvWrite { ns: ns.clone(), key: key.clone(), value: Some(body), precondition };
    let version = shared.store.kv_write(write, shared.clock.now_ms()).await?.unwrap_or_default();
    let status = if version == 1 { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, axum::Json(Written { ns, key, version })).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    Ok(response)
}

/// Delete a value, optionally on a precondition.
#[utoipa::path(
    delete,
    path = "/v1/kv/{ns}/{key}",
    tag = "kv",
    operation_id = "deleteKvValue",
    params(
        ("ns" = String, Path, min_length = 1, max_length = 255, pattern = "^[^/\\u0000-\\u001f\\u007f-\\u009f]+$",
            description = "The namespace: 1–255 bytes of UTF-8 (as many characters in ASCII), without control \
            characters or `/`."),
        ("key" = String, Path, min_length = 1, max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
            description = "The key: 1–255 bytes of UTF-8 (as many characters in ASCII), without control characters; \
            the rest of the path, so it may contain `/`."),
        PreconditionHeaders,
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "An invalid name or precondition header, or If-Match together with \
            If-None-Match."),
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

/// The query of `GET /v1/kv/{ns}`, for the OpenAPI document (read by [`list`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "parameters for the OpenAPI document; the query is read by `list`")]
pub(crate) struct ListQuery {
    /// Only keys that start with these characters, taken literally (`%` and `_` too); without
    /// control characters. Empty or absent: every key.
    #[param(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$", example = "user/")]
    prefix: Option<String>,
    /// Page size: a whole number of at least 1; 100 by default, at most 1,000 (a larger value,
    /// however large, is clamped).
    #[param(value_type = Option<String>, pattern = "^[0-9]*[1-9][0-9]*$", example = "100")]
    limit: Option<u64>,
    /// The `next_cursor` of the previous page, as answered: the last key it listed (the page
    /// starts after it). Without control characters; an empty one is a 400.
    #[param(min_length = 1, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$", example = "user/10")]
    cursor: Option<String>,
}

/// List a namespace's keys with their values and versions, in byte order of the keys (UTF-8).
#[utoipa::path(
    get,
    path = "/v1/kv/{ns}",
    tag = "kv",
    operation_id = "listKv",
    params(
        ("ns" = String, Path, min_length = 1, max_length = 255, pattern = "^[^/\\u0000-\\u001f\\u007f-\\u009f]+$",
            description = "The namespace: 1–255 bytes of UTF-8 (as many characters in ASCII), without control \
            characters or `/`."),
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of keys (empty when the namespace holds none).", body = KvPage),
        (status = 400, description = "An invalid namespace, a prefix or cursor with control characters, an empty \
            cursor, a limit below 1, or an unknown query parameter."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<KvPage>, Problem> {
    kv::check_name("ns", &ns).map_err(Problem::bad_request)?;
    let (mut prefix, mut limit, mut after) = (None, 0, None);
    for (name, value) in query {
        match name.as_str() {
            "prefix" if value.is_empty() => {}
            "prefix" => prefix = Some(place("prefix", value)?),
            "limit" => limit = body::parse_limit(&value)?,
            "cursor" if value.is_empty() => return Err(Problem::bad_request(NOT_A_CURSOR)),
            "cursor" => after = Some(place("cursor", value)?),
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {other:?} (expected prefix, limit, cursor)"
                )))
            }
        }
    }
    let page = shared.store.kv_list(&ns, prefix.as_deref(), after.as_deref(), limit).await?;
    Ok(Json(KvPage { items: page.items.into_iter().map(KvListed::from).collect(), next_cursor: page.next_cursor }))
}

const NOT_A_CURSOR: &str = "an empty cursor is not a cursor: pass the next_cursor of the previous page as it was \
    answered, or no cursor for the first page";

/// A prefix or cursor: a place among keys in byte order, so any string without control
/// characters (which no key holds) is one, however long.
fn place(what: &str, value: String) -> Result<String, Problem> {
    if value.chars().any(char::is_control) {
        return Err(Problem::bad_request(format!("{what} {value:?} holds control characters, which no key does")));
    }
    Ok(value)
}

/// A page of a namespace's keys.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KvPage {
    pub(crate) items: Vec<KvListed>,
    /// Pass as `cursor` for the next page (it is this page's last key); null on the last one.
    pub(crate) next_cursor: Option<String>,
}

/// One key of a listing, with its value and version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KvListed {
    pub(crate) key: String,
    /// The value: any JSON.
    pub(crate) value: Value,
    /// Its version (the ETag of `GET /v1/kv/{ns}/{key}`).
    pub(crate) version: i64,
}

impl From<KvItem> for KvListed {
    fn from(item: KvItem) -> Self {
        // Values are JSON when written (the API and effects check it); text otherwise.
        let value = serde_json::from_slice(&item.entry.value)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&item.entry.value).into_owned()));
        KvListed { key: item.key, value, version: item.entry.version }
    }
}

/// The answer of a write.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Written {
    ns: String,
    key: String,
    /// The new version (also the ETag).
    version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn writes_take_a_strong_version_or_star() {
        assert_eq!(precondition(&with(&[("if-match", "\"7\"")])).ok(), Some(Precondition::IfVersion(7)));
        assert_eq!(precondition(&with(&[("if-none-match", "*")])).ok(), Some(Precondition::IfAbsent));
        assert_eq!(precondition(&with(&[])).ok(), Some(Precondition::None));
        for bad in ["\"-1\"", "\"+1\"", "7", "\"\"", "\"1\", \"2\"", "*", "W/x", "\"1234567890123456789\""] {
            let problem = precondition(&with(&[("if-match", bad)])).unwrap_err().into_reply();
            assert_eq!(problem.status, 400, "{bad}");
        }
        let weak = precondition(&with(&[("if-match", "W/\"1\"")])).unwrap_err().into_reply();
        assert_eq!(weak.status, 412, "a weak tag never matches for a write");
        let both = precondition(&with(&[("if-match", "\"1\""), ("if-none-match", "*")])).unwrap_err().into_reply();
        assert_eq!(both.status, 400);
        let twice = precondition(&with(&[("if-match", "\"1\""), ("if-match", "\"2\"")])).unwrap_err().into_reply();
        assert_eq!(twice.status, 400);
    }

    #[test]
    fn a_place_among_keys_is_any_string_without_control_characters() {
        let long = "k".repeat(300);
        for ok in ["u1", "user/10", "a b?c&d=%", "é", "\u{10FFFF}", &long] {
            assert_eq!(place("cursor", ok.to_owned()).ok().as_deref(), Some(ok));
        }
        for bad in ["a\nb", "\u{0}", "x\u{85}"] {
            assert_eq!(place("prefix", bad.to_owned()).unwrap_err().into_reply().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn reads_match_star_or_any_listed_tag_weakly() {
        assert!(none_match_hits(&with(&[("if-none-match", "*")]), 3));
        assert!(none_match_hits(&with(&[("if-none-match", "\"1\", W/\"3\"")]), 3));
        assert!(!none_match_hits(&with(&[("if-none-match", "\"1\"")]), 3));
        assert!(!none_match_hits(&with(&[]), 3));
    }
}
