//! Each limit of `[server.limits]` answered with its RFC 9457 problem naming it, and the node
//! still serving the next request; a CloudEvents batch with invalid events refused whole.

use std::time::Duration;

use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::support::{eventually, get_json, request, Functions, Keel};

fn problem_of(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// `[n, [n, …]]` nested `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// The node answers the next plain request at once: a refusal cost it nothing lasting.
async fn still_serving(keel: &Keel) {
    let (status, _, _) = request("GET", &format!("{}/healthz", keel.url), &[], Bytes::new()).await;
    assert_eq!(status, 200);
}

const LIMITS: &str = "[server.limits]\nmax_url_bytes = 1024\nmax_header_bytes = \"8KiB\"\nmax_headers = 20\n\
                      max_json_depth = 8\nidempotency_keys_per_minute = 3\n";

#[tokio::test]
async fn a_request_head_past_a_limit_gets_414_or_431_naming_it() {
    let keel = Keel::start(LIMITS).await;
    let healthz = format!("{}/healthz", keel.url);

    let long = format!("{healthz}?pad={}", "a".repeat(1024));
    let (status, headers, body) = request("GET", &long, &[], Bytes::new()).await;
    let problem = problem_of(&body);
    assert_eq!((status, &headers["content-type"]), (414, &"application/problem+json".parse().unwrap()));
    assert_eq!(problem["type"], "urn:keel:problem:uri-too-long");
    assert!(problem["detail"].as_str().unwrap().contains("server.limits.max_url_bytes (1024)"), "{problem}");
    // At the limit exactly, served.
    let fits = format!("{healthz}?pad={}", "a".repeat(1024 - "/healthz?pad=".len()));
    assert_eq!(request("GET", &fits, &[], Bytes::new()).await.0, 200);
    still_serving(&keel).await;

    let big = "b".repeat(9 * 1024);
    let (status, _, body) = request("GET", &healthz, &[("x-big", &big)], Bytes::new()).await;
    let problem = problem_of(&body);
    assert_eq!(status, 431, "{problem}");
    assert_eq!(problem["type"], "urn:keel:problem:request-header-fields-too-large");
    assert!(problem["detail"].as_str().unwrap().contains("server.limits.max_header_bytes (8192)"), "{problem}");
    still_serving(&keel).await;

    let names: Vec<String> = (0..25).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let (status, _, body) = request("GET", &healthz, &many, Bytes::new()).await;
    let problem = problem_of(&body);
    assert_eq!(status, 431, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("server.limits.max_headers"), "{problem}");
    still_serving(&keel).await;
}

/// The default limit of header lines (100, hyper's own, which the listener leaves unset) holds
/// as a set one does.
#[tokio::test]
async fn the_default_limit_of_header_lines_is_100() {
    let keel = Keel::start("").await;
    let healthz = format!("{}/healthz", keel.url);
    let names: Vec<String> = (0..105).map(|i| format!("x-h{i}")).collect();
    let lines = |n: usize| names[..n].iter().map(|n| (n.as_str(), "v")).collect::<Vec<_>>();
    // The client adds `host`: 95 of its own are under the limit, 105 past it.
    assert_eq!(request("GET", &healthz, &lines(95), Bytes::new()).await.0, 200);
    let (status, _, body) = request("GET", &healthz, &lines(105), Bytes::new()).await;
    let problem = problem_of(&body);
    assert_eq!(status, 431, "{problem}");
    assert_eq!(problem["type"], "urn:keel:problem:request-header-fields-too-large");
    still_serving(&keel).await;
}

#[tokio::test]
async fn json_nested_past_the_limit_is_refused_before_it_is_parsed() {
    let (fns, addr) = Functions::start().await;
    let schema_dir = tempfile::tempdir().unwrap();
    let schema = schema_dir.path().join("any.json");
    std::fs::write(&schema, r#"{"type": "array"}"#).unwrap();
    let keel = Keel::start(&format!(
        "{LIMITS}[functions.checked]\nurl = \"http://{addr}/ok\"\ninput_schema = \"{}\"\n[topics.t]\n",
        schema.display()
    ))
    .await;
    let json = [("content-type", "application/json")];
    let too_deep = |what: &str, reply: (u16, _, Bytes)| {
        let problem = problem_of(&reply.2);
        assert_eq!(reply.0, 400, "{what}: {problem}");
        assert_eq!(problem["type"], "urn:keel:problem:json-too-deep", "{what}: {problem}");
        assert_eq!(problem["limit"], 8, "{what}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("server.limits.max_json_depth"), "{problem}");
    };
    // Far deeper than serde_json's own 128 too: the answer still names Keel's limit.
    for depth in [9, 100_000] {
        let kv = format!("{}/v1/kv/ns/deep", keel.url);
        too_deep("kv", request("PUT", &kv, &json, nested(depth)).await);
        let topic = format!("{}/v1/topics/t/events", keel.url);
        too_deep("publish", request("POST", &topic, &json, nested(depth)).await);
        let event = format!(r#"[{{"specversion":"1.0","id":"a","source":"s","type":"t","data":{}}}]"#, nested(depth));
        let batch = [("content-type", "application/cloudevents-batch+json")];
        too_deep("batch", request("POST", &topic, &batch, event).await);
        let invoke = format!("{}/v1/functions/checked/invoke", keel.url);
        too_deep("invoke", request("POST", &invoke, &json, nested(depth)).await);
    }
    assert!(fns.calls().is_empty(), "nothing refused reached the function");
    let (_, _, listed) = get_json(&format!("{}/v1/invocations?function=checked", keel.url)).await;
    assert_eq!(listed["items"], json!([]), "nothing refused was stored");
    // At the limit, taken.
    let (status, _, _) = request("PUT", &format!("{}/v1/kv/ns/deep", keel.url), &json, nested(8)).await;
    assert_eq!(status, 201);
    let (status, _, _) = request("POST", &format!("{}/v1/functions/checked/invoke", keel.url), &json, nested(8)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn idempotency_records_past_the_limit_get_429_and_replays_are_still_answered() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("{LIMITS}[functions.f]\nurl = \"http://{addr}/ok\"\n")).await;
    let url = format!("{}/v1/functions/f/invocations", keel.url);
    let keyed = |key: &'static str| [("content-type", "application/json"), ("idempotency-key", key)];
    for key in ["k1", "k2", "k3"] {
        assert_eq!(request("POST", &url, &keyed(key), "{}").await.0, 202, "{key}");
    }
    let (status, headers, body) = request("POST", &url, &keyed("k4"), "{}").await;
    let problem = problem_of(&body);
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["type"], "urn:keel:problem:too-many-idempotency-keys");
    assert!(problem["detail"].as_str().unwrap().contains("server.limits.idempotency_keys_per_minute (3)"));
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "3 a minute: one more in 20 s at most, not {wait}");
    // A retry of an admitted request is its replay, not a new record.
    let (status, headers, _) = request("POST", &url, &keyed("k1"), "{}").await;
    assert_eq!((status, headers.get("idempotent-replayed").map(|v| v.to_str().unwrap())), (202, Some("true")));
    // Unkeyed work is not held back.
    assert_eq!(request("POST", &url, &[("content-type", "application/json")], "{}").await.0, 202);

    // The document says so on every route taking a key, beside the head limits on every route.
    let (_, _, doc) = get_json(&format!("{}/v1/openapi.json", keel.url)).await;
    for (path, method) in [("/v1/functions/{name}/invocations", "post"), ("/v1/topics/{topic}/events", "post")] {
        let responses = &doc["paths"][path][method]["responses"];
        let too_many = responses["429"]["description"].as_str().unwrap_or_default();
        assert!(too_many.contains("too-many-idempotency-keys"), "{path}: {too_many}");
        assert!(responses["414"].is_object() && responses["431"].is_object(), "{path}: {responses}");
    }
    assert!(doc["paths"]["/v1/functions"]["get"]["responses"]["429"].is_null(), "no key, no key limit");
}

/// A function whose effects envelope nests past the limit: a permanent failure naming it.
#[tokio::test]
async fn an_effects_envelope_nested_too_deep_fails_its_attempt_naming_the_limit() {
    let envelope = format!(r#"{{"result": {}}}"#, nested(50));
    let app = axum::Router::new().route(
        "/deep",
        axum::routing::post(move || {
            let envelope = envelope.clone();
            async move { ([("content-type", "application/vnd.keel.effects+json")], envelope).into_response() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let keel = Keel::start(&format!("{LIMITS}[functions.deep]\nurl = \"http://{addr}/deep\"\n")).await;
    let (status, _, body) =
        request("POST", &format!("{}/v1/functions/deep/invocations", keel.url), &[], Bytes::new()).await;
    assert_eq!(status, 202);
    let id = problem_of(&body)["id"].as_str().unwrap().to_owned();
    let inv = keel.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(inv["status"], "dead", "{inv}");
    assert_eq!(inv["attempts"].as_array().map(Vec::len), Some(1), "not retried: {inv}");
    let error = inv["error"].as_str().unwrap_or_default();
    assert!(error.contains("more than 8 deep (server.limits.max_json_depth)"), "{inv}");
    still_serving(&keel).await;
}

/// One event breaking the CloudEvents spec refuses its whole batch, naming each invalid event by
/// its attribute's pointer; none of the batch is stored, so sent again mended, all are new.
#[tokio::test]
async fn a_batch_with_invalid_events_is_refused_whole_naming_them() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.sink]\nurl = \"http://{addr}/ok\"\n[topics.t]\n\
         [[subscriptions]]\nname = \"s\"\ntopic = \"t\"\nfunction = \"sink\"\n"
    ))
    .await;
    let url = format!("{}/v1/topics/t/events", keel.url);
    let batch_ct = [("content-type", "application/cloudevents-batch+json")];
    let event = |i: usize| json!({"specversion": "1.0", "id": format!("e{i}"), "source": "/shop", "type": "t"});
    let mut events: Vec<Value> = (0..6).map(event).collect();
    events[3].as_object_mut().unwrap().remove("id");
    events[5]["time"] = "last tuesday".into();
    let (status, _, body) = request("POST", &url, &batch_ct, Value::Array(events).to_string()).await;
    let problem = problem_of(&body);
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "urn:keel:problem:invalid-input");
    assert_eq!(problem["index"], 3);
    assert_eq!(
        problem["errors"],
        json!([
            {"path": "/3/id", "message": "missing required attribute `id`"},
            {"path": "/5/time", "message": "attribute `time`: \"last tuesday\" is not an RFC 3339 timestamp"},
        ])
    );
    assert!(problem["detail"].as_str().unwrap().contains("no event of the batch was stored"), "{problem}");
    let (_, _, listed) = get_json(&format!("{}/v1/invocations?function=sink", keel.url)).await;
    assert_eq!(listed["items"], json!([]), "no delivery of a refused batch: {listed}");

    // Mended and sent again: six new events (a stored one would come back as a duplicate and not
    // be delivered again), each with its delivery.
    let events: Vec<Value> = (0..6).map(event).collect();
    let (status, _, body) = request("POST", &url, &batch_ct, Value::Array(events).to_string()).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let ids: Vec<String> =
        problem_of(&body)["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 6);
    for id in &ids {
        let (status, _, stored) = get_json(&format!("{}/v1/events/{id}", keel.url)).await;
        assert_eq!(status, 200);
        assert_eq!(stored["deliveries"].as_array().map(Vec::len), Some(1), "{stored}");
    }
    eventually("the six deliveries", Duration::from_secs(10), || async { (fns.calls().len() >= 6).then_some(()) })
        .await;
    assert_eq!(fns.calls().len(), 6);
}
