//! RFC 9457 problem details: the one error type of the API.

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::idempotency::StoredReply;
use serde_json::{json, Map, Value};

/// An API error, answered as `application/problem+json`.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
    retry_after: Option<u64>,
    /// Answered with `connection: close`: what is left of the request is not read.
    close: bool,
    /// Answered with `keel-breaker: open` (a breaker refused the call).
    breaker_open: bool,
    /// Answered with `WWW-Authenticate: Bearer` (a 401).
    bearer: bool,
}

/// RFC 9457 problem details: the body of every error answer, as `application/problem+json`.
// Written down for the OpenAPI document; the body itself is built by `Problem::into_reply`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "a schema for the OpenAPI document; never built")]
pub(crate) struct ProblemDetails {
    /// `urn:keel:problem:` and the kind of error, e.g. `urn:keel:problem:unknown-function`.
    #[schema(rename = "type", format = "uri", example = "urn:keel:problem:unknown-function")]
    kind: String,
    /// A short summary of the kind of error.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong in this request, and what would be valid.
    detail: String,
    /// On invoke and result answers: the invocation concerned.
    #[schema(nullable = false)]
    invocation_id: Option<String>,
    /// On a failed sync invoke: the attempts made.
    #[schema(nullable = false)]
    attempts: Option<u32>,
    /// On a `no-result` conflict: the status of the invocation.
    #[schema(nullable = false)]
    invocation_status: Option<String>,
    /// On `invalid-input`: each way the body fails its JSON Schema (at most 20).
    #[schema(nullable = false)]
    errors: Option<Vec<InputError>>,
    /// On an `invalid-input` batch publish or bulk admission: the position of the first invalid
    /// event or payload.
    #[schema(nullable = false)]
    index: Option<u32>,
}

/// One way a body fails its JSON Schema.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "a schema for the OpenAPI document; never built")]
pub(crate) struct InputError {
    /// JSON Pointer (RFC 6901) into the body as sent: `""` for the whole body, `/items/0/qty`, or
    /// `/2/data/email` in a batch of events.
    #[schema(example = "/items/0/qty")]
    path: String,
    /// What is wrong there (the value itself is not repeated).
    #[schema(example = "value is less than the minimum of 1")]
    message: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
            close: false,
            breaker_open: false,
            bearer: false,
        }
    }

    /// 401: no credentials, or ones Keel does not accept (unknown, revoked, expired, malformed).
    pub(crate) fn unauthorized(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail);
        problem.bearer = true;
        problem
    }

    /// 403: the caller is known but holds no scope that grants `need`.
    pub(crate) fn forbidden(need: &keel_core::auth::Need, who: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("{who} lacks the scope `{need}` this request needs"),
        )
        .with("scope_needed", need.to_string())
    }

    /// What went wrong, for a page of the console.
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    /// 400 `invalid-input`: the body, or an event's data, fails its JSON Schema. `errors` lists
    /// each failure by the JSON Pointer of its place in what was sent.
    pub(crate) fn invalid_input(detail: impl Into<String>, errors: &[keel_core::schema::SchemaError]) -> Self {
        let errors = serde_json::to_value(errors).unwrap_or_default();
        Self::new(StatusCode::BAD_REQUEST, "invalid-input", "Invalid input", detail).with("errors", errors)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub(crate) fn unknown_function(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown-function",
            "Unknown function",
            format!("no function named {name:?} is configured"),
        )
    }

    pub(crate) fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "Shutting down",
            "this keel node is draining; retry on another node or after it restarts",
        )
        .retry_after(1)
    }

    /// Adds a member such as `invocation_id`.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Marks the answer as a breaker's refusal: `keel-breaker: open`.
    pub(crate) fn breaker_open(mut self) -> Self {
        self.breaker_open = true;
        self
    }

    /// Refused by flow control (`flow.rs`): 503 or 429, with `Retry-After` (whole seconds,
    /// rounded up) when a time can be told.
    pub(crate) fn shed(function: &str, shed: &crate::flow::Shed) -> Self {
        use crate::flow::Shed;
        let problem = match shed {
            Shed::Paused => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "function-paused",
                "Function paused",
                format!("{function} is paused: it starts no attempts until resumed (async invocations are still accepted and held)"),
            ),
            Shed::BreakerOpen { retry_after } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "breaker-open",
                "Breaker open",
                format!("{function} failed too often: its breaker is open and lets calls through again in {} ms", retry_after.as_millis()),
            )
            .breaker_open(),
            Shed::Overloaded { why, .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                format!("{function} cannot take this call in time: {why}"),
            ),
            Shed::RateLimited { retry_after } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Rate limited",
                format!("{function}'s rate limit has no turn for this call before its deadline; the next comes in {} ms", retry_after.as_millis()),
            ),
            Shed::QueueFull { queued, .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue-full",
                "Queue full",
                format!("{function} has {queued} invocations queued or retrying, at its max_queued; nothing was stored"),
            ),
        };
        match shed.retry_after() {
            Some(after) => problem.retry_after(after.as_millis().div_ceil(1000).max(1) as u64),
            None => problem,
        }
    }

    /// Closes the connection after the answer.
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl From<keel_core::Error> for Problem {
    fn from(e: keel_core::Error) -> Self {
        match e {
            keel_core::Error::NotFound { .. } => Problem::not_found(e.to_string()),
            keel_core::Error::PreconditionFailed(detail) => {
                Problem::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", "Precondition failed", detail)
            }
            keel_core::Error::InvalidState(detail) => {
                Problem::new(StatusCode::CONFLICT, "invalid-state", "Conflict", detail)
            }
            keel_core::Error::LeaseLost(detail) => Problem::new(StatusCode::CONFLICT, "lease-lost", "Conflict", detail),
            keel_core::Error::Stale(detail) => Problem::new(StatusCode::CONFLICT, "stale", "Conflict", detail),
            // Logged where it arose (with its cause); the client learns only that it was not applied.
            keel_core::Error::Bug(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the store refused this request; it was not applied",
            ),
            keel_core::Error::OutcomeUnknown(reason) => {
                tracing::error!(error = %reason, "store did not confirm a write");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome-unknown",
                    "Outcome unknown",
                    "the store did not confirm whether this request was applied; retrying it with the same \
                     Idempotency-Key is safe (without one, a retry may apply it twice)",
                )
                .retry_after(1)
            }
            keel_core::Error::Unavailable(reason) => {
                // The cause goes to the log, not to the client.
                tracing::error!(error = %reason, "store unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Storage unavailable",
                    "the store is unavailable; retry later",
                )
                .retry_after(1)
            }
        }
    }
}

impl Problem {
    /// The problem as a stored reply, so it can be answered and replayed alike.
    pub(crate) fn into_reply(self) -> StoredReply {
        let mut body = json!({
            "type": format!("urn:keel:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(map) = &mut body {
            map.extend(self.extra);
        }
        let mut headers = vec![(header::CONTENT_TYPE.to_string(), "application/problem+json".to_string())];
        if let Some(secs) = self.retry_after {
            headers.push((header::RETRY_AFTER.to_string(), secs.to_string()));
        }
        if self.close {
            headers.push((header::CONNECTION.to_string(), "close".to_string()));
        }
        if self.breaker_open {
            headers.push(("keel-breaker".to_string(), "open".to_string()));
        }
        if self.bearer {
            headers.push((header::WWW_AUTHENTICATE.to_string(), r#"Bearer realm="keel""#.to_string()));
        }
        StoredReply { status: self.status.as_u16(), headers, body: body.to_string().into() }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        reply_response(self.into_reply())
    }
}

/// Turns a stored reply into a response.
pub(crate) fn reply_response(reply: StoredReply) -> Response {
    let mut response = (StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK), reply.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    response
}

/// Every error answer is problem+json. axum's own rejections, raised before a handler runs (a
/// path that is not UTF-8, a query that does not parse), are plain text: this layer restates
/// them as problems with the same status and text. A function's answer passed through by a
/// sync invoke (it carries `keel-invocation-id`), and a dependency's passed through by egress,
/// are left as they were sent.
pub(crate) async fn errors_as_problems(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
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
