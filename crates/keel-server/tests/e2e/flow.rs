//! Flow control from outside: shedding under 10× overload (answers at once, no 504), a rate
//! limit spacing async attempts, a breaker that opens after exactly N failures and holds work
//! without spending attempts, per-key concurrency that keeps one tenant's flood from starving
//! another, a queue cap, the node's in-flight request cap, and pause/resume that survives a
//! restart. (Pause seen by a second node on PostgreSQL: `cluster/mod.rs`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::support::start_keel;
use crate::support::{eventually, get_json, parse_metrics, post_json, request, Functions, Keel};

/// One sync call's answer, as its caller saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    /// The problem type, when it is one.
    kind: String,
    took: Duration,
    /// `keel-invocation-id`: an admitted call's invocation.
    invocation: Option<String>,
}

/// `n` sync calls to `url`, one every `every`, each answered with what its caller saw.
async fn sync_calls(url: &str, n: usize, every: Duration) -> Vec<Answer> {
    let mut calls = Vec::new();
    for _ in 0..n {
        let url = url.to_string();
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let (status, headers, body) = request("POST", &url, &[], Bytes::new()).await;
            let took = started.elapsed();
            let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
            let kind = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["type"].as_str().map(String::from));
            Answer {
                status,
                retry_after: header("retry-after"),
                kind: kind.unwrap_or_default(),
                took,
                invocation: header("keel-invocation-id"),
            }
        }));
        tokio::time::sleep(every).await;
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

/// An RFC 3339 time from Keel's API, in milliseconds since the epoch.
fn ms(rfc3339: &Value) -> u128 {
    let at = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_overload_is_shed_at_once_with_retry_after_and_never_504() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.slow]\nurl = \"http://{addr}/slow?ms=200\"\nconcurrency = 4\nmax_waiting = 2\n"
    ))
    .await;
    let invoke = format!("{}/v1/functions/slow/invoke", keel.url);
    // Unloaded, one caller at a time: Keel learns how long an attempt takes (the expected wait
    // it sheds by).
    for _ in 0..10 {
        assert_eq!(request("POST", &invoke, &[], Bytes::new()).await.0, 200);
    }
    // 10×: capacity is 4 calls per 200 ms (20/s); 400 callers arrive over 2 s (200/s). Meanwhile
    // the function's view is read every 25 ms: the most callers waiting and attempts in flight.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (view, watching) = (format!("{}/v1/functions/slow", keel.url), watching.clone());
        async move {
            let (mut waiting, mut in_flight) = (0, 0);
            while watching.load(Ordering::SeqCst) {
                let (_, _, f) = get_json(&view).await;
                waiting = waiting.max(f["waiting"].as_u64().unwrap());
                in_flight = in_flight.max(f["in_flight"].as_u64().unwrap());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (waiting, in_flight)
        }
    });
    let answers = sync_calls(&invoke, 400, Duration::from_millis(5)).await;
    watching.store(false, Ordering::SeqCst);
    let (most_waiting, most_in_flight) = watcher.await.unwrap();
    let admitted: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    let shed: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    let others: Vec<_> = answers.iter().filter(|a| a.status != 200 && a.status != 503).collect();
    assert!(others.is_empty(), "every answer is 200 or 503 (no 504): {others:?}");
    assert!(shed.len() >= 200, "most of a 10× overload is shed: {} of 400", shed.len());
    assert!(admitted.len() >= 40, "the function still serves at capacity: {} admitted", admitted.len());
    for a in &shed {
        assert_eq!(a.kind, "urn:keel:problem:overloaded");
        let retry_after = a.retry_after.as_deref();
        assert!(retry_after.is_some_and(|r| r.parse::<u64>().unwrap() >= 1), "Retry-After on a shed call");
        // Answered at once: well under one attempt (200 ms), never after waiting for a slot.
        assert!(a.took < Duration::from_millis(150), "a shed call waited {:?}", a.took);
    }
    // The waiting room never held more than max_waiting, and it was used; the slots never more
    // than concurrency.
    assert!((1..=2).contains(&most_waiting), "callers waited, never more than max_waiting: {most_waiting}");
    assert!(most_in_flight <= 4, "at most concurrency attempts in flight: {most_in_flight}");
    // Admitted calls keep their latency: a caller admitted to wait finds at most one caller
    // waiting before it (max_waiting = 2), so it waits for about one attempt to end — never for
    // a backlog. Counted, not timed: by Keel's own record of each admitted call, how many other
    // attempts started between its admission and its own attempt. Waiting in turn allows the
    // one waiting before it; a caller that saw a slot free and lost it to another is not counted
    // among the waiting, so up to `concurrency` more can go first. A backlog served in turn would
    // put dozens before the later calls (400 callers at 20 a second). Seen: at most 1 here, 2 with
    // four busy loops beside the test; 347 with `max_waiting = 2000`. (This was a wall-time
    // bound, p99 within 2× of unloaded plus 100 ms; with the 400 callers, the function and Keel
    // on two cores shared with the other tests, it failed at 545 ms against 514.)
    let mut spans = Vec::new();
    for a in &admitted {
        let id = a.invocation.as_deref().expect("an admitted call names its invocation");
        let inv = keel.wait_final(id, Duration::from_secs(10)).await;
        assert_eq!(inv["attempt_count"], 1, "{inv}");
        spans.push((ms(&inv["created_at"]), ms(&inv["attempts"][0]["started_at"])));
    }
    for (i, (admitted_at, started_at)) in spans.iter().enumerate() {
        let before =
            spans.iter().enumerate().filter(|(j, (_, s))| *j != i && admitted_at < s && s < started_at).count();
        assert!(before <= 2 + 4, "{before} attempts started while one admitted call waited");
    }
    let (_, _, f) = get_json(&format!("{}/v1/functions/slow", keel.url)).await;
    assert_eq!((f["waiting"].as_u64(), f["max_waiting"].as_u64()), (Some(0), Some(2)), "{f}");
    let (_, _, metrics) = request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await;
    let metrics = parse_metrics(std::str::from_utf8(&metrics).unwrap());
    let counted = metrics[r#"keel_shed_total{function="slow",reason="overloaded"}"#];
    assert_eq!(counted as usize, shed.len(), "every shed call is counted by reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spaces_async_attempts_without_spending_attempts() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.limited]\nurl = \"http://{addr}/ok\"\nconcurrency = 64\n\
         rate_limit = {{ per_second = 20, burst = 5 }}\n"
    ))
    .await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let (status, _, body) = post_json(&format!("{}/v1/functions/limited/invocations", keel.url), "{}").await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let inv = keel.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(inv["status"], "succeeded", "{inv}");
        assert_eq!(inv["attempt_count"], 1, "waiting for a turn uses no attempt: {inv}");
    }
    let mut starts: Vec<Instant> = fns.calls().iter().map(|c| c.at).collect();
    starts.sort();
    assert_eq!(starts.len(), 200);
    // GCRA: any run of calls from i to j fits within burst + rate × (t_j − t_i), give or take one
    // for millisecond rounding. The times are when the calls reached the function, not when Keel
    // granted their turns: on a loaded machine a call may arrive up to JITTER late, which can
    // bring the next turn's call within the window (seen: 8 calls in 97 ms at 20/s + 5; and, with
    // the whole suite running, more than 100 ms late). A limiter that did not space calls would
    // still fail here (200 calls within a second), and one that ran fast fails the total below.
    const JITTER: f64 = 0.25;
    for i in 0..starts.len() {
        for j in i..starts.len() {
            let span = starts[j].duration_since(starts[i]).as_secs_f64();
            let allowed = 5.0 + 20.0 * (span + JITTER) + 1.0;
            assert!((j - i + 1) as f64 <= allowed, "{} calls in {span:.3}s: faster than 20/s + 5", j - i + 1);
        }
    }
    let took = starts[199].duration_since(starts[0]).as_secs_f64();
    assert!(took >= (200.0 - 5.0) / 20.0 - 0.5, "200 calls at 20/s take about 10 s, not {took:.2}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_after_exactly_n_failures_holds_work_and_closes_after_a_probe() {
    let (fns, addr) = Functions::start().await;
    fns.set_down(true);
    let keel = Keel::start(&format!(
        "[functions.flaky]\nurl = \"http://{addr}/switch\"\nconcurrency = 1\n\
         retry = {{ max_attempts = 20, initial = \"10ms\", max = \"20ms\", jitter = \"none\" }}\n\
         breaker = {{ consecutive_failures = 5, open_for = \"1s\", half_open_probes = 1 }}\n"
    ))
    .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (status, _, body) = post_json(&format!("{}/v1/functions/flaky/invocations", keel.url), "{}").await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let function = format!("{}/v1/functions/flaky", keel.url);
    let opened = eventually("the breaker opens", Duration::from_secs(10), || async {
        let (_, _, f) = get_json(&function).await;
        (f["breaker"]["state"] == "open").then_some(f)
    })
    .await;
    assert_eq!(opened["breaker"]["failures"], 5, "{opened}");
    assert_eq!(fns.calls().len(), 5, "exactly 5 failures reached the function before it opened");
    // While open: sync calls are refused with the breaker's answer.
    let (status, headers, body) = request("POST", &format!("{function}/invoke"), &[], Bytes::new()).await;
    assert_eq!(status, 503);
    assert_eq!(headers["keel-breaker"], "open");
    assert!(headers.contains_key("retry-after"));
    assert!(String::from_utf8_lossy(&body).contains("urn:keel:problem:breaker-open"));
    // The first probe (after open_for) still fails: it opens again, and no call gets through
    // for another open_for.
    eventually("a first probe", Duration::from_secs(5), || async { (fns.calls().len() >= 6).then_some(()) }).await;
    fns.set_down(false);
    for id in &ids {
        let inv = keel.wait_final(id, Duration::from_secs(20)).await;
        assert_eq!(inv["status"], "succeeded", "held through the outage, not dead: {inv}");
    }
    let calls = fns.calls();
    let at = |i: usize| calls[i].at;
    assert!(at(5).duration_since(at(4)) >= Duration::from_millis(950), "no call while open (first probe)");
    assert!(at(6).duration_since(at(5)) >= Duration::from_millis(950), "no call while open again (second probe)");
    assert_eq!(calls.iter().filter(|c| c.status == 503).count(), 6, "5 failures and one failed probe, no more");
    let (_, _, f) = get_json(&function).await;
    assert_eq!(f["breaker"]["state"], "closed", "{f}");
    let (_, _, metrics) = request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await;
    let metrics = parse_metrics(std::str::from_utf8(&metrics).unwrap());
    let moved = |to: &str| metrics[&format!(r#"keel_breaker_transitions_total{{target="flaky",to="{to}"}}"#)];
    assert_eq!((moved("open"), moved("half-open"), moved("closed")), (2.0, 2.0, 1.0));
    assert_eq!(metrics[r#"keel_breaker_state{target="flaky"}"#], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_flood_does_not_hold_up_another_tenant() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.tenanted]\nurl = \"http://{addr}/slow?ms=300\"\nconcurrency = 4\n\
         concurrency_key = {{ header = \"x-tenant-id\", limit = 2 }}\n"
    ))
    .await;
    let enqueue = |tenant: &'static str| {
        let url = format!("{}/v1/functions/tenanted/invocations", keel.url);
        async move {
            let (status, _, body) = request("POST", &url, &[("x-tenant-id", tenant)], Bytes::new()).await;
            assert_eq!(status, 202);
            serde_json::from_slice::<Value>(&body).unwrap()["id"].as_str().unwrap().to_string()
        }
    };
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(enqueue("noisy").await);
    }
    let sent = Instant::now();
    let mut quiet = Vec::new();
    for _ in 0..2 {
        quiet.push(enqueue("quiet").await);
    }
    for id in &quiet {
        let inv = keel.wait_final(id, Duration::from_secs(10)).await;
        assert_eq!(inv["status"], "succeeded");
    }
    let waited = sent.elapsed();
    // The flood takes 40 / 2 × 300 ms = 6 s; the quiet tenant's two run alongside at once.
    assert!(waited < Duration::from_millis(1500), "the quiet tenant waited {waited:?} behind the flood");
    for id in &flood {
        assert_eq!(keel.wait_final(id, Duration::from_secs(30)).await["status"], "succeeded");
    }
    // Never more than 2 of the noisy tenant's attempts in flight at once (each lasts 300 ms).
    let noisy_ids: std::collections::HashSet<&String> = flood.iter().collect();
    let starts: Vec<Instant> =
        fns.calls().iter().filter(|c| noisy_ids.contains(&c.invocation_id)).map(|c| c.at).collect();
    assert_eq!(starts.len(), 40);
    for s in &starts {
        let overlapping =
            starts.iter().filter(|t| **t <= *s && s.duration_since(**t) < Duration::from_millis(290)).count();
        assert!(overlapping <= 2, "{overlapping} attempts of one key in flight at once");
    }
    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{}", keel.url, flood[0])).await;
    assert_eq!(inv["concurrency_key"], "noisy", "the key is stored with the invocation: {inv}");
}

/// An admission that finds every slot taken by calls (alone, in a bulk admission, or an event's
/// delivery) is stored `running`, leased by the node that admitted it, and waits there for a slot
/// rather than going through the store's queue and the dispatcher. When none frees within a
/// second it goes back to the queue (`queued`, no attempt counted) and runs once the dispatcher
/// can start it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_with_every_slot_busy_waits_a_second_for_one_then_goes_back_to_the_queue() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.busy]\nurl = \"http://{addr}/hold\"\nconcurrency = 3\ntimeout = \"60s\"\n\
         [topics.t]\n[[subscriptions]]\nname = \"s\"\ntopic = \"t\"\nfunction = \"busy\"\n"
    ))
    .await;
    let invocations = format!("{}/v1/functions/busy/invocations", keel.url);
    let submit = || async {
        let (status, _, body) = post_json(&invocations, "{}").await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_string()
    };
    let mut holding = Vec::new();
    for _ in 0..3 {
        holding.push(submit().await);
    }
    eventually("three calls at the function, every slot", Duration::from_secs(10), || async {
        (fns.calls().len() == 3).then_some(())
    })
    .await;
    // One of each kind of admission, each with room (three) and no slot.
    let alone = submit().await;
    let (status, _, bulk) =
        request("POST", &invocations, &[("content-type", "application/vnd.keel.batch+json")], "[{}]").await;
    assert_eq!(status, 202);
    let bulk = serde_json::from_slice::<Value>(&bulk).unwrap()["ids"][0].as_str().unwrap().to_string();
    let event = r#"{"specversion":"1.0","id":"e-1","source":"/test","type":"t"}"#;
    let url = format!("{}/v1/topics/t/events", keel.url);
    let (status, _, published) =
        request("POST", &url, &[("content-type", "application/cloudevents+json")], event).await;
    assert_eq!(status, 202);
    let event = serde_json::from_slice::<Value>(&published).unwrap()["ids"][0].as_str().unwrap().to_string();
    let (_, _, event) = get_json(&format!("{}/v1/events/{event}", keel.url)).await;
    let delivery = event["deliveries"][0]["invocation_id"].as_str().unwrap().to_string();
    let waiting = [alone, bulk, delivery];
    let get = |id: String| {
        let url = format!("{}/v1/invocations/{id}", keel.url);
        async move { get_json(&url).await.2 }
    };
    // Waiting on the node for a slot: `running`, leased by it (these requests come well within
    // the second each may wait).
    for id in &waiting {
        let inv = get(id.clone()).await;
        assert_eq!((inv["status"].as_str(), inv["attempt_count"].as_u64()), (Some("running"), Some(0)), "{inv}");
    }
    for id in &waiting {
        let back = eventually("back in the queue", Duration::from_secs(10), || async {
            let inv = get(id.clone()).await;
            (inv["status"] != "running").then_some(inv)
        })
        .await;
        assert_eq!((back["status"].as_str(), back["attempt_count"].as_u64()), (Some("queued"), Some(0)), "{back}");
        assert!(back["error"].is_null(), "nothing failed: {back}");
    }
    assert_eq!(fns.calls().len(), 3, "none of them reached the function while the first three held it");
    fns.release();
    for id in holding.iter().chain(&waiting) {
        let done = keel.wait_final(id, Duration::from_secs(10)).await;
        assert_eq!((done["status"].as_str(), done["attempt_count"].as_u64()), (Some("succeeded"), Some(1)), "{done}");
    }
    assert_eq!(fns.calls().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_429_and_loses_nothing_it_accepted() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.capped]\nurl = \"http://{addr}/ok\"\nmax_queued = 5\n")).await;
    let function = format!("{}/v1/functions/capped", keel.url);
    assert_eq!(post_json(&format!("{function}/pause"), "").await.0, 200);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (status, _, body) = post_json(&format!("{function}/invocations"), "{}").await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let (status, headers, body) = post_json(&format!("{function}/invocations"), "{}").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["type"], "urn:keel:problem:queue-full");
    assert!(headers.contains_key("retry-after"));
    let (_, _, f) = get_json(&function).await;
    assert_eq!((f["queued"].as_u64(), f["paused"].as_bool()), (Some(5), Some(true)), "{f}");
    assert_eq!(post_json(&format!("{function}/resume"), "").await.0, 200);
    for id in &ids {
        assert_eq!(keel.wait_final(id, Duration::from_secs(10)).await["status"], "succeeded");
    }
    assert_eq!(fns.calls().len(), 5);
    // Once the store's count shows the queue drained, admission opens again.
    eventually("admission after the queue drained", Duration::from_secs(5), || async {
        let (status, _, _) = post_json(&format!("{function}/invocations"), "{}").await;
        (status == 202).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_inflight_requests_a_node_answers_503_at_once_but_still_reports_health() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[server]\nmax_inflight_requests = 2\n[functions.slow]\nurl = \"http://{addr}/hold\"\ntimeout = \"60s\"\n"
    ))
    .await;
    let invoke = format!("{}/v1/functions/slow/invoke", keel.url);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let invoke = invoke.clone();
            tokio::spawn(async move { request("POST", &invoke, &[], Bytes::new()).await.0 })
        })
        .collect();
    // The calls are held by the function until released: once both have reached it, both are
    // in flight in Keel, however long the machine took to get them there.
    eventually("both calls at the function", Duration::from_secs(30), || async {
        (fns.calls().len() == 2).then_some(())
    })
    .await;
    let f = format!("{}/v1/functions/slow", keel.url);
    // A third request is refused at once.
    let (status, headers, body) = get_json(&f).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("urn:keel:problem:overloaded")), "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(request("GET", &format!("{}/healthz", keel.url), &[], Bytes::new()).await.0, 200);
    assert_eq!(request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await.0, 200);
    fns.release();
    for call in busy {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(get_json(&f).await.0, 200, "served again once the calls ended");
}

/// The real binary, SIGKILLed while paused and started again on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_work_across_a_restart_until_resumed() {
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let db = dir.path().join("keel.db");
    std::fs::write(
        &config,
        format!("[storage]\nurl = \"sqlite://{}\"\n[functions.held]\nurl = \"http://{addr}/ok\"\n", db.display()),
    )
    .unwrap();
    let log = dir.path().join("keel.log");
    let start = || start_keel(&config, &log);
    let (url, mut child) = start().await;
    let function = format!("{url}/v1/functions/held");
    let (status, _, f) = post_json(&format!("{function}/pause"), "").await;
    assert_eq!((status, f["paused"].as_bool()), (200, Some(true)), "{f}");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, _, body) = post_json(&format!("{function}/invocations"), "{}").await;
        assert_eq!(status, 202, "async work is still accepted while paused");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    let (status, headers, body) = post_json(&format!("{function}/invoke"), "{}").await;
    assert_eq!((status, body["type"].as_str()), (503, Some("urn:keel:problem:function-paused")), "{body}");
    assert!(!headers.contains_key("retry-after"), "a pause lasts until resumed: no time to tell");
    child.kill().unwrap();
    child.wait().unwrap();
    let (url, mut child) = start().await;
    let function = format!("{url}/v1/functions/held");
    let (_, _, f) = get_json(&function).await;
    assert_eq!((f["paused"].as_bool(), f["queued"].as_u64()), (Some(true), Some(3)), "still paused: {f}");
    assert_eq!(post_json(&format!("{function}/invoke"), "{}").await.0, 503);
    assert!(fns.calls().is_empty(), "no attempt started while paused");
    let (status, _, f) = post_json(&format!("{function}/resume"), "").await;
    assert_eq!((status, f["paused"].as_bool()), (200, Some(false)));
    for id in &ids {
        let inv = eventually("the held work runs once resumed", Duration::from_secs(10), || async {
            let (_, _, inv) = get_json(&format!("{url}/v1/invocations/{id}")).await;
            (inv["status"] == "succeeded").then_some(inv)
        })
        .await;
        assert_eq!(inv["attempt_count"], 1);
    }
    assert_eq!(post_json(&format!("{function}/invoke"), "{}").await.0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
