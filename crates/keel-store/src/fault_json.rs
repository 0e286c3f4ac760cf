//! How both stores keep a chaos fault: its target and kind as JSON text.

use keel_core::chaos::{Fault, Kind, Target};
use keel_core::clock::Millis;
use keel_core::Error;

pub(crate) fn encode(fault: &Fault) -> (String, String) {
    (serde_json::to_string(&fault.target).unwrap_or_default(), serde_json::to_string(&fault.kind).unwrap_or_default())
}

pub(crate) fn decode(
    id: String,
    target: &str,
    kind: &str,
    rate: f64,
    created_at: Millis,
    expires_at: Millis,
) -> Result<Fault, Error> {
    let bad = |what: &str, e: serde_json::Error| Error::Bug(format!("chaos fault {id}: unreadable {what}: {e}"));
    let target: Target = serde_json::from_str(target).map_err(|e| bad("target", e))?;
    let kind: Kind = serde_json::from_str(kind).map_err(|e| bad("kind", e))?;
    Ok(Fault { id, target, kind, rate, created_at, expires_at })
}
