//! The hypothesis's probes: figures over a window of the run (success ratio, p99, DLQ growth),
//! computed from the recorded answers and DLQ samples alone, and checks made once the run's work
//! has finished (nothing lost, a function's invocations settled, the DLQ drained, a number in KV
//! or in a JSON document) by asking Keel.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::report::ProbeResult;
use super::spec::{Expect, Expr, Load, LoadTarget, Probe, ProbeKind};
use super::{DlqSample, Experiment, Sample};
use crate::client::{encode, with_query, KeelClient};

/// A span of the load's time, in seconds after it started.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub name: &'static str,
    pub start: f64,
    pub end: f64,
}

impl Window {
    fn holds(&self, at: f64) -> bool {
        self.start <= at && at < self.end
    }
}

/// What a figure came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Held(String),
    Broken(String),
}

/// The windowed probes over `window` (`during`: only those that asked to be checked then).
/// `offset` is when the load started on the samples' clock.
pub(super) fn check_window(
    probes: &[Probe],
    loads: &[Load],
    samples: &[Sample],
    dlq: &[DlqSample],
    offset: f64,
    window: &Window,
    during: bool,
) -> Vec<ProbeResult> {
    let mut results = Vec::new();
    for probe in probes.iter().filter(|p| p.kind.windowed() && (!during || p.during)) {
        let in_window = |name: &str| {
            let index = loads.iter().position(|l| l.name == name);
            samples.iter().filter(move |s| Some(s.load) == index && window.holds(s.at - offset))
        };
        let (outcome, expected) = match &probe.kind {
            ProbeKind::SuccessRatio { load, min } => {
                let (ok, all) = in_window(load).fold((0, 0), |(ok, all), s| (ok + usize::from(s.ok()), all + 1));
                let expected = format!("≥ {:.1}%", min * 100.0);
                if all == 0 {
                    (Outcome::Broken("no requests in the window".into()), expected)
                } else {
                    let ratio = ok as f64 / all as f64;
                    let text = format!("{:.1}% ({ok} of {all})", ratio * 100.0);
                    (if ratio + 1e-9 >= *min { Outcome::Held(text) } else { Outcome::Broken(text) }, expected)
                }
            }
            ProbeKind::P99 { load, max } => {
                let latencies: Vec<f64> =
                    in_window(load).filter(|s| s.status.is_some()).map(|s| s.latency_ms).collect();
                let expected = format!("≤ {} ms", max.as_millis());
                match percentile(latencies, 0.99) {
                    None => (Outcome::Broken("no answers in the window".into()), expected),
                    Some(p99) => {
                        let text = format!("{p99:.1} ms");
                        let held = p99 <= max.as_secs_f64() * 1000.0;
                        (if held { Outcome::Held(text) } else { Outcome::Broken(text) }, expected)
                    }
                }
            }
            ProbeKind::DlqGrowth { function, max } => {
                let size = |entry: &DlqSample| match function {
                    None => entry.total,
                    Some(f) => entry.by_function.iter().filter(|(name, _)| name == f).map(|(_, n)| n).sum(),
                };
                let inside: Vec<u64> = dlq.iter().filter(|e| window.holds(e.at)).map(size).collect();
                // From the last sample before the window (the size it started at), or its first.
                let first = dlq.iter().rev().find(|e| e.at < window.start).map(size).or(inside.first().copied());
                let expected = format!("≤ {max}");
                match (first, inside.iter().max()) {
                    (Some(first), Some(&peak)) => {
                        let growth = peak.saturating_sub(first);
                        let text = format!("+{growth} (from {first} to at most {peak})");
                        (if growth <= *max { Outcome::Held(text) } else { Outcome::Broken(text) }, expected)
                    }
                    _ => (Outcome::Broken("no DLQ samples in the window (is /metrics readable?)".into()), expected),
                }
            }
            _ => continue,
        };
        results.push(ProbeResult::new(&probe.name, window.name, outcome, expected));
    }
    results
}

/// The `q` quantile (nearest rank) of `values`.
pub(super) fn percentile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// `keel_dlq_invocations` by function (summed over subscriptions) from `/metrics` text.
pub(super) fn dlq_from_metrics(text: &str) -> Vec<(String, u64)> {
    let mut by_function: Vec<(String, u64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("keel_dlq_invocations{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let function = labels
            .split_once("function=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or(String::new(), |(name, _)| name.to_owned());
        match by_function.iter_mut().find(|(name, _)| *name == function) {
            Some(entry) => entry.1 += value as u64,
            None => by_function.push((function, value as u64)),
        }
    }
    by_function
}

/// The functions whose invocations the run waits for: those the load invokes and those the
/// probes name.
pub(super) fn watched_functions(experiment: &Experiment) -> Vec<String> {
    let mut functions: Vec<String> = experiment
        .load
        .iter()
        .filter_map(|l| match &l.target {
            LoadTarget::Function(name) => Some(name.clone()),
            LoadTarget::Topic(_) => None,
        })
        .collect();
    for probe in &experiment.hypothesis {
        match &probe.kind {
            ProbeKind::Settled { function, .. } | ProbeKind::DlqDrained { function: Some(function) } => {
                functions.push(function.clone());
            }
            _ => {}
        }
    }
    functions.sort();
    functions.dedup();
    functions
}

/// Every invocation of `function` made since `floor` (an id: ids sort by creation time).
async fn invocations_since(client: &KeelClient, function: &str, floor: &str) -> anyhow::Result<Vec<Value>> {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = with_query(
            "/v1/invocations",
            &[("function", Some(function.to_owned())), ("limit", Some("500".into())), ("cursor", cursor.clone())],
        );
        let page = client.get_json(&path).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let mut older = false;
        for item in items {
            if item["id"].as_str().is_some_and(|id| id >= floor) {
                found.push(item);
            } else {
                older = true;
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if older || cursor.is_none() {
            return Ok(found);
        }
    }
}

fn unfinished(invocation: &Value) -> bool {
    matches!(invocation["status"].as_str(), Some("queued" | "running" | "retrying"))
}

/// Waits until no invocation of `functions` made since `floor` is still queued, running or
/// retrying, for at most `timeout`; whether they all finished.
pub(super) async fn settle(client: &KeelClient, functions: &[String], floor: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        let mut busy = false;
        for function in functions {
            match invocations_since(client, function, floor).await {
                Ok(list) => busy |= list.iter().any(unfinished),
                Err(_) => busy = true,
            }
            if busy {
                break;
            }
        }
        if !busy {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// For each `dlq_drained` probe, redrives the function's dead invocations (all when it names
/// none); how many were redriven.
pub(super) async fn redrive(client: &KeelClient, probes: &[Probe]) -> u64 {
    let mut redriven = 0;
    for probe in probes {
        if let ProbeKind::DlqDrained { function } = &probe.kind {
            let body = match function {
                Some(f) => json!({ "function": f }),
                None => json!({}),
            };
            if let Ok(answer) = client.post_json("/v1/dlq/redrive", Some(&body), None).await {
                redriven += answer["redriven"].as_u64().unwrap_or(0);
            }
        }
    }
    redriven
}

/// Each `increase` probe's number before the run (None for the others, or when unreadable).
pub(super) async fn baselines(probes: &[Probe], client: &KeelClient) -> anyhow::Result<Vec<Option<f64>>> {
    let mut values = Vec::new();
    for probe in probes {
        let value = match &probe.kind {
            ProbeKind::Kv { ns, key, pointer, expect: Expect::Increase(_) } => Some(
                read_kv(client, ns, key, pointer).await.map_err(|e| anyhow::anyhow!("probe {:?}: {e}", probe.name))?,
            ),
            ProbeKind::Http { url, pointer, expect: Expect::Increase(_) } => {
                Some(read_url(url, pointer).await.map_err(|e| anyhow::anyhow!("probe {:?}: {e}", probe.name))?)
            }
            _ => None,
        };
        values.push(value);
    }
    Ok(values)
}

/// The probes checked once, after the run.
pub(super) async fn check_end(
    probes: &[Probe],
    loads: &[Load],
    samples: &[Sample],
    baselines: &[Option<f64>],
    client: &KeelClient,
    floor: &str,
) -> Vec<ProbeResult> {
    let mut results = Vec::new();
    for (index, probe) in probes.iter().enumerate() {
        let (outcome, expected) = match &probe.kind {
            ProbeKind::Lost => (lost(client, loads, samples).await, "0 lost".to_owned()),
            ProbeKind::Settled { function, min } => {
                let expected = format!("≥ {:.1}% succeeded", min * 100.0);
                match invocations_since(client, function, floor).await {
                    Ok(list) if list.is_empty() => (Outcome::Broken("no invocations during the run".into()), expected),
                    Ok(list) => {
                        let ok = list.iter().filter(|i| i["status"] == "succeeded").count();
                        let ratio = ok as f64 / list.len() as f64;
                        let mut text = format!("{:.1}% ({ok} of {})", ratio * 100.0, list.len());
                        let left: Vec<String> = list
                            .iter()
                            .filter(|i| i["status"] != "succeeded")
                            .take(3)
                            .map(|i| {
                                format!("{} {}", i["id"].as_str().unwrap_or("?"), i["status"].as_str().unwrap_or("?"))
                            })
                            .collect();
                        if !left.is_empty() {
                            text.push_str(&format!("; not succeeded: {}", left.join(", ")));
                        }
                        (if ratio + 1e-9 >= *min { Outcome::Held(text) } else { Outcome::Broken(text) }, expected)
                    }
                    Err(e) => (Outcome::Broken(format!("cannot list invocations: {e}")), expected),
                }
            }
            ProbeKind::DlqDrained { function } => {
                let path = with_query("/v1/dlq", &[("function", function.clone()), ("limit", Some("100".into()))]);
                match client.get_json(&path).await {
                    Ok(page) => {
                        let dead = page["items"].as_array().map_or(0, Vec::len);
                        let text = format!("{dead} dead after redrive");
                        (if dead == 0 { Outcome::Held(text) } else { Outcome::Broken(text) }, "0 dead".to_owned())
                    }
                    Err(e) => (Outcome::Broken(format!("cannot read the DLQ: {e}")), "0 dead".to_owned()),
                }
            }
            ProbeKind::Kv { ns, key, pointer, expect } => {
                let value = read_kv(client, ns, key, pointer).await;
                compare(value, expect, baselines.get(index).copied().flatten(), loads, samples)
            }
            ProbeKind::Http { url, pointer, expect } => {
                let value = read_url(url, pointer).await;
                compare(value, expect, baselines.get(index).copied().flatten(), loads, samples)
            }
            _ => continue,
        };
        results.push(ProbeResult::new(&probe.name, "end", outcome, expected));
    }
    results
}

/// Every answered-2xx request's invocation (or event) is still there.
async fn lost(client: &KeelClient, loads: &[Load], samples: &[Sample]) -> Outcome {
    let mut checked = 0;
    let mut missing = Vec::new();
    for sample in samples.iter().filter(|s| s.ok()) {
        let Some(id) = &sample.id else { continue };
        let path = match loads[sample.load].target {
            LoadTarget::Topic(_) => format!("/v1/events/{}", encode(id)),
            LoadTarget::Function(_) => format!("/v1/invocations/{}", encode(id)),
        };
        checked += 1;
        match client.send(http::Method::GET, &path, &[], bytes::Bytes::new()).await {
            Ok(response) if response.status.is_success() => {}
            Ok(response) => missing.push(format!("{id} ({})", response.status.as_u16())),
            Err(e) => missing.push(format!("{id} ({e})")),
        }
    }
    let text = format!("{} of {checked} acknowledged missing", missing.len());
    if missing.is_empty() {
        Outcome::Held(text)
    } else {
        Outcome::Broken(format!("{text}: {}", missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")))
    }
}

fn compare(
    value: Result<f64, String>,
    expect: &Expect,
    baseline: Option<f64>,
    loads: &[Load],
    samples: &[Sample],
) -> (Outcome, String) {
    let count = |load: &str, ok_only: bool| {
        let index = loads.iter().position(|l| l.name == load);
        samples.iter().filter(|s| Some(s.load) == index && (!ok_only || s.ok())).count() as f64
    };
    let eval = |e: &Expr| match e {
        Expr::Number(n) => *n,
        Expr::Ok(load) => count(load, true),
        Expr::Sent(load) => count(load, false),
    };
    let (target, expected) = match expect {
        Expect::Equals(e) => (eval(e), format!("= {} ({e})", eval(e))),
        Expect::Increase(e) => (eval(e), format!("+{} ({e})", eval(e))),
    };
    let value = match value {
        Ok(v) => v,
        Err(e) => return (Outcome::Broken(e), expected),
    };
    let (measured, text) = match (expect, baseline) {
        (Expect::Increase(_), Some(before)) => {
            (value - before, format!("+{} (from {before} to {value})", value - before))
        }
        _ => (value, value.to_string()),
    };
    if (measured - target).abs() < 1e-9 {
        (Outcome::Held(text), expected)
    } else {
        (Outcome::Broken(text), expected)
    }
}

/// A number from a JSON document: the value at `pointer`, or its length when it is an array or
/// an object; a missing value is 0 (a counter not yet written).
fn number_at(document: &Value, pointer: &str) -> Result<f64, String> {
    match document.pointer(pointer) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Some(Value::Array(items)) => Ok(items.len() as f64),
        Some(Value::Object(members)) => Ok(members.len() as f64),
        Some(other) => Err(format!("{pointer:?} is {other}, not a number")),
    }
}

async fn read_kv(client: &KeelClient, ns: &str, key: &str, pointer: &str) -> Result<f64, String> {
    let path = format!("/v1/kv/{}/{}", encode(ns), encode(key));
    let response = client.send(http::Method::GET, &path, &[], bytes::Bytes::new()).await.map_err(|e| e.to_string())?;
    if response.status == http::StatusCode::NOT_FOUND {
        return Ok(0.0);
    }
    let document = response.into_json().map_err(|e| e.to_string())?;
    // `GET /v1/kv` answers `{"value", "version"}`.
    number_at(document.get("value").unwrap_or(&document), pointer)
}

/// GETs `url` (with `${VAR}`s from the environment) and reads the number at `pointer`.
async fn read_url(url: &str, pointer: &str) -> Result<f64, String> {
    let url = expand_env(url)?;
    let client = KeelClient::new(&url).map_err(|e| e.to_string())?;
    let document = client.get_json("").await.map_err(|e| format!("{url}: {e}"))?;
    number_at(&document, pointer)
}

/// `${NAME}` replaced by the environment variable's value.
pub(super) fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else { break };
        let name = &rest[start + 2..start + end];
        let value = std::env::var(name).map_err(|_| format!("{text}: the environment variable {name} is not set"))?;
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::experiment::spec::Template;

    fn load(name: &str) -> Load {
        Load {
            name: name.into(),
            target: LoadTarget::Function("f".into()),
            sync: true,
            rate: 1.0,
            count: 0,
            payload: Template::parse("{}").unwrap(),
            idempotency_key: None,
            retry_unanswered: false,
        }
    }

    fn sample(at: f64, latency_ms: f64, status: Option<u16>) -> Sample {
        Sample { load: 0, at, latency_ms, status, id: None }
    }

    #[test]
    fn windows_count_only_their_answers() {
        let probes = vec![
            Probe { name: "ok".into(), kind: ProbeKind::SuccessRatio { load: "a".into(), min: 0.9 }, during: false },
            Probe {
                name: "p99".into(),
                kind: ProbeKind::P99 { load: "a".into(), max: Duration::from_millis(100) },
                during: true,
            },
        ];
        // The load started at 10 s on the samples' clock.
        let mut samples: Vec<Sample> = (0..20).map(|i| sample(10.0 + f64::from(i) * 0.1, 5.0, Some(200))).collect();
        samples.extend((0..10).map(|i| sample(13.0 + f64::from(i) * 0.1, 500.0, Some(503))));
        let before = Window { name: "before", start: 0.0, end: 2.0 };
        let r = check_window(&probes, &[load("a")], &samples, &[], 10.0, &before, false);
        assert!(r.iter().all(|r| r.held), "{r:?}");
        assert_eq!(r[0].value, "100.0% (20 of 20)");
        let during = Window { name: "during", start: 3.0, end: 4.0 };
        let r = check_window(&probes, &[load("a")], &samples, &[], 10.0, &during, true);
        assert_eq!(r.len(), 1, "only the probe that asked to be checked during the faults");
        assert!(!r[0].held);
        assert_eq!(r[0].value, "500.0 ms");
        let r = check_window(&probes, &[load("a")], &samples, &[], 10.0, &during, false);
        assert_eq!(r[0].value, "0.0% (0 of 10)");
    }

    #[test]
    fn dlq_growth_counts_from_the_size_before_the_window() {
        let probes =
            vec![Probe { name: "dlq".into(), kind: ProbeKind::DlqGrowth { function: None, max: 2 }, during: false }];
        let dlq: Vec<DlqSample> = [(1.0, 5), (2.5, 6), (3.5, 9), (4.5, 5)]
            .into_iter()
            .map(|(at, total)| DlqSample { at, total, by_function: Vec::new() })
            .collect();
        let w = Window { name: "after", start: 2.0, end: 5.0 };
        let r = check_window(&probes, &[], &[], &dlq, 0.0, &w, false);
        assert_eq!((r[0].held, r[0].value.as_str()), (false, "+4 (from 5 to at most 9)"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(values.clone(), 0.99), Some(99.0));
        assert_eq!(percentile(values, 0.5), Some(50.0));
        assert_eq!(percentile(vec![7.0], 0.99), Some(7.0));
        assert_eq!(percentile(vec![], 0.99), None);
    }

    #[test]
    fn the_dlq_is_read_from_metrics_by_function() {
        let text = "# TYPE keel_dlq_invocations gauge\n\
            keel_dlq_invocations{function=\"mail\",subscription=\"a\"} 2\n\
            keel_dlq_invocations{function=\"mail\",subscription=\"b\"} 1\n\
            keel_dlq_invocations{function=\"pay\",subscription=\"\"} 4\n\
            keel_dlq_invocations_other 9\n";
        assert_eq!(dlq_from_metrics(text), vec![("mail".to_owned(), 3), ("pay".to_owned(), 4)]);
    }

    #[test]
    fn increases_compare_against_the_baseline_and_the_load_counts() {
        let samples = vec![sample(0.0, 1.0, Some(200)), sample(0.1, 1.0, Some(201)), sample(0.2, 1.0, Some(500))];
        let loads = [load("a")];
        let expect = Expect::Increase(Expr::Ok("a".into()));
        let (outcome, expected) = compare(Ok(12.0), &expect, Some(10.0), &loads, &samples);
        assert_eq!(outcome, Outcome::Held("+2 (from 10 to 12)".into()));
        assert_eq!(expected, "+2 ({ok:a})");
        let (outcome, _) = compare(Ok(13.0), &expect, Some(10.0), &loads, &samples);
        assert!(matches!(outcome, Outcome::Broken(_)));
        let equals = Expect::Equals(Expr::Sent("a".into()));
        assert_eq!(compare(Ok(3.0), &equals, None, &loads, &samples).0, Outcome::Held("3".into()));
        assert_eq!(number_at(&json!({"a": [1, 2]}), "/a"), Ok(2.0));
        assert_eq!(number_at(&json!({}), "/missing"), Ok(0.0));
    }

    #[test]
    fn urls_take_variables_from_the_environment() {
        assert_eq!(expand_env("http://x/stats").unwrap(), "http://x/stats");
        assert!(expand_env("${KEEL_SURELY_UNSET_VARIABLE}/x").unwrap_err().contains("is not set"));
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand_env("a${PATH}b").unwrap(), format!("a{path}b"));
    }
}
