//! Effects: what a function asks Keel to commit together with its completion — KV writes with
//! version preconditions and events to publish — read from an
//! `application/vnd.keel.effects+json` response — and whether the function's grants allow them
//! ([`check_grants`]).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Need, Scope};
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

/// Reads and validates an envelope, nested at most `max_depth` deep (`server.limits.max_json_depth`).
/// The error says what is wrong, for the attempt's error text.
pub fn parse(body: &[u8], max_depth: u32) -> Result<Effects, String> {
    crate::limits::check_json_depth(body, max_depth).map_err(|too_deep| format!("effects envelope: {too_deep}"))?;
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

/// An effect outside the function's grants: the scope it needs and what it tried. Its text names
/// the grant to add to `keel.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("effect not granted: the function needs the grant {} (scope {need}) to {effect}", grant_of(need))]
pub struct Ungranted {
    /// [`Need::KvWrite`] or [`Need::Publish`].
    pub need: Need,
    /// What the function tried: `write balances/u1`, `delete carts/u1`, `publish to topic x`.
    pub effect: String,
}

/// The first effect of `effects` that `scopes` do not allow, if any: every KV write (or delete)
/// to `NS` needs `kv:NS:write`, every event to `TOPIC` needs `publish:TOPIC`. Nothing of an
/// envelope with one such effect may be committed.
pub fn check_grants(effects: &Effects, scopes: &[Scope]) -> Result<(), Ungranted> {
    for write in &effects.kv {
        let need = Need::KvWrite(write.ns.clone());
        if !Scope::any_allows(scopes, &need) {
            let verb = if write.value.is_some() { "write" } else { "delete" };
            return Err(Ungranted { need, effect: format!("{verb} {}/{}", write.ns, write.key) });
        }
    }
    for event in &effects.events {
        let need = Need::Publish(event.topic.clone());
        if !Scope::any_allows(scopes, &need) {
            return Err(Ungranted { need, effect: format!("publish to topic {}", event.topic) });
        }
    }
    Ok(())
}

/// How `grants` in `keel.toml` spells the grant of `need`: `kv = ["balances:write"]`.
fn grant_of(need: &Need) -> String {
    match need {
        Need::KvWrite(ns) => format!(r#"kv = ["{ns}:write"]"#),
        Need::KvRead(ns) => format!(r#"kv = ["{ns}:read"]"#),
        Need::Publish(topic) => format!(r#"publish = ["{topic}"]"#),
        Need::Invoke(function) => format!(r#"invoke = ["{function}"]"#),
        other => other.to_string(),
    }
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
        let e = parse(body, DEPTH).unwrap();
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
            let err = parse(body, DEPTH).unwrap_err();
            assert!(err.contains(expected), "{}: {err}", String::from_utf8_lossy(body));
        }
    }

    const DEPTH: u32 = crate::limits::LimitsConfig::DEFAULT_MAX_JSON_DEPTH;

    #[test]
    fn an_envelope_nested_past_the_limit_fails_naming_it() {
        let deep = format!(r#"{{"result": {}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse(deep.as_bytes(), 64).unwrap_err(),
            "effects envelope: the JSON nests arrays and objects more than 64 deep (server.limits.max_json_depth)"
        );
        let fits = format!(r#"{{"result": {}1{}}}"#, "[".repeat(63), "]".repeat(63));
        assert!(parse(fits.as_bytes(), 64).is_ok());
    }

    fn scopes(list: &[&str]) -> Vec<Scope> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const ENVELOPE: &[u8] = br#"{ "kv": [ {"ns": "users", "key": "u1", "value": 1},
                                          {"ns": "balances", "key": "u1", "value": 90},
                                          {"ns": "carts", "key": "u1", "delete": true} ],
                                 "events": [ {"topic": "user.registered"} ] }"#;

    #[test]
    fn effects_inside_the_grants_pass() {
        let effects = parse(ENVELOPE, DEPTH).unwrap();
        let all = scopes(&["kv:users:write", "kv:balances:write", "kv:carts:write", "publish:user.registered"]);
        assert_eq!(check_grants(&effects, &all), Ok(()));
        let wildcards = scopes(&["kv:*:write", "publish:user.*"]);
        assert_eq!(check_grants(&effects, &wildcards), Ok(()));
        assert_eq!(check_grants(&parse(b"{}", DEPTH).unwrap(), &[]), Ok(()), "no effects need no grant");
    }

    #[test]
    fn the_first_effect_outside_the_grants_is_named_with_its_grant() {
        let effects = parse(ENVELOPE, DEPTH).unwrap();
        let error = check_grants(&effects, &scopes(&["kv:users:write", "kv:balances:read"])).unwrap_err();
        assert_eq!(error.need, Need::KvWrite("balances".into()));
        assert_eq!(
            error.to_string(),
            r#"effect not granted: the function needs the grant kv = ["balances:write"] (scope kv:balances:write) to write balances/u1"#
        );
        let error = check_grants(&effects, &scopes(&["kv:users:write", "kv:balances:write"])).unwrap_err();
        assert!(error.to_string().ends_with("(scope kv:carts:write) to delete carts/u1"), "{error}");
        let error = check_grants(&effects, &scopes(&["kv:*:write", "publish:order.*"])).unwrap_err();
        assert_eq!(error.need, Need::Publish("user.registered".into()));
        assert_eq!(
            error.to_string(),
            r#"effect not granted: the function needs the grant publish = ["user.registered"] (scope publish:user.registered) to publish to topic user.registered"#
        );
        // No grants: nothing is allowed; `admin` (an API key's scope, never a function's) all.
        assert!(check_grants(&effects, &[]).is_err());
        assert_eq!(check_grants(&effects, &[Scope::Admin]), Ok(()));
    }
}
