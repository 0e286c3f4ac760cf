//! Input validation: a function's `input_schema` and a topic's `schema` refuse bad input with
//! 400 `invalid-input` naming each error's JSON Pointer, store nothing, and count it; an effect
//! that emits an invalid event fails its attempt for good.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::support::{get_json, parse_metrics, request, Functions, Keel};

const PURCHASE: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["items"],
  "properties": {
    "items": {
      "type": "array",
      "minItems": 1,
      "items": {
        "type": "object",
        "required": ["sku", "qty"],
        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
      }
    }
  },
  "additionalProperties": false
}"#;

const SIGNUP: &str = r#"{
  "type": "object",
  "required": ["email"],
  "properties": {"email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"}}
}"#;

/// Writes the schemas into a directory of their own; the config names them by absolute path.
fn schemas() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("purchase.json"), PURCHASE).unwrap();
    std::fs::write(dir.path().join("signup.json"), SIGNUP).unwrap();
    dir
}

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

async fn metric(keel: &Keel, series: &str) -> Option<f64> {
    let (_, _, text) = request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await;
    parse_metrics(std::str::from_utf8(&text).unwrap()).get(series).copied()
}

#[tokio::test]
async fn a_function_input_schema_refuses_bad_bodies_before_anything_is_stored() {
    let (fns, addr) = Functions::start().await;
    let dir = schemas();
    let keel = Keel::start(&format!(
        "[functions.schema-purchase]\nurl = \"http://{addr}/ok\"\ninput_schema = \"{}\"\n",
        dir.path().join("purchase.json").display()
    ))
    .await;
    let sync = format!("{}/v1/functions/schema-purchase/invoke", keel.url);
    let queue = format!("{}/v1/functions/schema-purchase/invocations", keel.url);
    let json = ("content-type", "application/json");

    let bad = r#"{"items": [{"sku": "a", "qty": 0}, {"qty": 2}], "coupon": "x"}"#;
    let (status, headers, body) = request("POST", &sync, &[json, ("idempotency-key", "k1")], bad).await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem = json_of(&body);
    assert_eq!(problem["type"], "urn:keel:problem:invalid-input");
    assert_eq!(
        problem["errors"],
        json!([
            {"path": "/items/0/qty", "message": "value is less than the minimum of 1"},
            {"path": "/items/1", "message": "\"sku\" is a required property"},
            {"path": "", "message": "Additional properties are not allowed ('coupon' was unexpected)"},
        ]),
        "{problem}"
    );
    assert!(!headers.contains_key("keel-invocation-id"));

    let (status, _, body) = request("POST", &queue, &[json], r#"{"items": []}"#).await;
    assert_eq!(status, 400);
    assert_eq!(json_of(&body)["errors"], json!([{"path": "/items", "message": "value has less than 1 item"}]));

    let (status, _, body) = request("POST", &queue, &[json], "{\"items\": [").await;
    assert_eq!(status, 400);
    assert_eq!(
        json_of(&body)["errors"],
        json!([{"path": "", "message": "not JSON: EOF while parsing a list at line 1 column 11"}])
    );

    // The key of the refused call was never claimed: the same key with a valid body runs.
    let good = r#"{"items": [{"sku": "a", "qty": 1}]}"#;
    let (status, _, _) = request("POST", &sync, &[json, ("idempotency-key", "k1")], good).await;
    assert_eq!(status, 200);

    let (_, _, listed) = get_json(&format!("{}/v1/invocations?function=schema-purchase", keel.url)).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "only the valid call was stored: {listed}");
    assert_eq!(fns.calls().len(), 1, "the function saw only the valid call");
    assert_eq!(metric(&keel, r#"keel_invalid_input_total{kind="function",target="schema-purchase"}"#).await, Some(3.0));
}

#[tokio::test]
async fn a_topic_schema_checks_each_event_and_a_batch_is_all_or_nothing() {
    let (_fns, addr) = Functions::start().await;
    let dir = schemas();
    let keel = Keel::start(&format!(
        "[functions.schema-welcome]\nurl = \"http://{addr}/ok\"\n\
         [topics.schema-signups]\nschema = \"{}\"\n\
         [[subscriptions]]\nname = \"welcome\"\ntopic = \"schema-signups\"\nfunction = \"schema-welcome\"\n",
        dir.path().join("signup.json").display()
    ))
    .await;
    let url = format!("{}/v1/topics/schema-signups/events", keel.url);
    let structured = ("content-type", "application/cloudevents+json");
    let batch = ("content-type", "application/cloudevents-batch+json");
    let event = |id: &str, email: Value| json!({"specversion": "1.0", "id": id, "source": "/signup", "type": "signup", "data": {"email": email}});

    let (status, _, body) =
        request("POST", &url, &[("content-type", "application/json")], r#"{"email": "a@b.c"}"#).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));

    let (status, _, body) = request("POST", &url, &[("content-type", "application/json")], r#"{"email": 7}"#).await;
    assert_eq!(status, 400);
    assert_eq!(json_of(&body)["errors"], json!([{"path": "/email", "message": "value is not of type \"string\""}]));

    let (status, _, body) = request("POST", &url, &[structured], event("s-1", json!("nope")).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(
        json_of(&body)["errors"],
        json!([{"path": "/data/email", "message": "value does not match \"^[^@\\s]+@[^@\\s]+$\""}])
    );

    let three = json!([event("b-0", json!("x@y.z")), event("b-1", json!("x@y.z")), event("b-2", json!(null))]);
    let (status, _, body) = request("POST", &url, &[batch], three.to_string()).await;
    assert_eq!(status, 400);
    let problem = json_of(&body);
    assert_eq!(problem["type"], "urn:keel:problem:invalid-input");
    assert_eq!(problem["index"], 2);
    assert_eq!(problem["errors"], json!([{"path": "/2/data/email", "message": "value is not of type \"string\""}]));

    // Nothing of the refused batch was stored: its valid events are new when sent again.
    let (_, _, listed) = get_json(&format!("{}/v1/invocations?function=schema-welcome", keel.url)).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "one delivery, of the one valid event: {listed}");
    let two = json!([event("b-0", json!("x@y.z")), event("b-1", json!("x@y.z"))]);
    let (status, _, body) = request("POST", &url, &[batch], two.to_string()).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let (_, _, listed) = get_json(&format!("{}/v1/invocations?function=schema-welcome", keel.url)).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(3), "{listed}");
    assert_eq!(metric(&keel, r#"keel_invalid_input_total{kind="topic",target="schema-signups"}"#).await, Some(3.0));
}

#[tokio::test]
async fn an_effect_emitting_an_invalid_event_fails_the_attempt_for_good() {
    let (_fns, addr) = Functions::start().await;
    let dir = schemas();
    let keel = Keel::start(&format!(
        "[functions.schema-emitter]\nurl = \"http://{addr}/fx/emit?topic=schema-audit\"\n\
         [topics.schema-audit]\nschema = \"{}\"\n",
        dir.path().join("signup.json").display()
    ))
    .await;
    let url = format!("{}/v1/functions/schema-emitter/invocations", keel.url);
    let (status, headers, _) = request("POST", &url, &[("content-type", "application/json")], "{}").await;
    assert_eq!(status, 202);
    let id = headers["keel-invocation-id"].to_str().unwrap().to_string();
    let dead = keel.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["attempts"].as_array().map(Vec::len), Some(1), "permanent: not retried: {dead}");
    assert_eq!(
        dead["error"],
        "permanent failure: effects envelope: events[0]: data does not match the schema of topic \"schema-audit\": \
         at \"\": \"email\" is a required property"
    );
}
