//! The JSON shapes of invocations and attempts.

use keel_core::clock::rfc3339;
use keel_core::invocation::{Attempt, Invocation, StoredResponse};
use serde_json::{json, Map, Value};

/// An invocation; with `detail`, its attempt history and result too.
pub(crate) fn invocation(inv: &Invocation, detail: bool) -> Value {
    let mut v = Map::new();
    v.insert("id".into(), json!(inv.id));
    v.insert("function".into(), json!(inv.function));
    v.insert("status".into(), json!(inv.status.as_str()));
    v.insert("attempt_count".into(), json!(inv.attempt_count));
    v.insert("redrives".into(), json!(inv.redrives));
    v.insert("created_at".into(), json!(rfc3339(inv.created_at)));
    v.insert("updated_at".into(), json!(rfc3339(inv.updated_at)));
    if let Some(due) = inv.due_at {
        v.insert("next_attempt_at".into(), json!(rfc3339(due)));
    }
    if let Some(r) = &inv.response {
        v.insert("result_status".into(), json!(r.status));
        if detail {
            v.insert("result".into(), result_value(r));
        }
    }
    if let Some(e) = &inv.error {
        v.insert("error".into(), json!(e));
    }
    if let Some(d) = &inv.delivery {
        v.insert("subscription".into(), json!(d.subscription));
        v.insert("event_id".into(), json!(d.event_id));
    }
    if let Some(k) = &inv.idempotency_key {
        v.insert("idempotency_key".into(), json!(k));
    }
    if let Some(k) = &inv.concurrency_key {
        v.insert("concurrency_key".into(), json!(k));
    }
    if detail {
        v.insert("attempts".into(), Value::Array(inv.attempts.iter().map(attempt).collect()));
    }
    Value::Object(v)
}

fn attempt(a: &Attempt) -> Value {
    let mut v = json!({
        "number": a.number,
        "started_at": rfc3339(a.started_at),
        "ended_at": rfc3339(a.ended_at),
        "duration_ms": a.ended_at - a.started_at,
        "outcome": a.outcome.as_str(),
    });
    if let Some(s) = a.http_status {
        v["status"] = json!(s);
    }
    if let Some(e) = &a.error {
        v["error"] = json!(e);
    }
    v
}

/// A JSON result inline; anything else as text.
fn result_value(r: &StoredResponse) -> Value {
    let is_json = r.content_type.as_deref().is_some_and(|ct| ct.contains("json"));
    if is_json {
        if let Ok(v) = serde_json::from_slice(&r.body) {
            return v;
        }
    }
    Value::String(String::from_utf8_lossy(&r.body).into_owned())
}

/// `{"items": [...], "next_cursor": ...}`.
pub(crate) fn page(items: &[Invocation], next_cursor: Option<String>) -> Value {
    json!({
        "items": items.iter().map(|i| invocation(i, false)).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })
}

/// The JSON built above, written down for the OpenAPI document.
pub(super) mod schema {
    #![allow(dead_code, reason = "schemas for the OpenAPI document; the JSON is built with `json!`")]

    use utoipa::ToSchema;

    /// An invocation. Lists leave out `attempts` and `result`; reading one alone has them.
    #[derive(ToSchema)]
    pub(crate) struct Invocation {
        id: String,
        function: String,
        status: InvocationStatus,
        /// Attempts made so far, across redrives.
        attempt_count: u32,
        /// Times it was redriven from the DLQ.
        redrives: u32,
        #[schema(format = DateTime)]
        created_at: String,
        #[schema(format = DateTime)]
        updated_at: String,
        /// When the next attempt is due (queued and retrying only).
        #[schema(format = DateTime, nullable = false)]
        next_attempt_at: Option<String>,
        /// The HTTP status of the function's final (or latest) response.
        #[schema(nullable = false)]
        result_status: Option<u16>,
        /// That response's body: inline when it is JSON, else as text. Only when read alone.
        result: Option<serde_json::Value>,
        /// What went wrong.
        #[schema(nullable = false)]
        error: Option<String>,
        /// The subscription of an event delivery.
        #[schema(nullable = false)]
        subscription: Option<String>,
        /// The event an event delivery delivers.
        #[schema(nullable = false)]
        event_id: Option<String>,
        #[schema(nullable = false)]
        idempotency_key: Option<String>,
        /// The value of the function's `concurrency_key` header it came with.
        #[schema(nullable = false)]
        concurrency_key: Option<String>,
        /// The attempt history, oldest first. Only when read alone.
        #[schema(nullable = false)]
        attempts: Option<Vec<Attempt>>,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub(crate) enum InvocationStatus {
        Queued,
        Running,
        Retrying,
        Succeeded,
        /// A sync call that did not succeed.
        Failed,
        /// In the DLQ.
        Dead,
        Cancelled,
        Discarded,
    }

    /// One attempt.
    #[derive(ToSchema)]
    pub(crate) struct Attempt {
        /// 1-based, counted across redrives.
        number: u32,
        #[schema(format = DateTime)]
        started_at: String,
        #[schema(format = DateTime)]
        ended_at: String,
        duration_ms: i64,
        outcome: Outcome,
        /// The function's HTTP status, when it answered.
        #[schema(nullable = false)]
        status: Option<u16>,
        #[schema(nullable = false)]
        error: Option<String>,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub(crate) enum Outcome {
        Success,
        Transient,
        Permanent,
        Timeout,
        Conflict,
    }

    /// A page of invocations.
    #[derive(ToSchema)]
    pub(crate) struct InvocationPage {
        items: Vec<Invocation>,
        /// Pass as `cursor` for the next page; null on the last one.
        next_cursor: Option<String>,
    }
}
