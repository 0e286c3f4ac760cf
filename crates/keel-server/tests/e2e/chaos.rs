//! Chaos faults: off by default (404, nothing injected); with `[chaos] enabled`, each kind on a
//! function seen on the wire (an error in place of the call, a reset, a timeout, a latency
//! within its bounds, a rate within statistical bounds), a fault on a dependency answering a
//! function's egress call, a fault on the store failing admissions, expiry and clearing, and
//! refusals of bad requests naming the member.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{eventually, get_json, parse_metrics, post_json, request, start_keel, Functions, Keel};

async fn inject(keel: &Keel, fault: Value) -> Value {
    let (status, _, body) = post_json(&format!("{}/v1/chaos/faults", keel.url), &fault.to_string()).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn clear(keel: &Keel, id: &str) {
    let (status, _, body) = request("DELETE", &format!("{}/v1/chaos/faults/{id}", keel.url), &[], "").await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
}

/// The first attempt of a sync invoke of `function`: its outcome, status and error.
async fn attempt(keel: &Keel, function: &str) -> (Value, Duration) {
    let started = Instant::now();
    let (_, headers, _) = post_json(&format!("{}/v1/functions/{function}/invoke", keel.url), "{}").await;
    let took = started.elapsed();
    let id = headers["keel-invocation-id"].to_str().unwrap().to_string();
    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
    (inv["attempts"][0].clone(), took)
}

fn config(addr: std::net::SocketAddr) -> String {
    format!(
        "[chaos]\nenabled = true\n\
         [functions.f]\nurl = \"http://{addr}/ok\"\ntimeout = \"700ms\"\nretry = {{ max_attempts = 1 }}\n\
         [functions.g]\nurl = \"http://{addr}/ok\"\nretry = {{ max_attempts = 1 }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_chaos_enabled_the_routes_answer_404_and_nothing_is_injected() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.f]\nurl = \"http://{addr}/ok\"\n")).await;
    let fault = json!({"target": {"function": "f"}, "kind": "error", "duration": "60s"}).to_string();
    let (status, _, body) = post_json(&format!("{}/v1/chaos/faults", keel.url), &fault).await;
    assert_eq!((status, body["type"].as_str()), (404, Some("urn:keel:problem:chaos-disabled")), "{body}");
    let (status, _, _) = get_json(&format!("{}/v1/chaos/faults", keel.url)).await;
    assert_eq!(status, 404);
    let (status, _, _) = post_json(&format!("{}/v1/functions/f/invoke", keel.url), "{}").await;
    assert_eq!((status, fns.calls().len()), (200, 1), "the call went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_fault_on_a_function_is_seen_on_the_wire_until_cleared_or_expired() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&config(addr)).await;

    // error: answered with the status in the function's place; the function is not called.
    let error =
        inject(&keel, json!({"target": {"function": "f"}, "kind": "error", "status": 503, "duration": "60s"})).await;
    assert_eq!(
        (error["kind"].as_str(), error["status"].as_u64(), error["rate"].as_f64()),
        (Some("error"), Some(503), Some(1.0))
    );
    let (seen, _) = attempt(&keel, "f").await;
    assert_eq!((seen["outcome"].as_str(), seen["status"].as_u64()), (Some("transient"), Some(503)), "{seen}");
    let id = error["id"].as_str().unwrap();
    assert!(seen["error"].as_str().unwrap().contains(&format!("chaos: fault {id}")), "{seen}");
    assert_eq!(fns.calls().len(), 0, "the function was not called");
    let (status, _) = (post_json(&format!("{}/v1/functions/g/invoke", keel.url), "{}").await.0, ());
    assert_eq!((status, fns.calls().len()), (200, 1), "another function is not hit");
    let (_, _, listed) = get_json(&format!("{}/v1/chaos/faults", keel.url)).await;
    assert_eq!(listed["items"][0]["id"], id, "{listed}");
    clear(&keel, id).await;
    let (_, _, listed) = get_json(&format!("{}/v1/chaos/faults", keel.url)).await;
    assert_eq!(listed["items"], json!([]));
    let (seen, _) = attempt(&keel, "f").await;
    assert_eq!(seen["outcome"], "success", "cleared: {seen}");

    // abort: a reset connection, transient; timeout: a hang to the attempt's timeout.
    let abort = inject(&keel, json!({"target": {"function": "f"}, "kind": "abort", "duration": "60s"})).await;
    let (seen, _) = attempt(&keel, "f").await;
    assert_eq!(seen["outcome"], "transient", "{seen}");
    assert!(seen["error"].as_str().unwrap().starts_with("connection reset (chaos"), "{seen}");
    clear(&keel, abort["id"].as_str().unwrap()).await;
    let timeout = inject(&keel, json!({"target": {"function": "f"}, "kind": "timeout", "duration": "60s"})).await;
    let (seen, took) = attempt(&keel, "f").await;
    assert_eq!(seen["outcome"], "timeout", "{seen}");
    assert!(took >= Duration::from_millis(700), "hung for the attempt's timeout: {took:?}");
    clear(&keel, timeout["id"].as_str().unwrap()).await;

    // latency: the call is made, late by a delay within the bounds.
    let calls = fns.calls().len();
    let latency = inject(
        &keel,
        json!({"target": {"function": "f"}, "kind": "latency", "latency": {"min": "150ms", "max": "250ms"}, "duration": "60s"}),
    )
    .await;
    assert_eq!(latency["latency_ms"], json!({"min": 150, "max": 250}));
    for _ in 0..5 {
        let (seen, took) = attempt(&keel, "f").await;
        assert_eq!(seen["outcome"], "success", "{seen}");
        let spent = Duration::from_millis(seen["duration_ms"].as_u64().unwrap());
        assert!(spent >= Duration::from_millis(150) && took < Duration::from_secs(5), "{spent:?} {took:?}");
    }
    assert_eq!(fns.calls().len(), calls + 5, "each call was made");
    clear(&keel, latency["id"].as_str().unwrap()).await;

    // rate: a 30% error fault hits within statistical bounds, and the others reach the function.
    inject(&keel, json!({"target": {"function": "g"}, "kind": "error", "status": 500, "rate": 0.3, "duration": "60s"}))
        .await;
    let before = fns.calls().len();
    let mut hit = 0;
    for _ in 0..200 {
        let (status, _, _) = post_json(&format!("{}/v1/functions/g/invoke", keel.url), "{}").await;
        hit += usize::from(status != 200);
    }
    // 60 expected; the binomial's sd is ~6.5: 4.5 sd either side.
    assert!((30..=90).contains(&hit), "{hit} of 200 hit at rate 0.3");
    assert_eq!(fns.calls().len() - before, 200 - hit, "every call not hit reached the function");
    let (_, _, text) = request("GET", &format!("{}/metrics", keel.url), &[], "").await;
    let metrics = parse_metrics(std::str::from_utf8(&text).unwrap());
    assert_eq!(metrics.get("keel_chaos_injected_total{kind=\"error\",target=\"function:g\"}"), Some(&(hit as f64)));

    // expiry: a fault of one second ends by itself.
    inject(&keel, json!({"target": {"function": "f"}, "kind": "abort", "duration": "1s"})).await;
    assert_eq!(attempt(&keel, "f").await.0["outcome"], "transient");
    eventually("the fault expires", Duration::from_secs(5), || async {
        (attempt(&keel, "f").await.0["outcome"] == "success").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_on_a_dependency_answers_the_egress_call_and_one_on_the_store_fails_admissions() {
    let (fns, addr) = Functions::start().await;
    let toml = format!(
        "{}[dependencies.payments]\nurl = \"http://{addr}\"\n\
         [functions.buyer]\nurl = \"http://{addr}/egress?dep=payments&path=/ok\"\nretry = {{ max_attempts = 1 }}\n\
         dependencies = [\"payments\"]\n",
        config(addr)
    );
    let keel = Keel::start(&toml).await;
    fns.set_keel(&keel.url);
    inject(&keel, json!({"target": {"dependency": "payments"}, "kind": "error", "status": 418, "duration": "60s"}))
        .await;
    let (status, _, body) = post_json(&format!("{}/v1/functions/buyer/invoke", keel.url), "{}").await;
    assert_eq!(status, 200, "{body}");
    let call = &body["calls"][0];
    assert_eq!(call["status"], 418, "{body}");
    assert!(call["body"].as_str().unwrap().contains("chaos-injected"), "{body}");
    assert!(!fns.calls().iter().any(|c| c.headers.get("keel-function").is_none()), "the dependency was not called");

    // The store: admissions fail with 503 while the fault lasts, and work again once cleared.
    let store = inject(&keel, json!({"target": {"store": true}, "kind": "error", "duration": "60s"})).await;
    let (status, _, refused) = post_json(&format!("{}/v1/functions/g/invocations", keel.url), "{}").await;
    assert_eq!((status, refused["type"].as_str()), (503, Some("urn:keel:problem:store-unavailable")), "{refused}");
    clear(&keel, store["id"].as_str().unwrap()).await;
    let (status, _, accepted) = post_json(&format!("{}/v1/functions/g/invocations", keel.url), "{}").await;
    assert_eq!(status, 202, "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_fault_is_refused_naming_each_member() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&config(addr)).await;
    let bad = json!({"target": {"function": "nope"}, "kind": "crash", "rate": 2, "duration": "1y"});
    let (status, _, body) = post_json(&format!("{}/v1/chaos/faults", keel.url), &bad.to_string()).await;
    assert_eq!((status, body["type"].as_str()), (400, Some("urn:keel:problem:invalid-input")), "{body}");
    let paths: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/target/function", "/rate", "/duration"], "{body}");
    let (status, _, _) =
        request("DELETE", &format!("{}/v1/chaos/faults/01ARZ3NDEKTSV4RRFFQ69G5FAV", keel.url), &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_injected_through_one_postgres_node_applies_on_the_other() {
    let Some(database) = keel_store::pg_testkit::fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("keel.toml");
    std::fs::write(&config_path, format!("[storage]\nurl = \"{database}\"\n{}", config(addr))).unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(start_keel(&config_path, &dir.path().join(format!("node-{i}.log"))).await);
    }
    let fault = json!({"target": {"function": "g"}, "kind": "error", "status": 502, "duration": "60s"}).to_string();
    let (status, _, injected) = post_json(&format!("{}/v1/chaos/faults", nodes[0].0), &fault).await;
    assert_eq!(status, 201, "{injected}");
    // Node 1 reads the faults every second.
    eventually("node 1 applies the fault", Duration::from_secs(5), || async {
        let (status, _, _) = post_json(&format!("{}/v1/functions/g/invoke", nodes[1].0), "{}").await;
        (status == 502).then_some(())
    })
    .await;
    let (_, _, listed) = get_json(&format!("{}/v1/chaos/faults", nodes[1].0)).await;
    assert_eq!(listed["items"][0]["id"], injected["id"], "{listed}");
    let id = injected["id"].as_str().unwrap();
    let (status, _, _) = request("DELETE", &format!("{}/v1/chaos/faults/{id}", nodes[1].0), &[], "").await;
    assert_eq!(status, 204);
    eventually("node 0 lets calls through again", Duration::from_secs(5), || async {
        let (status, _, _) = post_json(&format!("{}/v1/functions/g/invoke", nodes[0].0), "{}").await;
        (status == 200).then_some(())
    })
    .await;
    assert!(!fns.calls().is_empty());
    for (_, mut child) in nodes {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// An experiment against a function that a fault fails half the time for 2 s: with retries the
/// hypothesis (every call answered 2xx, during the fault too) holds; with retries turned off it
/// does not — `keel chaos run` exits 1 and the report names the broken probe — and the report's
/// charts shade the fault's window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_holds_with_retries_and_fails_naming_its_probe_without_them() {
    let experiment = r#"
title = "f fails half its calls for 2 s"
duration = "5s"
warmup = "1s"
settle = "20s"

[[load]]
name = "calls"
function = "f"
rate = 20
payload = '{"n": {n}}'
idempotency_key = "call-{run}-{n}"

[[method]]
at = "1500ms"
fault = { target = { function = "f" }, kind = "error", status = 503, rate = 0.5, duration = "2s" }

[[hypothesis]]
name = "every call answered 2xx"
probe = "success_ratio"
load = "calls"
min = 1.0
during = true

[[hypothesis]]
probe = "lost"

[[hypothesis]]
probe = "settled"
function = "f"
min = 1.0
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("experiment.toml");
    std::fs::write(&file, experiment).unwrap();
    let (_fns, addr) = Functions::start().await;
    let run = |retries: u32, report: std::path::PathBuf| {
        let file = file.clone();
        async move {
            let keel = Keel::start(&format!(
                "[chaos]\nenabled = true\n[functions.f]\nurl = \"http://{addr}/ok\"\n\
                 retry = {{ max_attempts = {retries}, initial = \"10ms\", max = \"20ms\" }}\n"
            ))
            .await;
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
                .args(["chaos", "run"])
                .arg(&file)
                .arg("--report")
                .arg(&report)
                .env("KEEL_URL", &keel.url)
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).to_string();
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
            (output.status.code(), stdout, json)
        }
    };

    let held = dir.path().join("held");
    // 30 attempts at 50%: a call fails them all once in 10⁹ (with 8 it was 1 in 256 — a flaky test).
    let (code, stdout, report) = run(30, held.clone()).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.starts_with("HELD: f fails half its calls"), "{stdout}");
    assert_eq!(report["verdict"], "held");
    let windows: Vec<&str> =
        report["probes"].as_array().unwrap().iter().map(|p| p["window"].as_str().unwrap()).collect();
    assert_eq!(windows, ["before", "during", "after", "end", "end"], "{report}");
    let fault = &report["faults"][0];
    assert!((fault["end"].as_f64().unwrap() - fault["start"].as_f64().unwrap() - 2.0).abs() < 0.01, "{fault}");
    for chart in ["throughput.svg", "latency.svg", "errors.svg", "dlq.svg"] {
        let svg = std::fs::read_to_string(held.join(chart)).unwrap();
        assert!(svg.contains(r#"<rect class="fault""#), "{chart} does not shade the fault window");
    }
    let markdown = std::fs::read_to_string(held.join("report.md")).unwrap();
    assert!(markdown.contains("Verdict: **held**") && markdown.contains("![Throughput](throughput.svg)"), "{markdown}");

    let broken = dir.path().join("broken");
    let (code, stdout, report) = run(1, broken.clone()).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(report["verdict"], "not_held");
    let failed: Vec<(&str, &str)> = report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["held"] == false)
        .map(|p| (p["probe"].as_str().unwrap(), p["window"].as_str().unwrap()))
        .collect();
    assert!(failed.contains(&("every call answered 2xx", "during")), "{report}");
    assert!(failed.iter().any(|(p, _)| p.starts_with("f: ")), "some of f's invocations failed: {report}");
    assert!(stdout.contains("FAIL during every call answered 2xx"), "{stdout}");
    let markdown = std::fs::read_to_string(broken.join("report.md")).unwrap();
    assert!(markdown.contains("| every call answered 2xx | during | **broken** |"), "{markdown}");
}

/// A broken experiment file exits 2 naming file:line, before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_experiment_file_exits_2_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "title = \"x\"\nduration = \"10s\"\n\n[[load]]\nname = \"a\"\nfunction = \"f\"\nrate = 0\npayload = '{}'\n",
    )
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["chaos", "run"])
        .arg(&file)
        .env("KEEL_URL", "http://127.0.0.1:9")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:4:1: load \"a\": rate must be above 0", file.display())), "{stderr}");
    for example in ["email-outage", "payments-flaky", "instance-crash", "keel-restart"] {
        let path = format!("{}/../../examples/backend/experiments/{example}.toml", env!("CARGO_MANIFEST_DIR"));
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["chaos", "run", "--check", &path])
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{example}: {}", String::from_utf8_lossy(&output.stderr));
    }
}
