//! Runs the shared SDK contract suite (`sdks/contract/cases.json`, format in
//! `sdks/contract/README.md`) against this SDK's server: every SDK answers the same requests
//! the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::{serve_on, Effects, Error, Event, Reply, Request};

const CASES: &str = include_str!("../../../sdks/contract/cases.json");

/// The handler a case describes, as this SDK writes it.
async fn behave(behaviour: Arc<Value>, req: Request) -> Result<Reply, Error> {
    let b = &*behaviour;
    let str_of = |v: &Value| v.as_str().map(str::to_owned);
    if let Some(v) = b.get("reply_json") {
        let reply = Reply::json(v);
        return Ok(match b.get("status").and_then(Value::as_u64) {
            Some(s) => reply.with_status(s as u16),
            None => reply,
        });
    }
    if let Some(v) = b.get("reply_text") {
        return Ok(Reply::text(v.as_str().unwrap()));
    }
    if b.get("reply_empty").is_some() {
        return Ok(Reply::empty());
    }
    if b.get("echo_json").is_some() {
        let v: Value = req.json()?;
        return Ok(Reply::json(v));
    }
    if b.get("echo_text").is_some() {
        return Ok(Reply::json(json!({
            "body": String::from_utf8_lossy(&req.body),
            "content_type": req.content_type(),
        })));
    }
    if b.get("echo_ctx").is_some() {
        let c = &req.ctx;
        let ms = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        return Ok(Reply::json(json!({
            "invocation_id": c.invocation_id(),
            "attempt": c.attempt(),
            "function": c.function(),
            "deadline_ms": c.deadline().map(ms),
            "idempotency_key": c.idempotency_key(),
            "traceparent": c.traceparent(),
            "tracestate": c.tracestate(),
            "token": c.token(),
            "subscription": c.subscription(),
            "event": c.event().map(|e| json!({
                "id": e.id, "type": e.kind, "source": e.source, "specversion": e.specversion,
                "subject": e.subject, "time": e.time, "datacontenttype": e.datacontenttype,
            })),
        })));
    }
    if let Some(items) = b.get("effects") {
        let mut effects = Effects::new();
        if let Some(s) = b.get("status").and_then(Value::as_u64) {
            effects = effects.status(s as u16);
        }
        if let Some(r) = b.get("result") {
            effects = effects.result(r);
        }
        for item in items.as_array().unwrap() {
            if let Some(p) = item.get("put") {
                let (ns, key, value) = (p["ns"].as_str().unwrap(), p["key"].as_str().unwrap(), &p["value"]);
                effects = if p.get("if_absent").and_then(Value::as_bool) == Some(true) {
                    effects.put_if_absent(ns, key, value)
                } else if let Some(v) = p.get("if_version").and_then(Value::as_u64) {
                    effects.put_if_version(ns, key, value, v)
                } else {
                    effects.put(ns, key, value)
                };
            } else if let Some(d) = item.get("delete") {
                let (ns, key) = (d["ns"].as_str().unwrap(), d["key"].as_str().unwrap());
                effects = match d.get("if_version").and_then(Value::as_u64) {
                    Some(v) => effects.delete_if_version(ns, key, v),
                    None => effects.delete(ns, key),
                };
            } else if let Some(e) = item.get("emit") {
                let mut event = Event::new(e["topic"].as_str().unwrap());
                if let Some(t) = e.get("type").and_then(str_of) {
                    event = event.kind(t);
                }
                if let Some(s) = e.get("subject").and_then(str_of) {
                    event = event.subject(s);
                }
                if let Some(d) = e.get("data") {
                    event = event.data(d);
                }
                effects = effects.emit(event);
            } else {
                panic!("unknown effect {item}");
            }
        }
        return Ok(effects.into());
    }
    if let Some(r) = b.get("retryable") {
        let mut error = match r.get("after_secs").and_then(Value::as_f64) {
            Some(secs) => Error::retry_after(Duration::from_secs_f64(secs)),
            None => Error::retryable(""),
        };
        if let Some(m) = r.get("message").and_then(str_of) {
            error = error.with_message(m);
        }
        if let Some(s) = r.get("status").and_then(Value::as_u64) {
            error = error.with_status(s as u16);
        }
        return Err(error);
    }
    if let Some(p) = b.get("permanent") {
        let error = Error::permanent(p["message"].as_str().unwrap_or_default());
        return Err(match p.get("status").and_then(Value::as_u64) {
            Some(s) => error.with_status(s as u16),
            None => error,
        });
    }
    if let Some(m) = b.get("bad_request") {
        return Err(Error::bad_request(m.as_str().unwrap()));
    }
    if let Some(m) = b.get("throw") {
        panic!("{}", m.as_str().unwrap());
    }
    panic!("unknown behaviour {b}");
}

/// `actual` holds every key of `expected` with its value (objects compared recursively).
fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| subset(v, av))),
        _ => expected == actual,
    }
}

async fn run(case: &Value, addr: SocketAddr) -> Result<(), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = &case["request"];
    let method = req.get("method").and_then(Value::as_str).unwrap_or("POST");
    let path = req.get("path").and_then(Value::as_str).unwrap_or("/");
    let mut builder = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (name, value) in req["headers"].as_object().unwrap() {
        builder = builder.header(name.as_str(), value.as_str().unwrap());
    }
    let body = match (req.get("body"), req.get("body_text")) {
        (_, Some(text)) => Bytes::from(text.as_str().unwrap().to_owned()),
        (Some(json), None) => Bytes::from(json.to_string()),
        (None, None) => Bytes::new(),
    };
    let response = client.request(builder.body(Full::new(body)).unwrap()).await.map_err(|e| e.to_string())?;
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let expect = &case["expect"];
    let mut problems = Vec::new();
    if expect["status"].as_u64() != Some(u64::from(status)) {
        problems.push(format!("status {status}, expected {}", expect["status"]));
    }
    for (name, want) in expect.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        if got != want.as_str() {
            problems.push(format!("header {name}: {got:?}, expected {want}"));
        }
    }
    let parsed = serde_json::from_slice::<Value>(&body);
    if let Some(want) = expect.get("json") {
        if parsed.as_ref().ok() != Some(want) {
            problems.push(format!("body {text}, expected JSON {want}"));
        }
    }
    if let Some(want) = expect.get("json_subset") {
        if !parsed.as_ref().is_ok_and(|got| subset(want, got)) {
            problems.push(format!("body {text}, expected it to hold {want}"));
        }
    }
    if let Some(want) = expect.get("body_text").and_then(Value::as_str) {
        if text != want {
            problems.push(format!("body {text:?}, expected {want:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[tokio::test]
async fn every_contract_case_holds() {
    let cases: Value = serde_json::from_str(CASES).expect("cases.json is JSON");
    let cases = cases["cases"].as_array().expect("a cases array");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(case["handler"].clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, move |req| behave(behaviour.clone(), req), async move {
            let _ = stopped.await;
        }));
        if let Err(problem) = run(case, addr).await {
            failures.push(format!("{}: {problem}", case["name"].as_str().unwrap()));
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
    assert!(failures.is_empty(), "{} of {} contract cases fail:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
