//! Observability of the real `keel` binary: after a known workload `/metrics` shows exactly the
//! expected counts, an OTLP receiver gets one trace from the request through attempts, the
//! emitted event and its delivery, and every log line is JSON carrying the ids of its work.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::crash::{free_port, spawn_keel_with_env, wait_ready};
use crate::support::{fast_retry, otlp_receiver, parse_metrics, post_json, request, Functions, ReceivedSpan};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const RUN_TRACE_ID: &str = "5cf92f3577b34da6a3ce929d0e0e4737";
/// Must never appear in a log line.
const SECRET: &str = "s3cr3t-payload";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_traces_and_logs_of_a_known_workload() {
    let (_fns, addr) = Functions::start().await;
    let (otlp, spans) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let retry = fast_retry(3);
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"sqlite://{db}\"\n\
             [functions.shop]\nurl = \"http://{addr}/fx/emit?topic=orders\"\n{retry}\n\
             [functions.mailer]\nurl = \"http://{addr}/flaky?fail=1\"\n{retry}\n\
             [functions.broken]\nurl = \"http://{addr}/status?code=400\"\n{retry}\n\
             [topics.orders]\n\
             [[subscriptions]]\nname = \"notify\"\ntopic = \"orders\"\nfunction = \"mailer\"\n{retry}\n\
             [functions.indexer]\nurl = \"http://{addr}/empty\"\nbatch = {{ max_size = 10, max_wait = \"50ms\" }}\n\
             [functions.step]\nurl = \"http://{addr}/ok\"\n\
             [workflows.wf]\nsteps = [{{ name = \"a\", function = \"step\" }}, {{ name = \"b\", function = \"step\" }}]\n",
            db = dir.path().join("keel.db").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("keel.log");
    let env = [
        ("RUST_LOG", "info"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("NO_PROXY", "127.0.0.1"),
    ];
    let mut child = spawn_keel_with_env(&config, port, &log, &env);
    wait_ready(&base, &mut child).await;

    // The workload.
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let body = format!("{{\"card\":\"{SECRET}\"}}");
    let (status, _, _) = request(
        "POST",
        &format!("{base}/v1/functions/shop/invocations"),
        &[("content-type", "application/json"), ("traceparent", &traceparent)],
        body.clone(),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _, _) = post_json(&format!("{base}/v1/functions/broken/invoke"), &body).await;
    assert_eq!(status, 400);
    let (status, _, _) = post_json(&format!("{base}/v1/functions/broken/invocations"), &body).await;
    assert_eq!(status, 202);
    let (status, _, _) = post_json(&format!("{base}/v1/topics/orders/events"), "{\"order\":1}").await;
    assert_eq!(status, 202);
    // A bulk admission of three to a batch function: one `batch finished` line speaks for them.
    let (status, _, _) = request(
        "POST",
        &format!("{base}/v1/functions/indexer/invocations"),
        &[("content-type", "application/vnd.keel.batch+json")],
        "[{\"doc\":1},{\"doc\":2},{\"doc\":3}]",
    )
    .await;
    assert_eq!(status, 202);
    let run_trace = format!("00-{RUN_TRACE_ID}-00f067aa0ba902b7-01");
    let (status, _, run) =
        request("POST", &format!("{base}/v1/workflows/wf/runs"), &[("traceparent", &run_trace)], "{}").await;
    assert_eq!(status, 202);
    let run: serde_json::Value = serde_json::from_slice(&run).unwrap();
    let run_url = format!("{base}/v1/workflow-runs/{}", run["id"].as_str().unwrap());
    crate::support::eventually("the run succeeds", Duration::from_secs(15), || async {
        let (_, _, run) = crate::support::get_json(&run_url).await;
        (run["status"] == "succeeded").then_some(())
    })
    .await;

    wait_for_metric(&base, "keel_invocations_completed_total{function=\"indexer\",outcome=\"succeeded\"}", 3.0).await;
    let metrics =
        wait_for_metric(&base, "keel_invocations_completed_total{function=\"mailer\",outcome=\"succeeded\"}", 2.0)
            .await;
    let expected = [
        ("keel_invocations_accepted_total{function=\"shop\",kind=\"async\"}", 1.0),
        ("keel_invocations_accepted_total{function=\"broken\",kind=\"sync\"}", 1.0),
        ("keel_invocations_accepted_total{function=\"broken\",kind=\"async\"}", 1.0),
        ("keel_invocations_accepted_total{function=\"mailer\",kind=\"delivery\"}", 2.0),
        ("keel_invocations_accepted_total{function=\"mailer\",kind=\"async\"}", 0.0),
        ("keel_invocations_completed_total{function=\"shop\",outcome=\"succeeded\"}", 1.0),
        ("keel_invocations_completed_total{function=\"broken\",outcome=\"failed\"}", 1.0),
        ("keel_invocations_completed_total{function=\"broken\",outcome=\"dead\"}", 1.0),
        ("keel_invocations_completed_total{function=\"mailer\",outcome=\"succeeded\"}", 2.0),
        ("keel_attempts_total{function=\"shop\",outcome=\"success\"}", 1.0),
        ("keel_attempts_total{function=\"broken\",outcome=\"permanent\"}", 2.0),
        ("keel_attempts_total{function=\"mailer\",outcome=\"transient\"}", 2.0),
        ("keel_attempts_total{function=\"mailer\",outcome=\"success\"}", 2.0),
        ("keel_attempt_duration_seconds_count{function=\"mailer\",outcome=\"transient\"}", 2.0),
        ("keel_retries_scheduled_total{function=\"mailer\"}", 2.0),
        ("keel_retries_scheduled_total{function=\"broken\"}", 0.0),
        ("keel_dlq_invocations{function=\"broken\",subscription=\"\"}", 1.0),
        ("keel_dlq_invocations{function=\"mailer\",subscription=\"notify\"}", 0.0),
        ("keel_queue_depth_invocations{function=\"mailer\"}", 0.0),
        ("keel_queue_oldest_due_age_seconds{function=\"mailer\"}", 0.0),
        ("keel_attempts_in_flight{function=\"mailer\"}", 0.0),
        ("keel_invocations_accepted_total{function=\"indexer\",kind=\"async\"}", 3.0),
        ("keel_attempts_total{function=\"indexer\",outcome=\"success\"}", 3.0),
        ("keel_http_requests_total{method=\"POST\",route=\"/v1/functions/{name}/invocations\",status=\"202\"}", 3.0),
        ("keel_http_requests_total{method=\"POST\",route=\"/v1/functions/{name}/invoke\",status=\"400\"}", 1.0),
        ("keel_http_requests_total{method=\"POST\",route=\"/v1/topics/{topic}/events\",status=\"202\"}", 1.0),
        // The sync call's record went behind its answer, long committed; no answer waited for one.
        ("keel_sync_records_behind", 0.0),
        ("keel_sync_answers_held_total", 0.0),
    ];
    for (series, value) in expected {
        assert_eq!(metrics.get(series), Some(&value), "{series}");
    }
    assert!(metrics["keel_store_commit_group_size_count{backend=\"sqlite\"}"] >= 1.0);
    assert!(metrics.keys().any(|k| k.starts_with("keel_http_request_duration_seconds_bucket{")));

    // SIGTERM: keel drains and flushes its spans.
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM);
    crate::serve::exit_within(&mut child, Duration::from_secs(15)).await;
    check_trace(&spans.lock().unwrap());
    check_run_trace(&spans.lock().unwrap());
    check_logs(&std::fs::read_to_string(&log).unwrap());
}

async fn wait_for_metric(base: &str, series: &str, value: f64) -> HashMap<String, f64> {
    let url = format!("{base}/metrics");
    crate::support::eventually(&format!("{series} at {value}"), Duration::from_secs(15), || async {
        let (status, _, body) = request("GET", &url, &[], "").await;
        assert_eq!(status, 200);
        let metrics = parse_metrics(std::str::from_utf8(&body).unwrap());
        (metrics.get(series) == Some(&value)).then_some(metrics)
    })
    .await
}

/// request → the workflow run → the attempt of each step.
fn check_run_trace(spans: &[ReceivedSpan]) {
    let ours: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == RUN_TRACE_ID).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    let named = |name: &str| ours.iter().copied().filter(|s| s.name == name).collect::<Vec<_>>();
    let request = named("POST /v1/workflows/{name}/runs");
    assert_eq!(request.len(), 1, "one request span in {names:?}");
    let run = named("workflow wf");
    assert_eq!(run.len(), 1, "one run span in {names:?}");
    assert_eq!(run[0].parent_span_id, request[0].span_id);
    assert_eq!(run[0].attributes.get("run_id").map(String::len), Some(26), "{:?}", run[0].attributes);
    let steps = named("attempt step");
    assert_eq!(steps.len(), 2, "{names:?}");
    assert!(steps.iter().all(|s| s.parent_span_id == run[0].span_id), "each step's attempt is the run's child");
}

/// request → attempt of `shop` → emitted event → both attempts of its delivery to `mailer`.
fn check_trace(spans: &[ReceivedSpan]) {
    let ours: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let named = |name: &str| ours.iter().copied().filter(|s| s.name == name).collect::<Vec<_>>();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    let request = named("POST /v1/functions/{name}/invocations");
    assert_eq!(request.len(), 1, "one request span in {names:?}");
    assert_eq!(request[0].parent_span_id, "00f067aa0ba902b7", "the caller's span is the parent");
    let shop = named("attempt shop");
    assert_eq!(shop.len(), 1, "{names:?}");
    assert_eq!(shop[0].parent_span_id, request[0].span_id);
    assert_eq!(shop[0].attributes["outcome"], "success");
    assert_eq!(shop[0].attributes["status"], "200");
    let emit = named("emit orders");
    assert_eq!(emit.len(), 1, "{names:?}");
    assert_eq!(emit[0].parent_span_id, shop[0].span_id);
    let mut mailer = named("attempt mailer");
    mailer.sort_by_key(|s| s.attributes["attempt"].clone());
    assert_eq!(mailer.len(), 2, "two attempts of the delivery in {names:?}");
    for attempt in &mailer {
        assert_eq!(attempt.parent_span_id, emit[0].span_id);
        assert_eq!(attempt.attributes["subscription"], "notify");
    }
    assert_eq!(mailer[0].attributes["outcome"], "transient");
    assert_eq!(mailer[0].attributes["status"], "503");
    assert!(mailer[0].attributes.contains_key("retry_delay_ms"), "{:?}", mailer[0].attributes);
    assert_eq!(mailer[1].attributes["outcome"], "success");
}

fn check_logs(text: &str) {
    assert!(!text.contains(SECRET), "a payload was logged");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let attempts: Vec<&Value> = lines.iter().filter(|l| l["message"] == "attempt finished").collect();
    // The batch function's items succeeded: they are not among them (`debug`), their batches' lines
    // speak for them.
    assert_eq!(attempts.len(), 8, "one line per async attempt (two are the workflow run's steps)");
    assert!(attempts.iter().all(|l| l["function"] != "indexer"), "no item of a batch that succeeded");
    let batches: Vec<&Value> = lines.iter().filter(|l| l["message"] == "batch finished").collect();
    assert!(!batches.is_empty(), "a line per batch");
    for line in &batches {
        assert_eq!(
            (&line["function"], &line["failed"], &line["outcome"]),
            (&Value::from("indexer"), &Value::from(0), &Value::from("success")),
            "{line}"
        );
    }
    let items: u64 = batches.iter().map(|l| l["items"].as_u64().unwrap()).sum();
    assert_eq!(items, 3, "the batches' items are the three admitted: {batches:?}");
    for line in attempts {
        let span = &line["span"];
        for field in ["invocation_id", "function", "attempt", "trace_id"] {
            assert!(!span[field].is_null(), "{field} missing: {line}");
        }
        if span["function"] == "mailer" {
            assert_eq!(span["subscription"], "notify", "{line}");
            assert!(span["event_id"].is_string(), "{line}");
            // The first delivery failed and will be retried: the line says after how long.
            assert_eq!(line["retry_delay_ms"].is_u64(), line["outcome"] == "transient", "{line}");
        }
        if span["function"] == "shop" {
            assert_eq!(span["trace_id"], TRACE_ID, "{line}");
        }
    }
}
