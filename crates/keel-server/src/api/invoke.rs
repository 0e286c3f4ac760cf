//! Invoking functions: sync (`/invoke`, the caller waits) and async (`/invocations`, 202 once
//! the invocation is on disk).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use keel_core::id::new_id;
use keel_core::idempotency::{KeyClaim, StoredReply};
use keel_core::invocation::{Invocation, NewInvocation, StoredResponse};
use keel_core::Error;
use serde::Serialize;
use utoipa::ToSchema;

use super::idempotency::{IdempotencyKeyHeader, PreferWait};
use super::{body, delay, idempotency, input, openapi};
use crate::dispatch;
use crate::dispatch::sync::{self, SyncEnd, SyncRequest, Unrecorded};
use crate::faults;
use crate::functions::{Admitted, Function};
use crate::problem::{reply_response, Problem};
use crate::runtime::url::contract::{INVOCATION_ID, TRACEPARENT};
use crate::state::Shared;
use crate::trace;

/// A keyed sync call holds its key this long past its `sync_timeout` before a retry may take
/// over (the holder is then presumed dead).
const KEY_LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Checks that come before any work: draining, the function, the body (and its `input_schema`:
/// an invalid body is refused before any key is claimed or slot admitted).
fn admit<'a>(shared: &'a Shared, name: &str, body: body::RequestBody) -> Result<(&'a Arc<Function>, Bytes), Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    let function = shared.functions.get(name).ok_or_else(|| Problem::unknown_function(name))?;
    let body = body.read()?;
    input::check_invoke(shared, function, &body)?;
    Ok((function, body))
}

/// The most bytes of a `concurrency_key` header value: it is stored with the invocation.
const MAX_CONCURRENCY_KEY_LEN: usize = 256;

/// The value of the function's `concurrency_key` header, if it has one and the request sent it.
pub(super) fn concurrency_key(function: &Function, headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(config) = &function.config.flow.concurrency_key else { return Ok(None) };
    let Some(value) = headers.get(&config.header) else { return Ok(None) };
    let value = value
        .to_str()
        .map_err(|_| Problem::bad_request(format!("{} (the concurrency key) must be visible ASCII", config.header)))?;
    if value.len() > MAX_CONCURRENCY_KEY_LEN {
        return Err(Problem::bad_request(format!(
            "{} (the concurrency key) may be at most {MAX_CONCURRENCY_KEY_LEN} bytes (got {})",
            config.header,
            value.len()
        )));
    }
    Ok(Some(value.to_owned()))
}

fn header_str(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The work's `traceparent`: the one the front layer set on the request (the caller's, or a new
/// one), checked again.
pub(super) fn traceparent(headers: &HeaderMap) -> String {
    header_str(headers, TRACEPARENT).and_then(trace::parse_traceparent).unwrap_or_else(trace::new_traceparent)
}

/// Sync invoke: run the function and wait for its answer.
///
/// Keel runs attempts, retrying transient failures until one succeeds, the retry policy is used
/// up or the function's `sync_timeout` passes, and answers with the function's response or a
/// problem.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/invoke",
    tag = "invoke",
    operation_id = "invokeSync",
    params(
        ("name" = String, Path, description = "The function."),
        IdempotencyKeyHeader,
        ("Prefer" = Option<String>, Header, nullable = false,
            description = "`wait=N` (RFC 7240; seconds, at most 300): when a \
            request with the same Idempotency-Key is still in progress, wait up to N seconds for its answer \
            instead of answering 409."),
        ("traceparent" = Option<String>, Header, nullable = false,
            description = "W3C trace context, carried to every attempt."),
    ),
    request_body(description = "The payload, passed to the function as is, with its content-type.", content(("*/*"))),
    responses(
        (status = "2XX", description = "The function succeeded: its status, content-type and body.", content(("*/*")),
            headers(
                ("keel-invocation-id" = String, description = "The invocation."),
                ("keel-attempts" = u32, description = "Attempts made."),
                ("idempotent-replayed" = String, description = "`true` on a replayed answer."),
            )),
        (status = "4XX", description = "The function refused the request (a permanent failure, not retried), \
            answered as it sent it: status, content-type and body, with `keel-invocation-id` and `keel-attempts`. \
            A 400, 404, 409, 413 or 422 without `keel-invocation-id` is Keel's own problem, described apart.",
            content(("*/*")),
            headers(
                ("keel-invocation-id" = String, description = "The invocation."),
                ("keel-attempts" = u32, description = "Attempts made."),
            )),
        (status = 400, description = "The body is not JSON or fails the function's `input_schema` \
            (`invalid-input`, with `errors`: each failure's JSON Pointer `path` and `message`; nothing was stored and \
            the function was not called); or the Idempotency-Key is malformed or sent twice, a keel-delay is sent (it \
            applies to async invocations only), the content-type is `application/vnd.keel.batch+json` (a bulk \
            admission's, async only), the function's `concurrency_key` header is not visible ASCII or is longer \
            than 256 bytes, or the body cannot be read. A body checked against an \
            `input_schema` nested deeper than `server.limits.max_json_depth` → `json-too-deep`, naming `limit`."),
        (status = 404, description = "No function of that name is configured (`unknown-function`)."),
        (status = 409, description = "A request with this Idempotency-Key is still in progress \
            (`idempotency-key-in-use`); retry after Retry-After, or send `Prefer: wait=N`.",
            headers(("Retry-After" = u64))),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 422, description = openapi::KEY_REUSED),
        (status = 502, description = "Retries used up (`retries-exhausted`), or a permanent failure that is not a \
            4xx (`function-failed`); with `invocation_id` and `attempts`.",
            headers(
                ("keel-invocation-id" = String, description = "The invocation."),
                ("keel-attempts" = u32, description = "Attempts made."),
            )),
        (status = 429, description = "The function's rate limit has no turn for this call before its deadline \
            (`rate-limited`); retry after Retry-After.", headers(("Retry-After" = u64))),
        (status = 503, description = "Refused at once by flow control: no slot can be had in time (`overloaded`), \
            the function's breaker is open (`breaker-open`, with `keel-breaker: open`) or it is paused \
            (`function-paused`, without Retry-After); or this node is draining (`draining`: retry on another \
            node), the store is unavailable, or the invocation ended but its outcome could not be recorded \
            (`outcome-unknown`, with `invocation_id`: its effects may not have been applied; retry with the same \
            Idempotency-Key); retry after Retry-After.",
            headers(("Retry-After" = u64), ("keel-breaker" = String, description = "`open` on `breaker-open`."))),
        (status = 504, description = "The deadline (`sync_timeout`) passed, retries included, or no concurrency \
            slot was free in time (`deadline-exceeded`); with `invocation_id` and `attempts`.",
            headers(
                ("keel-invocation-id" = String, description = "The invocation."),
                ("keel-attempts" = u32, description = "Attempts made."),
            )),
    )
)]
pub(crate) async fn invoke_sync(
    State(shared): State<Arc<Shared>>,
    super::access::Caller(caller): super::access::Caller,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: body::RequestBody,
) -> Result<Response, Problem> {
    if super::bulk::is_bulk(&headers) {
        return Err(Problem::bad_request(format!(
            "{} is a bulk admission's (POST /v1/functions/{{name}}/invocations): a sync invoke runs one payload",
            keel_core::batch::CONTENT_TYPE
        )));
    }
    let (function, payload) = admit(&shared, &name, body)?;
    let key = idempotency::key_from(&headers)?;
    if headers.contains_key(delay::KEEL_DELAY) {
        return Err(Problem::bad_request(
            "keel-delay applies to async invocations (POST /v1/functions/{name}/invocations); a sync invoke runs now",
        ));
    }
    let request = SyncRequest {
        payload,
        content_type: header_str(&headers, CONTENT_TYPE).map(str::to_string),
        traceparent: traceparent(&headers),
        concurrency_key: concurrency_key(function, &headers)?,
    };
    let Some(key) = key else {
        let pass = sync::gate(&shared, function)?;
        let inv = sync::new_invocation(&shared, function, request, None);
        return sync::run_plain(&shared, function, inv, pass, answer).await;
    };
    // Keyed: the invocation and its key record are stored before the first attempt, so a retry
    // of this request finds it — in flight, done, or orphaned by a crash and taken over.
    let lease = function.config.sync_timeout + KEY_LEASE_MARGIN;
    let ttl = function.config.idempotency_ttl;
    let claim =
        || idempotency::claim(&shared, &caller, (&method, uri.path()), key.clone(), &request.payload, lease, ttl);
    let keyed = sync::KeyedCall {
        key: key.clone(),
        claim: &claim,
        wait_until: idempotency::prefer_wait(&headers).map(|w| tokio::time::Instant::now() + w),
        reply: &sync_reply,
    };
    match sync::run_keyed(&shared, function, request.clone(), keyed).await? {
        sync::Keyed::Replay(reply) => Ok(idempotency::replay(reply)),
        sync::Keyed::Mismatch => Err(idempotency::mismatch()),
        sync::Keyed::InFlight { lease_until } => {
            Err(idempotency::in_flight(&shared, lease_until, PreferWait::Honoured))
        }
        sync::Keyed::Ran { inv, ended } => answer(&inv, ended),
    }
}

/// The answer of a sync invocation: its reply once recorded; else a 503 saying its outcome is
/// unknown (the function's answer is not passed on: its effects may not have been applied).
fn answer(inv: &Invocation, ended: Result<SyncEnd, Unrecorded>) -> Result<Response, Problem> {
    match ended {
        Ok(end) => Ok(sync_response(inv, end)),
        Err(Unrecorded { end, error }) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome-unknown",
            "Outcome unknown",
            format!(
                "the invocation ended ({}) but its outcome could not be recorded ({error}): its effects may not \
                 have been applied; retry with the same Idempotency-Key to run it again or replay its answer",
                end.as_str()
            ),
        )
        .invocation(inv.id.clone())
        .attempts(inv.attempt_count)
        .retry_after(1)),
    }
}

/// The function's own response, when a sync invocation that ended so answers with it.
fn passthrough(inv: &Invocation, end: SyncEnd) -> Option<&StoredResponse> {
    match (end, &inv.response) {
        (SyncEnd::Succeeded, Some(r)) => Some(r),
        (SyncEnd::Permanent, Some(r)) if (400..500).contains(&r.status) => Some(r),
        _ => None,
    }
}

/// [`sync_reply`] as a response. The function's answer passed through, the common case, is
/// built in place: no `String` is made for a header name or value known already (an unkeyed
/// call's reply is never stored).
fn sync_response(inv: &Invocation, end: SyncEnd) -> Response {
    let Some(r) = passthrough(inv, end) else { return reply_response(sync_reply(inv, end)) };
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let content_type = r.content_type.as_deref().and_then(crate::header_values::content_type);
    let mut response = response_with(status, r.body.clone(), content_type.unwrap_or(OCTET_STREAM));
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&inv.id) {
        headers.insert(INVOCATION_ID, id);
    }
    headers.insert(ATTEMPTS, crate::header_values::number(inv.attempt_count));
    response
}

const ATTEMPTS: HeaderName = HeaderName::from_static("keel-attempts");

/// What `Bytes::into_response` labels a body with, kept when a function's answer names no type.
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// A response of `status` with `body` and `content_type`. Built in place:
/// `(status, body).into_response()` set a content type of its own, which every caller here then
/// replaced.
fn response_with(status: StatusCode, body: Bytes, content_type: HeaderValue) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// What a finished sync invocation answers: the function's own response when it succeeded or
/// refused the request (4xx), else a problem (502 or 504); with Keel's headers either way.
fn sync_reply(inv: &Invocation, end: SyncEnd) -> StoredReply {
    let mut reply = match passthrough(inv, end) {
        Some(r) => StoredReply {
            status: r.status,
            headers: r.content_type.iter().map(|ct| ("content-type".to_string(), ct.clone())).collect(),
            body: r.body.clone(),
        },
        None => {
            let (status, kind, title) = match end {
                SyncEnd::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline-exceeded", "Deadline exceeded"),
                SyncEnd::Exhausted => (StatusCode::BAD_GATEWAY, "retries-exhausted", "Retries exhausted"),
                _ => (StatusCode::BAD_GATEWAY, "function-failed", "Function failed"),
            };
            Problem::new(status, kind, title, inv.error.clone().unwrap_or_default())
                .invocation(inv.id.clone())
                .attempts(inv.attempt_count)
                .into_reply()
        }
    };
    reply.headers.push(("keel-invocation-id".into(), inv.id.clone()));
    reply.headers.push(("keel-attempts".into(), inv.attempt_count.to_string()));
    reply
}

/// Async invoke: queue an invocation, answered 202 once it is on disk.
///
/// Keel runs the attempts in the background, retrying transient failures; an invocation that
/// fails for good goes to the dead-letter queue.
///
/// Bulk admission: with `content-type: application/vnd.keel.batch+json` the body is a JSON array
/// of 1 to 1,000 payloads; each becomes an invocation of its own (payload `application/json`),
/// all stored in one transaction (or none), answered by one 202 `{"ids": [...]}` in the order
/// sent. An Idempotency-Key covers the whole batch; `keel-delay`, `traceparent` and the
/// `concurrency_key` header apply to each invocation.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/invocations",
    tag = "invoke",
    operation_id = "invokeAsync",
    params(
        ("name" = String, Path, description = "The function."),
        IdempotencyKeyHeader,
        // The pattern is `parse_delay` exactly: digits (leading zeros allowed), one unit, at most
        // 365 days in that unit.
        ("keel-delay" = Option<String>, Header, nullable = false,
            pattern = "^0*(?:(?:[0-9]{1,10}|[12][0-9]{10}|30[0-9]{9}|31[0-4][0-9]{8}|315[0-2][0-9]{7}|3153[0-5][0-9]{6}|31536000000)ms|(?:[0-9]{1,7}|[12][0-9]{7}|30[0-9]{6}|31[0-4][0-9]{5}|315[0-2][0-9]{4}|3153[0-5][0-9]{3}|31536000)s|(?:[0-9]{1,5}|[1-4][0-9]{5}|5[01][0-9]{4}|52[0-4][0-9]{3}|525[0-5][0-9]{2}|525600)m|(?:[0-9]{1,3}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-5][0-9]|8760)h|(?:[0-9]{1,2}|[12][0-9]{2}|3[0-5][0-9]|36[0-5])d)$",
            description = "Run the first attempt this much later: one whole number and one unit \
            (`ms`, `s`, `m`, `h`, `d`), e.g. `250ms`, `30s`, `5m`; at most 365 days. Sent once. Not accepted on a \
            sync invoke (400)."),
        ("traceparent" = Option<String>, Header, nullable = false,
            description = "W3C trace context, carried to every attempt."),
    ),
    request_body(
        description = "The payload, passed to the function as is, with its content-type; or, as \
            `application/vnd.keel.batch+json`, a JSON array of 1 to 1,000 payloads (a bulk admission).",
        content(
            (Option<Vec<serde_json::Value>> = "application/vnd.keel.batch+json"),
            ("*/*"),
        )
    ),
    responses(
        (status = 202, description = "Queued: `{\"id\", \"status\"}` with `Location`; for a bulk admission \
            `{\"ids\": [...]}`, one per payload in the order sent.",
            body = AsyncAccepted,
            headers(
                ("Location" = String, description = "`/v1/invocations/{id}` (not on a bulk admission)."),
                ("keel-invocation-id" = String, description = "The invocation (not on a bulk admission)."),
                ("idempotent-replayed" = String, description = "`true` on a replayed answer."),
            )),
        (status = 400, description = "The body is not JSON or fails the function's `input_schema` \
            (`invalid-input`, with `errors`: each failure's JSON Pointer `path` and `message`; nothing was stored; in a \
            bulk admission each path starts with the payload's position, `/3/email`, and `index` names the first \
            invalid payload: the batch is all or nothing); or a bulk admission's body is not a JSON array of 1 to 1,000 \
            payloads (more: `batch-too-large`, naming `limit`; nothing was stored); or the Idempotency-Key or keel-delay is malformed or sent twice, the function's \
            `concurrency_key` header is not visible ASCII or is longer than 256 bytes, or the body cannot be read. A \
            body checked against an `input_schema` (or any bulk admission's body) nested deeper than \
            `server.limits.max_json_depth` → `json-too-deep`, naming `limit`."),
        (status = 404, description = "No function of that name is configured (`unknown-function`)."),
        (status = 409, description = openapi::KEY_IN_USE, headers(("Retry-After" = u64))),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 422, description = openapi::KEY_REUSED),
        (status = 429, description = "The function's `max_queued` is reached, or would be by the invocations of a \
            bulk admission that are not started at once (`queue-full`): nothing was stored; retry after Retry-After.",
            headers(("Retry-After" = u64))),
        (status = 503, description = openapi::UNAVAILABLE_OR_DRAINING, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn invoke_async(
    State(shared): State<Arc<Shared>>,
    super::access::Caller(caller): super::access::Caller,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: body::RequestBody,
) -> Result<Response, Problem> {
    if super::bulk::is_bulk(&headers) {
        return super::bulk::invoke_bulk(shared, caller, &name, (method, uri), headers, body).await;
    }
    let (function, payload) = admit(&shared, &name, body)?;
    let key = idempotency::key_from(&headers)?;
    let delay = delay::delay_from(&headers)?;
    let concurrency_key = concurrency_key(function, &headers)?;
    let now = shared.clock.now_ms();
    // With room and nothing due waiting, the invocation is stored leased by this node and its
    // attempt starts once it is durable, on the first slot free then: no lease round-trip
    // through the store.
    let admitted = if delay.is_zero() { function.admit_now(concurrency_key.as_deref(), now) } else { None };
    let new = NewInvocation {
        concurrency_key,
        id: new_id(now),
        function: function.config.name.clone(),
        content_type: header_str(&headers, CONTENT_TYPE).map(str::to_string),
        created_at: now,
        due_at: now + delay.as_millis() as i64,
        idempotency_key: key.clone(),
        traceparent: Some(traceparent(&headers)),
        payload,
        delivery: None,
        lease: admitted.as_ref().map(|_| dispatch::lease_at(&shared, function, now)),
        workflow: None,
    };
    let claim = key.map(|key| {
        let ttl = function.config.idempotency_ttl;
        idempotency::claim(&shared, &caller, (&method, uri.path()), key, &new.payload, Duration::ZERO, ttl)
    });
    // Admission tells a new key from a replay in the store, in the same transaction: the budget
    // of new records is taken here, and only past it is the store asked first, so that a
    // retry of a request already admitted is still answered with its replay.
    if let Some(claim) = claim.as_ref().filter(|c| shared.replays.get(&c.key, c.now).is_none()) {
        if let Err(refused) = shared.limits.admit_key_record(&claim.key.scope) {
            return match idempotency::settled(&shared, claim).await? {
                Some(answer) => Ok(answer),
                None => Err(refused),
            };
        }
    }
    super::admit_fully(admit_async(shared.clone(), function.clone(), new, claim, admitted)).await
}

/// Stores `new` (under `claim`'s key, when there is one) and answers 202, or the key's stored
/// answer; then starts it (`admitted`: stored leased) or wakes the dispatcher.
async fn admit_async(
    shared: Arc<Shared>,
    function: Arc<Function>,
    new: NewInvocation,
    claim: Option<KeyClaim>,
    admitted: Option<Admitted>,
) -> Result<Response, Problem> {
    let id = new.id.clone();
    // The 202 as stored with the key, when there is one; else built in place at the end.
    let mut keyed_reply = None;
    let stored = match claim {
        None => {
            queue_room(&shared, &function, u64::from(admitted.is_none()))?;
            match shared.store.enqueue(new).await {
                Ok(stored) => stored,
                Err(e @ Error::OutcomeUnknown(_)) => return Err(unknown_admission(&shared, function, id, admitted, e)),
                Err(e) => return Err(e.into()),
            }
        }
        Some(claim) => {
            if let Some(answer) = idempotency::settled(&shared, &claim).await? {
                return Ok(answer);
            }
            queue_room(&shared, &function, u64::from(admitted.is_none()))?;
            let stored = new.clone().into_stored();
            let reply = accepted_reply(&id);
            let decision = match shared.store.enqueue_keyed(new, claim, reply.clone()).await {
                Ok(decision) => decision,
                Err(e @ Error::OutcomeUnknown(_)) => return Err(unknown_admission(&shared, function, id, admitted, e)),
                Err(e) => return Err(e.into()),
            };
            if let Some(answer) = idempotency::decided(&shared, decision, PreferWait::Ignored) {
                return answer;
            }
            keyed_reply = Some(reply);
            stored
        }
    };
    shared.metrics.accepted(&function.config.name, crate::metric_definitions::Admission::Async);
    faults::crash_point(&shared, faults::CrashPoint::AfterAdmit);
    match admitted {
        Some(admitted) => dispatch::start_admitted(shared.clone(), function, stored, admitted),
        None => {
            function.flow.queued(1);
            function.work_queued();
        }
    }
    Ok(keyed_reply.map_or_else(|| accepted_response(&id), reply_response))
}

/// Checks `max_queued` for the invocations that will be stored `queued` (not leased at
/// admission).
pub(super) fn queue_room(shared: &Shared, function: &Function, queued: u64) -> Result<(), Problem> {
    if queued == 0 {
        return Ok(());
    }
    function.flow.check_queue(queued).map_err(|shed| {
        sync::shed_counted(shared, function, &shed, shared.clock.now_ms());
        Problem::shed(&function.config.name, &shed)
    })
}

/// The answer to an admission the store never confirmed: 503 `outcome-unknown`. If it was
/// stored after all, it runs: stored leased (`admitted`), once the store says so, else the
/// dispatcher (woken here) finds it queued.
fn unknown_admission(
    shared: &Arc<Shared>,
    function: Arc<Function>,
    id: String,
    admitted: Option<Admitted>,
    e: Error,
) -> Problem {
    match admitted {
        Some(admitted) => dispatch::start_if_stored(shared.clone(), function, id.clone(), admitted),
        None => function.work_queued(),
    }
    Problem::from(e).invocation(id)
}

/// The 202 of an async invocation.
fn accepted_reply(id: &str) -> StoredReply {
    StoredReply {
        status: 202,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("location".into(), format!("/v1/invocations/{id}")),
            ("keel-invocation-id".into(), id.to_string()),
        ],
        body: serde_json::to_vec(&Accepted { id: id.to_string(), status: "queued" })
            .expect("plain strings serialize")
            .into(),
    }
}

/// [`accepted_reply`] as a response, built in place: an unkeyed admission's answer is never
/// stored, so no `String` is made for the header names and values known already.
fn accepted_response(id: &str) -> Response {
    // `Accepted` as JSON, written straight: no copy of the id into a struct to serialize.
    let mut body = Vec::with_capacity(id.len() + 32);
    body.extend_from_slice(br#"{"id":"#);
    serde_json::to_writer(&mut body, id).expect("a string serializes");
    body.extend_from_slice(br#","status":"queued"}"#);
    let mut response =
        response_with(StatusCode::ACCEPTED, Bytes::from(body), HeaderValue::from_static("application/json"));
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/invocations/{id}")) {
        headers.insert(LOCATION, location);
    }
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert(INVOCATION_ID, id);
    }
    response
}

/// The answer of an async invoke: one invocation's, or a bulk admission's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema for the OpenAPI document: each answer is built as its own type")]
pub(crate) enum AsyncAccepted {
    One(Accepted),
    Bulk(super::bulk::BulkAccepted),
}

/// The answer of an async invoke.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01JC7Z3V9Q4W2B8N5M6K1H0G3F", "status": "queued"}))]
pub(crate) struct Accepted {
    /// The invocation: `GET /v1/invocations/{id}`.
    id: String,
    /// Always `queued`.
    status: &'static str,
}

#[cfg(test)]
mod tests {
    use keel_core::invocation::{NewInvocation, StoredResponse};

    use super::*;

    /// Status, headers and body of a response whose body is already in memory.
    async fn parts(response: Response) -> (StatusCode, HeaderMap, Bytes) {
        let (head, body) = response.into_parts();
        (head.status, head.headers, axum::body::to_bytes(body, usize::MAX).await.unwrap())
    }

    fn finished(response: Option<StoredResponse>) -> Invocation {
        let mut inv =
            NewInvocation::plain("01JC7Z3V9Q4W2B8N5M6K1H0G3F", "f", Bytes::from_static(b"{}"), 0).into_stored();
        inv.attempt_count = 2;
        inv.response = response;
        inv.error = Some("HTTP 503".into());
        inv
    }

    /// The answers built in place for unkeyed calls are, to the byte, the ones a key stores and
    /// replays (`reply_response` of the `StoredReply`): the two ways of building them stay twins.
    #[tokio::test]
    async fn an_answer_built_in_place_is_the_stored_reply_of_the_same_call() {
        let json =
            || StoredResponse { status: 200, content_type: Some("application/json".into()), body: "{\"a\":1}".into() };
        let bare = || StoredResponse { status: 422, content_type: None, body: "no".into() };
        for (response, end) in [
            (Some(json()), SyncEnd::Succeeded),
            (Some(bare()), SyncEnd::Permanent),
            (Some(json()), SyncEnd::Exhausted),
            (None, SyncEnd::DeadlineExceeded),
        ] {
            let inv = finished(response);
            let (built, stored) = (sync_response(&inv, end), reply_response(sync_reply(&inv, end)));
            assert_eq!(parts(built).await, parts(stored).await, "{end:?}");
        }
        let id = "01JC7Z3V9Q4W2B8N5M6K1H0G3F";
        assert_eq!(parts(accepted_response(id)).await, parts(reply_response(accepted_reply(id))).await);
    }
}
