//! Workflows (sagas): a run whose steps all succeed; a dead third step compensated in reverse,
//! each compensation once; a dead compensation failing the run and its redrive finishing it;
//! cancel between attempts and during one; and SIGKILL of `keel serve` during 200 concurrent
//! runs, after which every run ends as its input says and no step ran as two invocations.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::start_keel;
use crate::support::{
    eventually, eventually_or_why, fast_retry, get_json, parse_metrics, post_json, request, Call, Functions, Keel,
};

/// reserve → charge → ship, where reserve and charge have compensations (`release`, `refund`),
/// every function on the test's function server at `paths` (by function name; `/ok` if absent).
fn checkout(addr: std::net::SocketAddr, paths: &[(&str, &str)], extra: &str) -> String {
    let path = |f: &str| paths.iter().find(|(n, _)| *n == f).map_or("/ok", |(_, p)| p).to_string();
    let mut text = String::new();
    for f in ["reserve", "charge", "ship", "release", "refund", "audit"] {
        text.push_str(&format!("[functions.{f}]\nurl = \"http://{addr}{}\"\n{}\n", path(f), fast_retry(2)));
    }
    text.push_str(
        "[topics.orders]\n[[subscriptions]]\nname = \"audit-orders\"\ntopic = \"orders\"\nfunction = \"audit\"\n\
         [workflows.checkout]\nnotify_topic = \"orders\"\nsteps = [\n\
           { name = \"reserve\", function = \"reserve\", compensate = \"release\" },\n\
           { name = \"charge\", function = \"charge\", compensate = \"refund\" },\n\
           { name = \"ship\", function = \"ship\" },\n]\n",
    );
    text.push_str(extra);
    text
}

async fn start_run(url: &str, input: &str) -> Value {
    let (status, _, run) = post_json(&format!("{url}/v1/workflows/checkout/runs"), input).await;
    assert_eq!(status, 202, "{run}");
    run
}

/// Polls run `id` until it is neither running nor compensating.
async fn ended(url: &str, id: &str, limit: Duration) -> Value {
    eventually_or_why(&format!("run {id} to end"), limit, || async {
        let (_, _, run) = get_json(&format!("{url}/v1/workflow-runs/{id}")).await;
        match run["status"].as_str() {
            Some("running" | "compensating") | None => Err(run.to_string()),
            Some(_) => Ok(run),
        }
    })
    .await
}

fn header<'a>(call: &'a Call, name: &str) -> &'a str {
    call.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Calls by the idempotency key they carried.
fn by_key(calls: &[Call]) -> BTreeMap<String, Vec<Call>> {
    let mut out: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    for call in calls {
        out.entry(header(call, "idempotency-key").to_string()).or_default().push(call.clone());
    }
    out
}

fn body(call: &Call) -> Value {
    serde_json::from_slice(&call.body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_step_saga_succeeds_each_step_fed_the_outputs_so_far_in_one_trace() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&checkout(addr, &[], "")).await;
    let (_, _, declared) = get_json(&format!("{}/v1/workflows", keel.url)).await;
    assert_eq!(declared["items"][0]["name"], "checkout", "{declared}");
    assert_eq!(
        declared["items"][0]["steps"][1],
        json!({"name": "charge", "function": "charge", "compensate": "refund"})
    );

    let start = |key: &'static str| {
        let url = format!("{}/v1/workflows/checkout/runs", keel.url);
        async move {
            request("POST", &url, &[("content-type", "application/json"), ("idempotency-key", key)], r#"{"sku":"A1"}"#)
                .await
        }
    };
    let (status, headers, first) = start("order-1").await;
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!((status, first["status"].as_str()), (202, Some("running")), "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/v1/workflow-runs/{id}").as_str());
    // The same key again starts nothing: the same run, replayed.
    let (status, headers, again) = start("order-1").await;
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert_eq!((status, again["id"].as_str()), (202, Some(id.as_str())), "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, reused) = request(
        "POST",
        &format!("{}/v1/workflows/checkout/runs", keel.url),
        &[("idempotency-key", "order-1")],
        r#"{"sku":"B2"}"#,
    )
    .await;
    assert_eq!(status, 422, "another input under the same key: {}", String::from_utf8_lossy(&reused));

    let run = ended(&keel.url, &id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["ended_at"].is_string() && run.get("failed_step").is_none(), "{run}");
    let steps = run["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["status"] == "succeeded" && s["invocation_id"].is_string()), "{run}");

    let calls = by_key(&fns.calls().into_iter().filter(|c| header(c, "keel-function") != "audit").collect::<Vec<_>>());
    let keys: Vec<&String> = calls.keys().collect();
    let expected: Vec<String> = ["charge", "reserve", "ship"].iter().map(|s| format!("{id}/{s}")).collect();
    assert_eq!(keys, expected.iter().collect::<Vec<_>>(), "one key per step: {{run_id}}/{{step}}");
    assert!(calls.values().all(|c| c.len() == 1), "each step called once");
    let reserve = &calls[&format!("{id}/reserve")][0];
    assert_eq!(body(reserve), json!({"sku": "A1"}), "the first step gets the run's input");
    let reserve_output = json!({"attempt": 1, "echo": r#"{"sku":"A1"}"#});
    assert_eq!(steps[0]["output"], reserve_output);
    let charge = &calls[&format!("{id}/charge")][0];
    assert_eq!(body(charge), json!({"input": {"sku": "A1"}, "steps": {"reserve": reserve_output}}));
    let ship = body(&calls[&format!("{id}/ship")][0]);
    assert_eq!(ship["steps"].as_object().unwrap().keys().collect::<Vec<_>>(), ["charge", "reserve"]);
    // Every step's attempt continues one trace: the run's.
    let traces: Vec<&str> =
        calls.values().map(|c| header(&c[0], "traceparent").split('-').nth(1).unwrap_or_default()).collect();
    assert!(traces[0].len() == 32 && traces.iter().all(|t| *t == traces[0]), "{traces:?}");
    // Each step's invocation says which run and step it is.
    let (_, _, inv) =
        get_json(&format!("{}/v1/invocations/{}", keel.url, steps[1]["invocation_id"].as_str().unwrap())).await;
    assert_eq!(inv["workflow"], json!({"run_id": id, "step": "charge", "compensation": false}), "{inv}");

    // The run's end is an event to its notify_topic, delivered to its subscriber.
    let audit = eventually("the run's event is delivered", Duration::from_secs(10), || async {
        fns.calls().into_iter().find(|c| header(c, "keel-function") == "audit")
    })
    .await;
    assert_eq!(header(&audit, "ce-type"), "keel.workflow.succeeded");
    assert_eq!(header(&audit, "ce-subject"), id);
    assert_eq!(body(&audit)["status"], "succeeded");

    let (_, _, page) = get_json(&format!("{}/v1/workflow-runs?workflow=checkout&status=succeeded", keel.url)).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (_, _, text) = request("GET", &format!("{}/metrics", keel.url), &[], "").await;
    let metrics = parse_metrics(std::str::from_utf8(&text).unwrap());
    // Labels in name order, as `parse_metrics` writes them. (Other tests' runs are of other
    // statuses: the metrics are the process's.)
    let ended = "{status=\"succeeded\",workflow=\"checkout\"}";
    // At least this run: the console's browser tests, in the same process, run checkouts too.
    assert!(metrics.get(&format!("keel_workflow_runs_total{ended}")).is_some_and(|n| *n >= 1.0), "{metrics:?}");
    assert!(metrics.get(&format!("keel_workflow_run_duration_seconds_count{ended}")).is_some_and(|n| *n >= 1.0));
    assert!(metrics.get("keel_workflow_runs_started_total{workflow=\"checkout\"}").is_some_and(|n| *n >= 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_third_step_compensates_the_second_then_the_first_once_each() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&checkout(addr, &[("ship", "/status?code=422")], "")).await;
    let id = start_run(&keel.url, r#"{"sku":"A1"}"#).await["id"].as_str().unwrap().to_string();
    let run = ended(&keel.url, &id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "compensated", "{run}");
    assert_eq!(run["failed_step"], "ship", "{run}");
    let statuses: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["compensated", "compensated", "failed"]);

    let calls = fns.calls();
    let undo: Vec<&Call> =
        calls.iter().filter(|c| ["refund", "release"].contains(&header(c, "keel-function"))).collect();
    let order: Vec<(&str, &str)> =
        undo.iter().map(|c| (header(c, "keel-function"), header(c, "idempotency-key"))).collect();
    let refund_key = format!("{id}/charge/compensate");
    let release_key = format!("{id}/reserve/compensate");
    assert_eq!(order, [("refund", refund_key.as_str()), ("release", release_key.as_str())], "reverse order, once each");
    let refund = body(undo[0]);
    assert_eq!(refund["failed_step"], "ship");
    assert_eq!(refund["input"], json!({"sku": "A1"}));
    assert!(refund["error"].as_str().unwrap().contains("422"), "{refund}");
    assert_eq!(refund["steps"].as_object().unwrap().keys().collect::<Vec<_>>(), ["charge", "reserve"]);
    // The dead step is in the DLQ like any other.
    let ship = run["steps"][2]["invocation_id"].as_str().unwrap();
    let (_, _, dead) = get_json(&format!("{}/v1/invocations/{ship}", keel.url)).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    // Not redriven: its run undid the steps before it, so shipping now would ship a refunded order.
    let (status, _, refused) = post_json(&format!("{}/v1/dlq/{ship}/redrive", keel.url), "").await;
    assert_eq!((status, refused["type"].as_str()), (409, Some("urn:keel:problem:invalid-state")), "{refused}");
    let audit = eventually("the run's event is delivered", Duration::from_secs(10), || async {
        fns.calls().into_iter().find(|c| header(c, "keel-function") == "audit")
    })
    .await;
    assert_eq!(header(&audit, "ce-type"), "keel.workflow.compensated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_compensation_fails_the_run_and_its_redrive_finishes_the_compensation() {
    let (fns, addr) = Functions::start().await;
    fns.set_down(true);
    let keel = Keel::start(&checkout(addr, &[("ship", "/status?code=422"), ("refund", "/switch")], "")).await;
    let id = start_run(&keel.url, "{}").await["id"].as_str().unwrap().to_string();
    let run = ended(&keel.url, &id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["steps"][1]["status"], "compensation_failed", "{run}");
    assert_eq!(run["steps"][0]["status"], "succeeded", "release waits for the refund: {run}");
    let refund = run["steps"][1]["compensation_id"].as_str().unwrap().to_string();
    let (_, _, dlq) = get_json(&format!("{}/v1/dlq?function=refund", keel.url)).await;
    assert_eq!(dlq["items"][0]["id"], refund.as_str(), "the dead compensation is in the DLQ: {dlq}");
    assert!(!fns.calls().iter().any(|c| header(c, "keel-function") == "release"));
    // A cancel of a run that is not running is refused.
    let (status, _, refused) = post_json(&format!("{}/v1/workflow-runs/{id}/cancel", keel.url), "").await;
    assert_eq!((status, refused["type"].as_str()), (409, Some("urn:keel:problem:run-not-running")), "{refused}");

    fns.set_down(false);
    let (status, _, redriven) = post_json(&format!("{}/v1/dlq/{refund}/redrive", keel.url), "").await;
    assert_eq!(status, 200, "{redriven}");
    let run = eventually_or_why("the run resumes and is compensated", Duration::from_secs(20), || async {
        let (_, _, run) = get_json(&format!("{}/v1/workflow-runs/{id}", keel.url)).await;
        (run["status"] == "compensated").then_some(run.clone()).ok_or(run.to_string())
    })
    .await;
    assert_eq!(run["steps"][1]["status"], "compensated", "{run}");
    let release: Vec<Call> = fns.calls().into_iter().filter(|c| header(c, "keel-function") == "release").collect();
    assert_eq!(release.len(), 1, "the compensation resumed where it stopped, once");
    let ends: Vec<String> = eventually("both of the run's events are delivered", Duration::from_secs(10), || async {
        let types: Vec<String> = fns
            .calls()
            .iter()
            .filter(|c| header(c, "keel-function") == "audit")
            .map(|c| header(c, "ce-type").to_string())
            .collect();
        (types.len() == 2).then_some(types)
    })
    .await;
    assert_eq!(ends, ["keel.workflow.failed", "keel.workflow.compensated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_between_attempts_compensates_at_once_and_during_one_after_it() {
    let (fns, addr) = Functions::start().await;
    // charge fails its first attempt and waits 30 s for the next: the run is cancelled between.
    let slow_retry = "[functions.charge-later]\nurl = \"http://ADDR/flaky?fail=1\"\n\
                      retry = { max_attempts = 3, initial = \"30s\", max = \"30s\", jitter = \"none\" }\n\
                      [functions.charge-slow]\nurl = \"http://ADDR/slow?ms=1500\"\n\
                      [workflows.between]\nsteps = [{ name = \"reserve\", function = \"reserve\", compensate = \"release\" },\
                      { name = \"charge\", function = \"charge-later\", compensate = \"refund\" }]\n\
                      [workflows.during]\nsteps = [{ name = \"reserve\", function = \"reserve\", compensate = \"release\" },\
                      { name = \"charge\", function = \"charge-slow\", compensate = \"refund\" }]\n"
        .replace("ADDR", &addr.to_string());
    let keel = Keel::start(&checkout(addr, &[], &slow_retry)).await;

    let (_, _, run) = post_json(&format!("{}/v1/workflows/between/runs", keel.url), "{}").await;
    let id = run["id"].as_str().unwrap().to_string();
    eventually("charge's first attempt fails", Duration::from_secs(10), || async {
        fns.calls().into_iter().find(|c| header(c, "keel-function") == "charge-later" && c.status == 503)
    })
    .await;
    let charge = eventually_or_why("charge waits for its retry", Duration::from_secs(10), || async {
        let (_, _, run) = get_json(&format!("{}/v1/workflow-runs/{id}", keel.url)).await;
        let inv = run["steps"][1]["invocation_id"].as_str().ok_or(run.to_string())?.to_string();
        let (_, _, got) = get_json(&format!("{}/v1/invocations/{inv}", keel.url)).await;
        (got["status"] == "retrying").then_some(inv).ok_or(got.to_string())
    })
    .await;
    // Cancelling the step's invocation alone is refused: the run would wait for it forever.
    let (status, _, refused) = post_json(&format!("{}/v1/invocations/{charge}/cancel", keel.url), "").await;
    assert_eq!((status, refused["type"].as_str()), (409, Some("urn:keel:problem:workflow-step")), "{refused}");
    let (status, _, cancelled) = post_json(&format!("{}/v1/workflow-runs/{id}/cancel", keel.url), "").await;
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(cancelled["steps"][1]["status"], "cancelled", "{cancelled}");
    let run = ended(&keel.url, &id, Duration::from_secs(10)).await;
    assert_eq!((run["status"].as_str(), run["failed_step"].as_str()), (Some("compensated"), Some("charge")), "{run}");
    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{charge}", keel.url)).await;
    assert_eq!(inv["status"], "cancelled", "{inv}");
    let undone: Vec<String> = fns.calls().iter().map(|c| header(c, "idempotency-key").to_string()).collect();
    assert!(undone.contains(&format!("{id}/reserve/compensate")), "{undone:?}");
    assert!(!undone.contains(&format!("{id}/charge/compensate")), "a cancelled step did nothing to undo");

    let (_, _, run) = post_json(&format!("{}/v1/workflows/during/runs", keel.url), "{}").await;
    let id = run["id"].as_str().unwrap().to_string();
    eventually("charge's attempt is under way", Duration::from_secs(10), || async {
        fns.calls().into_iter().find(|c| header(c, "keel-function") == "charge-slow")
    })
    .await;
    let (status, _, marked) = post_json(&format!("{}/v1/workflow-runs/{id}/cancel", keel.url), "").await;
    assert_eq!(status, 202, "{marked}");
    assert_eq!((marked["status"].as_str(), marked["cancel_requested"].as_bool()), (Some("running"), Some(true)));
    let run = ended(&keel.url, &id, Duration::from_secs(15)).await;
    assert_eq!(run["status"], "compensated", "{run}");
    let order: Vec<String> = fns
        .calls()
        .iter()
        .map(|c| header(c, "idempotency-key").to_string())
        .filter(|k| k.starts_with(&id) && k.ends_with("/compensate"))
        .collect();
    assert_eq!(
        order,
        [format!("{id}/charge/compensate"), format!("{id}/reserve/compensate")],
        "the step that finished is undone too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_200_concurrent_runs_loses_no_run_and_starts_no_step_twice() {
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let db = dir.path().join("keel.db");
    // Steps take a little while, so the kill finds runs at every stage.
    let toml = checkout(addr, &[("reserve", "/slow?ms=50"), ("charge", "/slow?ms=100"), ("ship", "/saga?ms=50")], "")
        .replace(&fast_retry(2), "retry = { max_attempts = 20, initial = \"10ms\", max = \"200ms\" }");
    std::fs::write(&config, format!("[storage]\nurl = \"sqlite://{}\"\n{toml}", db.display())).unwrap();
    let log = dir.path().join("keel.log");
    let start = || start_keel(&config, &log);
    let (url, mut child) = start().await;
    let mut runs: Vec<(String, bool)> = Vec::new();
    let starts: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let fail = i % 4 == 0;
                let (status, _, run) =
                    post_json(&format!("{url}/v1/workflows/checkout/runs"), &json!({"n": i, "fail": fail}).to_string())
                        .await;
                assert_eq!(status, 202, "{run}");
                (run["id"].as_str().unwrap().to_string(), fail)
            })
        })
        .collect();
    for s in starts {
        runs.push(s.await.unwrap());
    }
    // Killed while steps are running and runs are between them.
    eventually("some runs are under way", Duration::from_secs(20), || async {
        (fns.calls().iter().filter(|c| header(c, "keel-function") == "charge").count() >= 40).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let shipped = fns.calls().iter().filter(|c| header(c, "keel-function") == "ship").count();
    assert!(shipped < 200, "the kill came after every run had reached its last step ({shipped})");
    let (url, mut child) = start().await;

    let mut outcome: HashMap<String, usize> = HashMap::new();
    for (id, fail) in &runs {
        let run = ended(&url, id, Duration::from_secs(90)).await;
        let expected = if *fail { "compensated" } else { "succeeded" };
        assert_eq!(run["status"], expected, "{run}");
        *outcome.entry(expected.to_string()).or_default() += 1;
    }
    assert_eq!((outcome["succeeded"], outcome["compensated"]), (150, 50));
    // Each step (and compensation) ran as one invocation: every call with its key carried the
    // same invocation id, and at least one of them succeeded (or, for a failing ship, failed).
    let calls = by_key(&fns.calls().into_iter().filter(|c| header(c, "keel-function") != "audit").collect::<Vec<_>>());
    for (id, fail) in &runs {
        let mut expected = vec![format!("{id}/reserve"), format!("{id}/charge"), format!("{id}/ship")];
        if *fail {
            expected.extend([format!("{id}/charge/compensate"), format!("{id}/reserve/compensate")]);
        }
        for key in &expected {
            let seen = calls.get(key).unwrap_or_else(|| panic!("step {key} never ran"));
            let invocations: std::collections::BTreeSet<&str> =
                seen.iter().map(|c| header(c, "keel-invocation-id")).collect();
            assert_eq!(invocations.len(), 1, "step {key} ran as {invocations:?}");
            let ship_fails = *fail && key.ends_with("/ship");
            assert!(
                seen.iter().any(|c| (c.status < 300) != ship_fails),
                "step {key}: {:?}",
                seen.iter().map(|c| c.status).collect::<Vec<_>>()
            );
        }
        let extra: Vec<&String> =
            calls.keys().filter(|k| k.starts_with(id.as_str()) && !expected.contains(k)).collect();
        assert!(extra.is_empty(), "run {id} ran steps it should not have: {extra:?}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_started_on_one_postgres_node_are_carried_by_both() {
    let Some(database) = keel_store::pg_testkit::fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let toml = checkout(addr, &[("ship", "/saga")], "");
    std::fs::write(&config, format!("[storage]\nurl = \"{database}\"\n{toml}")).unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(start_keel(&config, &dir.path().join(format!("node-{i}.log"))).await);
    }
    let mut runs = Vec::new();
    for i in 0..20 {
        let run = start_run(&nodes[i % 2].0, &json!({"n": i, "fail": i % 5 == 0}).to_string()).await;
        runs.push((run["id"].as_str().unwrap().to_string(), i % 5 == 0));
    }
    for (id, fail) in &runs {
        let run = ended(&nodes[1].0, id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], if *fail { "compensated" } else { "succeeded" }, "{run}");
    }
    let calls = by_key(&fns.calls().into_iter().filter(|c| header(c, "keel-function") != "audit").collect::<Vec<_>>());
    let per_run = |id: &str| calls.keys().filter(|k| k.starts_with(id)).count();
    for (id, fail) in &runs {
        assert_eq!(per_run(id), if *fail { 5 } else { 3 }, "run {id}: {:?}", calls.keys().collect::<Vec<_>>());
    }
    assert!(calls.values().all(|c| c.len() == 1), "no step called twice");
    for (_, mut child) in nodes {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
