//! The Grafana dashboard against the metrics it charts: every metric name in the PromQL of
//! `deploy/grafana/keel.json` (panel targets and template variables) is exported by a live
//! `keel serve`, so a renamed metric fails here instead of silently blanking a panel.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::crash::{free_port, spawn_keel_with_env, wait_ready};
use crate::support::{eventually, fast_retry, parse_metrics, post_json, request, Functions};

/// Every PromQL expression of the dashboard: each panel's targets (rows' nested panels too) and
/// each query variable.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.extend(target["expr"].as_str().map(str::to_owned));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut queries = Vec::new();
    panels(&dashboard["panels"], &mut queries);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let query = &variable["query"];
            queries.extend(query.as_str().or(query["query"].as_str()).map(str::to_owned));
        }
    }
    queries
}

/// The metric names in a PromQL expression: identifiers starting `keel_` (PromQL's functions,
/// labels and `$variables` of this dashboard never do). Histogram series keep their suffix
/// (`_bucket`, `_sum`, `_count`), as the exposition writes them.
fn metric_names(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("keel_") {
        let starts_identifier = !rest[..at].ends_with(is_ident);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        if starts_identifier {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The sample names present in Prometheus text (`x_bucket`, not `x`, for a histogram).
fn exported_samples(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let expr = "histogram_quantile(0.99, sum by (function, le) (rate(keel_attempt_duration_seconds_bucket\
                {function=~\"$function\"}[$__rate_interval]))) / keel_a:b + label_values(keel_c, function)";
    assert_eq!(metric_names(expr), ["keel_attempt_duration_seconds_bucket", "keel_a:b", "keel_c"]);
    assert!(metric_names("rate(not_keel_x[5m])").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_charts_is_exported() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/keel.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let queries = dashboard_queries(&dashboard);
    let wanted: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(wanted.len() >= 10, "the dashboard's queries were not read: {queries:?}");
    assert!(wanted.contains("keel_invocations_accepted_total"), "{wanted:?}");

    // A workload touching what the panels chart: sync and async invocations, a retry, a dead
    // invocation in the DLQ, a `command` function's instance and cold start, store commits.
    let (_fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let greet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/first-function/greet.py");
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"sqlite://{db}\"\n\
             [functions.ok]\nurl = \"http://{addr}/ok\"\n\
             [functions.flaky]\nurl = \"http://{addr}/flaky?fail=1\"\n{retry3}\n\
             [functions.broken]\nurl = \"http://{addr}/status?code=503\"\n{retry2}\n\
             [functions.greet]\ncommand = [\"python3\", {greet:?}]\n",
            db = dir.path().join("keel.db").display(),
            retry3 = fast_retry(3),
            retry2 = fast_retry(2),
            greet = greet.canonicalize().unwrap().display().to_string(),
        ),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("keel.log");
    let mut keel = spawn_keel_with_env(&config, port, &log, &[("NO_PROXY", "127.0.0.1")]);
    wait_ready(&base, &mut keel).await;

    assert_eq!(post_json(&format!("{base}/v1/functions/ok/invoke"), "{}").await.0, 200);
    let (status, _, _) = post_json(&format!("{base}/v1/functions/greet/invoke"), r#"{"name":"Ada"}"#).await;
    assert_eq!(status, 200, "the command function answers");
    for function in ["flaky", "broken"] {
        assert_eq!(post_json(&format!("{base}/v1/functions/{function}/invocations"), "{}").await.0, 202);
    }
    let url = format!("{base}/metrics");
    let text = eventually("the retry and the dead letter on /metrics", Duration::from_secs(20), || async {
        let (status, _, body) = request("GET", &url, &[], "").await;
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let metrics = parse_metrics(&text);
        let done = metrics.get("keel_dlq_invocations{function=\"broken\",subscription=\"\"}") == Some(&1.0)
            && metrics.get("keel_invocations_completed_total{function=\"flaky\",outcome=\"succeeded\"}") == Some(&1.0);
        done.then_some(text)
    })
    .await;
    let _ = keel.kill();
    let _ = keel.wait();

    let exported = exported_samples(&text);
    let missing: Vec<&String> = wanted.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(missing.is_empty(), "the dashboard charts metrics /metrics does not export: {missing:?}\n{text}");
    for family in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
        let family = family.split(' ').next().unwrap_or_default();
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has no HELP text (promtool rejects it)");
    }
    for name in &wanted {
        if let Some(family) = name.strip_suffix("_bucket") {
            assert!(text.contains(&format!("# TYPE {family} histogram\n")), "{family} is charted as a histogram");
        }
    }
}
