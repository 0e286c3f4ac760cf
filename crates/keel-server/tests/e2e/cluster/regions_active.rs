//! Regions, active-active: `eu` and `us`, each a real `keel serve` on its own SQLite file, each
//! reaching the other through a TCP proxy the test owns and can cut. Events published while the
//! link is cut reach every global subscription in both regions exactly once when it is back, and
//! local subscriptions only their own region's; KV calls for a namespace homed in eu are served
//! by eu from either region (a conditional counter counts exactly); a request naming a region in
//! `keel-region` is served there, with that region's idempotency keys.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::crash::{free_port, spawn_keel, wait_ready};
use crate::support::{eventually_or_why, get_json, request};

/// A TCP proxy to one region's API: `cut` drops every connection and refuses new ones until
/// `restore`.
struct Proxy {
    addr: String,
    open: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (open, _) = watch::channel(true);
        let watch = open.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                if !*watch.borrow() {
                    drop(inbound);
                    continue;
                }
                let (target, mut open) = (target.clone(), watch.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else { return };
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = open.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self { addr, open }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// The function every subscription and invocation calls: records `(region, subscription,
/// ce-id)` per call.
#[derive(Clone, Default)]
struct Sink {
    calls: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Sink {
    /// How many times each event id reached `subscription` in `region`.
    fn deliveries(&self, region: &str, subscription: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (r, s, id) in self.calls.lock().unwrap().iter() {
            if r == region && s == subscription {
                *counts.entry(id.clone()).or_default() += 1;
            }
        }
        counts
    }
}

/// A function whose effects write `counters/by-effect`.
async fn write_counter() -> ([(&'static str, &'static str); 1], String) {
    let envelope =
        serde_json::json!({"status": 200, "result": {}, "kv": [{"ns": "counters", "key": "by-effect", "value": 1}]});
    ([("content-type", "application/vnd.keel.effects+json")], envelope.to_string())
}

async fn deliver(State(sink): State<Sink>, Path(region): Path<String>, headers: HeaderMap) -> &'static str {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    sink.calls.lock().unwrap().push((region, header("keel-subscription"), header("ce-id")));
    "{}"
}

/// One region: its own SQLite file, peers through a proxy; killed when dropped.
struct Region {
    url: String,
    node: Child,
    _dir: tempfile::TempDir,
}

impl Region {
    async fn start(name: &str, port: u16, peer: (&str, &str), sink: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("keel.toml");
        let toml = format!(
            "[storage]\nurl = \"sqlite://{db}\"\n\n[region]\nname = \"{name}\"\nrole = \"active\"\n\
             peers = {{ {peer} = \"http://{via}\" }}\n\n\
             [functions.sink]\nurl = \"{sink}/deliver/{name}\"\n{retry}\n\n\
             [functions.writer]\nurl = \"{sink}/write\"\n{retry}\n\n\
             [topics.orders]\n[topics.audit]\n\n\
             [[subscriptions]]\nname = \"orders-everywhere\"\ntopic = \"orders\"\nfunction = \"sink\"\nscope = \"global\"\n\n\
             [[subscriptions]]\nname = \"orders-here\"\ntopic = \"orders\"\nfunction = \"sink\"\n\n\
             [[subscriptions]]\nname = \"audit-here\"\ntopic = \"audit\"\nfunction = \"sink\"\nscope = \"local\"\n\n\
             [kv.counters]\nhome = \"eu\"\n",
            db = dir.path().join("keel.db").display(),
            peer = peer.0,
            via = peer.1,
            retry = crate::support::fast_retry(20),
        );
        std::fs::write(&config, toml).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut node = spawn_keel(&config, port, &dir.path().join("node.log"));
        wait_ready(&url, &mut node).await;
        Self { url, node, _dir: dir }
    }

    async fn publish(&self, topic: &str, id: &str) {
        let event =
            serde_json::json!({"specversion": "1.0", "id": id, "source": "/test", "type": "t", "data": {"id": id}});
        let url = format!("{}/v1/topics/{topic}/events", self.url);
        let (status, _, body) =
            request("POST", &url, &[("content-type", "application/cloudevents+json")], event.to_string()).await;
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    }

    /// `keel_region_outbox_pending{peer}` from `/metrics`.
    async fn outbox_pending(&self) -> Option<f64> {
        let (_, _, body) = request("GET", &format!("{}/metrics", self.url), &[], "").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .find(|l| l.starts_with("keel_region_outbox_pending{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

/// Two regions linked through proxies, and the sink both call.
async fn two_regions() -> (Region, Region, Proxy, Proxy, Sink) {
    let sink = Sink::default();
    let app = axum::Router::new()
        .route("/deliver/{region}", axum::routing::post(deliver))
        .route("/write", axum::routing::post(write_counter))
        .with_state(sink.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (eu_port, us_port) = (free_port(), free_port());
    let to_eu = Proxy::start(format!("127.0.0.1:{eu_port}")).await;
    let to_us = Proxy::start(format!("127.0.0.1:{us_port}")).await;
    let eu = Region::start("eu", eu_port, ("us", &to_us.addr), &sink_url).await;
    let us = Region::start("us", us_port, ("eu", &to_eu.addr), &sink_url).await;
    (eu, us, to_eu, to_us, sink)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_the_link_is_cut_reach_every_global_subscription_once_when_it_is_back() {
    let (eu, us, to_eu, to_us, sink) = two_regions().await;
    to_eu.cut();
    to_us.cut();
    let (eu_orders, us_orders) = (ids("eu-order", 12), ids("us-order", 12));
    let (eu_audit, us_audit) = (ids("eu-audit", 3), ids("us-audit", 3));
    for id in &eu_orders {
        eu.publish("orders", id).await;
    }
    for id in &us_orders {
        us.publish("orders", id).await;
    }
    for id in &eu_audit {
        eu.publish("audit", id).await;
    }
    for id in &us_audit {
        us.publish("audit", id).await;
    }
    // The same event again in eu: stored (and replicated) once.
    eu.publish("orders", &eu_orders[0]).await;

    // While cut, each region delivers its own events and keeps the others' for later.
    for (region, own) in [(&eu, &eu_orders), (&us, &us_orders)] {
        eventually_or_why("the local deliveries and a full outbox", Duration::from_secs(20), || async {
            let name = if std::ptr::eq(region, &eu) { "eu" } else { "us" };
            let delivered = sink.deliveries(name, "orders-everywhere");
            let pending = region.outbox_pending().await;
            if delivered.len() == own.len() && pending == Some(own.len() as f64) {
                Ok(())
            } else {
                Err(format!("{name}: delivered {delivered:?}, outbox {pending:?}"))
            }
        })
        .await;
    }
    assert!(
        sink.deliveries("us", "orders-everywhere").keys().all(|id| id.starts_with("us-")),
        "nothing of eu crossed the cut link"
    );

    to_eu.restore();
    to_us.restore();
    let all_orders: Vec<String> = eu_orders.iter().chain(&us_orders).cloned().collect();
    eventually_or_why("every order in both regions and empty outboxes", Duration::from_secs(30), || async {
        for region in ["eu", "us"] {
            let delivered = sink.deliveries(region, "orders-everywhere");
            if delivered.len() != all_orders.len() {
                return Err(format!("{region}: {} of {} orders delivered", delivered.len(), all_orders.len()));
            }
        }
        match (eu.outbox_pending().await, us.outbox_pending().await) {
            (Some(0.0), Some(0.0)) => Ok(()),
            other => Err(format!("outbox pending (eu, us): {other:?}")),
        }
    })
    .await;
    for region in ["eu", "us"] {
        let global = sink.deliveries(region, "orders-everywhere");
        let expected: BTreeMap<String, usize> = all_orders.iter().map(|id| (id.clone(), 1)).collect();
        assert_eq!(global, expected, "{region}: each order exactly once at the global subscription");
    }
    let only = |ids: &[String]| ids.iter().map(|id| (id.clone(), 1)).collect::<BTreeMap<_, _>>();
    assert_eq!(sink.deliveries("eu", "orders-here"), only(&eu_orders), "a local subscription: eu's own orders");
    assert_eq!(sink.deliveries("us", "orders-here"), only(&us_orders), "a local subscription: us's own orders");
    assert_eq!(sink.deliveries("eu", "audit-here"), only(&eu_audit), "a local topic stays in eu");
    assert_eq!(sink.deliveries("us", "audit-here"), only(&us_audit), "a local topic stays in us");

    // What a peer sends: each event stored once (a second copy is a duplicate), delivered to the
    // global subscription only, and written to no outbox (it never travels back).
    let event = serde_json::json!({"topic": "orders", "source": "/test", "id": "ap-order-1", "type": "t",
        "datacontenttype": "application/json", "data_base64": "eyJpZCI6MX0="});
    let batch = serde_json::json!({"origin": "ap", "events": [event, event]});
    let url = format!("{}/v1/region/events", eu.url);
    let (status, _, body) = request("POST", &url, &[("content-type", "application/json")], batch.to_string()).await;
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, &answer["new"], &answer["duplicates"]), (200, &1.into(), &1.into()), "{answer}");
    assert_eq!(answer["items"][1]["duplicate"], true, "{answer}");
    assert_eq!(eu.outbox_pending().await, Some(0.0), "not replicated again");
    eventually_or_why("the global subscription to get it", Duration::from_secs(10), || async {
        match sink.deliveries("eu", "orders-everywhere").get("ap-order-1") {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(sink.deliveries("eu", "orders-here").get("ap-order-1"), None, "not to a local subscription");
}

/// Adds one to `counters/hits` through `base`: read the version, write it back with If-Match,
/// again on 412. Returns the regions that answered.
async fn increment(base: &str) -> Vec<String> {
    let url = format!("{base}/v1/kv/counters/hits");
    let mut served = Vec::new();
    loop {
        let (status, headers, body) = request("GET", &url, &[], "").await;
        served.push(headers["keel-region"].to_str().unwrap().to_owned());
        let (value, precondition) = match status {
            404 => (1, ("if-none-match", "*".to_owned())),
            200 => {
                let value: u64 = serde_json::from_slice(&body).unwrap();
                (value + 1, ("if-match", headers["etag"].to_str().unwrap().to_owned()))
            }
            other => panic!("GET {url}: {other} {}", String::from_utf8_lossy(&body)),
        };
        let headers = [("content-type", "application/json"), (precondition.0, precondition.1.as_str())];
        let (status, answer, body) = request("PUT", &url, &headers, value.to_string()).await;
        served.push(answer["keel-region"].to_str().unwrap().to_owned());
        match status {
            200 | 201 | 204 => return served,
            412 => continue,
            other => panic!("PUT {url}: {other} {}", String::from_utf8_lossy(&body)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_namespace_is_served_by_its_home_region_from_either_region_and_keel_region_routes_home() {
    let (eu, us, to_eu, _to_us, sink) = two_regions().await;

    // (b) 40 conditional increments, 20 through each region at once: all served by eu, exact.
    let mut tasks = Vec::new();
    for base in [eu.url.clone(), us.url.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut served = Vec::new();
            for _ in 0..20 {
                served.extend(increment(&base).await);
            }
            served
        }));
    }
    for task in tasks {
        let served = task.await.unwrap();
        assert!(served.iter().all(|r| r == "eu"), "every KV answer names eu: {served:?}");
    }
    for base in [&eu.url, &us.url] {
        let (status, headers, value) = get_json(&format!("{base}/v1/kv/counters/hits")).await;
        assert_eq!((status, value), (200, serde_json::json!(40)), "no increment lost or doubled");
        assert_eq!(headers["keel-region"], "eu");
    }
    // A namespace without a home is served where it is called.
    let (status, headers, _) = request("PUT", &format!("{}/v1/kv/notes/a", us.url), &[], "1").await;
    assert_eq!((status, headers["keel-region"].to_str().unwrap()), (201, "us"));

    // KV effects for a namespace homed elsewhere fail the attempt for good, naming the home; in
    // the home region they apply.
    let writer = |base: &str| format!("{base}/v1/functions/writer/invoke");
    let (status, _, body) = request("POST", &writer(&us.url), &[("content-type", "application/json")], "{}").await;
    let problem = String::from_utf8_lossy(&body).into_owned();
    assert!(status >= 400 && problem.contains("lives in region eu"), "{status} {problem}");
    assert_eq!(get_json(&format!("{}/v1/kv/counters/by-effect", us.url)).await.0, 404, "nothing was written");
    let (status, _, body) = request("POST", &writer(&eu.url), &[("content-type", "application/json")], "{}").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get_json(&format!("{}/v1/kv/counters/by-effect", us.url)).await.0, 200, "written in eu, read from us");

    // (c) keel-region: eu sent to us is admitted in eu, with eu's idempotency keys.
    let invocations = |base: &str| format!("{base}/v1/functions/sink/invocations");
    let via_us = [("content-type", "application/json"), ("idempotency-key", "\"order-7\""), ("keel-region", "eu")];
    let (status, _, first) = request("POST", &invocations(&us.url), &via_us, "{}").await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&first));
    let id = serde_json::from_slice::<Value>(&first).unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(get_json(&format!("{}/v1/invocations/{id}", eu.url)).await.0, 200, "admitted in eu");
    assert_eq!(get_json(&format!("{}/v1/invocations/{id}", us.url)).await.0, 404, "not in us");
    let direct = [("content-type", "application/json"), ("idempotency-key", "\"order-7\"")];
    let (status, _, replay) = request("POST", &invocations(&eu.url), &direct, "{}").await;
    assert_eq!((status, &replay), (202, &first), "eu replays the key it admitted");
    let (status, _, own) = request("POST", &invocations(&us.url), &direct, "{}").await;
    assert_eq!(status, 202);
    assert_ne!(serde_json::from_slice::<Value>(&own).unwrap()["id"], id.as_str(), "us keeps keys of its own");
    let (status, _, here) = request("GET", &format!("{}/v1/region", us.url), &[("keel-region", "us")], "").await;
    assert_eq!((status, serde_json::from_slice::<Value>(&here).unwrap()["name"].as_str()), (200, Some("us")));
    eventually_or_why("both invocations to run", Duration::from_secs(10), || async {
        let ran = sink.calls.lock().unwrap().len();
        if ran >= 2 {
            Ok(())
        } else {
            Err(format!("{ran} calls"))
        }
    })
    .await;

    // eu unreachable from us: forwarded calls are 503 region-unreachable naming eu.
    to_eu.cut();
    let (status, _, body) = request("GET", &format!("{}/v1/kv/counters/hits", us.url), &[], "").await;
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, problem["type"].as_str(), problem["region"].as_str()),
        (503, Some("urn:keel:problem:region-unreachable"), Some("eu")),
        "{problem}"
    );
    let (status, _, body) = request("POST", &invocations(&us.url), &via_us, "{}").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_active_active_takes_no_replicated_events() {
    let keel = crate::support::Keel::start("[topics.orders]\n").await;
    let body = r#"{"origin":"eu","events":[{"topic":"orders","source":"/s","id":"1","type":"x","data_base64":""}]}"#;
    let (status, _, problem) = crate::support::post_json(&format!("{}/v1/region/events", keel.url), body).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("urn:keel:problem:not-active-active")), "{problem}");
    let (_, _, event) = crate::support::get_json(&format!("{}/v1/invocations?limit=1", keel.url)).await;
    assert_eq!(event["items"], serde_json::json!([]), "nothing was stored or delivered");
}
