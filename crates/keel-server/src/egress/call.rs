//! One egress call: the caller check first (a caller that may not use the dependency learns
//! nothing else), then the breaker, the rate limit and the bulkhead, then the request to the
//! dependency — retried, for idempotent methods or keyed requests, on a connection failure, a
//! 5xx, 429 or 408, with jittered backoff inside the call's timeout and a token from the retry
//! budget for each retry. The dependency's last answer is returned as it came.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::Full;
use keel_core::auth::{Need, Scope, TokenClaims};
use keel_core::flow::breaker::Admit;
use tracing::Instrument;

use super::bulkhead::Place;
use super::{lock, Dependency};
use crate::problem::Problem;
use crate::state::Shared;

/// Headers of one connection (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the function sent to `/v1/egress/{dependency}/{path}`.
#[derive(Debug)]
pub(crate) struct EgressRequest {
    pub(crate) dependency: String,
    pub(crate) method: Method,
    /// The rest of the path after the dependency's name, as sent (still percent-encoded), with
    /// its leading `/`; and the query, if any.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The caller's function token, checked by the auth layer (valid, unexpired, with
    /// `egress:DEP`): it names the caller on any node. `None` without auth or with an API key:
    /// the caller is then the attempt its `keel-invocation-id` names, running on this node.
    pub(crate) token: Option<std::sync::Arc<TokenClaims>>,
}

/// Marks an answer passed through from a dependency: left as it is by the problem layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassedThrough;

/// Makes one egress call and answers it: the dependency's answer, or a problem of Keel's own.
pub(crate) async fn forward(shared: &Shared, request: EgressRequest) -> Response {
    let Some(Caller { dependency, invocation_id, function }) = authorize(shared, &request) else {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "egress calls are made by an attempt of a function that declares the dependency (by its \
             function token, or without auth by the keel-invocation-id of an attempt running on this node)",
        )
        .into_response();
    };
    let span = tracing::info_span!(
        "egress",
        otel.name = %format_args!("egress {}", dependency.name()),
        otel.kind = "client",
        dependency = dependency.name(),
        http.request.method = %request.method,
        invocation_id = %invocation_id,
        function = %function,
        http.response.status_code = tracing::field::Empty,
        tries = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    call(shared, dependency, &invocation_id, request).instrument(span).await
}

/// Who makes an egress call, and to what.
struct Caller<'s> {
    dependency: &'s std::sync::Arc<Dependency>,
    invocation_id: String,
    function: String,
}

/// The dependency, if the caller's function declares it, and the caller's invocation: the one
/// its token names, or else the one its `keel-invocation-id` names when an attempt of it runs
/// here.
fn authorize<'s>(shared: &'s Shared, request: &EgressRequest) -> Option<Caller<'s>> {
    let (invocation_id, function) = match &request.token {
        Some(claims) => {
            // The auth layer checked this already; a second look costs nothing.
            Scope::any_allows(&claims.scopes, &Need::Egress(request.dependency.clone())).then_some(())?;
            (claims.invocation.clone(), claims.function.clone())
        }
        None => {
            let invocation_id = request.headers.get("keel-invocation-id")?.to_str().ok()?.to_owned();
            let function = shared.runtime.attempts().function_of(&invocation_id)?;
            (invocation_id, function)
        }
    };
    let declares = shared.functions.get(&function)?.config.dependencies.contains(&request.dependency);
    let dependency = shared.egress.get(&request.dependency).filter(|_| declares)?;
    Some(Caller { dependency, invocation_id, function })
}

async fn call(shared: &Shared, dependency: &Dependency, invocation_id: &str, request: EgressRequest) -> Response {
    let name = dependency.name();
    let now = shared.clock.now_ms();
    dependency.counters.requests.fetch_add(1, Ordering::Relaxed);
    let probe = match dependency.with_breaker(now, |b| b.admit(now)) {
        None | Some(Admit::Yes) => false,
        Some(Admit::Probe) => true,
        Some(Admit::No { retry_after }) => {
            dependency.shed("breaker-open");
            record_outcome("breaker-open", None);
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "breaker-open",
                "Breaker open",
                format!(
                    "{name} failed too often: its breaker is open and lets calls through again in {} ms",
                    retry_after.as_millis()
                ),
            )
            .breaker_open()
            .retry_after(whole_seconds(retry_after))
            .into_response();
        }
    };
    // Gives the probe place back if the call ends before reaching the dependency.
    let mut probe_guard = ProbeGuard { dependency, now, armed: probe };
    if let Some(rate) = &dependency.rate {
        if let Err(at) = lock(rate).try_take(now) {
            let retry_after = Duration::from_millis((at - now).max(0) as u64);
            dependency.shed("rate-limited");
            record_outcome("rate-limited", None);
            return Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Rate limited",
                format!(
                    "{name}'s rate limit has no turn for this call now; the next comes in {} ms",
                    retry_after.as_millis()
                ),
            )
            .retry_after(whole_seconds(retry_after))
            .into_response();
        }
    }
    let Some(place) = dependency.bulkhead.enter().await else {
        dependency.shed("bulkhead-full");
        record_outcome("bulkhead-full", None);
        let bulkhead = dependency.config.bulkhead;
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bulkhead-full",
            "Bulkhead full",
            format!(
                "{name} has {} calls in flight and {} waiting (bulkhead max_concurrent = {}, max_queued = {}, queue_timeout = {})",
                dependency.bulkhead.in_flight(),
                dependency.bulkhead.queued(),
                bulkhead.max_concurrent,
                bulkhead.max_queued,
                humantime::format_duration(bulkhead.queue_timeout)
            ),
        )
        .retry_after(1)
        .into_response();
    };
    let attempts = shared.runtime.attempts();
    let call_number = match &request.token {
        Some(claims) => attempts.next_call_by_token(&claims.invocation, claims.exp, name, now),
        None => attempts.next_call(invocation_id, name).unwrap_or(1),
    };
    let outbound = Outbound::new(dependency, invocation_id, call_number, request);
    let started = tokio::time::Instant::now();
    let deadline = started + dependency.config.timeout;
    lock(&dependency.budget).deposit(now);
    let mut tries = 0u32;
    let answer = loop {
        tries += 1;
        let answer = match tokio::time::timeout_at(deadline, try_once(shared, name, &outbound)).await {
            Err(_) => Tried::TimedOut,
            Ok(answer) => answer,
        };
        let Some(delay) = retry_delay(shared, dependency, &outbound, &answer, tries, deadline) else {
            break answer;
        };
        dependency.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::info!(try_number = tries, delay_ms = delay.as_millis() as u64, after = %answer.describe(), "egress retry");
        drop(answer);
        tokio::time::sleep(delay).await;
    };
    let took = started.elapsed();
    let failed = answer.is_failure();
    if failed {
        dependency.counters.failures.fetch_add(1, Ordering::Relaxed);
    }
    probe_guard.armed = false;
    let end = shared.clock.now_ms();
    dependency.with_breaker(end, |b| b.record(end, !failed, probe));
    let span = tracing::Span::current();
    span.record("tries", tries);
    match answer {
        Tried::Answered(response) => {
            let outcome = if failed { "failure" } else { "success" };
            span.record("http.response.status_code", response.status().as_u16());
            dependency.outcome(outcome, Some(took));
            record_outcome(outcome, None);
            pass_through(response, place)
        }
        Tried::Injected { status, fault } => {
            let outcome = if failed { "failure" } else { "success" };
            span.record("http.response.status_code", status);
            dependency.outcome(outcome, Some(took));
            record_outcome(outcome, None);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let detail = format!("chaos: fault {fault} answered for {name} with {}", status.as_u16());
            Problem::new(status, "chaos-injected", "Injected by chaos", detail).into_response()
        }
        Tried::TimedOut => {
            dependency.outcome("timeout", Some(took));
            record_outcome("timeout", None);
            Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "dependency-timeout",
                "Dependency timeout",
                format!(
                    "{name} did not answer within its timeout ({}) after {tries} tries",
                    humantime::format_duration(dependency.config.timeout)
                ),
            )
            .into_response()
        }
        Tried::Unreachable(why) => {
            dependency.outcome("unreachable", Some(took));
            record_outcome("unreachable", Some(&why));
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "dependency-unreachable",
                "Dependency unreachable",
                format!("{name} could not be reached after {tries} tries: {why}"),
            )
            .into_response()
        }
    }
}

/// One try at the dependency, unless a chaos fault on it answers first: after a latency the try
/// is made; an error answers in its place, an abort resets it, a timeout hangs it to the
/// deadline (the caller's `timeout_at` ends it).
async fn try_once(shared: &Shared, name: &str, outbound: &Outbound) -> Tried {
    use keel_core::chaos::{Kind, Target};
    let hit = shared.chaos.enabled().then(|| shared.chaos.hit(&Target::Dependency(name.to_owned()))).flatten();
    if let Some(hit) = hit {
        match hit.kind {
            Kind::Latency { .. } => tokio::time::sleep(Duration::from_millis(hit.delay_ms)).await,
            Kind::Error { status } => return Tried::Injected { status, fault: hit.fault },
            Kind::Abort => return Tried::Unreachable(format!("connection reset (chaos: fault {})", hit.fault)),
            Kind::Timeout => std::future::pending::<()>().await,
            Kind::Crash => {}
        }
    }
    match shared.egress.client(name).request(outbound.build()).await {
        Err(e) => Tried::Unreachable(describe(&e)),
        Ok(response) => Tried::Answered(response),
    }
}

fn record_outcome(outcome: &'static str, why: Option<&str>) {
    let span = tracing::Span::current();
    span.record("outcome", outcome);
    if let Some(why) = why {
        tracing::warn!(error = why, "egress call failed");
    }
}

/// One try's result.
enum Tried {
    Answered(hyper::Response<hyper::body::Incoming>),
    /// A chaos fault answered with this status in the dependency's place.
    Injected {
        status: u16,
        fault: String,
    },
    TimedOut,
    Unreachable(String),
}

impl Tried {
    /// A failure of the dependency: to the breaker, the counters and the retry rule.
    fn is_failure(&self) -> bool {
        match self {
            Tried::Answered(response) => response.status().is_server_error(),
            Tried::Injected { status, .. } => *status >= 500,
            Tried::TimedOut | Tried::Unreachable(_) => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Tried::Answered(response) => response.status().as_u16().to_string(),
            Tried::Injected { status, fault } => format!("{status} (chaos: fault {fault})"),
            Tried::TimedOut => "timeout".to_owned(),
            Tried::Unreachable(why) => format!("unreachable: {why}"),
        }
    }
}

/// How long to wait before retrying, or `None` when this answer is the last: not a retryable
/// request or answer, tries used up, the deadline too close, or no token in the retry budget.
fn retry_delay(
    shared: &Shared,
    dependency: &Dependency,
    outbound: &Outbound,
    answer: &Tried,
    tries: u32,
    deadline: tokio::time::Instant,
) -> Option<Duration> {
    let retryable_answer = match answer {
        Tried::Unreachable(_) => true,
        Tried::TimedOut => false,
        Tried::Answered(response) => retryable_status(response.status()),
        Tried::Injected { status, .. } => StatusCode::from_u16(*status).is_ok_and(retryable_status),
    };
    if !(outbound.retryable && retryable_answer && tries < dependency.config.retry.max_attempts) {
        return None;
    }
    let retry = dependency.config.retry;
    let ceiling = retry.initial.saturating_mul(1u32 << (tries - 1).min(20)).min(retry.max);
    let mut delay = ceiling.mul_f64(shared.sample());
    if let Tried::Answered(response) = answer {
        if let Some(asked) = response.headers().get(header::RETRY_AFTER).and_then(dependency_retry_after) {
            delay = delay.max(asked);
        }
    }
    if tokio::time::Instant::now() + delay >= deadline {
        return None;
    }
    let now = shared.clock.now_ms();
    lock(&dependency.budget).try_withdraw(now).then_some(delay)
}

fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// The least delay a dependency's `Retry-After` asks for: delta-seconds only, at most a day
/// (as for a function's answer, `outcome::retry_after`). Unbounded, a huge value overflowed the
/// deadline arithmetic (`Instant + Duration` panics past the end of time).
pub(crate) fn dependency_retry_after(value: &HeaderValue) -> Option<Duration> {
    let secs = value.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs.min(keel_core::outcome::MAX_RETRY_AFTER.as_secs())))
}

/// The request as the dependency gets it, rebuilt for each try.
struct Outbound {
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
    /// Idempotent method, or an Idempotency-Key.
    retryable: bool,
}

impl Outbound {
    fn new(dependency: &Dependency, invocation_id: &str, call_number: u32, request: EgressRequest) -> Self {
        let base = &dependency.config.url;
        let prefix = base.path().trim_end_matches('/');
        let mut target = format!("{}{prefix}{}", origin(base), request.path);
        if let Some(query) = &request.query {
            target.push('?');
            target.push_str(query);
        }
        let uri = target.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
        let mut headers = HeaderMap::with_capacity(request.headers.len() + dependency.config.headers.len() + 1);
        for (name, value) in &request.headers {
            // `authorization` is the function's token for Keel: a dependency's own credentials
            // are the configured headers, which functions never see.
            let keep = !HOP_BY_HOP.contains(&name.as_str())
                && name != header::HOST
                && name != header::CONTENT_LENGTH
                && name != header::AUTHORIZATION
                && !name.as_str().starts_with("keel-");
            if keep {
                headers.append(name.clone(), value.clone());
            }
        }
        let has_key = headers.contains_key("idempotency-key");
        if !has_key {
            let key = format!("{invocation_id}/{}/{call_number}", dependency.config.name);
            if let Ok(value) = HeaderValue::from_str(&key) {
                headers.insert(HeaderName::from_static("idempotency-key"), value);
            }
        }
        for configured in &dependency.config.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(configured.name.as_bytes()), HeaderValue::from_str(&configured.value))
            {
                headers.insert(name, value);
            }
        }
        let idempotent =
            matches!(request.method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
        // Only the function's own key makes a POST or PATCH retryable: Keel's is there for the
        // function's retried attempts, and a dependency that ignores keys would apply it twice.
        Self { retryable: idempotent || has_key, method: request.method, uri, headers, body: request.body }
    }

    fn build(&self) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The dependency's answer as it came, but for the headers of its connection. The call keeps
/// its place in the bulkhead until the body has been passed on (or dropped).
fn pass_through(response: hyper::Response<hyper::body::Incoming>, place: Place) -> Response {
    let (mut parts, body) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    parts.extensions = http::Extensions::new();
    parts.extensions.insert(PassedThrough);
    Response::from_parts(parts, Body::new(PlacedBody { body, _place: place }))
}

/// A dependency's body, holding its call's bulkhead place while it streams.
struct PlacedBody {
    body: hyper::body::Incoming,
    _place: Place,
}

impl HttpBody for PlacedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Gives a half-open probe's place back when the call ends before the dependency was asked.
struct ProbeGuard<'a> {
    dependency: &'a Dependency,
    now: keel_core::clock::Millis,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.dependency.with_breaker(self.now, |b| b.cancel_probe());
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

/// An error with its chain of causes.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependencys_retry_after_is_whole_seconds_up_to_a_day() {
        let asked = |value: &str| dependency_retry_after(&HeaderValue::from_str(value).unwrap());
        assert_eq!(asked("7"), Some(Duration::from_secs(7)));
        assert_eq!(asked(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(asked("soon"), None);
        assert_eq!(asked("-1"), None);
        // Regression: this was taken as is, and `Instant::now() + delay` then panicked (overflow).
        let huge = asked("18446744073709551615").unwrap();
        assert_eq!(huge, keel_core::outcome::MAX_RETRY_AFTER);
        assert!(tokio::time::Instant::now().checked_add(huge).is_some());
    }
}
