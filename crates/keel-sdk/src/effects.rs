//! Effects: what a function asks Keel to do when its invocation completes — KV writes with
//! version preconditions, and events to publish — committed atomically with the completion, or
//! not at all. A failed precondition applies nothing and Keel retries the invocation.

use serde::Serialize;
use serde_json::Value;

/// The content type of an effects envelope.
pub const EFFECTS_CONTENT_TYPE: &str = "application/vnd.keel.effects+json";

/// Builds the `application/vnd.keel.effects+json` envelope; return it as a [`Reply`](crate::Reply)
/// with `.into()`.
///
/// ```
/// use keel_sdk::{Effects, Event};
/// use serde_json::json;
///
/// let effects = Effects::new()
///     .result(json!({"user_id": "u1"}))
///     .put_if_absent("users", "u1", json!({"name": "Ada"}))
///     .put_if_version("balances", "u1", 90, 7)
///     .delete("carts", "u1")
///     .emit(Event::new("user.registered").subject("u1").data(json!({"user_id": "u1"})));
/// assert_eq!(
///     effects.to_json(),
///     json!({ "status": 200,
///             "result": {"user_id": "u1"},
///             "kv": [ {"ns": "users", "key": "u1", "value": {"name": "Ada"}, "if_absent": true},
///                     {"ns": "balances", "key": "u1", "value": 90, "if_version": 7},
///                     {"ns": "carts", "key": "u1", "delete": true} ],
///             "events": [ {"topic": "user.registered", "type": "user.registered", "subject": "u1",
///                          "data": {"user_id": "u1"}} ] })
/// );
/// ```
///
/// Values are anything [`Serialize`]; like `serde_json::json!`, a builder method panics on a
/// value JSON cannot represent (a map with non-string keys).
#[derive(Debug, Clone, Serialize)]
#[must_use = "effects do nothing until returned as the reply"]
pub struct Effects {
    status: u16,
    result: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kv: Vec<KvWrite>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
}

#[derive(Debug, Clone, Serialize)]
struct KvWrite {
    ns: String,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    if_absent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    if_version: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    delete: bool,
}

/// An event to publish on completion. Its CloudEvent `type` defaults to the topic.
#[derive(Debug, Clone, Serialize)]
#[must_use]
pub struct Event {
    topic: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

impl Event {
    pub fn new(topic: impl Into<String>) -> Self {
        let topic = topic.into();
        Self { kind: topic.clone(), topic, subject: None, data: None }
    }

    /// The CloudEvent `type`, when it differs from the topic.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn data(mut self, data: impl Serialize) -> Self {
        self.data = Some(to_json(data));
        self
    }
}

impl Default for Effects {
    fn default() -> Self {
        Self::new()
    }
}

impl Effects {
    /// Status 200, result `null`, no writes, no events.
    pub fn new() -> Self {
        Self { status: 200, result: Value::Null, kv: Vec::new(), events: Vec::new() }
    }

    /// The status the caller of a sync invocation sees (a 2xx).
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The invocation's result, as JSON.
    pub fn result(mut self, result: impl Serialize) -> Self {
        self.result = to_json(result);
        self
    }

    /// Writes `value` whatever the key holds.
    pub fn put(self, ns: &str, key: &str, value: impl Serialize) -> Self {
        self.write(ns, key, Some(to_json(value)), false, None, false)
    }

    /// Writes `value` only if the key does not exist yet.
    pub fn put_if_absent(self, ns: &str, key: &str, value: impl Serialize) -> Self {
        self.write(ns, key, Some(to_json(value)), true, None, false)
    }

    /// Writes `value` only if the key is still at `version` (as read with
    /// [`Ctx::kv_get`](crate::Ctx::kv_get)): optimistic concurrency.
    pub fn put_if_version(self, ns: &str, key: &str, value: impl Serialize, version: u64) -> Self {
        self.write(ns, key, Some(to_json(value)), false, Some(version), false)
    }

    pub fn delete(self, ns: &str, key: &str) -> Self {
        self.write(ns, key, None, false, None, true)
    }

    /// Deletes the key only if it is still at `version`.
    pub fn delete_if_version(self, ns: &str, key: &str, version: u64) -> Self {
        self.write(ns, key, None, false, Some(version), true)
    }

    /// Publishes `event` when the invocation completes.
    pub fn emit(mut self, event: Event) -> Self {
        self.events.push(event);
        self
    }

    /// The envelope as JSON.
    pub fn to_json(&self) -> Value {
        to_json(self)
    }

    fn write(
        mut self,
        ns: &str,
        key: &str,
        value: Option<Value>,
        if_absent: bool,
        if_version: Option<u64>,
        delete: bool,
    ) -> Self {
        self.kv.push(KvWrite { ns: ns.into(), key: key.into(), value, if_absent, if_version, delete });
        self
    }
}

fn to_json(value: impl Serialize) -> Value {
    serde_json::to_value(value).expect("a value JSON can represent (maps need string keys)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_envelope_has_status_and_result_only() {
        assert_eq!(Effects::new().to_json(), json!({"status": 200, "result": null}));
    }

    #[test]
    fn conditional_deletes_and_event_types_are_written() {
        let effects = Effects::new()
            .status(201)
            .delete_if_version("carts", "u1", 3)
            .put("counters", "signups", 5)
            .emit(Event::new("orders").kind("order.placed"));
        assert_eq!(
            effects.to_json(),
            json!({"status": 201, "result": null,
                   "kv": [{"ns": "carts", "key": "u1", "if_version": 3, "delete": true},
                          {"ns": "counters", "key": "signups", "value": 5}],
                   "events": [{"topic": "orders", "type": "order.placed"}]})
        );
    }
}
