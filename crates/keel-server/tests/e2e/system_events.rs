//! Keel's operational events on `keel.system`, end to end: what a subscribed function receives
//! when an invocation goes dead, when a breaker opens and closes, under a burst of dead
//! invocations (the rate limit), and when the subscriber itself fails (no alert loop).

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::load::submit_many;
use crate::support::{eventually, get_json, parse_metrics, post_json, request, Call, Functions, Keel};

/// A system event as the subscriber received it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    ty: String,
    subject: String,
    source: String,
    data: Value,
}

fn received(call: &Call) -> Option<Received> {
    let header = |name: &str| call.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (header("keel-subscription") == "ops").then(|| Received {
        id: header("ce-id"),
        ty: header("ce-type"),
        subject: header("ce-subject"),
        source: header("ce-source"),
        data: serde_json::from_slice(&call.body).unwrap_or(Value::Null),
    })
}

/// Each system event the subscriber got (once per event, whatever its attempts).
fn events(fns: &Functions) -> Vec<Received> {
    let mut seen = std::collections::BTreeSet::new();
    fns.calls().iter().filter_map(received).filter(|e| seen.insert(e.id.clone())).collect()
}

fn of_type(fns: &Functions, ty: &str) -> Vec<Received> {
    events(fns).into_iter().filter(|e| e.ty == ty).collect()
}

/// A barrier: pauses `function` (which emits `keel.function.paused` after everything emitted
/// before), waits until that event reached the subscriber `notify` and every delivery to it is
/// over. Whatever was emitted before the pause has then been delivered too.
async fn settle(keel: &Keel, fns: &Functions, function: &str, notify: &str) {
    let (status, _, _) = post_json(&format!("{}/v1/functions/{function}/pause", keel.url), "").await;
    assert_eq!(status, 200);
    eventually("the pause reaches the subscriber", Duration::from_secs(20), || async {
        events(fns).iter().any(|e| e.ty == "keel.function.paused" && e.subject == function).then_some(())
    })
    .await;
    let list = format!("{}/v1/invocations?function={notify}&limit=1000", keel.url);
    eventually("every delivery to the subscriber is over", Duration::from_secs(20), || async {
        let (_, _, page) = get_json(&list).await;
        let items = page["items"].as_array()?;
        items.iter().all(|i| ["succeeded", "dead"].contains(&i["status"].as_str().unwrap_or(""))).then_some(())
    })
    .await;
}

fn subscriber(addr: std::net::SocketAddr, path: &str, retry: &str) -> String {
    format!(
        "[functions.notify-ops]\nurl = \"http://{addr}{path}\"\n{retry}\n\n\
         [[subscriptions]]\nname = \"ops\"\ntopic = \"keel.system\"\nfunction = \"notify-ops\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_invocation_makes_exactly_one_keel_invocation_dead_event_for_a_subscriber() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.doomed]\nurl = \"http://{addr}/status?code=400\"\n\n{}",
        subscriber(addr, "/ok", "")
    ))
    .await;
    let (status, _, body) = post_json(&format!("{}/v1/functions/doomed/invocations", keel.url), "{}").await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(keel.wait_final(&id, Duration::from_secs(10)).await["status"], "dead");
    let dead = eventually("the dead event reaches notify-ops", Duration::from_secs(10), || async {
        of_type(&fns, "keel.invocation.dead").into_iter().next()
    })
    .await;
    assert_eq!(dead.subject, "doomed");
    assert!(dead.source.starts_with("keel://node-"), "{}", dead.source);
    assert_eq!(dead.data["invocation_id"], id.as_str(), "{}", dead.data);
    assert_eq!(dead.data["function"], "doomed");
    assert_eq!(dead.data["subscription"], Value::Null);
    assert_eq!(dead.data["attempts"], 1);
    assert!(dead.data["error"].as_str().unwrap().contains("400"), "{}", dead.data);
    settle(&keel, &fns, "doomed", "notify-ops").await;
    assert_eq!(of_type(&fns, "keel.invocation.dead").len(), 1, "exactly one: {:?}", events(&fns));
    assert_eq!(of_type(&fns, "keel.node.joined").len(), 1, "the node said it started");
    // Only Keel publishes to keel.system.
    let (status, _, body) = request(
        "POST",
        &format!("{}/v1/topics/keel.system/events", keel.url),
        &[("content-type", "application/json")],
        Bytes::from_static(b"{\"fake\": true}"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("reserved-topic"), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opening_and_closing_makes_one_event_each() {
    let (fns, addr) = Functions::start().await;
    fns.set_down(true);
    let keel = Keel::start(&format!(
        "[functions.flaky]\nurl = \"http://{addr}/switch\"\nconcurrency = 1\n\
         retry = {{ max_attempts = 50, initial = \"10ms\", max = \"20ms\", jitter = \"none\" }}\n\
         breaker = {{ consecutive_failures = 3, open_for = \"300ms\", half_open_probes = 1 }}\n\n{}",
        subscriber(addr, "/ok", "")
    ))
    .await;
    let ids = submit_many(&keel.url, "flaky", 3).await;
    assert_eq!(ids.len(), 3);
    let opened = eventually("keel.breaker.opened arrives", Duration::from_secs(10), || async {
        of_type(&fns, "keel.breaker.opened").into_iter().next()
    })
    .await;
    assert_eq!((opened.subject.as_str(), &opened.data["function"]), ("flaky", &Value::from("flaky")));
    // Let a probe or two fail (the breaker reopens: nothing new to say), then recover.
    let probes = |fns: &Functions| fns.calls().iter().filter(|c| c.headers["keel-function"] == "flaky").count();
    eventually("a failed probe", Duration::from_secs(10), || async { (probes(&fns) >= 4).then_some(()) }).await;
    fns.set_down(false);
    for id in &ids {
        assert_eq!(keel.wait_final(id, Duration::from_secs(20)).await["status"], "succeeded");
    }
    let closed = eventually("keel.breaker.closed arrives", Duration::from_secs(10), || async {
        of_type(&fns, "keel.breaker.closed").into_iter().next()
    })
    .await;
    assert_eq!(closed.data["function"], "flaky", "{}", closed.data);
    settle(&keel, &fns, "flaky", "notify-ops").await;
    assert_eq!(of_type(&fns, "keel.breaker.opened").len(), 1, "{:?}", events(&fns));
    assert_eq!(of_type(&fns, "keel.breaker.closed").len(), 1, "{:?}", events(&fns));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_dead_invocations_in_a_burst_make_a_handful_of_events() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[server]\nsystem_events = {{ per_kind = 10, window = \"5s\" }}\n\
         [functions.doomed]\nurl = \"http://{addr}/status?code=400\"\nconcurrency = 32\n\n{}",
        subscriber(addr, "/ok", "")
    ))
    .await;
    let ids = submit_many(&keel.url, "doomed", 1000).await;
    assert_eq!(ids.len(), 1000);
    // Each dead invocation is in an event of its own or counted in a window's summary.
    let represented = |events: &[Received]| -> u64 {
        events.iter().map(|e| if e.data["summary"] == true { e.data["held"].as_u64().unwrap() } else { 1 }).sum()
    };
    let dead = eventually("all 1,000 reported, one by one or summed up", Duration::from_secs(120), || async {
        let dead = of_type(&fns, "keel.invocation.dead");
        (represented(&dead) >= 1000).then_some(dead)
    })
    .await;
    assert_eq!(represented(&dead), 1000, "none twice");
    let summaries: Vec<&Received> = dead.iter().filter(|e| e.data["summary"] == true).collect();
    assert!(!summaries.is_empty() && summaries.len() <= 4, "a summary a window: {summaries:?}");
    assert!(
        dead.len() <= 11 * summaries.len(),
        "at most 10 one by one and a summary a window: {} events for 1,000 dead invocations",
        dead.len()
    );
    let first = summaries[0];
    assert!(first.data["last"]["invocation_id"].is_string(), "a summary carries the last held event: {}", first.data);
    let (_, _, metrics) = request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await;
    let metrics = parse_metrics(std::str::from_utf8(&metrics).unwrap());
    assert!(metrics[r#"keel_system_events_suppressed_total{kind="keel.invocation.dead"}"#] >= 990.0 - 10.0 * 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subscriber_of_keel_system_makes_no_system_events_about_itself() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.doomed]\nurl = \"http://{addr}/status?code=400\"\n\n{}",
        subscriber(addr, "/status?code=500", &crate::support::fast_retry(2))
    ))
    .await;
    let dropped = || async {
        let (_, _, metrics) = request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await;
        let metrics = parse_metrics(std::str::from_utf8(&metrics).unwrap());
        metrics.get(r#"keel_system_events_dropped_total{reason="delivery-dead"}"#).copied().unwrap_or(0.0)
    };
    let (status, _, body) = post_json(&format!("{}/v1/functions/doomed/invocations", keel.url), "{}").await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(keel.wait_final(&id, Duration::from_secs(10)).await["status"], "dead");
    settle(&keel, &fns, "doomed", "notify-ops").await;
    // The subscriber failed every delivery: node joined, doomed's dead invocation, the pause.
    let got: Vec<(String, String)> = events(&fns).into_iter().map(|e| (e.ty, e.subject)).collect();
    assert_eq!(got.len(), 3, "no event about the subscriber's own dead deliveries: {got:?}");
    assert!(got.contains(&("keel.invocation.dead".into(), "doomed".into())), "{got:?}");
    let (_, _, dlq) = get_json(&format!("{}/v1/dlq?function=notify-ops", keel.url)).await;
    assert_eq!(dlq["items"].as_array().unwrap().len(), 3, "each delivery went dead: {dlq}");
    // Counted when the dead delivery's system event is dropped, just after the DLQ shows it. The
    // counter is the process's (every in-process node of this test binary shares one recorder),
    // and this is the only test in it whose `keel.system` deliveries die: so the count is this
    // test's alone. (A count taken at the start and compared raced the node-joined delivery,
    // which dies within ~50 ms of the start: on a loaded machine it was counted already.)
    crate::support::eventually("the three dropped system events counted instead", Duration::from_secs(5), || async {
        (dropped().await >= 3.0).then_some(())
    })
    .await;
    assert_eq!(dropped().await, 3.0, "each dead delivery of keel.system counted once");
}
