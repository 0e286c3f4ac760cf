//! Request bodies and query strings, with problem+json for whatever is wrong with them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use keel_core::invocation::Status;
use keel_core::store::{ListFilter, MAX_LIMIT};

use crate::body::Unread;
use crate::problem::Problem;
use crate::state::Shared;

/// The request body, read whole: the bytes, or the problem to answer with — 413 past
/// `server.body_limit`, 408 when it stalled (`server.body_timeout`), else 400. The handler
/// decides when to answer with it (`?` on [`read`](Self::read)), so a check that comes first —
/// an unknown function, a node draining — is still what the caller hears.
///
/// In place of axum's `Bytes` extractor, which boxes the body (boxed already) once more and
/// collects its frames into a `VecDeque`: see [`read_whole`](crate::body::read_whole).
pub(crate) struct RequestBody(Result<Bytes, Problem>);

impl RequestBody {
    pub(crate) fn read(self) -> Result<Bytes, Problem> {
        self.0
    }
}

/// A body read already (the console passes on a form's fields so).
impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> Self {
        RequestBody(Ok(bytes))
    }
}

impl FromRequest<Arc<Shared>> for RequestBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, Infallible> {
        let limit = usize::try_from(shared.config.server.body_limit).unwrap_or(usize::MAX);
        Ok(RequestBody(read_limited(request.into_body(), limit).await))
    }
}

/// `body` whole (at most `limit` bytes), or the problem to answer with: 413, 408 or 400.
pub(crate) async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, Problem> {
    crate::body::read_whole(body, limit).await.map_err(|unread| match unread {
        Unread::TooLarge => too_large(),
        Unread::Failed(e) => unreadable(&e),
    })
}

fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
        "the request body is larger than server.body_limit",
    )
}

/// Why a body failed while it was read: 408 (and the connection closed) when it went
/// `server.body_timeout` without a byte, else 400. (Past the limit is [`too_large`]: the
/// limit is counted by [`read_whole`](crate::body::read_whole), not by the body.)
fn unreadable(error: &(dyn std::error::Error + 'static)) -> Problem {
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
            "cursor" => filter.cursor = Some(parse_cursor(value)?),
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

/// A page size: a whole number of at least 1; any larger than the maximum, however large, is
/// clamped to it.
pub(crate) fn parse_limit(value: &str) -> Result<usize, Problem> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    if !digits || value.bytes().all(|b| b == b'0') {
        return Err(Problem::bad_request(format!("limit {value:?} is not a whole number of at least 1")));
    }
    Ok(value.parse::<usize>().map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT)))
}

/// A cursor is the `next_cursor` of a previous page: an invocation id, exactly as answered.
pub(crate) fn parse_cursor(value: &str) -> Result<String, Problem> {
    let canonical = keel_core::id::is_valid(value) && !value.bytes().any(|b| b.is_ascii_lowercase());
    if canonical {
        Ok(value.to_string())
    } else {
        Err(Problem::bad_request(format!(
            "cursor {value:?} is not a cursor: pass the next_cursor of the previous page as it was answered"
        )))
    }
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
    /// Page size: a whole number of at least 1; 100 by default, at most 1,000 (a larger value,
    /// however large, is clamped).
    #[param(value_type = Option<String>, pattern = "^[0-9]*[1-9][0-9]*$", example = "100")]
    limit: Option<u64>,
    /// The `next_cursor` of the previous page, as answered (a malformed cursor is a 400).
    #[param(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_clamped_however_large() {
        assert_eq!(parse_limit("7").ok(), Some(7));
        assert_eq!(parse_limit("5000").ok(), Some(MAX_LIMIT));
        assert_eq!(parse_limit("258019814203111047168").ok(), Some(MAX_LIMIT));
        for bad in ["0", "000", "", "-1", "+5", "1.5", "ten", " 5"] {
            assert!(parse_limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_cursor_is_an_id_as_answered() {
        let id = keel_core::id::new_id(1_700_000_000_000);
        assert_eq!(parse_cursor(&id).ok(), Some(id.clone()));
        for bad in ["garbage", "0", "", &id.to_lowercase(), &id[1..]] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
