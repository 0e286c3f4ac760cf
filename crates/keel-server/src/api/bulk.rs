//! Bulk admission: `POST /v1/functions/{name}/invocations` with `content-type:
//! application/vnd.keel.batch+json` and a JSON array of up to 1,000 payloads. Every payload
//! becomes an async invocation of its own; all of them are stored in one transaction (or none
//! is) and answered by one 202 with their ids, in order. An `Idempotency-Key` covers the batch.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use keel_core::batch::MAX_BULK_ITEMS;
use keel_core::id::new_ordered_id;
use keel_core::idempotency::{KeyClaim, StoredReply};
use keel_core::invocation::{Invocation, NewInvocation};
use keel_core::Error;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::idempotency::{self, PreferWait};
use super::invoke::{concurrency_key, queue_room, traceparent};
use super::{body, delay, input};
use crate::dispatch;
use crate::faults;
use crate::functions::{Admitted, Function};
use crate::problem::{reply_response, Problem};
use crate::state::Shared;

/// Whether the request is a bulk admission (its content type is a batch).
pub(super) fn is_bulk(headers: &HeaderMap) -> bool {
    headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(keel_core::batch::is_batch_content_type)
}

/// A bulk admission, from the request to its 202 (or a problem: nothing stored).
pub(super) async fn invoke_bulk(
    shared: Arc<Shared>,
    caller: crate::auth::Principal,
    name: &str,
    (method, uri): (Method, Uri),
    headers: HeaderMap,
    body: body::RequestBody,
) -> Result<Response, Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    let function = shared.functions.get(name).ok_or_else(|| Problem::unknown_function(name))?;
    let body = body.read()?;
    let payloads = payloads(&shared, &body)?;
    input::check_bulk(&shared, function, &payloads)?;
    let key = idempotency::key_from(&headers)?;
    let delay = delay::delay_from(&headers)?;
    let concurrency_key = concurrency_key(function, &headers)?;
    let now = shared.clock.now_ms();
    let traceparent = traceparent(&headers);
    // As one async admission does: each invocation that finds room (and nothing due waiting) is
    // stored leased by this node and starts once the batch is durable, on the first slot free.
    let mut admitted = Vec::with_capacity(payloads.len());
    let news: Vec<NewInvocation> = payloads
        .into_iter()
        .map(|payload| {
            let room = if delay.is_zero() { function.admit_now(concurrency_key.as_deref(), now) } else { None };
            let lease = room.as_ref().map(|_| dispatch::lease_at(&shared, function, now));
            admitted.push(room);
            NewInvocation {
                concurrency_key: concurrency_key.clone(),
                // Ordered: the batch's invocations list (and come due) in the order sent.
                id: new_ordered_id(now),
                function: function.config.name.clone(),
                content_type: Some("application/json".into()),
                created_at: now,
                due_at: now + delay.as_millis() as i64,
                idempotency_key: key.clone(),
                traceparent: Some(traceparent.clone()),
                payload,
                delivery: None,
                lease,
                workflow: None,
            }
        })
        .collect();
    let claim = key.map(|key| {
        let ttl = function.config.idempotency_ttl;
        idempotency::claim(&shared, &caller, (&method, uri.path()), key, &body, std::time::Duration::ZERO, ttl)
    });
    if let Some(claim) = claim.as_ref().filter(|c| shared.replays.get(&c.key, c.now).is_none()) {
        if let Err(refused) = shared.limits.admit_key_record(&claim.key.scope) {
            return match idempotency::settled(&shared, claim).await? {
                Some(answer) => Ok(answer),
                None => Err(refused),
            };
        }
    }
    super::admit_fully(admit_all(shared.clone(), function.clone(), news, admitted, claim)).await
}

/// The payloads of a bulk admission's body: each element of its JSON array, as sent (not
/// re-serialized). 400 when it is not an array of 1 to [`MAX_BULK_ITEMS`].
fn payloads(shared: &Shared, body: &Bytes) -> Result<Vec<Bytes>, Problem> {
    shared.limits.check_json("the body", body)?;
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!(
            "a bulk admission's body ({}) is a JSON array of payloads: {e}",
            keel_core::batch::CONTENT_TYPE
        ))
    })?;
    if items.len() > MAX_BULK_ITEMS {
        return Err(too_many(items.len()));
    }
    if items.is_empty() {
        return Err(Problem::bad_request(format!(
            "the batch is empty: a bulk admission carries 1 to {MAX_BULK_ITEMS} payloads"
        )));
    }
    Ok(items.into_iter().map(|raw| body.slice_ref(raw.get().as_bytes())).collect())
}

/// 400 `batch-too-large`: more payloads than one bulk admission may carry. A 400, not a 413: the
/// body is within `server.body_limit`; what it breaks is the documented schema (`maxItems`).
fn too_many(got: usize) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "batch-too-large",
        "Batch too large",
        format!("a bulk admission carries at most {MAX_BULK_ITEMS} payloads (got {got}): send the rest in another; nothing was stored"),
    )
    .limit(MAX_BULK_ITEMS as u32)
}

/// Stores `news` (under `claim`'s key, when there is one) in one transaction and answers 202
/// with their ids, or the key's stored answer; then starts each one `admitted` (stored leased)
/// and wakes the dispatcher for the rest.
async fn admit_all(
    shared: Arc<Shared>,
    function: Arc<Function>,
    news: Vec<NewInvocation>,
    admitted: Vec<Option<Admitted>>,
    claim: Option<KeyClaim>,
) -> Result<Response, Problem> {
    let ids: Vec<String> = news.iter().map(|n| n.id.clone()).collect();
    let reply = accepted_reply(&ids);
    let queued = admitted.iter().filter(|a| a.is_none()).count() as u64;
    let stored: Vec<Invocation> = match claim {
        None => {
            queue_room(&shared, &function, queued)?;
            match shared.store.enqueue_all(news).await {
                Ok(stored) => stored,
                Err(e @ Error::OutcomeUnknown(_)) => {
                    return Err(unknown_admission(&shared, function, ids, admitted, e))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(claim) => {
            if let Some(answer) = idempotency::settled(&shared, &claim).await? {
                return Ok(answer);
            }
            queue_room(&shared, &function, queued)?;
            let stored = news.iter().cloned().map(NewInvocation::into_stored).collect();
            let decision = match shared.store.enqueue_all_keyed(news, claim, reply.clone()).await {
                Ok(decision) => decision,
                Err(e @ Error::OutcomeUnknown(_)) => {
                    return Err(unknown_admission(&shared, function, ids, admitted, e))
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(answer) = idempotency::decided(&shared, decision, PreferWait::Ignored) {
                return answer;
            }
            stored
        }
    };
    for _ in &stored {
        shared.metrics.accepted(&function.config.name, crate::metric_definitions::Admission::Async);
    }
    faults::crash_point(&shared, faults::CrashPoint::AfterAdmit);
    for (invocation, admitted) in stored.into_iter().zip(admitted) {
        if let Some(admitted) = admitted {
            dispatch::start_admitted(shared.clone(), function.clone(), invocation, admitted);
        }
    }
    if queued > 0 {
        function.flow.queued(queued);
        function.work_queued();
    }
    Ok(reply_response(reply))
}

/// The answer to a bulk admission the store never confirmed: 503 `outcome-unknown`, naming the
/// ids. If it was stored after all, it runs (as one admission's would).
fn unknown_admission(
    shared: &Arc<Shared>,
    function: Arc<Function>,
    ids: Vec<String>,
    admitted: Vec<Option<Admitted>>,
    e: Error,
) -> Problem {
    let mut queued = false;
    for (id, admitted) in ids.iter().zip(admitted) {
        match admitted {
            Some(admitted) => dispatch::start_if_stored(shared.clone(), function.clone(), id.clone(), admitted),
            None => queued = true,
        }
    }
    if queued {
        function.work_queued();
    }
    Problem::from(e).ids(&ids)
}

/// The 202 of a bulk admission.
fn accepted_reply(ids: &[String]) -> StoredReply {
    StoredReply {
        status: 202,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&BulkAccepted { ids: ids.to_vec() }).expect("strings serialize").into(),
    }
}

/// The answer of a bulk admission.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"ids": ["01JC7Z3V9Q4W2B8N5M6K1H0G3F", "01JC7Z3V9Q4W2B8N5M6K1H0G3G"]}))]
pub(crate) struct BulkAccepted {
    /// The invocations, one per payload in the order sent: `GET /v1/invocations/{id}`.
    ids: Vec<String>,
}
