//! `keel chaos inject|ls|clear`: faults injected on a function, a dependency or the store through
//! `/v1/chaos/faults`, listed with what is left of them, and ended early.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::client::{encode, print_json, ClientError, KeelClient};
use super::table::Table;
use super::{ChaosClearArgs, ChaosInjectArgs, ChaosRunArgs, Latency, EXIT_USAGE_OR_CONFIG};

const FAULTS: &str = "/v1/chaos/faults";

/// `keel chaos run`: the experiment, its verdict on stdout (JSON with --json), the report written;
/// exit 0 held, 1 not held, 2 a broken file (file:line) or an experiment that could not run.
pub(crate) async fn run(client: KeelClient, json: bool, args: ChaosRunArgs) -> anyhow::Result<std::process::ExitCode> {
    use keel_server::experiment;
    let spec = match experiment::load(&args.file) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(std::process::ExitCode::from(EXIT_USAGE_OR_CONFIG));
        }
    };
    if args.check {
        eprintln!(
            "{}: ok ({} loads, {} steps, {} probes)",
            args.file.display(),
            spec.load.len(),
            spec.method.len(),
            spec.hypothesis.len()
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    experiment::check_time_scale(args.time_scale)?;
    let options = experiment::Options { progress: !json, time_scale: args.time_scale, controller: None };
    let report = experiment::run(&spec, client, options).await?;
    report.write(&args.report)?;
    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        print!("{}", report.summary());
        println!("report: {}", args.report.join("report.md").display());
    }
    Ok(std::process::ExitCode::from(report.verdict.exit_code()))
}

/// `keel chaos inject`: the fault's id on stdout, what it does on stderr.
pub(crate) async fn inject(client: &KeelClient, json: bool, args: ChaosInjectArgs) -> anyhow::Result<()> {
    let response = client
        .send(
            Method::POST,
            FAULTS,
            &[(CONTENT_TYPE, "application/json".to_owned())],
            Bytes::from(body(&args).to_string()),
        )
        .await?;
    if !response.status.is_success() {
        let invalid = serde_json::from_slice::<Value>(&response.body).ok().map(|v| invalid_members(&v));
        return Err(match invalid {
            Some(members) if !members.is_empty() => anyhow::anyhow!("{}\n{}", response.problem(), members.join("\n")),
            _ => response.problem().into(),
        });
    }
    let fault = response.into_json()?;
    if json {
        print_json(&fault);
    } else {
        println!("{}", text(&fault, "id"));
        eprintln!("{}", summary(&fault, SystemTime::now()));
    }
    Ok(())
}

/// The request body `args` describe; the server checks it (and names each member it refuses).
fn body(args: &ChaosInjectArgs) -> Value {
    let target = match (&args.function, &args.dependency) {
        (Some(function), _) => json!({ "function": function }),
        (None, Some(dependency)) => json!({ "dependency": dependency }),
        (None, None) => json!({ "store": true }),
    };
    let mut body = Map::new();
    body.insert("target".into(), target);
    body.insert("kind".into(), args.kind.as_str().into());
    if let Some(latency) = &args.latency {
        let value = match &latency.max {
            Some(max) => json!({ "min": latency.min, "max": max }),
            None => json!(latency.min),
        };
        body.insert("latency".into(), value);
    }
    if let Some(status) = args.status {
        body.insert("status".into(), status.into());
    }
    if let Some(rate) = args.rate {
        body.insert("rate".into(), rate.into());
    }
    body.insert("duration".into(), args.duration.clone().into());
    Value::Object(body)
}

/// An `invalid-input` problem's `errors`, one line each, named by the flag that set the member.
fn invalid_members(problem: &Value) -> Vec<String> {
    let flag = |path: &str| match path {
        "/target" => "--function/--dependency/--store".to_owned(),
        "/target/function" => "--function".to_owned(),
        "/target/dependency" => "--dependency".to_owned(),
        other => format!("--{}", other.trim_start_matches('/')),
    };
    let errors = problem.get("errors").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    errors.iter().map(|e| format!("  {}: {}", flag(&text(e, "path")), text(e, "message"))).collect()
}

/// `injected error (status 503) on dependency payments, 30% of calls, until … (in 1m)`.
fn summary(fault: &Value, now: SystemTime) -> String {
    let detail = match detail(fault) {
        none if none == "-" => String::new(),
        detail => format!(" ({detail})"),
    };
    format!(
        "injected {}{detail} on {}, {} of calls, until {} (in {})",
        text(fault, "kind"),
        match target(fault) {
            store if store == "store" => "the store".to_owned(),
            target => target,
        },
        rate(fault),
        text(fault, "expires_at"),
        expires_in(fault, now),
    )
}

pub(crate) async fn ls(client: &KeelClient, json: bool) -> anyhow::Result<()> {
    let list = client.get_json(FAULTS).await?;
    if json {
        print_json(&list);
        return Ok(());
    }
    let items = list.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        eprintln!("no faults are injected");
        return Ok(());
    }
    print!("{}", render(items, SystemTime::now()));
    Ok(())
}

fn render(items: &[Value], now: SystemTime) -> Table {
    let mut table = Table::with_header(["ID", "TARGET", "KIND", "DETAIL", "RATE", "EXPIRES IN"]);
    for fault in items {
        table.row([
            text(fault, "id"),
            target(fault),
            text(fault, "kind"),
            detail(fault),
            rate(fault),
            expires_in(fault, now),
        ]);
    }
    table
}

/// `keel chaos clear ID`, or every fault listed now with `--all`.
pub(crate) async fn clear(client: &KeelClient, json: bool, args: ChaosClearArgs) -> anyhow::Result<()> {
    let ids = match args.id {
        Some(id) => {
            client.delete_json(&format!("{FAULTS}/{}", encode(&id))).await?;
            vec![id]
        }
        None => {
            let list = client.get_json(FAULTS).await?;
            let mut cleared = Vec::new();
            for fault in list.get("items").and_then(Value::as_array).into_iter().flatten() {
                let id = text(fault, "id");
                match client.delete_json(&format!("{FAULTS}/{}", encode(&id))).await {
                    Ok(_) => cleared.push(id),
                    // It expired (or was cleared elsewhere) since the listing: gone all the same.
                    Err(ClientError::Problem { status: StatusCode::NOT_FOUND, .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            cleared
        }
    };
    if json {
        print_json(&json!({ "cleared": ids }));
    } else if ids.is_empty() {
        eprintln!("no faults to clear");
    } else {
        for id in &ids {
            println!("cleared {id}");
        }
        eprintln!("every node stops applying {} within a second", if ids.len() == 1 { "it" } else { "them" });
    }
    Ok(())
}

fn text(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or("-").to_owned()
}

/// `function NAME`, `dependency NAME` or `store`.
fn target(fault: &Value) -> String {
    let target = fault.get("target");
    let name = |key| target.and_then(|t| t.get(key)).and_then(Value::as_str);
    match (name("function"), name("dependency")) {
        (Some(function), _) => format!("function {function}"),
        (None, Some(dependency)) => format!("dependency {dependency}"),
        (None, None) if target.and_then(|t| t.get("store")).is_some() => "store".to_owned(),
        (None, None) => "-".to_owned(),
    }
}

/// A latency's range (`100ms..2s`, or `300ms` when fixed), an error's status, else `-`.
fn detail(fault: &Value) -> String {
    if let Some(latency) = fault.get("latency_ms") {
        let ms = |key| latency.get(key).and_then(Value::as_u64).unwrap_or(0);
        let show = |ms| humantime::format_duration(Duration::from_millis(ms)).to_string();
        return match (ms("min"), ms("max")) {
            (min, max) if min == max => show(min),
            (min, max) => format!("{}..{}", show(min), show(max)),
        };
    }
    match fault.get("status").and_then(Value::as_u64) {
        Some(status) => format!("status {status}"),
        None => "-".to_owned(),
    }
}

/// The share of calls hit, as a percentage: `30%`, `12.5%`.
fn rate(fault: &Value) -> String {
    match fault.get("rate").and_then(Value::as_f64) {
        Some(rate) => format!("{}%", (rate * 1000.0).round() / 10.0),
        None => "-".to_owned(),
    }
}

/// What is left of the fault, to the second: `59s`, `1h 30m`; `expired` once past.
fn expires_in(fault: &Value, now: SystemTime) -> String {
    let Some(expires) = fault.get("expires_at").and_then(Value::as_str) else { return "-".to_owned() };
    let Ok(expires) = humantime::parse_rfc3339_weak(expires) else { return "-".to_owned() };
    match expires.duration_since(now) {
        Ok(left) if !left.is_zero() => {
            humantime::format_duration(Duration::from_secs(left.as_millis().div_ceil(1000) as u64)).to_string()
        }
        _ => "expired".to_owned(),
    }
}

impl Latency {
    /// `300ms`, or `100ms..2s` for a range.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let check = |part: &str| -> Result<(String, Duration), String> {
            let part = part.trim();
            let duration = keel_core::duration::parse_duration(part)
                .map_err(|e| format!("`{part}` is not a duration ({e}): e.g. 300ms or 100ms..2s"))?;
            Ok((part.to_owned(), duration))
        };
        match text.split_once("..") {
            None => Ok(Latency { min: check(text)?.0, max: None }),
            Some((min, max)) => {
                let ((min, low), (max, high)) = (check(min)?, check(max)?);
                if low > high {
                    return Err(format!("the least latency ({min}) is more than the most ({max})"));
                }
                Ok(Latency { min, max: Some(max) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// 2026-12-01T10:00:00Z.
    fn at_ten() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_119_200)
    }

    fn faults() -> Vec<Value> {
        vec![
            json!({"id": "01KA", "target": {"dependency": "payments"}, "kind": "error", "status": 503, "rate": 0.3,
                "created_at": "2026-12-01T09:59:30.000Z", "expires_at": "2026-12-01T10:00:30.000Z"}),
            json!({"id": "01KB", "target": {"function": "purchase"}, "kind": "latency",
                "latency_ms": {"min": 100, "max": 2000}, "rate": 1.0,
                "created_at": "2026-12-01T09:00:00.000Z", "expires_at": "2026-12-01T11:30:00.000Z"}),
            json!({"id": "01KC", "target": {"store": true}, "kind": "latency", "latency_ms": {"min": 300, "max": 300},
                "rate": 0.125, "created_at": "2026-12-01T09:59:00.000Z", "expires_at": "2026-12-01T10:00:00.400Z"}),
            json!({"id": "01KD", "target": {"function": "worker"}, "kind": "crash", "rate": 1.0,
                "created_at": "2026-12-01T09:00:00.000Z", "expires_at": "2026-12-01T09:59:59.000Z"}),
        ]
    }

    #[test]
    fn ls_shows_target_kind_detail_rate_and_what_is_left() {
        assert_eq!(
            render(&faults(), at_ten()).to_string(),
            "ID    TARGET               KIND     DETAIL      RATE   EXPIRES IN\n\
             01KA  dependency payments  error    status 503  30%    30s\n\
             01KB  function purchase    latency  100ms..2s   100%   1h 30m\n\
             01KC  store                latency  300ms       12.5%  1s\n\
             01KD  function worker      crash    -           100%   expired\n"
        );
    }

    #[test]
    fn the_summary_says_what_where_and_until_when() {
        let [error, latency, ..] = <[Value; 4]>::try_from(faults()).unwrap();
        assert_eq!(
            summary(&error, at_ten()),
            "injected error (status 503) on dependency payments, 30% of calls, until 2026-12-01T10:00:30.000Z (in 30s)"
        );
        assert_eq!(
            summary(&latency, at_ten()),
            "injected latency (100ms..2s) on function purchase, 100% of calls, until 2026-12-01T11:30:00.000Z \
             (in 1h 30m)"
        );
    }

    fn args(extra: &[&str]) -> ChaosInjectArgs {
        use clap::Parser;
        let line = ["keel", "chaos", "inject"].into_iter().chain(extra.iter().copied());
        match super::super::Cli::try_parse_from(line).unwrap().command {
            super::super::Command::Chaos(super::super::ChaosCommand::Inject(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_body_carries_only_what_was_given() {
        let a = args(&["--dependency", "payments", "--kind", "error", "--rate", "0.3", "--duration", "60s"]);
        assert_eq!(
            body(&a),
            json!({"target": {"dependency": "payments"}, "kind": "error", "rate": 0.3, "duration": "60s"})
        );
        let a = args(&["--function", "purchase", "--kind", "latency", "--latency", "100ms..2s", "--duration", "5m"]);
        assert_eq!(
            body(&a),
            json!({"target": {"function": "purchase"}, "kind": "latency",
                "latency": {"min": "100ms", "max": "2s"}, "duration": "5m"})
        );
        let a = args(&["--store", "--kind", "error", "--status", "500", "--duration", "30s"]);
        assert_eq!(body(&a), json!({"target": {"store": true}, "kind": "error", "status": 500, "duration": "30s"}));
        let a = args(&["--store", "--kind", "latency", "--latency", "300ms", "--duration", "30s"]);
        assert_eq!(body(&a)["latency"], json!("300ms"));
        let store = json!({"id": "01KC", "target": {"store": true}, "kind": "abort", "rate": 1.0,
            "expires_at": "2026-12-01T10:01:00.000Z"});
        assert_eq!(
            summary(&store, at_ten()),
            "injected abort on the store, 100% of calls, until 2026-12-01T10:01:00.000Z (in 1m)"
        );
    }

    #[test]
    fn refused_members_are_named_by_their_flags() {
        let problem = json!({"type": "urn:keel:problem:invalid-input", "title": "Invalid input",
            "errors": [{"path": "/target/function", "message": "no function named \"nope\" is configured"},
                       {"path": "/status", "message": "only an error fault takes a status"}]});
        assert_eq!(
            invalid_members(&problem),
            [
                "  --function: no function named \"nope\" is configured",
                "  --status: only an error fault takes a status"
            ]
        );
        assert!(invalid_members(&json!({"title": "Chaos disabled"})).is_empty());
    }

    #[test]
    fn a_latency_is_one_duration_or_a_range() {
        assert_eq!(Latency::parse("300ms"), Ok(Latency { min: "300ms".into(), max: None }));
        assert_eq!(Latency::parse("100ms..2s"), Ok(Latency { min: "100ms".into(), max: Some("2s".into()) }));
        assert!(Latency::parse("2s..100ms").unwrap_err().contains("more than the most"));
        assert!(Latency::parse("fast").unwrap_err().contains("not a duration"));
        assert!(Latency::parse("100ms..").is_err());
    }
}
