//! RFC 9457 problem details: the one error type of Keel's HTTP answers — the API, the auth
//! layer, egress and the console all refuse with a [`Problem`]. The body is [`ProblemDetails`],
//! the type that also describes it in the OpenAPI document.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_core::idempotency::StoredReply;
use serde::{Serialize, Serializer};

/// An error answer, as `application/problem+json`: its body and the headers that go with it.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    /// Boxed: a `Problem` is the error of most API results, which stay small.
    body: Box<ProblemDetails>,
    retry_after: Option<u64>,
    /// Answered with `connection: close`: what is left of the request is not read.
    close: bool,
    /// Answered with `keel-breaker: open` (a breaker refused the call).
    breaker_open: bool,
    /// Answered with `WWW-Authenticate: Bearer` (a 401).
    bearer: bool,
}

/// RFC 9457 problem details: the body of every error answer, as `application/problem+json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProblemDetails {
    /// `urn:keel:problem:` and the kind of error, e.g. `urn:keel:problem:unknown-function`.
    #[serde(rename = "type", serialize_with = "urn")]
    #[schema(value_type = String, format = "uri", example = "urn:keel:problem:unknown-function")]
    kind: &'static str,
    /// A short summary of the kind of error.
    #[schema(value_type = String)]
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// What went wrong in this request, and what would be valid.
    detail: String,
    /// On invoke and result answers: the invocation concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    invocation_id: Option<String>,
    /// On a failed sync invoke: the attempts made.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    attempts: Option<u32>,
    /// On a `no-result` conflict: the status of the invocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    invocation_status: Option<&'static str>,
    /// On `invalid-input`: each way the body fails its JSON Schema (at most 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    errors: Option<Vec<InputError>>,
    /// On an `invalid-input` batch publish or bulk admission: the position of the first invalid
    /// event or payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    index: Option<usize>,
    /// On `forbidden`: the scope the request needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "kv:users:write")]
    scope_needed: Option<String>,
    /// On an `outcome-unknown` bulk admission: the ids its invocations have if they were stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    ids: Option<Vec<String>>,
    /// On `json-too-deep`: the nesting allowed (`server.limits.max_json_depth`); on
    /// `batch-too-large`: the payloads one bulk admission may carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    limit: Option<u32>,
    /// On a cancel refused because the invocation is a workflow step: its run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    run_id: Option<String>,
    /// On `run-not-running`: the status of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    run_status: Option<&'static str>,
    /// On `standby` and `fenced`: the region that admits instead, and its API when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "eu")]
    primary_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "https://keel-eu.internal:7733")]
    primary_url: Option<String>,
    /// On `region-unreachable`: the peer region the request was for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "eu")]
    region: Option<String>,
}

fn urn<S: Serializer>(kind: &&'static str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("urn:keel:problem:{kind}"))
}

/// One way a body fails its JSON Schema.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
            body: Box::new(ProblemDetails {
                kind,
                title,
                status: status.as_u16(),
                detail: detail.into(),
                invocation_id: None,
                attempts: None,
                invocation_status: None,
                errors: None,
                index: None,
                scope_needed: None,
                ids: None,
                limit: None,
                run_id: None,
                run_status: None,
                primary_region: None,
                primary_url: None,
                region: None,
            }),
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
        let mut problem = Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!("{who} lacks the scope `{need}` this request needs"),
        );
        problem.body.scope_needed = Some(need.to_string());
        problem
    }

    /// What went wrong, for a page of the console.
    pub(crate) fn detail(&self) -> &str {
        &self.body.detail
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
        let mut problem = Self::new(StatusCode::BAD_REQUEST, "invalid-input", "Invalid input", detail);
        let errors = errors.iter().map(|e| InputError { path: e.path.clone(), message: e.message.clone() });
        problem.body.errors = Some(errors.collect());
        problem
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

    /// Names the invocation concerned (`invocation_id`).
    pub(crate) fn invocation(mut self, id: impl Into<String>) -> Self {
        self.body.invocation_id = Some(id.into());
        self
    }

    /// The attempts a failed sync invoke made (`attempts`).
    pub(crate) fn attempts(mut self, attempts: u32) -> Self {
        self.body.attempts = Some(attempts);
        self
    }

    /// The status of the invocation concerned (`invocation_status`).
    pub(crate) fn invocation_status(mut self, status: &'static str) -> Self {
        self.body.invocation_status = Some(status);
        self
    }

    /// The position of the first invalid item of a batch (`index`).
    pub(crate) fn index(mut self, index: usize) -> Self {
        self.body.index = Some(index);
        self
    }

    /// The ids of a bulk admission whose outcome is unknown (`ids`).
    pub(crate) fn ids(mut self, ids: &[String]) -> Self {
        self.body.ids = Some(ids.to_vec());
        self
    }

    /// The limit a request went past (`limit`).
    pub(crate) fn limit(mut self, limit: u32) -> Self {
        self.body.limit = Some(limit);
        self
    }

    /// The workflow run concerned (`run_id`) and, when it matters, its status (`run_status`).
    pub(crate) fn run(mut self, id: impl Into<String>, status: Option<&'static str>) -> Self {
        self.body.run_id = Some(id.into());
        self.body.run_status = status;
        self
    }

    /// The region that admits instead of this one (`primary_region`, `primary_url`).
    pub(crate) fn primary(mut self, region: Option<String>, url: Option<String>) -> Self {
        self.body.primary_region = region;
        self.body.primary_url = url;
        self
    }

    /// A peer region could not be reached: 503 `region-unreachable` naming it.
    pub(crate) fn region_unreachable(region: &str, why: &str) -> Self {
        let detail = format!("region {region} could not be reached ({why}); this request is served there");
        let mut problem =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "region-unreachable", "Region unreachable", detail)
                .retry_after(1);
        problem.body.region = Some(region.to_owned());
        problem
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
        let body = serde_json::to_vec(&self.body).expect("a problem serializes");
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
        StoredReply { status: self.status.as_u16(), headers, body: body.into() }
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
