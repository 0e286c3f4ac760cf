//! An experiment file (`experiment.toml`), read and checked before anything runs: every mistake
//! is reported as `file:line:column: message` (what `keel chaos run` exits 2 with).
//!
//! ```toml
//! title = "The email provider is down for 30 s"
//! duration = "45s"          # how long the load runs
//! warmup = "5s"             # the steady state is checked over this window before any fault
//! recovery = "0s"           # the "after" window starts this long after the last fault ends
//! settle = "60s"            # the longest to wait, after the load, for the run's work to finish
//!
//! [[setup]]                 # requests made before the load (e.g. the users who will buy)
//! name = "buyers"
//! function = "register-user"
//! count = 20
//! payload = '{"email": "buyer-{n}-{run}@example.com", "name": "Buyer {n}"}'
//!
//! [[load]]
//! name = "signups"
//! function = "register-user"   # or topic = "user.registered"
//! mode = "sync"                # or "async"
//! rate = 10                    # requests a second
//! payload = '{"email": "user-{n}-{run}@example.com", "name": "User {n}"}'
//! idempotency_key = "signup-{run}-{n}"
//! retry_unanswered = true      # send again (same key) while Keel gives no answer at all
//!
//! [[method]]
//! at = "10s"
//! fault = { target = { dependency = "email" }, kind = "error", status = 503, rate = 1.0, duration = "30s" }
//!
//! [[hypothesis]]
//! probe = "success_ratio"
//! load = "signups"
//! min = 1.0
//!
//! [[rollbacks]]
//! action = "resume"
//! function = "send-welcome-email"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

/// A checked experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub title: String,
    pub description: Option<String>,
    pub duration: Duration,
    pub warmup: Duration,
    /// How long after the last fault ends the "after" window starts (a backlog drains first).
    pub recovery: Duration,
    pub settle: Duration,
    pub setup: Vec<Load>,
    pub load: Vec<Load>,
    pub method: Vec<Step>,
    pub hypothesis: Vec<Probe>,
    pub rollbacks: Vec<Rollback>,
}

/// Requests to one function or topic.
#[derive(Debug, Clone)]
pub struct Load {
    pub name: String,
    pub target: LoadTarget,
    pub sync: bool,
    /// Requests a second.
    pub rate: f64,
    /// For setup: how many requests in all.
    pub count: u64,
    pub payload: Template,
    pub idempotency_key: Option<Template>,
    /// Send a request again, with its idempotency key, while it gets no answer at all (Keel
    /// down): what a real client does, and how it learns what happened to its request.
    pub retry_unanswered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadTarget {
    Function(String),
    Topic(String),
}

impl fmt::Display for LoadTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadTarget::Function(name) => write!(f, "function {name}"),
            LoadTarget::Topic(topic) => write!(f, "topic {topic}"),
        }
    }
}

/// Something done at a time after the load starts.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// A fault, as `POST /v1/chaos/faults` takes it; it ends after its `duration`.
    Fault { request: Value, duration: Duration, label: String },
    /// SIGKILL Keel and start it again (only when the runner started Keel: `keel-example demo`).
    RestartKeel,
}

/// One part of the steady-state hypothesis.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub kind: ProbeKind,
    /// Also checked while the faults are on (windowed probes only).
    pub during: bool,
}

#[derive(Debug, Clone)]
pub enum ProbeKind {
    /// 2xx answers / requests of a load, in each window.
    SuccessRatio { load: String, min: f64 },
    /// The 99th percentile of a load's answer times, in each window.
    P99 { load: String, max: Duration },
    /// How many invocations the DLQ may gain in each window (all functions, or one).
    DlqGrowth { function: Option<String>, max: u64 },
    /// Every invocation a load was answered for (2xx with an id) exists when the run is over.
    Lost,
    /// When the run is over, the share of a function's invocations made during the run that
    /// succeeded.
    Settled { function: String, min: f64 },
    /// After the run: the function's dead invocations of the run are redriven, and none stays dead.
    DlqDrained { function: Option<String> },
    /// A number read from KV (a number, or the length of an array/object at `pointer`).
    Kv { ns: String, key: String, pointer: String, expect: Expect },
    /// A number read from a JSON document at a URL (`${VAR}`s from the environment).
    Http { url: String, pointer: String, expect: Expect },
}

impl ProbeKind {
    /// Checked per window (before, during, after) rather than once at the end.
    pub fn windowed(&self) -> bool {
        matches!(self, ProbeKind::SuccessRatio { .. } | ProbeKind::P99 { .. } | ProbeKind::DlqGrowth { .. })
    }
}

/// What a read number must be: equal to, or grown by (since the run began), an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Equals(Expr),
    Increase(Expr),
}

/// A number, or a count from the run: `{ok:LOAD}` (2xx answers) or `{sent:LOAD}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Ok(String),
    Sent(String),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) => write!(f, "{n}"),
            Expr::Ok(load) => write!(f, "{{ok:{load}}}"),
            Expr::Sent(load) => write!(f, "{{sent:{load}}}"),
        }
    }
}

/// Done when the run ends, whatever happened (faults the run made are always cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    Resume(String),
    ClearFaults,
}

/// A payload or key with `{n}` (the request's number, from 0), `{n%K}` and `{run}` (the run's
/// id, so that runs do not collide) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    N,
    NMod(u64),
    Run,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else { break };
            let name = &rest[open + 1..open + close];
            let piece = match name {
                "n" => Some(Piece::N),
                "run" => Some(Piece::Run),
                _ => match name.strip_prefix("n%") {
                    Some(k) => match k.parse::<u64>() {
                        Ok(k) if k > 0 => Some(Piece::NMod(k)),
                        _ => return Err(format!("{{{name}}}: the modulus must be a whole number above 0")),
                    },
                    // JSON's own braces (`{"a": 1}`) are text.
                    None if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() => {
                        return Err(format!("unknown placeholder {{{name}}}: use {{n}}, {{n%K}} or {{run}}"));
                    }
                    None => None,
                },
            };
            match piece {
                Some(piece) => {
                    pieces.push(Piece::Text(rest[..open].to_owned()));
                    pieces.push(piece);
                    rest = &rest[open + close + 1..];
                }
                None => {
                    pieces.push(Piece::Text(rest[..=open].to_owned()));
                    rest = &rest[open + 1..];
                }
            }
        }
        pieces.push(Piece::Text(rest.to_owned()));
        pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
        Ok(Template(pieces))
    }

    pub fn render(&self, n: u64, run: &str) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::N => out.push_str(&n.to_string()),
                Piece::NMod(k) => out.push_str(&(n % k).to_string()),
                Piece::Run => out.push_str(run),
            }
        }
        out
    }
}

/// A mistake in the file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

impl std::error::Error for SpecError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    title: String,
    description: Option<String>,
    duration: Spanned<String>,
    warmup: Option<Spanned<String>>,
    recovery: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    #[serde(default)]
    setup: Vec<Spanned<RawLoad>>,
    #[serde(default)]
    load: Vec<Spanned<RawLoad>>,
    #[serde(default)]
    method: Vec<Spanned<RawStep>>,
    #[serde(default)]
    hypothesis: Vec<Spanned<RawProbe>>,
    #[serde(default)]
    rollbacks: Vec<Spanned<RawRollback>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    name: String,
    function: Option<String>,
    topic: Option<String>,
    mode: Option<String>,
    rate: Option<f64>,
    count: Option<u64>,
    payload: String,
    idempotency_key: Option<String>,
    retry_unanswered: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: String,
    fault: Option<toml::Table>,
    action: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    probe: String,
    name: Option<String>,
    load: Option<String>,
    function: Option<String>,
    min: Option<f64>,
    max: Option<toml::Value>,
    during: Option<bool>,
    ns: Option<String>,
    key: Option<String>,
    url: Option<String>,
    pointer: Option<String>,
    equals: Option<toml::Value>,
    increase: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollback {
    action: String,
    function: Option<String>,
}

/// Reads an experiment file.
pub fn load(path: &std::path::Path) -> Result<Experiment, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: file.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the experiment: {e}"),
    })?;
    parse(&file, &text)
}

/// Checks an experiment's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Experiment, SpecError> {
    let at = |offset: usize, message: String| {
        // An item of an array of tables spans from the end of the one before: point at its header.
        let skipped = text.get(offset..).map_or(0, |rest| rest.len() - rest.trim_start().len());
        let (line, column) = position(text, offset + skipped);
        SpecError { file: file.to_owned(), line, column, message }
    };
    let raw: RawExperiment = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_owned();
        at(e.span().map_or(0, |s| s.start), message)
    })?;
    let duration_of = |value: &Spanned<String>, what: &str| {
        humantime::parse_duration(value.get_ref())
            .map_err(|e| at(value.span().start, format!("{what}: {e} (e.g. \"30s\", \"2m\")")))
    };
    let duration = duration_of(&raw.duration, "duration")?;
    if duration.is_zero() {
        return Err(at(raw.duration.span().start, "duration: the load must run for some time".into()));
    }
    let warmup = raw.warmup.as_ref().map(|w| duration_of(w, "warmup")).transpose()?.unwrap_or(Duration::from_secs(5));
    let recovery = raw.recovery.as_ref().map(|r| duration_of(r, "recovery")).transpose()?.unwrap_or_default();
    let settle = raw.settle.as_ref().map(|s| duration_of(s, "settle")).transpose()?.unwrap_or(Duration::from_secs(60));
    if warmup >= duration {
        let offset = raw.warmup.as_ref().map_or(raw.duration.span().start, |w| w.span().start);
        return Err(at(
            offset,
            format!(
                "warmup ({warmup:?}{}) must be shorter than duration ({duration:?})",
                if raw.warmup.is_none() { ", the default" } else { "" }
            ),
        ));
    }

    let mut names = BTreeMap::new();
    let mut loads = |list: Vec<Spanned<RawLoad>>, setup: bool| -> Result<Vec<Load>, SpecError> {
        list.into_iter()
            .map(|item| {
                let start = item.span().start;
                let raw = item.into_inner();
                if names.insert(raw.name.clone(), ()).is_some() {
                    return Err(at(start, format!("two loads are named {:?}", raw.name)));
                }
                load_of(raw, setup).map_err(|m| at(start, m))
            })
            .collect()
    };
    let setup = loads(raw.setup, true)?;
    let load = loads(raw.load, false)?;
    if load.is_empty() {
        return Err(at(0, "no [[load]]: an experiment needs load to observe".into()));
    }

    let mut method = Vec::new();
    for item in raw.method {
        let start = item.span().start;
        let step = step_of(item.into_inner()).map_err(|m| at(start, m))?;
        if step.at < warmup || step.at >= duration {
            return Err(at(
                start,
                format!(
                    "at = {:?}: a step must come after the warmup ({warmup:?}) and before the load ends ({duration:?})",
                    step.at
                ),
            ));
        }
        method.push(step);
    }
    method.sort_by_key(|s| s.at);

    let load_names: Vec<&str> = setup.iter().chain(&load).map(|l| l.name.as_str()).collect();
    let mut hypothesis = Vec::new();
    for item in raw.hypothesis {
        let start = item.span().start;
        let probe = probe_of(item.into_inner(), &load_names).map_err(|m| at(start, m))?;
        hypothesis.push(probe);
    }
    if hypothesis.is_empty() {
        return Err(at(0, "no [[hypothesis]]: say what must hold (e.g. probe = \"success_ratio\")".into()));
    }

    let mut rollbacks = Vec::new();
    for item in raw.rollbacks {
        let start = item.span().start;
        let raw = item.into_inner();
        let rollback = match (raw.action.as_str(), raw.function) {
            ("resume", Some(function)) => Rollback::Resume(function),
            ("resume", None) => return Err(at(start, "action = \"resume\" needs function = NAME".into())),
            ("clear-faults", None) => Rollback::ClearFaults,
            (other, _) => {
                return Err(at(start, format!("unknown rollback action {other:?}: \"resume\" or \"clear-faults\"")))
            }
        };
        rollbacks.push(rollback);
    }

    Ok(Experiment {
        title: raw.title,
        description: raw.description,
        duration,
        warmup,
        recovery,
        settle,
        setup,
        load,
        method,
        hypothesis,
        rollbacks,
    })
}

fn load_of(raw: RawLoad, setup: bool) -> Result<Load, String> {
    let target = match (raw.function, raw.topic) {
        (Some(function), None) => LoadTarget::Function(function),
        (None, Some(topic)) => LoadTarget::Topic(topic),
        _ => return Err(format!("load {:?}: name exactly one of function = NAME or topic = NAME", raw.name)),
    };
    let sync = match raw.mode.as_deref() {
        None | Some("sync") => matches!(target, LoadTarget::Function(_)),
        Some("async") => false,
        Some(other) => return Err(format!("load {:?}: mode {other:?} is not \"sync\" or \"async\"", raw.name)),
    };
    if raw.mode.as_deref() == Some("sync") && matches!(target, LoadTarget::Topic(_)) {
        return Err(format!("load {:?}: events are published, not invoked: a topic's load has no mode", raw.name));
    }
    let rate = raw.rate.unwrap_or(if setup { 50.0 } else { 0.0 });
    if !(rate > 0.0 && rate <= 10_000.0) {
        return Err(format!("load {:?}: rate must be above 0 and at most 10000 requests a second", raw.name));
    }
    let count = match (setup, raw.count) {
        (true, Some(count)) if count > 0 => count,
        (true, _) => return Err(format!("setup {:?}: count = N (how many requests) is needed", raw.name)),
        (false, Some(_)) => {
            return Err(format!("load {:?}: count is for [[setup]]; a load runs for `duration`", raw.name))
        }
        (false, None) => 0,
    };
    let payload = Template::parse(&raw.payload).map_err(|e| format!("load {:?}: payload: {e}", raw.name))?;
    if let Err(e) = serde_json::from_str::<Value>(&payload.render(0, "run")) {
        return Err(format!("load {:?}: the payload is not JSON once filled in: {e}", raw.name));
    }
    let idempotency_key = raw
        .idempotency_key
        .as_deref()
        .map(Template::parse)
        .transpose()
        .map_err(|e| format!("load {:?}: idempotency_key: {e}", raw.name))?;
    let retry_unanswered = raw.retry_unanswered.unwrap_or(false);
    if retry_unanswered && idempotency_key.is_none() {
        return Err(format!(
            "load {:?}: retry_unanswered needs an idempotency_key (a request sent twice without one may run twice)",
            raw.name
        ));
    }
    Ok(Load { name: raw.name, target, sync, rate, count, payload, idempotency_key, retry_unanswered })
}

fn step_of(raw: RawStep) -> Result<Step, String> {
    let at = humantime::parse_duration(&raw.at).map_err(|e| format!("at = {:?}: {e}", raw.at))?;
    let action = match (raw.fault, raw.action.as_deref()) {
        (Some(fault), None) => {
            let request = serde_json::to_value(&fault).map_err(|e| format!("fault: {e}"))?;
            let parsed: keel_core::chaos::FaultRequest =
                serde_json::from_value(request.clone()).map_err(|e| format!("fault: {e}"))?;
            let anything = |_: &str| true;
            let known = keel_core::chaos::Known { functions: &anything, commands: &anything, dependencies: &anything };
            let fault = keel_core::chaos::check(&parsed, &known, String::new(), 0).map_err(|problems| {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                format!("fault: {}", list.join("; "))
            })?;
            let label = format!("{} {} on {}", fault.kind.name(), rate_label(fault.rate), fault.target.label());
            Action::Fault { request, duration: Duration::from_millis(fault.expires_at as u64), label }
        }
        (None, Some("restart-keel")) => Action::RestartKeel,
        (None, Some(other)) => return Err(format!("unknown action {other:?}: the only action is \"restart-keel\"")),
        (Some(_), Some(_)) | (None, None) => {
            return Err("a step has either fault = {…} or action = \"restart-keel\"".into());
        }
    };
    Ok(Step { at, action })
}

fn rate_label(rate: f64) -> String {
    if rate >= 1.0 {
        "always".into()
    } else {
        format!("{:.0}%", rate * 100.0)
    }
}

fn probe_of(raw: RawProbe, loads: &[&str]) -> Result<Probe, String> {
    let kind_name = raw.probe.clone();
    let need = |value: Option<String>, what: &str| value.ok_or_else(|| format!("probe {kind_name:?} needs {what}"));
    let load_named = |value: Option<String>| -> Result<String, String> {
        let load = need(value, "load = NAME")?;
        if loads.contains(&load.as_str()) {
            Ok(load)
        } else {
            Err(format!("probe {kind_name:?}: no load named {load:?}"))
        }
    };
    let ratio = |min: Option<f64>| -> Result<f64, String> {
        match min {
            Some(min) if (0.0..=1.0).contains(&min) => Ok(min),
            Some(_) => Err(format!("probe {kind_name:?}: min is a share, from 0.0 to 1.0")),
            None => Ok(1.0),
        }
    };
    let expect = |equals: Option<toml::Value>, increase: Option<toml::Value>| -> Result<Expect, String> {
        match (equals, increase) {
            (Some(v), None) => Ok(Expect::Equals(expr_of(&v, loads)?)),
            (None, Some(v)) => Ok(Expect::Increase(expr_of(&v, loads)?)),
            _ => Err(format!("probe {kind_name:?} needs exactly one of equals = … or increase = …")),
        }
    };
    let kind = match raw.probe.as_str() {
        "success_ratio" => ProbeKind::SuccessRatio { load: load_named(raw.load)?, min: ratio(raw.min)? },
        "p99" => {
            let max = match raw.max {
                Some(toml::Value::String(text)) => {
                    humantime::parse_duration(&text).map_err(|e| format!("probe \"p99\": max = {text:?}: {e}"))?
                }
                _ => return Err("probe \"p99\" needs max = \"500ms\" (a duration)".into()),
            };
            ProbeKind::P99 { load: load_named(raw.load)?, max }
        }
        "dlq_growth" => {
            let max = match raw.max {
                Some(toml::Value::Integer(n)) if n >= 0 => n as u64,
                None => 0,
                _ => return Err("probe \"dlq_growth\": max is a whole number of invocations".into()),
            };
            ProbeKind::DlqGrowth { function: raw.function, max }
        }
        "lost" => ProbeKind::Lost,
        "settled" => ProbeKind::Settled { function: need(raw.function, "function = NAME")?, min: ratio(raw.min)? },
        "dlq_drained" => ProbeKind::DlqDrained { function: raw.function },
        "kv" => ProbeKind::Kv {
            ns: need(raw.ns, "ns = NAMESPACE")?,
            key: need(raw.key, "key = KEY")?,
            pointer: raw.pointer.unwrap_or_default(),
            expect: expect(raw.equals, raw.increase)?,
        },
        "http" => ProbeKind::Http {
            url: need(raw.url, "url = \"http://…\"")?,
            pointer: raw.pointer.unwrap_or_default(),
            expect: expect(raw.equals, raw.increase)?,
        },
        other => {
            return Err(format!(
                "unknown probe {other:?}: success_ratio, p99, dlq_growth, lost, settled, dlq_drained, kv or http"
            ))
        }
    };
    if raw.during == Some(true) && !kind.windowed() {
        return Err(format!("probe {kind_name:?} is checked once, after the run: during = true is for success_ratio, p99 and dlq_growth"));
    }
    let name = raw.name.unwrap_or_else(|| default_name(&kind));
    Ok(Probe { name, kind, during: raw.during.unwrap_or(false) })
}

fn expr_of(value: &toml::Value, loads: &[&str]) -> Result<Expr, String> {
    match value {
        toml::Value::Integer(n) => Ok(Expr::Number(*n as f64)),
        toml::Value::Float(n) => Ok(Expr::Number(*n)),
        toml::Value::String(text) => {
            let inner = text.strip_prefix('{').and_then(|t| t.strip_suffix('}'));
            let (what, load) = inner
                .and_then(|t| t.split_once(':'))
                .ok_or_else(|| format!("{text:?}: a number, \"{{ok:LOAD}}\" (2xx answers) or \"{{sent:LOAD}}\""))?;
            if !loads.contains(&load) {
                return Err(format!("{text:?}: no load named {load:?}"));
            }
            match what {
                "ok" => Ok(Expr::Ok(load.to_owned())),
                "sent" => Ok(Expr::Sent(load.to_owned())),
                _ => Err(format!("{text:?}: {{ok:LOAD}} or {{sent:LOAD}}")),
            }
        }
        _ => Err("a number, \"{ok:LOAD}\" or \"{sent:LOAD}\"".into()),
    }
}

fn default_name(kind: &ProbeKind) -> String {
    match kind {
        ProbeKind::SuccessRatio { load, min } => format!("{load}: at least {:.1}% answered 2xx", min * 100.0),
        ProbeKind::P99 { load, max } => format!("{load}: p99 at most {}", humantime::format_duration(*max)),
        ProbeKind::DlqGrowth { function: Some(f), max } => format!("DLQ of {f} grows by at most {max}"),
        ProbeKind::DlqGrowth { function: None, max } => format!("DLQ grows by at most {max}"),
        ProbeKind::Lost => "no acknowledged invocation lost".into(),
        ProbeKind::Settled { function, min } => format!("{function}: {:.1}% of its invocations succeeded", min * 100.0),
        ProbeKind::DlqDrained { function: Some(f) } => format!("DLQ of {f} drained by redrive"),
        ProbeKind::DlqDrained { function: None } => "DLQ drained by redrive".into(),
        ProbeKind::Kv { ns, key, expect, .. } => format!("kv {ns}/{key} {}", expect_text(expect)),
        ProbeKind::Http { url, expect, .. } => format!("{url} {}", expect_text(expect)),
    }
}

fn expect_text(expect: &Expect) -> String {
    match expect {
        Expect::Equals(e) => format!("= {e}"),
        Expect::Increase(e) => format!("grew by {e}"),
    }
}

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
title = "email down"
duration = "20s"
warmup = "3s"

[[load]]
name = "signups"
function = "register-user"
rate = 5
payload = '{"email": "u-{n}-{run}@example.com", "name": "U {n%3}"}'
idempotency_key = "k-{run}-{n}"

[[method]]
at = "5s"
fault = { target = { dependency = "email" }, kind = "error", status = 503, duration = "10s" }

[[hypothesis]]
probe = "success_ratio"
load = "signups"

[[hypothesis]]
probe = "kv"
ns = "counters"
key = "signups"
increase = "{ok:signups}"
"#;

    #[test]
    fn a_good_experiment_reads_with_its_defaults() {
        let e = parse("x.toml", GOOD).unwrap();
        assert_eq!(e.duration, Duration::from_secs(20));
        assert_eq!(e.warmup, Duration::from_secs(3));
        assert_eq!(e.settle, Duration::from_secs(60));
        assert!(e.load[0].sync);
        assert_eq!(e.load[0].payload.render(7, "r1"), r#"{"email": "u-7-r1@example.com", "name": "U 1"}"#);
        assert_eq!(e.load[0].idempotency_key.as_ref().unwrap().render(2, "r1"), "k-r1-2");
        match &e.method[0].action {
            Action::Fault { duration, label, .. } => {
                assert_eq!(*duration, Duration::from_secs(10));
                assert_eq!(label, "error always on dependency:email");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.hypothesis[0].name, "signups: at least 100.0% answered 2xx");
        assert!(
            matches!(&e.hypothesis[1].kind, ProbeKind::Kv { expect: Expect::Increase(Expr::Ok(l)), .. } if l == "signups")
        );
    }

    fn error_of(text: &str) -> SpecError {
        parse("x.toml", text).unwrap_err()
    }

    #[test]
    fn mistakes_are_named_at_their_line() {
        let unknown_probe = GOOD.replace("probe = \"success_ratio\"", "probe = \"success\"");
        let e = error_of(&unknown_probe);
        assert_eq!(e.line, 17, "{e}");
        assert!(e.message.starts_with("unknown probe \"success\""), "{e}");

        let bad_fault = GOOD.replace("status = 503", "status = 700");
        let e = error_of(&bad_fault);
        assert_eq!((e.line, e.message.contains("/status")), (13, true), "{e}");

        let late = GOOD.replace("at = \"5s\"", "at = \"25s\"");
        assert_eq!(error_of(&late).line, 13);

        let unknown_key = GOOD.replace("rate = 5", "rate = 5\nburst = 3");
        let e = error_of(&unknown_key);
        assert!(e.message.contains("unknown field `burst`"), "{e}");
        assert_eq!(e.line, 10, "{e}");

        let no_load = GOOD.replace("increase = \"{ok:signups}\"", "increase = \"{ok:buys}\"");
        assert!(error_of(&no_load).message.contains("no load named \"buys\""));

        let placeholder = GOOD.replace("{n%3}", "{user}");
        assert!(error_of(&placeholder).message.contains("unknown placeholder {user}"));

        let syntax = "title = \"x\"\nduration = 20s\n";
        let e = error_of(syntax);
        assert_eq!((e.file.as_str(), e.line), ("x.toml", 2), "{e}");
        assert_eq!(e.to_string().split(':').take(2).collect::<Vec<_>>(), ["x.toml", "2"]);
    }

    #[test]
    fn templates_keep_json_braces_and_fill_placeholders() {
        let t = Template::parse(r#"{"a": {"b": "{n}"}, "c": "{run}-{n%10}"}"#).unwrap();
        assert_eq!(t.render(42, "R"), r#"{"a": {"b": "42"}, "c": "R-2"}"#);
        assert!(Template::parse("{n%0}").is_err());
    }
}
