//! The `Idempotency-Key` header at the gateway: parsing, fingerprints, replays, and the layer
//! that makes the plain POST routes (cancel, redrive) safe to retry.
//!
//! The invoke routes handle keys themselves (`invoke.rs`) because their key record must commit
//! in the same transaction as the invocation it admits. For the routes behind [`keyed`], the
//! work is itself idempotent in effect (a second redrive of the same invocation is refused), so
//! claim → work → complete in three steps is safe; a crash between the last two leaves a key
//! that is retried after its lease and answers with the (refused) second attempt's status.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::clock::Millis;
use keel_core::idempotency::{parse_key_header, KeyClaim, KeyDecision, KeyRef, StoredReply};
use sha2::{Digest, Sha256};

use crate::problem::{reply_response, Problem};
use crate::state::Shared;

/// How long a key record is kept unless the function says otherwise.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the plain POST routes hold a key while they work.
const ROUTE_LEASE: Duration = Duration::from_secs(30);
/// Headers a stored reply keeps.
const KEPT_HEADERS: [&str; 5] = ["content-type", "location", "keel-invocation-id", "keel-attempts", "retry-after"];

/// The `Idempotency-Key` request header, for the OpenAPI document (read by [`key_from`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "a parameter for the OpenAPI document; the header is read by `key_from`")]
pub(crate) struct IdempotencyKeyHeader {
    /// Makes a retry of this request safe, scoped to the route. The key is 1–255 printable ASCII
    /// characters, sent once, either bare (no space, `"` or `\`) or as a quoted structured-field
    /// string (`"a key"`, with `\"` and `\\` escaped; no parameters). The first request runs
    /// and its answer is stored (for 24 h by default; a 404 or 5xx is not stored); the same key
    /// with the same body replays that answer with `idempotent-replayed: true`; with another
    /// body → 422; while the first is still in progress → 409 with Retry-After.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        pattern = "^(?:[!#-\\[\\]-~]{1,255}|\"(?:[ !#-\\[\\]-~]|\\\\[\"\\\\]){1,255}\")$"
    )]
    key: Option<String>,
}

/// The key in the request, if any; 400 when it is malformed.
pub(crate) fn key_from(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(crate::runtime::url::contract::IDEMPOTENCY_KEY).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Problem::bad_request("Idempotency-Key is sent more than once; send one key"));
    }
    match first {
        None => Ok(None),
        Some(value) => parse_key_header(value.as_bytes())
            .map(Some)
            .map_err(|why| Problem::bad_request(format!("invalid Idempotency-Key: {why}"))),
    }
}

/// The fingerprint of a request: method, route and body bytes.
pub(crate) fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update(b" ");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A claim on `key` for the request `method path` with `body`.
pub(crate) fn claim(
    shared: &Shared,
    caller: &crate::auth::Principal,
    (method, path): (&Method, &str),
    key: String,
    body: &[u8],
    lease: Duration,
    ttl: Duration,
) -> KeyClaim {
    let now = shared.clock.now_ms();
    KeyClaim {
        key: KeyRef { scope: caller.actor(), route: format!("{method} {path}"), key },
        fingerprint: fingerprint(method, path, body),
        holder: format!("{}/{}", shared.node_id, keel_core::id::new_id(now)),
        now,
        lease_until: now + lease.as_millis() as Millis,
        expires_at: now + ttl.as_millis() as Millis,
    }
}

/// The answer when the stored record already settles the request — a replay, or a key reused
/// with another request — read without a write; `None` when the request must claim the key.
pub(crate) async fn settled(shared: &Shared, claim: &KeyClaim) -> Result<Option<Response>, Problem> {
    Ok(match crate::dispatch::sync::stored_answer(shared, claim).await? {
        Some(KeyDecision::Replay(reply)) => Some(replay(reply)),
        Some(_) => Some(mismatch().into_response()),
        None => None,
    })
}

/// The answer to a key decision that admits nothing here — a replay (the stored reply again), a
/// key reused with another request (422) or one still held by another request (409) — or `None`
/// for a claim (new, or taken over), which goes on.
pub(crate) fn decided(
    shared: &Shared,
    decision: KeyDecision,
    prefer_wait: PreferWait,
) -> Option<Result<Response, Problem>> {
    match decision {
        KeyDecision::Claim | KeyDecision::TakeOver { .. } => None,
        KeyDecision::Replay(reply) => Some(Ok(replay(reply))),
        KeyDecision::Mismatch => Some(Err(mismatch())),
        KeyDecision::InFlight { lease_until } => Some(Err(in_flight(shared, lease_until, prefer_wait))),
    }
}

/// A stored reply answered again, marked as a replay.
pub(crate) fn replay(reply: StoredReply) -> Response {
    let mut response = reply_response(reply);
    response.headers_mut().insert("idempotent-replayed", "true".parse().expect("static"));
    response
}

/// Whether the route of a 409 honours `Prefer: wait=N` (only sync invoke does), so the answer
/// suggests it only where it would work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreferWait {
    Honoured,
    Ignored,
}

/// 409 while another request holds the key.
pub(crate) fn in_flight(shared: &Shared, lease_until: Millis, prefer_wait: PreferWait) -> Problem {
    let secs = ((lease_until - shared.clock.now_ms()).max(0) as u64).div_ceil(1000).clamp(1, 60);
    let detail = match prefer_wait {
        PreferWait::Honoured => {
            "a request with this Idempotency-Key is still in progress; retry later, or send `Prefer: wait=N` to wait \
             for its result"
        }
        PreferWait::Ignored => "a request with this Idempotency-Key is still in progress; retry later",
    };
    Problem::new(StatusCode::CONFLICT, "idempotency-key-in-use", "Request in progress", detail).retry_after(secs)
}

/// 422 when the key was used for another request.
pub(crate) fn mismatch() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key reused",
        "this Idempotency-Key was used with a different request (method, route or body); use a new key",
    )
}

/// The seconds of `Prefer: wait=N` (RFC 7240), if sent.
pub(crate) fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|pref| {
            let (name, value) = pref.trim().split_once('=')?;
            (name.trim().eq_ignore_ascii_case("wait")).then(|| value.trim().parse::<u64>().ok()).flatten()
        })
        .map(|secs| Duration::from_secs(secs.min(300)))
}

/// Buffers a response into a reply that can be stored, keeping the headers that matter.
pub(crate) async fn to_reply(response: Response, limit: usize) -> StoredReply {
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, limit).await.unwrap_or_default();
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            parts.headers.get(*name).and_then(|v| v.to_str().ok()).map(|v| (name.to_string(), v.to_string()))
        })
        .collect();
    StoredReply { status: parts.status.as_u16(), headers, body }
}

/// The layer for plain POST routes: claim the key, run the handler, store what it answered.
pub(crate) async fn keyed(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let key = match key_from(request.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(problem) => return problem.into_response(),
    };
    let limit = shared.config.server.body_limit as usize;
    let (parts, body) = request.into_parts();
    let body = match super::body::read_limited(body, limit).await {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    let anonymous = crate::auth::Principal::Anonymous;
    let caller = parts.extensions.get::<crate::auth::Principal>().unwrap_or(&anonymous);
    let claim = claim(&shared, caller, (&parts.method, parts.uri.path()), key, &body, ROUTE_LEASE, DEFAULT_TTL);
    match settled(&shared, &claim).await {
        Ok(Some(answer)) => return answer,
        Ok(None) => {}
        Err(problem) => return problem.into_response(),
    }
    if let Err(problem) = shared.limits.admit_key_record(&claim.key.scope) {
        return problem.into_response();
    }
    let (key, holder) = (claim.key.clone(), claim.holder.clone());
    let decision = match shared.store.claim_key(claim).await {
        Ok(decision) => decision,
        Err(e) => return Problem::from(e).into_response(),
    };
    if let Some(answer) = decided(&shared, decision, PreferWait::Ignored) {
        return answer.unwrap_or_else(IntoResponse::into_response);
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let reply = to_reply(response, usize::MAX).await;
    // A 404 (an unknown topic or invocation) admitted nothing: the key stays free, so a later
    // request with it is judged on the route as it then stands, not compared with this one
    // (existence before key comparison).
    let stored = if reply.status >= 500 || reply.status == 404 {
        shared.store.release_key(key, holder).await
    } else {
        shared.store.complete_key(key, holder, reply.clone()).await
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e, "storing an idempotent reply failed");
    }
    reply_response(reply)
}
