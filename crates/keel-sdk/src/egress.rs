//! Calling a dependency through Keel's egress: `ANY {KEEL_URL}/v1/egress/{dependency}{path}`
//! with the attempt's function token (when Keel's auth is on) and `keel-invocation-id`. Keel answers with the dependency's answer as it is,
//! or with a problem of its own (`urn:keel:problem:breaker-open`, `rate-limited`,
//! `bulkhead-full`, `dependency-timeout`, `dependency-unreachable`, `forbidden`), which becomes an
//! [`EgressError`] — and, through `?`, an [`Error`] that tells Keel when to retry the attempt.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One keep-alive client per process, shared by every invocation.
fn http() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

/// A dependency of the function (`[dependencies.NAME]` in Keel's config, listed in the
/// function's `dependencies`), called through Keel on behalf of the running attempt. Made by
/// [`Ctx::dependency`](crate::Ctx::dependency).
#[derive(Debug, Clone)]
pub struct Dependency {
    name: String,
    keel: Option<url::Url>,
    invocation_id: String,
    /// The attempt's function token: how Keel knows the caller when its auth is on.
    bearer: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Dependency {
    pub(crate) fn new(
        name: &str,
        keel: Option<url::Url>,
        invocation_id: &str,
        bearer: Option<&str>,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            keel,
            invocation_id: invocation_id.to_owned(),
            bearer: bearer.map(str::to_owned),
            traceparent: traceparent.map(str::to_owned),
            tracestate: tracestate.map(str::to_owned),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A request with `method` to `path` under the dependency's configured `url` (`/charges`;
    /// a missing leading `/` is added; it may carry a `?query`).
    pub fn request(&self, method: Method, path: &str) -> DependencyRequest {
        DependencyRequest {
            dependency: self.clone(),
            method,
            path: path.to_owned(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            invalid: None,
        }
    }

    pub fn get(&self, path: &str) -> DependencyRequest {
        self.request(Method::GET, path)
    }

    pub fn head(&self, path: &str) -> DependencyRequest {
        self.request(Method::HEAD, path)
    }

    pub fn post(&self, path: &str) -> DependencyRequest {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> DependencyRequest {
        self.request(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> DependencyRequest {
        self.request(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> DependencyRequest {
        self.request(Method::DELETE, path)
    }
}

/// A call to a [`Dependency`] being built; [`DependencyRequest::send`] makes it.
///
/// A header or body that cannot be sent (an invalid header name, a value JSON cannot represent)
/// is reported by `send` as [`EgressErrorKind::InvalidRequest`].
#[derive(Debug)]
#[must_use = "a request does nothing until sent"]
pub struct DependencyRequest {
    dependency: Dependency,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    invalid: Option<String>,
}

impl DependencyRequest {
    /// Appends `name=value` to the query (form-urlencoded; after any query in the path).
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Appends a header. Keel forwards all but connection headers, `keel-*` and `authorization`
    /// (the function's token is for Keel: a dependency's credentials are its configured
    /// `headers`); an `idempotency-key` of your own replaces the one Keel would add.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: fmt::Display,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            (Err(e), _) => self.invalidate(format!("invalid header name: {e}")),
            (_, Err(e)) => self.invalidate(format!("invalid header value: {e}")),
        }
        self
    }

    /// The body, as is (set a `content-type` with [`DependencyRequest::header`]).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// `value` as a JSON body, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = body.into();
                self.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Err(e) => self.invalidate(format!("the body is not JSON: {e}")),
        }
        self
    }

    fn invalidate(&mut self, why: String) {
        self.invalid.get_or_insert(why);
    }

    /// Makes the call: the dependency's answer, whatever its status, or an [`EgressError`] when
    /// Keel answered in its stead (or could not be reached).
    pub async fn send(self) -> Result<DependencyResponse, EgressError> {
        let name = self.dependency.name.clone();
        let fail = |kind, detail: String| EgressError { dependency: name.clone(), kind, retry_after: None, detail };
        if let Some(why) = self.invalid {
            return Err(fail(EgressErrorKind::InvalidRequest, why));
        }
        let url = self.url().map_err(|why| fail(EgressErrorKind::InvalidRequest, why))?;
        let mut request = http::Request::builder().method(self.method).uri(url.as_str());
        let Some(headers) = request.headers_mut() else {
            return Err(fail(EgressErrorKind::InvalidRequest, format!("invalid URL {url}")));
        };
        *headers = self.headers;
        let dependency = &self.dependency;
        let value = |text: &str| HeaderValue::from_str(text).ok();
        if let Some(id) = value(&dependency.invocation_id) {
            headers.insert("keel-invocation-id", id);
        }
        // With auth on, the token is how Keel knows the caller, on any node.
        if let Some(token) = dependency.bearer.as_deref().and_then(|t| value(&format!("Bearer {t}"))) {
            headers.insert(AUTHORIZATION, token);
        }
        // The attempt's trace context, so that Keel's egress span joins the attempt's trace
        // (unless the function sent a context of its own).
        if !headers.contains_key("traceparent") {
            if let Some(traceparent) = dependency.traceparent.as_deref().and_then(value) {
                headers.insert("traceparent", traceparent);
                if let Some(tracestate) = dependency.tracestate.as_deref().and_then(value) {
                    headers.insert("tracestate", tracestate);
                }
            }
        }
        let request = request
            .body(Full::new(self.body))
            .map_err(|e| fail(EgressErrorKind::InvalidRequest, format!("{url}: {e}")))?;
        let response = http()
            .request(request)
            .await
            .map_err(|e| fail(EgressErrorKind::KeelUnavailable, format!("keel unreachable: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| fail(EgressErrorKind::KeelUnavailable, format!("reading the answer: {e}")))?
            .to_bytes();
        if let Some((kind, detail)) = keel_problem(parts.status.as_u16(), &parts.headers, &body) {
            return Err(EgressError { retry_after: retry_after(&parts.headers), ..fail(kind, detail) });
        }
        Ok(DependencyResponse { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// `{KEEL_URL}/v1/egress/{dependency}{path}?{query}`.
    fn url(&self) -> Result<url::Url, String> {
        let keel = self.dependency.keel.as_ref().ok_or("KEEL_URL is not set: cannot call a dependency")?;
        let mut url = keel.clone();
        url.set_query(None);
        url.path_segments_mut().map_err(|()| format!("KEEL_URL {keel} cannot be a base URL"))?.pop_if_empty().extend([
            "v1",
            "egress",
            &self.dependency.name,
        ]);
        let (path, query) = self.path.split_once('?').unwrap_or((&self.path, ""));
        let slash = if path.starts_with('/') { "" } else { "/" };
        let mut url = url::Url::parse(&format!("{url}{slash}{path}")).map_err(|e| format!("path {path:?}: {e}"))?;
        url.set_query((!query.is_empty()).then_some(query));
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        Ok(url)
    }
}

/// The dependency's answer, as it gave it.
#[derive(Debug, Clone)]
pub struct DependencyResponse {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl DependencyResponse {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// The body as JSON. A body that is not a `T` is a retryable 502: the dependency did not
    /// answer as expected, and another attempt may see a better answer.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::retryable(format!("the dependency's answer (HTTP {}) is not the expected JSON: {e}", self.status))
                .with_status(502)
        })
    }

    /// The response if 1xx–3xx; otherwise the dependency's failure as the function's: 5xx, 408
    /// and 429 are retryable (after the dependency's `Retry-After`, if it gave one), other 4xx
    /// permanent.
    pub fn error_for_status(self) -> Result<Self, Error> {
        let message = || format!("the dependency answered HTTP {}", self.status);
        match self.status {
            s if s < 400 => Ok(self),
            s if s >= 500 || matches!(s, 408 | 429) => Err(match retry_after(&self.headers) {
                Some(delay) => Error::retry_after(delay).with_message(message()),
                None => Error::retryable(message()),
            }),
            _ => Err(Error::permanent(message())),
        }
    }
}

/// Why a call through egress got no answer from the dependency.
///
/// With `?` in a handler it becomes an [`Error`]: `breaker-open`, `rate-limited` and
/// `bulkhead-full` a 503 with `Retry-After` = Keel's delay (so Keel retries the attempt no
/// sooner), a timeout, an unreachable dependency or Keel a retryable 503, `forbidden` (the
/// function does not declare the dependency) and an invalid request a permanent 422.
///
/// ```
/// use std::time::Duration;
/// use keel_sdk::{EgressError, EgressErrorKind, Error};
///
/// let refused = EgressError::new("payments", EgressErrorKind::BreakerOpen, "too many failures")
///     .with_retry_after(Duration::from_secs(7));
/// assert!(refused.is_retryable());
/// let error = Error::from(refused);
/// assert_eq!((error.status(), error.retry_after_secs()), (503, Some(7)));
/// assert!(!Error::from(EgressError::new("payments", EgressErrorKind::Forbidden, "undeclared")).is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dependency}: {} ({detail})", kind.describe())]
pub struct EgressError {
    dependency: String,
    kind: EgressErrorKind,
    retry_after: Option<Duration>,
    detail: String,
}

/// What went wrong in an [`EgressError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EgressErrorKind {
    /// `503 urn:keel:problem:breaker-open`: the dependency failed too often; Keel does not call
    /// it until `Retry-After`.
    BreakerOpen,
    /// `429 urn:keel:problem:rate-limited`: the dependency's rate limit has no turn now.
    RateLimited,
    /// `503 urn:keel:problem:bulkhead-full`: too many calls to the dependency in flight.
    BulkheadFull,
    /// `504 urn:keel:problem:dependency-timeout`: no answer within the dependency's timeout.
    Timeout,
    /// `502 urn:keel:problem:dependency-unreachable`: no connection to the dependency.
    Unreachable,
    /// `403 urn:keel:problem:forbidden`: the caller is not a running attempt of a function that
    /// declares the dependency.
    Forbidden,
    /// The request could not be built (a header, the path, the JSON body, `KEEL_URL`).
    InvalidRequest,
    /// Keel could not be reached, or its answer not read.
    KeelUnavailable,
}

impl EgressErrorKind {
    /// The problem type Keel answers for it (`breaker-open`), if it is one of Keel's answers.
    pub fn problem_type(self) -> Option<&'static str> {
        Some(match self {
            Self::BreakerOpen => "breaker-open",
            Self::RateLimited => "rate-limited",
            Self::BulkheadFull => "bulkhead-full",
            Self::Timeout => "dependency-timeout",
            Self::Unreachable => "dependency-unreachable",
            Self::Forbidden => "forbidden",
            Self::InvalidRequest | Self::KeelUnavailable => return None,
        })
    }

    /// The status Keel answers it with.
    fn keel_status(self) -> Option<u16> {
        Some(match self {
            Self::BreakerOpen | Self::BulkheadFull => 503,
            Self::RateLimited => 429,
            Self::Timeout => 504,
            Self::Unreachable => 502,
            Self::Forbidden => 403,
            Self::InvalidRequest | Self::KeelUnavailable => return None,
        })
    }

    const KEEL_ANSWERS: [Self; 6] =
        [Self::BreakerOpen, Self::RateLimited, Self::BulkheadFull, Self::Timeout, Self::Unreachable, Self::Forbidden];

    fn describe(self) -> &'static str {
        match self {
            Self::BreakerOpen => "breaker open",
            Self::RateLimited => "rate limited",
            Self::BulkheadFull => "bulkhead full",
            Self::Timeout => "timed out",
            Self::Unreachable => "unreachable",
            Self::Forbidden => "forbidden",
            Self::InvalidRequest => "invalid request",
            Self::KeelUnavailable => "keel unavailable",
        }
    }
}

impl EgressError {
    pub fn new(dependency: impl Into<String>, kind: EgressErrorKind, detail: impl Into<String>) -> Self {
        Self { dependency: dependency.into(), kind, retry_after: None, detail: detail.into() }
    }

    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    pub fn dependency(&self) -> &str {
        &self.dependency
    }

    pub fn kind(&self) -> EgressErrorKind {
        self.kind
    }

    /// Keel's `Retry-After`: when the dependency may be called again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Keel's `detail`, or what went wrong.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Whether another attempt may succeed (all but `Forbidden` and `InvalidRequest`).
    pub fn is_retryable(&self) -> bool {
        !matches!(self.kind, EgressErrorKind::Forbidden | EgressErrorKind::InvalidRequest)
    }
}

impl From<EgressError> for Error {
    fn from(error: EgressError) -> Self {
        let message = error.to_string();
        if !error.is_retryable() {
            return Error::permanent(message);
        }
        match error.retry_after {
            Some(delay) => Error::retry_after(delay).with_message(message),
            None => Error::retryable(message),
        }
    }
}

/// Keel's own answer, when the response is one: a `problem+json` of the type and status Keel
/// answers (a dependency's answer that merely looks alike in part is passed through).
fn keel_problem(status: u16, headers: &HeaderMap, body: &[u8]) -> Option<(EgressErrorKind, String)> {
    let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    if !content_type.trim().to_ascii_lowercase().starts_with("application/problem+json") {
        return None;
    }
    let problem: serde_json::Value = serde_json::from_slice(body).ok()?;
    let kind = problem.get("type")?.as_str()?.strip_prefix("urn:keel:problem:")?;
    let kind = EgressErrorKind::KEEL_ANSWERS
        .into_iter()
        .find(|k| k.problem_type() == Some(kind) && k.keel_status() == Some(status))?;
    let detail = problem.get("detail").and_then(|d| d.as_str()).unwrap_or_default().to_owned();
    Some((kind, detail))
}

/// `Retry-After` in seconds (the form Keel sends).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use http::Response;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::{Ctx, Reply, Request};

    /// What the stand-in for Keel received.
    #[derive(Debug)]
    struct Seen {
        method: Method,
        uri: http::Uri,
        headers: HeaderMap,
        body: Bytes,
    }

    /// A stand-in for Keel on `127.0.0.1:0` that answers every request with `status`, `headers`
    /// and `body`, and reports what it received.
    async fn fake_keel(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        answer: &'static str,
    ) -> (String, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                let service = service_fn(move |request: http::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, incoming) = request.into_parts();
                        let body = incoming.collect().await.unwrap().to_bytes();
                        let _ = seen.send(Seen { method: parts.method, uri: parts.uri, headers: parts.headers, body });
                        let mut response = Response::builder().status(status);
                        for (name, value) in headers {
                            response = response.header(*name, *value);
                        }
                        Ok::<_, Infallible>(response.body(Full::new(Bytes::from_static(answer.as_bytes()))).unwrap())
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        (format!("http://{addr}"), received)
    }

    fn ctx(keel: &str) -> Ctx {
        let mut headers = HeaderMap::new();
        headers.insert("keel-invocation-id", HeaderValue::from_static("inv1"));
        headers.insert("keel-attempt", HeaderValue::from_static("2"));
        headers
            .insert("traceparent", HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        headers.insert("authorization", HeaderValue::from_static("Bearer function-token"));
        Ctx::from_headers(&headers).with_keel_url(keel)
    }

    const PROBLEM: (&str, &str) = ("content-type", "application/problem+json");

    #[tokio::test]
    async fn the_builder_sends_method_path_query_headers_body_and_the_invocation_id() {
        let (keel, mut seen) =
            fake_keel(201, &[("content-type", "application/json"), ("x-charge", "ch_1")], r#"{"id":"ch_1"}"#).await;
        let response = ctx(&keel)
            .dependency("payments")
            .post("/charges?expand=customer")
            .query("currency", "eur")
            .query("note", "a b&c")
            .header("x-request-source", "signup")
            .header("idempotency-key", "order-42")
            .json(&json!({"cents": 500}))
            .send()
            .await
            .unwrap();

        let seen = seen.recv().await.unwrap();
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.uri.path(), "/v1/egress/payments/charges");
        assert_eq!(seen.uri.query(), Some("expand=customer&currency=eur&note=a+b%26c"));
        assert_eq!(seen.headers["keel-invocation-id"], "inv1");
        assert_eq!(seen.headers["x-request-source"], "signup");
        assert_eq!(seen.headers["idempotency-key"], "order-42");
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(seen.headers["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        // Keel gets the attempt's token (and never forwards it to the dependency: see the
        // server's egress tests).
        assert_eq!(seen.headers["authorization"], "Bearer function-token");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap(), json!({"cents": 500}));

        assert_eq!((response.status(), response.is_success()), (201, true));
        assert_eq!(response.header("x-charge"), Some("ch_1"));
        assert_eq!(response.json::<serde_json::Value>().unwrap(), json!({"id": "ch_1"}));
    }

    #[tokio::test]
    async fn every_call_to_keel_carries_the_attempts_token_and_none_without_one() {
        let (keel, mut seen) = fake_keel(404, &[], "").await;
        let ctx = ctx(&keel);
        assert_eq!(ctx.token(), Some("function-token"));
        assert!(ctx.kv_get::<serde_json::Value>("users", "u1").await.unwrap().is_none());
        let read = seen.recv().await.unwrap();
        assert_eq!(read.uri.path(), "/v1/kv/users/u1");
        assert_eq!(read.headers["authorization"], "Bearer function-token");
        // A header of the function's own cannot replace the token Keel knows it by.
        ctx.dependency("payments").get("/").header("authorization", "Bearer other").send().await.unwrap();
        assert_eq!(
            seen.recv().await.unwrap().headers.get_all("authorization").iter().collect::<Vec<_>>(),
            ["Bearer function-token"]
        );

        let without = Ctx::from_headers(&HeaderMap::new()).with_keel_url(&keel);
        assert_eq!(without.token(), None);
        without.kv_get::<serde_json::Value>("users", "u1").await.unwrap();
        without.dependency("payments").get("/").send().await.unwrap();
        for _ in 0..2 {
            assert!(!seen.recv().await.unwrap().headers.contains_key("authorization"), "auth off: no token");
        }
    }

    #[tokio::test]
    async fn every_method_and_a_path_without_its_slash_reach_the_dependency() {
        let (keel, mut seen) = fake_keel(204, &[], "").await;
        let payments = ctx(&format!("{keel}/")).dependency("payments");
        for (request, method) in [
            (payments.get("charges/ch_1"), Method::GET),
            (payments.head("/charges/ch_1"), Method::HEAD),
            (payments.put("/charges/ch_1"), Method::PUT),
            (payments.patch("/charges/ch_1"), Method::PATCH),
            (payments.delete("/charges/ch_1"), Method::DELETE),
            (payments.request(Method::OPTIONS, "/charges/ch_1"), Method::OPTIONS),
        ] {
            assert_eq!(request.body("raw").send().await.unwrap().status(), 204);
            let seen = seen.recv().await.unwrap();
            assert_eq!((seen.method, seen.uri.path()), (method, "/v1/egress/payments/charges/ch_1"));
            assert_eq!(seen.uri.query(), None);
        }
    }

    #[tokio::test]
    async fn a_breaker_open_problem_is_a_retryable_error_answered_503_with_its_retry_after() {
        let (keel, _seen) = fake_keel(
            503,
            &[PROBLEM, ("retry-after", "7"), ("keel-breaker", "open")],
            r#"{"type":"urn:keel:problem:breaker-open","title":"Breaker open","status":503,"detail":"payments failed too often"}"#,
        )
        .await;
        let error = ctx(&keel).dependency("payments").post("/charges").send().await.unwrap_err();
        assert_eq!(error.kind(), EgressErrorKind::BreakerOpen);
        assert_eq!((error.dependency(), error.detail()), ("payments", "payments failed too often"));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert!(error.is_retryable());
        let error = Error::from(error);
        assert_eq!((error.status(), error.retry_after_secs(), error.is_retryable()), (503, Some(7), true));

        // Through `?` in a handler served by `serve_on`: the function's answer is 503 +
        // Retry-After: 7, which Keel honours before the next attempt.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = move |req: Request| {
            let ctx = req.ctx.with_keel_url(&keel);
            async move {
                let charge = ctx.dependency("payments").post("/charges").json(&json!({"cents": 500})).send().await?;
                Ok::<_, Error>(Reply::json(charge.json::<serde_json::Value>()?))
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve_on(listener, handler, async move {
            let _ = stopped.await;
        }));
        let (status, headers, body) = invoke(addr).await;
        assert_eq!((status, &headers[RETRY_AFTER]), (503, &HeaderValue::from(7)));
        assert!(body["detail"].as_str().unwrap().contains("payments: breaker open"), "{body}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    async fn invoke(addr: SocketAddr) -> (u16, HeaderMap, serde_json::Value) {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let request = http::Request::post(format!("http://{addr}/"))
            .header("keel-invocation-id", "inv1")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn rate_limited_and_bulkhead_full_are_retryable_after_keels_delay() {
        for (status, kind, problem) in [
            (
                429,
                EgressErrorKind::RateLimited,
                r#"{"type":"urn:keel:problem:rate-limited","status":429,"detail":"no turn"}"#,
            ),
            (
                503,
                EgressErrorKind::BulkheadFull,
                r#"{"type":"urn:keel:problem:bulkhead-full","status":503,"detail":"full"}"#,
            ),
        ] {
            let (keel, _seen) = fake_keel(status, &[PROBLEM, ("retry-after", "2")], problem).await;
            let error = ctx(&keel).dependency("payments").get("/charges").send().await.unwrap_err();
            assert_eq!((error.kind(), error.retry_after()), (kind, Some(Duration::from_secs(2))));
            let error = Error::from(error);
            assert_eq!((error.status(), error.retry_after_secs()), (503, Some(2)));
        }
    }

    #[tokio::test]
    async fn a_timeout_or_an_unreachable_dependency_is_retryable_without_a_delay() {
        for (status, kind, problem) in [
            (504, EgressErrorKind::Timeout, r#"{"type":"urn:keel:problem:dependency-timeout","status":504}"#),
            (502, EgressErrorKind::Unreachable, r#"{"type":"urn:keel:problem:dependency-unreachable","status":502}"#),
        ] {
            let (keel, _seen) = fake_keel(status, &[PROBLEM], problem).await;
            let error = ctx(&keel).dependency("payments").get("/charges").send().await.unwrap_err();
            assert_eq!((error.kind(), error.retry_after()), (kind, None));
            let error = Error::from(error);
            assert_eq!((error.status(), error.retry_after_secs(), error.is_retryable()), (503, None, true));
        }
    }

    #[tokio::test]
    async fn a_forbidden_problem_is_a_permanent_error() {
        let (keel, _seen) = fake_keel(
            403,
            &[PROBLEM],
            r#"{"type":"urn:keel:problem:forbidden","title":"Forbidden","status":403,"detail":"egress calls are made by a running attempt"}"#,
        )
        .await;
        let error = ctx(&keel).dependency("payments").post("/charges").send().await.unwrap_err();
        assert_eq!(error.kind(), EgressErrorKind::Forbidden);
        assert!(!error.is_retryable());
        let error = Error::from(error);
        assert_eq!((error.status(), error.is_retryable(), error.retry_after_secs()), (422, false, None));
    }

    #[tokio::test]
    async fn the_dependencys_own_500_is_a_response_not_an_error() {
        let (keel, _seen) = fake_keel(500, &[("content-type", "text/plain"), ("retry-after", "3")], "boom").await;
        let response = ctx(&keel).dependency("payments").post("/charges").send().await.unwrap();
        assert_eq!((response.status(), response.is_success()), (500, false));
        assert_eq!(response.body().as_ref(), b"boom");
        assert!(response.json::<serde_json::Value>().is_err_and(|e| e.is_retryable()));
        let error = response.error_for_status().unwrap_err();
        assert_eq!((error.status(), error.retry_after_secs()), (503, Some(3)));

        // Its own problems too, even a 503 — only Keel's types at Keel's statuses are Keel's.
        let (keel, _seen) = fake_keel(503, &[PROBLEM], r#"{"type":"about:blank","status":503}"#).await;
        assert_eq!(ctx(&keel).dependency("payments").get("/").send().await.unwrap().status(), 503);
        let (keel, _seen) =
            fake_keel(500, &[PROBLEM], r#"{"type":"urn:keel:problem:breaker-open","status":503}"#).await;
        assert_eq!(ctx(&keel).dependency("payments").get("/").send().await.unwrap().status(), 500);
        // And its own 403 and 404: answers for the handler to judge.
        let (keel, _seen) = fake_keel(403, &[], "no").await;
        let response = ctx(&keel).dependency("payments").get("/").send().await.unwrap();
        assert_eq!(response.status(), 403);
        assert!(!response.error_for_status().unwrap_err().is_retryable());
    }

    #[tokio::test]
    async fn without_keel_or_with_an_invalid_request_the_call_fails_before_sending() {
        let error = Ctx::from_headers(&HeaderMap::new())
            .with_keel_url("not a url")
            .dependency("payments")
            .get("/")
            .send()
            .await
            .unwrap_err();
        assert_eq!(error.kind(), EgressErrorKind::InvalidRequest);
        let (keel, mut seen) = fake_keel(200, &[], "").await;
        let error = ctx(&keel).dependency("payments").get("/").header("bad header", "x").send().await.unwrap_err();
        assert_eq!(error.kind(), EgressErrorKind::InvalidRequest);
        assert!(!Error::from(error).is_retryable());
        assert!(seen.try_recv().is_err(), "nothing was sent");

        // Keel not answering is retryable.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let error = ctx(&url).dependency("payments").get("/").send().await.unwrap_err();
        assert_eq!(error.kind(), EgressErrorKind::KeelUnavailable);
        assert!(Error::from(error).is_retryable());
    }
}
