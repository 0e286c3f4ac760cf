//! Schedules: an `every = "1s"` schedule makes one invocation per tick across a SIGKILL and
//! restart of the real binary (SQLite) and across two nodes on one PostgreSQL; pause and resume
//! through the API; a schedule publishing to a topic; and `keel-delay` on publish.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use keel_store::pg_testkit::fresh_database;
use serde_json::Value;

use crate::support::start_keel;
use crate::support::{eventually, get_json, parse_metrics, post_json, request, Functions, Keel};

/// The invocations of `function`, as the API lists them (newest first).
async fn invocations_of(url: &str, function: &str) -> Vec<Value> {
    let (status, _, page) = get_json(&format!("{url}/v1/invocations?function={function}&limit=1000")).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Checks that every invocation carries a distinct tick key of `schedule` (`{schedule}/{RFC 3339
/// whole second}Z`): one invocation per tick, none twice. Returns the ticks.
fn one_per_tick(invocations: &[Value], schedule: &str) -> BTreeSet<String> {
    let keys: Vec<String> =
        invocations.iter().map(|i| i["idempotency_key"].as_str().unwrap_or_default().to_string()).collect();
    let ticks: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(ticks.len(), keys.len(), "a tick made more than one invocation: {keys:?}");
    for key in &keys {
        let tick = key.strip_prefix(&format!("{schedule}/")).unwrap_or_else(|| panic!("not a tick key: {key:?}"));
        assert!(humantime::parse_rfc3339(tick).is_ok() && tick.ends_with('Z') && !tick.contains('.'), "{key:?}");
    }
    ticks
}

fn every_second(addr: std::net::SocketAddr) -> String {
    format!(
        "[functions.tick]\nurl = \"http://{addr}/ok\"\n\n\
         [schedules.every-second]\nevery = \"1s\"\nfunction = \"tick\"\npayload = {{ kind = \"test\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_fires_once_per_tick_across_a_restart() {
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    let db = dir.path().join("keel.db");
    std::fs::write(&config, format!("[storage]\nurl = \"sqlite://{}\"\n{}", db.display(), every_second(addr))).unwrap();
    let log = dir.path().join("keel.log");
    let start = || start_keel(&config, &log);
    let (url, mut child) = start().await;
    eventually("three ticks fire", Duration::from_secs(15), || async { (fns.successes().len() >= 3).then_some(()) })
        .await;
    let (_, _, schedule) = get_json(&format!("{url}/v1/schedules/every-second")).await;
    assert_eq!(schedule["every"], "1s", "{schedule}");
    assert_eq!(schedule["target"]["function"], "tick", "{schedule}");
    assert!(schedule["last_fire"].is_string() && schedule["next_fire"].is_string(), "{schedule}");

    child.kill().unwrap();
    child.wait().unwrap();
    let before = fns.successes().len();
    let (url, mut child) = start().await;
    eventually("three more ticks fire after the restart", Duration::from_secs(15), || async {
        (fns.successes().len() >= before + 3).then_some(())
    })
    .await;
    let invocations = invocations_of(&url, "tick").await;
    let ticks = one_per_tick(&invocations, "every-second");
    assert!(ticks.len() >= before + 3, "{ticks:?}");
    // Each invocation got the schedule's payload, and the function was called once for it.
    let calls = fns.calls();
    assert!(calls.iter().all(|c| c.body[..] == br#"{"kind":"test"}"#[..]), "payloads: {:?}", calls[0].body);
    // Each invocation was called once — but for the one whose call may have been under way when
    // keel was SIGKILLed: its outcome was never recorded, so it runs again (at least once).
    let twice = fns.successes().values().filter(|n| **n > 1).count();
    assert!(fns.successes().values().all(|n| *n <= 2) && twice <= 1, "an invocation ran twice: {:?}", fns.successes());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_fire_each_tick_once() {
    let Some(database) = fresh_database().await else { return };
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, format!("[storage]\nurl = \"{database}\"\n\n{}", every_second(addr))).unwrap();
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(start_keel(&config, &dir.path().join(format!("node-{i}.log"))).await);
    }
    eventually("five ticks fire", Duration::from_secs(20), || async { (fns.successes().len() >= 5).then_some(()) })
        .await;
    // Paused through node 0: both nodes stop firing, so the counts below hold still.
    let (status, _, paused) = post_json(&format!("{}/v1/schedules/every-second/pause", nodes[0].0), "").await;
    assert_eq!((status, paused["paused"].as_bool()), (200, Some(true)), "{paused}");
    let fired_total = || async {
        let mut sum = 0.0;
        for (url, _) in &nodes {
            let (_, _, text) = request("GET", &format!("{url}/metrics"), &[], "").await;
            let metrics = parse_metrics(std::str::from_utf8(&text).unwrap());
            sum += metrics.get("keel_schedule_fired_total{schedule=\"every-second\"}").copied().unwrap_or(0.0);
        }
        sum as usize
    };
    let invocations = eventually("the nodes agree on what fired", Duration::from_secs(10), || async {
        let invocations = invocations_of(&nodes[1].0, "tick").await;
        (fired_total().await == invocations.len()).then_some(invocations)
    })
    .await;
    let ticks = one_per_tick(&invocations, "every-second");
    assert!(ticks.len() >= 5, "{ticks:?}");
    let (_, _, seen) = get_json(&format!("{}/v1/schedules/every-second", nodes[1].0)).await;
    assert_eq!((seen["paused"].as_bool(), &seen["next_fire"]), (Some(true), &Value::Null), "{seen}");
    for (_, child) in &mut nodes {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_fires_nothing_until_resumed() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&every_second(addr)).await;
    let schedule = format!("{}/v1/schedules/every-second", keel.url);
    eventually("the first tick fires", Duration::from_secs(10), || async { (!fns.calls().is_empty()).then_some(()) })
        .await;

    let (status, _, paused) = post_json(&format!("{schedule}/pause"), "").await;
    assert_eq!((status, paused["paused"].as_bool()), (200, Some(true)), "{paused}");
    assert!(paused["paused_at"].is_string() && paused["next_fire"].is_null(), "{paused}");
    let fired = invocations_of(&keel.url, "tick").await.len();
    // A window in which an every-second schedule would fire twice: nothing may happen in it.
    let window = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < window {
        assert_eq!(invocations_of(&keel.url, "tick").await.len(), fired, "a paused schedule fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, list) = get_json(&format!("{}/v1/schedules", keel.url)).await;
    assert_eq!(list["items"][0]["paused"], true, "{list}");

    let (status, _, resumed) = post_json(&format!("{schedule}/resume"), "").await;
    assert_eq!((status, resumed["paused"].as_bool()), (200, Some(false)), "{resumed}");
    assert!(resumed["next_fire"].is_string(), "{resumed}");
    eventually("it fires again once resumed", Duration::from_secs(10), || async {
        (invocations_of(&keel.url, "tick").await.len() > fired).then_some(())
    })
    .await;
    one_per_tick(&invocations_of(&keel.url, "tick").await, "every-second");

    let (_, _, audit) = get_json(&format!("{}/v1/audit", keel.url)).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"schedule.pause") && actions.contains(&"schedule.resume"), "{audit}");
    let (status, _, unknown) = post_json(&format!("{}/v1/schedules/nope/pause", keel.url), "").await;
    assert_eq!((status, unknown["type"].as_str()), (404, Some("urn:keel:problem:unknown-schedule")), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_publishes_its_ticks_as_events() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.log]\nurl = \"http://{addr}/ok\"\n[topics.ticks]\n\
         [[subscriptions]]\nname = \"log-ticks\"\ntopic = \"ticks\"\nfunction = \"log\"\n\
         [schedules.ticker]\nevery = \"1s\"\ntopic = \"ticks\"\npayload = {{ from = \"ticker\" }}\n"
    ))
    .await;
    let call =
        eventually("a tick's event is delivered", Duration::from_secs(10), || async { fns.calls().into_iter().next() })
            .await;
    let header = |name: &str| call.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(header("ce-id").starts_with("ticker/"), "the event's id is the tick key: {:?}", call.headers);
    assert_eq!(header("ce-source"), "/keel/schedules/ticker");
    assert_eq!(header("ce-type"), "ticks");
    assert_eq!(&call.body[..], br#"{"from":"ticker"}"#);
    let (_, _, schedule) = get_json(&format!("{}/v1/schedules/ticker", keel.url)).await;
    assert_eq!(schedule["target"]["topic"], "ticks", "{schedule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_delay_on_publish_delivers_later() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.mail]\nurl = \"http://{addr}/ok\"\n[topics.signups]\n\
         [[subscriptions]]\nname = \"welcome\"\ntopic = \"signups\"\nfunction = \"mail\"\n"
    ))
    .await;
    let publish = format!("{}/v1/topics/signups/events", keel.url);
    let headers = [("content-type", "application/json"), ("keel-delay", "2s")];
    let published_at = Instant::now();
    let (status, _, body) = request("POST", &publish, &headers, r#"{"user":"u1"}"#).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let id = answer["ids"][0].as_str().unwrap();
    let (_, _, event) = get_json(&format!("{}/v1/events/{id}", keel.url)).await;
    assert_eq!(event["deliveries"][0]["status"], "queued", "held until due: {event}");
    let call =
        eventually("the delayed delivery runs", Duration::from_secs(10), || async { fns.calls().into_iter().next() })
            .await;
    let waited = call.at.duration_since(published_at);
    assert!(waited >= Duration::from_millis(1_900), "delivered after {waited:?}, asked for 2s");

    for bad in ["2", "1.5s", "366d"] {
        let (status, _, body) = request("POST", &publish, &[("keel-delay", bad)], "{}").await;
        assert_eq!(status, 400, "keel-delay {bad:?}: {}", String::from_utf8_lossy(&body));
    }
}
