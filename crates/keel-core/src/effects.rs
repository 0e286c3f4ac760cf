//! Effects: what a function asks Keel to commit together with its completion — KV writes with
//! version preconditions and events to publish — read from an
//! `application/vnd.keel.effects+json` response.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::kv::{KvWrite, Precondition};

/// The content type of an effects envelope.
pub const CONTENT_TYPE: &str = "application/vnd.keel.effects+json";

/// An event a function emits; Keel fills in `id` and `source` when absent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmittedEvent {
    pub topic: String,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub subject: Option<String>,
    pub source: Option<String>,
    pub id: Option<String>,
    #[serde(default)]
    pub data: Value,
}

/// A parsed effects envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// The status of the result (a 2xx).
    pub status: u16,
    /// The result as stored and answered.
    pub result: Bytes,
    pub kv: Vec<KvWrite>,
    pub events: Vec<EmittedEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    kv: Vec<RawKv>,
    #[serde(default)]
    events: Vec<EmittedEvent>,
}

fn ok() -> u16 {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKv {
    ns: String,
    key: String,
    value: Option<Value>,
    #[serde(default)]
    delete: bool,
    if_version: Option<i64>,
    #[serde(default)]
    if_absent: bool,
}

/// Reads and validates an envelope. The error says what is wrong, for the attempt's error text.
pub fn parse(body: &[u8]) -> Result<Effects, String> {
    let raw: RawEnvelope = serde_json::from_slice(body).map_err(|e| format!("malformed effects envelope: {e}"))?;
    if !(200..300).contains(&raw.status) {
        return Err(format!("effects envelope: status {} must be a 2xx", raw.status));
    }
    let mut kv = Vec::with_capacity(raw.kv.len());
    for (i, w) in raw.kv.into_iter().enumerate() {
        let at = |msg: String| format!("effects envelope: kv[{i}]: {msg}");
        crate::kv::check_name("ns", &w.ns).map_err(at)?;
        crate::kv::check_name("key", &w.key).map_err(at)?;
        let precondition = match (w.if_version, w.if_absent) {
            (Some(_), true) => return Err(at("if_version and if_absent are exclusive".into())),
            (Some(v), false) => Precondition::IfVersion(v),
            (None, true) => Precondition::IfAbsent,
            (None, false) => Precondition::None,
        };
        let value = match (w.delete, w.value) {
            (true, Some(_)) => return Err(at("a delete has no value".into())),
            (true, None) => None,
            (false, Some(v)) => Some(Bytes::from(v.to_string())),
            (false, None) => return Err(at("a write needs a value (or \"delete\": true)".into())),
        };
        kv.push(KvWrite { ns: w.ns, key: w.key, value, precondition });
    }
    for (i, e) in raw.events.iter().enumerate() {
        if e.topic.is_empty() {
            return Err(format!("effects envelope: events[{i}]: topic must not be empty"));
        }
        // Attributes become the deliveries' `ce-*` headers: the same rules as a publish.
        let attributes = [("type", &e.ty), ("subject", &e.subject), ("source", &e.source), ("id", &e.id)];
        for (name, value) in attributes {
            match value.as_deref() {
                Some("") => return Err(format!("effects envelope: events[{i}]: attribute `{name}` must not be empty")),
                Some(v) => crate::events::check_attribute_value(name, v)
                    .map_err(|why| format!("effects envelope: events[{i}]: {why}"))?,
                None => {}
            }
        }
    }
    Ok(Effects { status: raw.status, result: Bytes::from(raw.result.to_string()), kv, events: raw.events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_example_parses() {
        let body = br#"{ "status": 200, "result": {"user_id": "u1"},
          "kv": [ {"ns": "users", "key": "u1", "value": {"name": "Ada"}, "if_absent": true},
                  {"ns": "balances", "key": "u1", "value": 90, "if_version": 7},
                  {"ns": "carts", "key": "u1", "delete": true} ],
          "events": [ {"topic": "user.registered", "type": "user.registered", "subject": "u1", "data": {"user_id": "u1"}} ] }"#;
        let e = parse(body).unwrap();
        assert_eq!(e.status, 200);
        assert_eq!(&e.result[..], br#"{"user_id":"u1"}"#);
        assert_eq!(e.kv[0].precondition, Precondition::IfAbsent);
        assert_eq!(e.kv[1].precondition, Precondition::IfVersion(7));
        assert_eq!(e.kv[1].value.as_deref(), Some(&b"90"[..]));
        assert_eq!(e.kv[2].value, None);
        assert_eq!(e.events[0].subject.as_deref(), Some("u1"));
    }

    #[test]
    fn malformed_envelopes_say_what_is_wrong() {
        let cases: [(&[u8], &str); 8] = [
            (b"nope", "malformed effects envelope"),
            (br#"{"status": 500}"#, "must be a 2xx"),
            (br#"{"kv": [{"ns": "a", "key": "b"}]}"#, "kv[0]: a write needs a value"),
            (br#"{"kv": [{"ns": "a", "key": "b", "value": 1, "delete": true}]}"#, "a delete has no value"),
            (br#"{"kv": [{"ns": "a", "key": "b", "value": 1, "if_version": 1, "if_absent": true}]}"#, "exclusive"),
            (br#"{"events": [{"topic": "t", "colour": "red"}]}"#, "unknown field `colour`"),
            (
                br#"{"events": [{"topic": "t", "subject": "a\nkeel-attempt: 9"}]}"#,
                "events[0]: attribute `subject` must not contain control characters",
            ),
            (br#"{"events": [{"topic": "t", "id": ""}]}"#, "events[0]: attribute `id` must not be empty"),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            assert!(err.contains(expected), "{}: {err}", String::from_utf8_lossy(body));
        }
    }
}
