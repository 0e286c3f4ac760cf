//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header): the key record's state machine
//! as a pure decision, which every store applies inside the transaction that admits the work.
//!
//! A record is scoped by (caller, route, key) and holds a fingerprint of the request. Its life:
//! absent → in flight (held by one request, with a lease) → completed (the response, replayed to
//! every retry with the same fingerprint) → expired after its TTL (absent again).

use bytes::Bytes;

use crate::clock::Millis;

/// Identifies a key record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    /// Who asked: the API key once authentication exists; `anonymous` until then.
    pub scope: String,
    /// Method and path, e.g. `POST /v1/functions/charge/invoke`.
    pub route: String,
    pub key: String,
}

/// A request's claim on a key.
#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub key: KeyRef,
    /// Hash of method, route and body: the same key with another request is refused.
    pub fingerprint: String,
    /// Names the request holding the key (node and request), so only it can complete it.
    pub holder: String,
    pub now: Millis,
    /// When an in-flight holder is presumed dead and another request may take over.
    pub lease_until: Millis,
    /// When the record is forgotten (its TTL).
    pub expires_at: Millis,
}

/// A response as stored for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    pub status: u16,
    /// The headers that are part of the answer (content-type, location, keel-invocation-id, …).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Where a key record stands.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyPhase {
    InFlight { holder: String, lease_until: Millis },
    Completed(StoredReply),
}

/// A stored key record.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub fingerprint: String,
    pub phase: KeyPhase,
    /// The invocation the key admitted, if the route admits one.
    pub invocation_id: Option<String>,
    pub expires_at: Millis,
}

/// What a claim finds, and so what the request does.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDecision {
    /// The key is the request's: do the work.
    Claim,
    /// The previous holder's lease expired (it died): the request takes over its invocation.
    TakeOver { invocation_id: String },
    /// Done before: answer the stored response.
    Replay(StoredReply),
    /// Another request holds the key until `lease_until`: 409, or wait.
    InFlight { lease_until: Millis },
    /// The key was used for a different request: 422.
    Mismatch,
}

/// The decision for a claim with `fingerprint` at `now`, given the stored record.
///
/// A record is forgotten once its TTL has passed — but not while it is in flight under a lease
/// that runs on: its holder may still be running, and a new claim would run the work twice.
pub fn decide(existing: Option<&KeyRecord>, fingerprint: &str, now: Millis) -> KeyDecision {
    let Some(record) = existing.filter(|r| r.is_live(now)) else {
        return KeyDecision::Claim;
    };
    if record.fingerprint != fingerprint {
        return KeyDecision::Mismatch;
    }
    match &record.phase {
        KeyPhase::Completed(reply) => KeyDecision::Replay(reply.clone()),
        KeyPhase::InFlight { lease_until, .. } if *lease_until > now => {
            KeyDecision::InFlight { lease_until: *lease_until }
        }
        KeyPhase::InFlight { .. } => match &record.invocation_id {
            Some(id) => KeyDecision::TakeOver { invocation_id: id.clone() },
            None => KeyDecision::Claim,
        },
    }
}

impl KeyRecord {
    /// Whether the record still counts at `now`: within its TTL, or held under a running lease.
    pub fn is_live(&self, now: Millis) -> bool {
        self.expires_at > now || matches!(self.phase, KeyPhase::InFlight { lease_until, .. } if lease_until > now)
    }
}

/// The record a claim leaves behind when its decision is `Claim` or `TakeOver`.
pub fn claimed_record(claim: &KeyClaim, invocation_id: Option<String>) -> KeyRecord {
    KeyRecord {
        fingerprint: claim.fingerprint.clone(),
        phase: KeyPhase::InFlight { holder: claim.holder.clone(), lease_until: claim.lease_until },
        invocation_id,
        expires_at: claim.expires_at,
    }
}

/// Checks a key as sent in the `Idempotency-Key` header: a structured-field string (`"abc"`) or
/// a bare value, 1–255 printable ASCII characters. Returns the key itself.
pub fn parse_key_header(value: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(value).map_err(|_| "the key must be printable ASCII".to_string())?.trim();
    let key = if let Some(inner) = text.strip_prefix('"') {
        let mut key = String::with_capacity(inner.len());
        let mut chars = inner.char_indices();
        let rest = loop {
            match chars.next() {
                None => return Err("a quoted key must end with a double quote".into()),
                Some((_, '\\')) => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => key.push(e),
                    _ => return Err("in a quoted key only \\\" and \\\\ may be escaped".into()),
                },
                Some((at, '"')) => break &inner[at + 1..],
                Some((_, c)) => key.push(c),
            }
        };
        if rest.starts_with(';') {
            return Err(format!("the key takes no parameters (got {rest:?} after the quoted key)"));
        }
        if !rest.is_empty() {
            return Err(format!(
                "a quoted key must escape inner double quotes as \\\" (got {rest:?} after a closing quote)"
            ));
        }
        key
    } else {
        if text.contains([' ', '"', '\\']) {
            return Err("an unquoted key must not contain spaces, quotes or backslashes".into());
        }
        text.to_string()
    };
    if key.is_empty() || key.len() > 255 {
        return Err(format!("the key must be 1 to 255 characters long (got {})", key.len()));
    }
    if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("the key must be printable ASCII".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests;
