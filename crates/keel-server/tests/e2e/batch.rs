//! Batch delivery and bulk admission: a batch function gets async invocations (and event
//! deliveries) in batches of at most `max_size`, each item keeping its own attempts, retries, DLQ,
//! effects and result; a non-2xx batch answer retries every item. A bulk admission stores its
//! payloads in one transaction, replays its key, and refuses a batch too large or invalid whole.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::{eventually, fast_retry, get_json, request, wait_quiet, Functions, Keel};

const BATCH: &str = "application/vnd.keel.batch+json";

/// One batch request the function received: its headers and items.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    items: Vec<Value>,
}

/// A batch function on 127.0.0.1:0. Each item's payload says what to do with it: `{"do": "ok"}`
/// succeeds with `{"n": n}` as its result, `"flaky"` fails transiently on its first attempt,
/// `"permanent"` fails for good, `"effects"` succeeds writing `docs/doc-{n}`. With
/// `refuse_first_attempts`, a request holding any item's first attempt is answered 503 whole.
#[derive(Debug, Clone, Default)]
struct BatchFunction {
    received: Arc<Mutex<Vec<Received>>>,
    refuse_first_attempts: Arc<std::sync::atomic::AtomicBool>,
}

impl BatchFunction {
    async fn start() -> (Self, String) {
        let me = Self::default();
        let state = me.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let me = state.clone();
            async move { me.answer(headers, body) }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/index", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (me, url)
    }

    fn answer(&self, headers: HeaderMap, body: Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;
        let items: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
        self.received.lock().unwrap().push(Received { headers, items: items.clone() });
        let refuse = self.refuse_first_attempts.load(std::sync::atomic::Ordering::SeqCst);
        if refuse && items.iter().any(|item| item["attempt"] == 1) {
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "the index is rebuilding").into_response();
        }
        let (mut failed, mut results, mut effects) = (Vec::new(), json!({}), json!({}));
        for item in &items {
            let id = item["id"].as_str().unwrap().to_owned();
            let n = &item["payload"]["n"];
            match item["payload"]["do"].as_str() {
                Some("flaky") if item["attempt"] == 1 => {
                    failed.push(json!({"id": id, "error": "not yet", "retry_after": 0}))
                }
                Some("permanent") => failed.push(json!({"id": id, "permanent": true, "error": "no such document"})),
                Some("effects") => {
                    effects[&id] = json!({"result": {"n": n}, "kv": [{"ns": "docs", "key": format!("doc-{n}"), "value": {"n": n}}]})
                }
                _ => results[&id] = json!({"n": n}),
            }
        }
        axum::Json(json!({"failed": failed, "results": results, "effects": effects})).into_response()
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many times the function saw item `id`.
    fn times_seen(&self, id: &str) -> usize {
        self.received().iter().flat_map(|r| r.items.clone()).filter(|i| i["id"] == id).count()
    }
}

/// A batch function `name` at `url`: 2 batches in flight of up to `max_size` items, `attempts`
/// fast attempts each. Each test names its own: metrics are per process, shared by the tests.
fn batch_config(name: &str, url: &str, max_size: u32, attempts: u32) -> String {
    format!(
        "[functions.{name}]\nurl = \"{url}\"\nconcurrency = 2\nbatch = {{ max_size = {max_size}, max_wait = \"20ms\" }}\n{}\n",
        fast_retry(attempts)
    )
}

/// Admits `payloads` in one bulk admission; returns the ids.
async fn admit(keel: &Keel, function: &str, payloads: &[Value], headers: &[(&str, &str)]) -> Vec<String> {
    let url = format!("{}/v1/functions/{function}/invocations", keel.url);
    let mut sent = vec![("content-type", BATCH)];
    sent.extend_from_slice(headers);
    let (status, _, body) = request("POST", &url, &sent, Value::from(payloads.to_vec()).to_string()).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    answer["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

async fn invocation(keel: &Keel, id: &str) -> Value {
    get_json(&format!("{}/v1/invocations/{id}", keel.url)).await.2
}

#[tokio::test]
async fn a_batch_function_gets_async_work_in_batches_and_each_item_keeps_its_own_fate() {
    let (function, url) = BatchFunction::start().await;
    let keel = Keel::start(&batch_config("index-fates", &url, 10, 4)).await;
    let mut payloads: Vec<Value> = (0..22).map(|n| json!({"n": n, "do": "ok"})).collect();
    payloads.push(json!({"n": 22, "do": "flaky"}));
    payloads.push(json!({"n": 23, "do": "permanent"}));
    payloads.push(json!({"n": 24, "do": "effects"}));
    let ids = admit(&keel, "index-fates", &payloads, &[]).await;
    assert_eq!(ids.len(), 25);
    wait_quiet(&keel.url, Duration::from_secs(20)).await;

    let received = function.received();
    assert!(received.len() < 25, "25 invocations in fewer requests: {} requests", received.len());
    for request in &received {
        assert!((1..=10).contains(&request.items.len()), "at most max_size items: {}", request.items.len());
        assert_eq!(request.headers["content-type"], BATCH);
        assert_eq!(request.headers["keel-batch-size"], request.items.len().to_string().as_str());
        assert_eq!(request.headers["keel-function"], "index-fates");
    }
    let (ok, flaky, permanent, effects) = (&ids[..22], &ids[22], &ids[23], &ids[24]);
    for (n, id) in ok.iter().enumerate() {
        assert_eq!(function.times_seen(id), 1, "{id} succeeded once, in one batch");
        let inv = invocation(&keel, id).await;
        assert_eq!((inv["status"].as_str(), inv["attempts"].as_array().unwrap().len()), (Some("succeeded"), 1));
        let (status, _, result) = request("GET", &format!("{}/v1/invocations/{id}/result", keel.url), &[], "").await;
        assert_eq!((status, serde_json::from_slice::<Value>(&result).unwrap()), (200, json!({"n": n})), "its result");
    }

    let retried = invocation(&keel, flaky).await;
    assert_eq!(retried["status"], "succeeded", "{retried}");
    let attempts = retried["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "its own retry: {retried}");
    assert_eq!(attempts[0]["outcome"], "transient");
    assert_eq!(attempts[0]["error"], "failed transiently in its batch: not yet");
    assert_eq!(function.times_seen(flaky), 2);

    let dead = invocation(&keel, permanent).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["error"], "permanent failure: failed permanently in its batch: no such document");
    assert_eq!(function.times_seen(permanent), 1, "a permanent failure is not retried");
    let (_, _, dlq) = get_json(&format!("{}/v1/dlq?function=index-fates", keel.url)).await;
    let in_dlq: Vec<&str> = dlq["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(in_dlq, [permanent.as_str()], "only the permanent one is in the DLQ");

    assert_eq!(invocation(&keel, effects).await["status"], "succeeded");
    let (status, _, doc) = get_json(&format!("{}/v1/kv/docs/doc-24", keel.url)).await;
    assert_eq!((status, doc), (200, json!({"n": 24})), "the item's effects were committed with it");

    // Each item of the history is an attempt of its own: the metrics count 26 attempts.
    let (_, _, metrics) = request("GET", &format!("{}/metrics", keel.url), &[], "").await;
    let metrics = crate::support::parse_metrics(std::str::from_utf8(&metrics).unwrap());
    let attempts: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("keel_attempts_total{") && k.contains("function=\"index-fates\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(attempts, 26.0, "{metrics:?}");
}

#[tokio::test]
async fn a_non_2xx_batch_answer_retries_every_item_on_its_own() {
    let (function, url) = BatchFunction::start().await;
    function.refuse_first_attempts.store(true, std::sync::atomic::Ordering::SeqCst);
    let keel = Keel::start(&batch_config("index-refusing", &url, 10, 20)).await;
    // One by one, through the ordinary async route: they still travel in batches. A batch holding
    // a first attempt is refused whole, so each one's first attempt failed with its batch.
    let mut ids = Vec::new();
    for n in 0..5 {
        let (status, _, body) = request(
            "POST",
            &format!("{}/v1/functions/index-refusing/invocations", keel.url),
            &[("content-type", "application/json")],
            json!({"n": n, "do": "ok"}).to_string(),
        )
        .await;
        assert_eq!(status, 202);
        ids.push(serde_json::from_slice::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned());
    }
    wait_quiet(&keel.url, Duration::from_secs(20)).await;
    for id in &ids {
        let inv = invocation(&keel, id).await;
        assert_eq!(inv["status"], "succeeded", "{inv}");
        let attempts = inv["attempts"].as_array().unwrap();
        let (last, failed) = attempts.split_last().unwrap();
        assert_eq!(last["outcome"], "success", "{inv}");
        assert!(!failed.is_empty(), "the failed batch is in {id}'s history: {inv}");
        for attempt in failed {
            assert_eq!(attempt["outcome"], "transient");
            assert_eq!(attempt["status"], 503);
            assert_eq!(attempt["error"], "the batch failed: HTTP 503: the index is rebuilding");
        }
        assert_eq!(function.times_seen(id), attempts.len(), "each attempt of {id} went out in a batch");
    }
    let answered = function.received();
    assert!(answered.iter().all(|r| r.items.len() <= 10));
}

#[tokio::test]
async fn event_deliveries_to_a_batch_function_carry_their_event() {
    let (function, url) = BatchFunction::start().await;
    let keel = Keel::start(&format!(
        "{}[topics.docs]\n[[subscriptions]]\nname = \"indexer\"\ntopic = \"docs\"\nfunction = \"index\"\n",
        batch_config("index", &url, 10, 4)
    ))
    .await;
    let events: Vec<Value> = (0..3)
        .map(|n| json!({"specversion": "1.0", "id": format!("e{n}"), "source": "test", "type": "doc.saved", "data": {"n": n, "do": "ok"}}))
        .collect();
    let (status, _, _) = request(
        "POST",
        &format!("{}/v1/topics/docs/events", keel.url),
        &[("content-type", "application/cloudevents-batch+json")],
        Value::from(events).to_string(),
    )
    .await;
    assert_eq!(status, 202);
    let items = eventually("three deliveries", Duration::from_secs(10), || async {
        let items: Vec<Value> = function.received().into_iter().flat_map(|r| r.items).collect();
        (items.len() == 3).then_some(items)
    })
    .await;
    for item in &items {
        assert_eq!(item["subscription"], "indexer");
        assert_eq!(item["event"]["type"], "doc.saved");
        assert_eq!(item["event"]["source"], "test");
        assert_eq!(item["payload"]["do"], "ok", "the event's data is the payload");
    }
    wait_quiet(&keel.url, Duration::from_secs(10)).await;
}

const ORDER: &str = r#"{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}"#;

#[tokio::test]
async fn a_bulk_admission_is_one_202_all_or_nothing_and_replayed_by_its_key() {
    let (fns, addr) = Functions::start().await;
    let schemas = tempfile::tempdir().unwrap();
    std::fs::write(schemas.path().join("order.json"), ORDER).unwrap();
    let keel = Keel::start(&format!(
        "[functions.orders]\nurl = \"http://{addr}/ok\"\ninput_schema = \"{}\"\n",
        schemas.path().join("order.json").display()
    ))
    .await;
    let url = format!("{}/v1/functions/orders/invocations", keel.url);
    let send = |body: String, key: Option<&'static str>| {
        let url = url.clone();
        async move {
            let mut headers = vec![("content-type", BATCH)];
            headers.extend(key.map(|k| ("idempotency-key", k)));
            let (status, headers, body) = request("POST", &url, &headers, body).await;
            (status, headers, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
    };
    let count = || async {
        let (_, _, page) = get_json(&format!("{}/v1/invocations?function=orders&limit=1000", keel.url)).await;
        page["items"].as_array().unwrap().len()
    };

    let (status, headers, first) = send(r#"[{"n": 1}, {"n": 2},{"n":3}]"#.into(), Some("bulk-1")).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(headers["content-type"], "application/json");
    let ids: Vec<String> = first["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 3);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids in the order sent sort in that order");
    for (id, sent) in ids.iter().zip([r#"{"n": 1}"#, r#"{"n": 2}"#, r#"{"n":3}"#]) {
        let inv = invocation(&keel, id).await;
        assert_eq!(inv["function"], "orders");
        assert_eq!(inv["idempotency_key"], "bulk-1");
        let stored = crate::support::settled(&keel.url, id, Duration::from_secs(10)).await;
        assert_eq!(stored["status"], "succeeded");
        assert_eq!(bytes_of(&fns, id), sent.as_bytes(), "the function got its payload as sent, spaces and all");
    }

    let (status, headers, again) = send(r#"[{"n": 1}, {"n": 2},{"n":3}]"#.into(), Some("bulk-1")).await;
    assert_eq!((status, &again), (202, &first), "the same answer, ids and all");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, reused) = send(r#"[{"n": 9}]"#.into(), Some("bulk-1")).await;
    assert_eq!((status, reused["type"].as_str()), (422, Some("urn:keel:problem:idempotency-key-reused")));
    assert_eq!(count().await, 3, "neither stored anything");

    let (status, _, invalid) = send(r#"[{"n": 1}, {"n": "two"}, {"n": 3}, {}]"#.into(), None).await;
    assert_eq!(status, 400, "{invalid}");
    assert_eq!(invalid["type"], "urn:keel:problem:invalid-input");
    assert_eq!(invalid["index"], 1, "the first invalid payload");
    assert_eq!(
        invalid["errors"],
        json!([{"path": "/1/n", "message": "value is not of type \"integer\""},
               {"path": "/3", "message": "\"n\" is a required property"}])
    );

    let too_many = Value::from((0..1001).map(|n| json!({"n": n})).collect::<Vec<_>>()).to_string();
    let (status, _, large) = send(too_many, None).await;
    assert_eq!(
        (status, large["type"].as_str(), &large["limit"]),
        (400, Some("urn:keel:problem:batch-too-large"), &json!(1000))
    );
    assert_eq!(
        large["detail"],
        "a bulk admission carries at most 1000 payloads (got 1001): send the rest in another; nothing was stored"
    );
    let (status, _, empty) = send("[]".into(), None).await;
    assert_eq!(
        (status, empty["detail"].as_str()),
        (400, Some("the batch is empty: a bulk admission carries 1 to 1000 payloads"))
    );
    let (status, _, _) = send(r#"{"n": 1}"#.into(), None).await;
    assert_eq!(status, 400, "a batch is an array");
    assert_eq!(count().await, 3, "nothing of a refused batch was stored");

    let sync = format!("{}/v1/functions/orders/invoke", keel.url);
    let (status, _, _) = request("POST", &sync, &[("content-type", BATCH)], r#"[{"n": 1}]"#).await;
    assert_eq!(status, 400, "a sync invoke runs one payload, never a batch");

    let thousand = Value::from((0..1000).map(|n| json!({"n": n})).collect::<Vec<_>>()).to_string();
    let (status, _, full) = send(thousand, None).await;
    assert_eq!((status, full["ids"].as_array().map(Vec::len)), (202, Some(1000)), "1000 is allowed");
}

/// The body the function got for invocation `id`.
fn bytes_of(fns: &Functions, id: &str) -> Bytes {
    fns.calls_for(id).first().unwrap_or_else(|| panic!("no call for {id}")).body.clone()
}
