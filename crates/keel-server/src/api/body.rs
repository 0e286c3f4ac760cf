//! Request bodies and query strings, with problem+json for whatever is wrong with them.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use keel_core::invocation::Status;
use keel_core::store::ListFilter;

use super::problem::Problem;

/// The body, or 413 past `server.body_limit`, 408 when it stalled, or 400.
pub(crate) fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(
        |rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                unreadable(&rejection)
            }
        },
    )
}

pub(crate) fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
        "the request body is larger than server.body_limit",
    )
}

/// Why a body could not be read: 408 (and the connection closed) when it went
/// `server.body_timeout` without a byte, 413 past the limit, else 400.
pub(crate) fn unreadable(error: &(dyn std::error::Error + 'static)) -> Problem {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            crate::listener::note_closed(crate::listener::Closed::BodyTimeout, "");
            return Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
                "the request body stalled for longer than server.body_timeout",
            )
            .closing();
        }
        if e.is::<http_body_util::LengthLimitError>() {
            return too_large();
        }
        cause = e.source();
    }
    Problem::bad_request(format!("cannot read the request body: {error}"))
}

/// Parses the list query (`function`, `status`, `limit`, `cursor`), refusing unknown keys.
pub(crate) fn list_filter(query: &HashMap<String, String>, allowed: &[&str]) -> Result<ListFilter, Problem> {
    let mut filter = ListFilter::default();
    for (key, value) in query {
        if !allowed.contains(&key.as_str()) {
            return Err(Problem::bad_request(format!(
                "unknown query parameter {key:?}; expected one of: {}",
                allowed.join(", ")
            )));
        }
        match key.as_str() {
            "function" => filter.function = Some(value.clone()),
            "subscription" => filter.subscription = Some(value.clone()),
            "cursor" => filter.cursor = Some(value.clone()),
            "status" => {
                filter.status = Some(Status::parse(value).ok_or_else(|| {
                    let valid: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
                    Problem::bad_request(format!("status {value:?} is not one of: {}", valid.join(", ")))
                })?)
            }
            "limit" => filter.limit = parse_limit(value)?,
            _ => {}
        }
    }
    Ok(filter)
}

/// A page size of at least 1 (values above the maximum are clamped by the store).
pub(crate) fn parse_limit(value: &str) -> Result<usize, Problem> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| Problem::bad_request(format!("limit {value:?} is not a whole number of at least 1")))
}

/// The query of the lists, for the OpenAPI document (read by [`list_filter`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "parameters for the OpenAPI document; the query is read by `list_filter`")]
pub(crate) struct PageQuery {
    /// Only invocations of this function.
    function: Option<String>,
    /// Only deliveries to this subscription.
    subscription: Option<String>,
    /// Page size: 100 by default, at most 1,000 (a larger value is clamped).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}
