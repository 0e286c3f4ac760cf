//! Chaos faults as pure decisions: what a fault is, how a request for one is read and checked,
//! and whether a fault hits a given call (a draw against its `rate`, while it is active).
//!
//! Faults are stored (every node of a cluster applies them) and expire by themselves. The
//! runtime, egress and store edges ask [`pick`] before each call; nothing in the domain knows
//! about chaos.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;

/// What a fault hits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Attempts of this function.
    Function(String),
    /// Calls through egress to this dependency.
    Dependency(String),
    /// The store's writes.
    Store,
}

impl Target {
    /// `function:NAME`, `dependency:NAME` or `store`: the `target` label of the metric.
    pub fn label(&self) -> String {
        match self {
            Target::Function(name) => format!("function:{name}"),
            Target::Dependency(name) => format!("dependency:{name}"),
            Target::Store => "store".into(),
        }
    }
}

/// What a fault does to a call it hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// The call is made after a delay drawn from `min_ms..=max_ms`.
    Latency { min_ms: u64, max_ms: u64 },
    /// The call is not made: it is answered with this status.
    Error { status: u16 },
    /// The call is not made: the connection is reset.
    Abort,
    /// The call hangs until its timeout.
    Timeout,
    /// A running instance of the (command) function is killed; the call goes on.
    Crash,
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Latency { .. } => "latency",
            Kind::Error { .. } => "error",
            Kind::Abort => "abort",
            Kind::Timeout => "timeout",
            Kind::Crash => "crash",
        }
    }
}

/// A fault, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub id: String,
    pub target: Target,
    pub kind: Kind,
    /// The share of calls it hits, in (0, 1].
    pub rate: f64,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl Fault {
    pub fn is_active(&self, now: Millis) -> bool {
        self.created_at <= now && now < self.expires_at
    }
}

/// How a fault hits one call: the fault's id (for the log and the span event) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub fault: String,
    pub kind: Kind,
    /// For latency: the delay drawn.
    pub delay_ms: u64,
}

/// The first active fault on `target` whose draw hits (`draw` gives values in [0, 1)); for
/// latency, the delay from a second draw. At most one fault hits a call.
pub fn pick(faults: &[Fault], target: &Target, now: Millis, draw: &mut dyn FnMut() -> f64) -> Option<Hit> {
    faults.iter().filter(|f| &f.target == target && f.is_active(now)).find_map(|f| {
        (draw() < f.rate).then(|| {
            let delay_ms = match f.kind {
                Kind::Latency { min_ms, max_ms } => min_ms + ((max_ms - min_ms + 1) as f64 * draw()) as u64,
                _ => 0,
            };
            Hit { fault: f.id.clone(), kind: f.kind.clone(), delay_ms: delay_ms.min(max_latency(&f.kind)) }
        })
    })
}

fn max_latency(kind: &Kind) -> u64 {
    match kind {
        Kind::Latency { max_ms, .. } => *max_ms,
        _ => 0,
    }
}

/// The longest a fault may last, and the longest latency it may add.
pub const MAX_DURATION_MS: Millis = 24 * 3600 * 1000;
pub const MAX_LATENCY_MS: u64 = 10 * 60 * 1000;

/// What `POST /v1/chaos/faults` asks for, before it is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub target: Option<Value>,
    pub kind: Option<String>,
    pub latency: Option<Value>,
    pub status: Option<Value>,
    pub rate: Option<Value>,
    pub duration: Option<String>,
}

/// One thing wrong with a request, with the JSON Pointer of the member it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: &'static str,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What a request may name, checked against the config.
#[allow(missing_debug_implementations, reason = "closures only")]
pub struct Known<'a> {
    pub functions: &'a dyn Fn(&str) -> bool,
    /// Functions that run as `command` (the only ones a crash can hit).
    pub commands: &'a dyn Fn(&str) -> bool,
    pub dependencies: &'a dyn Fn(&str) -> bool,
}

/// Checks a request; on success the fault it makes (id and times from the caller). Every
/// problem is reported, not only the first.
pub fn check(request: &FaultRequest, known: &Known<'_>, id: String, now: Millis) -> Result<Fault, Vec<Invalid>> {
    let mut problems = Vec::new();
    let mut bad = |path: &'static str, message: String| problems.push(Invalid { path, message });
    let target = match request.target.as_ref() {
        None => {
            bad("/target", r#"missing: {"function": NAME}, {"dependency": NAME} or {"store": true}"#.into());
            None
        }
        Some(value) => match target_of(value) {
            Ok(Target::Function(name)) if !(known.functions)(&name) => {
                bad("/target/function", format!("no function named {name:?} is configured"));
                None
            }
            Ok(Target::Dependency(name)) if !(known.dependencies)(&name) => {
                bad("/target/dependency", format!("no dependency named {name:?} is configured"));
                None
            }
            Ok(target) => Some(target),
            Err(message) => {
                bad("/target", message);
                None
            }
        },
    };
    let kind = match request.kind.as_deref() {
        Some("latency") => match request.latency.as_ref().map(latency_of) {
            Some(Ok((min_ms, max_ms))) => Some(Kind::Latency { min_ms, max_ms }),
            Some(Err(message)) => {
                bad("/latency", message);
                None
            }
            None => {
                bad("/latency", r#"missing: a latency fault needs "latency": "300ms" or {"min", "max"}"#.into());
                None
            }
        },
        Some("error") => match request.status.as_ref().map(|v| v.as_u64()) {
            Some(Some(status @ 400..=599)) => Some(Kind::Error { status: status as u16 }),
            Some(_) => {
                bad("/status", "an HTTP error status, 400 to 599".into());
                None
            }
            // 503 when absent: a dependency (or the store) unavailable.
            None => Some(Kind::Error { status: 503 }),
        },
        Some("abort") => Some(Kind::Abort),
        Some("timeout") => Some(Kind::Timeout),
        Some("crash") => Some(Kind::Crash),
        Some(other) => {
            bad("/kind", format!("{other:?} is not one of: latency, error, abort, timeout, crash"));
            None
        }
        None => {
            bad("/kind", "missing: latency, error, abort, timeout or crash".into());
            None
        }
    };
    if request.latency.is_some() && !matches!(request.kind.as_deref(), Some("latency")) {
        bad("/latency", "only a latency fault takes a latency".into());
    }
    if request.status.is_some() && !matches!(request.kind.as_deref(), Some("error")) {
        bad("/status", "only an error fault takes a status".into());
    }
    // What each target can suffer: the store has no connection to reset nor instance to kill;
    // only a command function has instances.
    match (&target, &kind) {
        (Some(Target::Store), Some(Kind::Abort | Kind::Timeout | Kind::Crash)) => {
            bad("/kind", "the store takes latency and error faults".into());
        }
        (Some(Target::Dependency(_)), Some(Kind::Crash)) => {
            bad("/kind", "a crash kills a command function's instance: target a function".into());
        }
        (Some(Target::Function(name)), Some(Kind::Crash)) if !(known.commands)(name) => {
            bad("/kind", format!("function {name:?} runs at a url: only a command function has instances to kill"));
        }
        _ => {}
    }
    let rate = match request.rate.as_ref() {
        None => Some(1.0),
        Some(value) => match value.as_f64() {
            Some(rate) if rate > 0.0 && rate <= 1.0 => Some(rate),
            _ => {
                bad("/rate", "a share of calls, more than 0 and at most 1 (1 when absent)".into());
                None
            }
        },
    };
    let duration = match request.duration.as_deref() {
        None => {
            bad("/duration", r#"missing: how long the fault lasts, like "60s" (at most 24h)"#.into());
            None
        }
        Some(text) => match crate::duration::parse_duration(text).map(|d| d.as_millis()) {
            Ok(ms) if ms > 0 && ms <= MAX_DURATION_MS as u128 => Some(ms as Millis),
            _ => {
                bad("/duration", format!(r#"a duration like "60s", more than 0 and at most 24h (got {text:?})"#));
                None
            }
        },
    };
    match (target, kind, rate, duration, problems.is_empty()) {
        (Some(target), Some(kind), Some(rate), Some(duration), true) => {
            Ok(Fault { id, target, kind, rate, created_at: now, expires_at: now + duration })
        }
        _ => Err(problems),
    }
}

fn target_of(value: &Value) -> Result<Target, String> {
    let expected = r#"one of {"function": NAME}, {"dependency": NAME} or {"store": true}"#;
    let object = value.as_object().filter(|o| o.len() == 1).ok_or_else(|| expected.to_string())?;
    let (key, value) = object.iter().next().expect("one member");
    match (key.as_str(), value) {
        ("function", Value::String(name)) => Ok(Target::Function(name.clone())),
        ("dependency", Value::String(name)) => Ok(Target::Dependency(name.clone())),
        ("store", Value::Bool(true)) => Ok(Target::Store),
        _ => Err(expected.to_string()),
    }
}

fn latency_of(value: &Value) -> Result<(u64, u64), String> {
    let ms = |v: &Value| -> Option<u64> {
        let text = v.as_str()?;
        let ms = crate::duration::parse_duration(text).ok()?.as_millis();
        u64::try_from(ms).ok().filter(|ms| *ms <= MAX_LATENCY_MS)
    };
    let hint = r#"a duration like "300ms", or {"min": "100ms", "max": "2s"} with min ≤ max, each at most 10m"#;
    match value {
        Value::String(_) => ms(value).map(|d| (d, d)).ok_or_else(|| hint.to_string()),
        Value::Object(o) if o.len() == 2 => match (o.get("min").and_then(ms), o.get("max").and_then(ms)) {
            (Some(min), Some(max)) if min <= max => Ok((min, max)),
            _ => Err(hint.to_string()),
        },
        _ => Err(hint.to_string()),
    }
}

#[cfg(test)]
mod tests;
