//! Every error answer of the API is problem+json: the step of the outer layer that restates
//! axum's own rejections as problems. The type itself is [`crate::problem::Problem`].

use axum::body::to_bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

/// Every error answer is problem+json. axum's own rejections, raised before a handler runs (a
/// path that is not UTF-8, a query that does not parse), are plain text: this layer restates
/// them as problems with the same status and text. A function's answer passed through by a
/// sync invoke (it carries `keel-invocation-id`), and a dependency's passed through by egress,
/// are left as they were sent.
pub(crate) async fn errors_as_problems(response: Response) -> Response {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|ct| ct.as_bytes());
    let is_problem = content_type.is_some_and(|ct| ct.starts_with(b"application/problem+json"));
    // The console's pages say what went wrong in HTML of their own.
    let is_page = content_type.is_some_and(|ct| ct.starts_with(b"text/html"));
    if !(status.is_client_error() || status.is_server_error())
        || is_problem
        || is_page
        || response.extensions().get::<crate::egress::PassedThrough>().is_some()
        || response.headers().contains_key("keel-invocation-id")
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let title = status.canonical_reason().unwrap_or("Error");
    let detail = match text.trim() {
        "" => title.to_lowercase(),
        text => text.to_string(),
    };
    let mut answer = Problem::new(status, kind_of(status), title, detail).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::CONNECTION] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

/// The problem `type` word for a status raised outside Keel's handlers.
fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad-request",
        404 => "not-found",
        405 => "method-not-allowed",
        408 => "request-timeout",
        413 => "payload-too-large",
        414 => "uri-too-long",
        415 => "unsupported-media-type",
        422 => "unprocessable-content",
        431 => "request-header-fields-too-large",
        500..=599 => "internal-error",
        _ => "error",
    }
}
