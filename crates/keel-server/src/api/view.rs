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
