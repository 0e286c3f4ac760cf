//! Calling a function over HTTP: the function contract's request, a per-attempt timeout, and the
//! classification of what came back. `url` functions come here directly; `command` functions
//! come here once their pool has lent them an instance, so the contract has one code path. With
//! auth on, every attempt carries its function token (`authorization: Bearer keel_ft_…`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::Full;
use keel_core::clock::{rfc3339, Clock, Millis};
use keel_core::config::{FunctionConfig, FunctionTarget};
use keel_core::effects;
use keel_core::invocation::{truncate_error, Attempt, Invocation, StoredResponse};
use keel_core::lifecycle::AttemptReport;
use keel_core::outcome::{self, Outcome};

use super::client::{build_h2_client, https_connector, ClientError, HttpClient};
use super::h1::{H1Error, H1Pool};
use crate::auth::Auth;
use crate::body::{read_whole, Unread};
use crate::trace;

/// The names of the function contract's request headers, made once: a name given as a `&str`
/// is parsed, and (not being one of HTTP's standard names) copied to the heap, at every attempt.
/// The API's answers (`keel-invocation-id`) and the request span (`traceparent`) use them too.
pub(crate) mod contract {
    use http::HeaderName;

    pub(super) const FUNCTION: HeaderName = HeaderName::from_static("keel-function");
    pub(super) const DEADLINE: HeaderName = HeaderName::from_static("keel-deadline");
    pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    pub(crate) const INVOCATION_ID: HeaderName = HeaderName::from_static("keel-invocation-id");
    pub(super) const ATTEMPT: HeaderName = HeaderName::from_static("keel-attempt");
    pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
    pub(super) const BATCH_SIZE: HeaderName = HeaderName::from_static("keel-batch-size");
    pub(super) const SUBSCRIPTION: HeaderName = HeaderName::from_static("keel-subscription");
}

/// Everything one attempt needs to know.
#[derive(Debug)]
pub(crate) struct AttemptCall<'a> {
    /// The function's configured URL, or its managed command.
    pub(crate) target: &'a FunctionTarget,
    pub(crate) function: &'a str,
    pub(crate) invocation_id: &'a str,
    /// Sent as `idempotency-key`: the invocation id, or a workflow step's `{run_id}/{step}`.
    pub(crate) idempotency_key: &'a str,
    pub(crate) number: u32,
    pub(crate) payload: &'a Bytes,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) traceparent: Option<&'a str>,
    /// An event delivery's CloudEvents binary-mode headers, as stored: only `ce-*` ones are sent
    /// ([`forwarded_headers`]).
    pub(crate) headers: &'a [(String, String)],
    /// The subscription of an event delivery, sent as `keel-subscription`.
    pub(crate) subscription: Option<&'a str>,
    pub(crate) timeout: Duration,
    /// A batch call of this many items (the payload is their batch, `invocation_id` the first
    /// item's): sent without the per-invocation headers, which are in each item instead, and
    /// its 2xx answer is the batch answer (never an effects envelope).
    pub(crate) batch: Option<usize>,
    /// The function's `http2`: the call goes over HTTP/2.
    pub(crate) http2: bool,
}

impl<'a> AttemptCall<'a> {
    /// The next attempt of `inv` (numbered after its last), cut off after `timeout`.
    pub(crate) fn next_of(config: &'a FunctionConfig, inv: &'a Invocation, timeout: Duration) -> Self {
        AttemptCall {
            target: &config.target,
            function: &config.name,
            invocation_id: &inv.id,
            // A workflow step's key names its run and step: the same for every attempt and redrive.
            idempotency_key: inv.contract_key(),
            number: inv.attempt_count + 1,
            payload: &inv.payload,
            content_type: inv.content_type.as_deref(),
            traceparent: inv.traceparent.as_deref(),
            headers: inv.delivery.as_ref().map(|d| d.headers.as_slice()).unwrap_or_default(),
            subscription: inv.delivery.as_ref().map(|d| d.subscription.as_str()),
            timeout,
            batch: None,
            http2: config.http2,
        }
    }

    /// A batch call of `function` carrying `body`, the batch of `items` (never empty).
    pub(crate) fn batch_of(config: &'a FunctionConfig, items: &[&'a Invocation], body: &'a Bytes) -> Self {
        let first = items[0];
        AttemptCall {
            target: &config.target,
            function: &config.name,
            invocation_id: &first.id,
            idempotency_key: &first.id,
            number: first.attempt_count + 1,
            payload: body,
            content_type: Some(keel_core::batch::CONTENT_TYPE),
            traceparent: None,
            headers: &[],
            subscription: None,
            timeout: config.timeout,
            batch: Some(items.len()),
            http2: config.http2,
        }
    }
}

/// The HTTP clients of `url` functions and `command` instances: http and https, pooled; HTTP/1.1,
/// or HTTP/2 for functions with `http2 = true`.
#[derive(Debug, Clone)]
pub(crate) struct UrlRuntime {
    /// HTTP/1.1: keep-alive connections, each driven by the attempt that holds it.
    h1: H1Pool,
    h2: HttpClient,
    max_result_bytes: usize,
    /// How deep an effects envelope may nest (`server.limits.max_json_depth`).
    max_json_depth: u32,
    /// Signs each attempt's function token (none with auth off).
    auth: Arc<Auth>,
    /// The simulation's functions, answering in place of the network (`crate::sim`).
    #[cfg(test)]
    pub(crate) wire: Option<Arc<dyn crate::sim::Wire>>,
}

impl UrlRuntime {
    /// A runtime whose client trusts the system's roots and the certificates of `extra_cas`.
    pub(crate) fn new(
        (max_result_bytes, max_json_depth): (u64, u32),
        extra_cas: &[PathBuf],
        auth: Arc<Auth>,
    ) -> Result<Self, ClientError> {
        let max_result_bytes = max_result_bytes as usize;
        Ok(Self {
            h1: H1Pool::new(https_connector(extra_cas)?),
            h2: build_h2_client(extra_cas)?,
            max_result_bytes,
            max_json_depth,
            auth,
            #[cfg(test)]
            wire: None,
        })
    }

    /// Makes one attempt at `url` and reports what happened. Never fails: every failure is an
    /// outcome. The attempt began at `started_at` (a cold start may already have used some of
    /// its timeout).
    pub(crate) async fn call(
        &self,
        url: &::url::Url,
        call: &AttemptCall<'_>,
        started_at: Millis,
        clock: &dyn Clock,
    ) -> AttemptReport {
        match self.try_call(url, call, started_at, clock).await {
            Ok(report) | Err(Unreached(report)) => report,
        }
    }

    /// Like [`UrlRuntime::call`], but tells apart an attempt that never reached anything: no
    /// connection could be made, so the request was never sent and may go elsewhere unchanged.
    pub(crate) async fn try_call(
        &self,
        url: &::url::Url,
        call: &AttemptCall<'_>,
        started_at: Millis,
        clock: &dyn Clock,
    ) -> Result<AttemptReport, Unreached> {
        let now = clock.now_ms();
        let spent = Duration::from_millis((now - started_at).max(0) as u64);
        let remaining = call.timeout.saturating_sub(spent);
        let result = tokio::time::timeout(remaining, self.send(url, call, started_at, now)).await;
        let ended_at = clock.now_ms();
        Ok(match result {
            Err(_) => {
                let error = format!("timed out after {}", humantime::format_duration(call.timeout));
                failed_attempt(call, started_at, ended_at, Outcome::Timeout, error)
            }
            Ok(Err(failure)) if failure.unreached => {
                return Err(Unreached(failed_attempt(call, started_at, ended_at, failure.outcome, failure.message)));
            }
            Ok(Err(failure)) => {
                report(call, (started_at, ended_at), failure.outcome, failure.status, Some(failure.message))
            }
            Ok(Ok((response, _))) if call.batch.is_none() && is_effects(&response) => {
                effects_attempt(call, (started_at, ended_at), response, self.max_json_depth)
            }
            Ok(Ok((response, retry_after))) => {
                let outcome = outcome::classify_status(response.status);
                let error = (outcome != Outcome::Success).then(|| describe_failure(&response));
                let mut report = report(call, (started_at, ended_at), outcome, Some(response.status), error);
                report.retry_after = outcome::retry_after(response.status, retry_after.as_deref(), ended_at);
                report.response = Some(response);
                report
            }
        })
    }

    async fn send(
        &self,
        url: &::url::Url,
        call: &AttemptCall<'_>,
        started_at: Millis,
        now: Millis,
    ) -> Result<(StoredResponse, Option<String>), CallFailure> {
        let deadline = started_at + call.timeout.as_millis() as Millis;
        let traceparent = call.traceparent.map_or_else(trace::new_traceparent, trace::child_of);
        let mut request = Request::new(Full::new(call.payload.clone()));
        *request.method_mut() = http::Method::POST;
        // Headers set in place, not through `request::Builder`, which moves the whole request
        // head at each header (a dozen copies of it per attempt).
        let invalid = |e: &dyn std::fmt::Display| CallFailure::permanent(format!("cannot build the request: {e}"));
        let headers = request.headers_mut();
        // Sized for what goes in below, `Host` and `content-length`: a map made empty grows
        // (and rehashes) at its seventh header.
        *headers = HeaderMap::with_capacity(12 + call.headers.len());
        let text = |value: &str| HeaderValue::from_str(value).map_err(|e| invalid(&e));
        headers.insert(contract::FUNCTION, text(call.function)?);
        headers.insert(contract::DEADLINE, text(&rfc3339(deadline))?);
        headers.insert(contract::TRACEPARENT, text(&traceparent)?);
        match call.batch {
            None => {
                headers.insert(contract::INVOCATION_ID, text(call.invocation_id)?);
                headers.insert(contract::ATTEMPT, crate::header_values::number(call.number));
                headers.insert(contract::IDEMPOTENCY_KEY, text(call.idempotency_key)?);
            }
            Some(size) => {
                headers.insert(contract::BATCH_SIZE, HeaderValue::from(size));
            }
        }
        if let Some(ct) = call.content_type.and_then(crate::header_values::content_type) {
            headers.insert(CONTENT_TYPE, ct);
        }
        if let Some(subscription) = call.subscription.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert(contract::SUBSCRIPTION, subscription);
        }
        // The token expires with the attempt: a function that keeps it cannot use it later.
        if let Some(token) = self.auth.token(call.function, call.invocation_id, deadline, now) {
            headers.insert(http::header::AUTHORIZATION, text(&format!("Bearer {token}"))?);
        }
        for (name, value) in forwarded_headers(call.invocation_id, call.headers) {
            headers.append(name, value);
        }
        #[cfg(test)]
        if let Some(wire) = &self.wire {
            let response = wire.call(request).await.map_err(|failure| CallFailure {
                unreached: failure.unreached,
                ..CallFailure::transient(failure.message)
            })?;
            return self.read(response).await;
        }
        if !call.http2 {
            return match self.h1.call(url, request, |response| self.read(response)).await {
                Ok(answer) => answer,
                Err(H1Error::Connect(message)) => {
                    Err(CallFailure { unreached: true, ..CallFailure::transient(message) })
                }
                Err(H1Error::Request(message)) => Err(CallFailure::transient(message)),
                Err(H1Error::Invalid(message)) => Err(CallFailure::permanent(message)),
            };
        }
        *request.uri_mut() = http::Uri::try_from(url.as_str()).map_err(|e| invalid(&e))?;
        let response = self.h2.request(request).await.map_err(|e| CallFailure {
            unreached: e.is_connect(),
            ..CallFailure::transient(describe_client_error(&e))
        })?;
        self.read(response).await
    }

    /// The function's answer: its status, content type, `Retry-After`, and body (at most
    /// `max_result_bytes`).
    async fn read<B>(&self, response: http::Response<B>) -> Result<(StoredResponse, Option<String>), CallFailure>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let status = response.status().as_u16();
        let header =
            |name| response.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_string);
        let content_type = header(CONTENT_TYPE);
        let retry_after = header(RETRY_AFTER);
        let body = read_whole(response.into_body(), self.max_result_bytes).await.map_err(|unread| match unread {
            Unread::TooLarge => {
                let mut f = CallFailure::permanent(format!(
                    "the response is larger than server.max_result_bytes ({} bytes)",
                    self.max_result_bytes
                ));
                f.status = Some(status);
                f
            }
            Unread::Failed(e) => {
                let e = e.into();
                CallFailure { status: Some(status), ..CallFailure::transient(format!("reading the response: {e}")) }
            }
        })?;
        Ok((StoredResponse { status, content_type, body }, retry_after))
    }
}

/// The stored headers of a delivery that go out with its attempts: its CloudEvents attributes
/// (`ce-*`) and nothing else. Every other header of the request is Keel's own (`keel-*`,
/// `idempotency-key`, `authorization`, `traceparent`, `tracestate`, `content-type`) and is set
/// from Keel's own fields, never from stored data: a row written before attributes were checked
/// (or altered since) must not forge one. A header that cannot be sent is left out, not the
/// attempt failed.
pub(crate) fn forwarded_headers<'h>(
    invocation_id: &'h str,
    stored: &'h [(String, String)],
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'h {
    stored.iter().filter_map(move |(name, value)| {
        let header = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .filter(|n| n.as_str().starts_with("ce-"))
            .zip(HeaderValue::from_str(value).ok());
        if header.is_none() {
            tracing::warn!(invocation_id, header = %name.escape_debug(), "a stored header is not sent: only valid ce-* headers are");
        }
        header
    })
}

/// An attempt that never reached the function (no instance, a timeout): no status, no response.
pub(crate) fn failed_attempt(
    call: &AttemptCall<'_>,
    started_at: Millis,
    ended_at: Millis,
    outcome: Outcome,
    error: String,
) -> AttemptReport {
    report(call, (started_at, ended_at), outcome, None, Some(error))
}

/// An attempt a chaos fault answered with `status` in place of the function.
pub(crate) fn answered_by_chaos(
    call: &AttemptCall<'_>,
    span: (Millis, Millis),
    status: u16,
    fault: &str,
) -> AttemptReport {
    let outcome = outcome::classify_status(status);
    let error = (outcome != Outcome::Success).then(|| format!("HTTP {status} (chaos: fault {fault})"));
    report(call, span, outcome, Some(status), error)
}

/// The report of attempt `call.number`, which ran from `span.0` to `span.1`; no response yet.
fn report(
    call: &AttemptCall<'_>,
    span: (Millis, Millis),
    outcome: Outcome,
    http_status: Option<u16>,
    error: Option<String>,
) -> AttemptReport {
    let (started_at, ended_at) = span;
    let error = error.map(truncate_error);
    AttemptReport {
        attempt: Attempt { number: call.number, started_at, ended_at, outcome, http_status, error },
        response: None,
        retry_after: None,
        effects: None,
    }
}

/// A 2xx answered as an effects envelope.
fn is_effects(response: &StoredResponse) -> bool {
    let media = response.content_type.as_deref().and_then(|ct| ct.split(';').next()).map(str::trim);
    (200..300).contains(&response.status) && media.is_some_and(|m| m.eq_ignore_ascii_case(effects::CONTENT_TYPE))
}

/// Reads an effects envelope: its result becomes the stored response; a malformed envelope is a
/// permanent failure that says what is wrong.
fn effects_attempt(
    call: &AttemptCall<'_>,
    (started_at, ended_at): (Millis, Millis),
    response: StoredResponse,
    max_json_depth: u32,
) -> AttemptReport {
    match effects::parse(&response.body, max_json_depth) {
        Ok(envelope) => {
            let mut report = report(call, (started_at, ended_at), Outcome::Success, Some(response.status), None);
            report.response = Some(StoredResponse {
                status: envelope.status,
                content_type: Some("application/json".into()),
                body: envelope.result.clone(),
            });
            report.effects = Some(envelope);
            report
        }
        Err(why) => {
            let mut report = failed_attempt(call, started_at, ended_at, Outcome::Permanent, why);
            report.attempt.http_status = Some(response.status);
            report
        }
    }
}

/// An attempt that reached nothing (no connection could be made): its report, should the
/// caller have nowhere else to send it.
#[derive(Debug)]
pub(crate) struct Unreached(pub(crate) AttemptReport);

/// Why an attempt got no usable response.
#[derive(Debug)]
struct CallFailure {
    outcome: Outcome,
    status: Option<u16>,
    message: String,
    /// No connection was made: the request never left.
    unreached: bool,
}

impl CallFailure {
    fn transient(message: String) -> Self {
        Self { outcome: Outcome::Transient, status: None, message, unreached: false }
    }
    fn permanent(message: String) -> Self {
        Self { outcome: Outcome::Permanent, status: None, message, unreached: false }
    }
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let what = if e.is_connect() { "connect error" } else { "request failed" };
    match std::error::Error::source(e) {
        Some(source) => format!("{what}: {}", crate::client::error_chain(source)),
        None => what.to_string(),
    }
}

/// `HTTP 503: <start of the body>` for a failed response.
fn describe_failure(response: &StoredResponse) -> String {
    let snippet: String = String::from_utf8_lossy(&response.body[..response.body.len().min(200)])
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if snippet.trim().is_empty() {
        format!("HTTP {}", response.status)
    } else {
        format!("HTTP {}: {}", response.status, snippet.trim())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use keel_core::auth::Scope;
    use keel_core::clock::ManualClock;

    use super::*;
    use crate::auth::Principal;

    /// A function on `127.0.0.1:0` that answers 200 and keeps each request's `authorization`.
    async fn function_keeping_authorization() -> (::url::Url, Arc<Mutex<Vec<Option<HeaderValue>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(headers.get(http::header::AUTHORIZATION).cloned());
                "{}"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/purchase", listener.local_addr().unwrap()).parse().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn config(mode: &str, url: &::url::Url) -> keel_core::config::Config {
        let text = format!(
            "[auth]\nmode = \"{mode}\"\n[topics.\"user.registered\"]\n\
             [dependencies.payments]\nurl = \"http://127.0.0.1:9/\"\n\
             [functions.purchase]\nurl = \"{url}\"\ntimeout = \"5s\"\ndependencies = [\"payments\"]\n\
             grants = {{ kv = [\"balances:write\"], publish = [\"user.*\"] }}\n"
        );
        keel_core::config::load_str("keel.toml", &text, &Default::default()).unwrap()
    }

    /// One attempt of `purchase` on invocation `inv1` at `now`, by `runtime`.
    async fn attempt(runtime: &UrlRuntime, config: &keel_core::config::Config, now: Millis) -> AttemptReport {
        let function = &config.functions["purchase"];
        let payload = Bytes::new();
        let call = AttemptCall {
            target: &function.target,
            function: &function.name,
            invocation_id: "inv1",
            idempotency_key: "inv1",
            number: 1,
            payload: &payload,
            content_type: None,
            traceparent: None,
            headers: &[],
            subscription: None,
            timeout: function.timeout,
            batch: None,
            http2: false,
        };
        runtime.call(function.url().unwrap(), &call, now, &ManualClock::new(now)).await
    }

    #[tokio::test]
    async fn with_auth_on_each_attempt_carries_a_token_for_its_function_invocation_and_deadline() {
        let (url, seen) = function_keeping_authorization().await;
        let config = config("keys", &url);
        let auth = Arc::new(Auth::with_signing_key(&config, crate::auth::secret::new_signing_key(0)));
        let runtime = UrlRuntime::new((1 << 20, 64), &[], auth.clone()).unwrap();
        let now = 1_000_000;
        assert_eq!(attempt(&runtime, &config, now).await.attempt.outcome, Outcome::Success);

        let header = seen.lock().unwrap()[0].clone().expect("an authorization header");
        assert!(header.to_str().unwrap().starts_with("Bearer keel_ft_"), "{header:?}");
        let Ok(Principal::Function(claims)) = auth.authenticate(Some(&header), now) else {
            panic!("the token does not verify");
        };
        assert_eq!((claims.function.as_str(), claims.invocation.as_str()), ("purchase", "inv1"));
        assert_eq!(claims.exp, now + 5_000, "it expires at the attempt's deadline");
        let scopes: Vec<Scope> =
            ["kv:balances:write", "publish:user.*", "egress:payments"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(claims.scopes, scopes, "the grants and egress to each dependency");
        assert!(auth.authenticate(Some(&header), now + 5_000).is_err(), "not after the deadline");
    }

    #[tokio::test]
    async fn with_auth_off_an_attempt_carries_no_authorization() {
        let (url, seen) = function_keeping_authorization().await;
        let config = config("none", &url);
        let runtime = UrlRuntime::new((1 << 20, 64), &[], Arc::new(Auth::new(&config))).unwrap();
        assert_eq!(attempt(&runtime, &config, 1_000_000).await.attempt.outcome, Outcome::Success);
        assert_eq!(seen.lock().unwrap().as_slice(), &[None]);
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_ce_headers_from_stored_data_are_sent() {
        let stored = pairs(&[
            ("ce-id", "e1"),
            ("idempotency-key", "attacker-key"),
            ("keel-invocation-id", "forged"),
            ("keel-attempt", "9"),
            ("keel-subscription", "old-row"),
            ("authorization", "Bearer forged"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("tracestate", "x=y"),
            ("content-type", "text/evil"),
            ("CE-Type", "t"),
            ("ce-subject", "x\nidempotency-key: k"),
            ("ce-bad name", "v"),
        ]);
        let sent: Vec<(String, String)> =
            forwarded_headers("inv", &stored).map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string())).collect();
        assert_eq!(sent, pairs(&[("ce-id", "e1"), ("ce-type", "t")]));
    }
}
