//! A batch function's server: items in, per-item answers out; a sync call as a batch of one.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::net::TcpListener;

use super::*;

/// Succeeds an item whose payload has `"ok"`, with its payload and context as its result; fails
/// `"later"` retryably (retry after 2 s), `"no"` for good, `"effects"` with a KV write; a batch
/// with an item `"boom"` fails whole.
async fn handler(items: Vec<Request>) -> Result<BatchReply, Error> {
    let mut reply = BatchReply::new();
    for item in &items {
        let id = item.ctx.invocation_id().to_owned();
        reply = match item.body.as_ref() {
            b"\"later\"" => reply.fail(id, Error::retry_after(Duration::from_secs(2)).with_message("busy")),
            b"\"no\"" => reply.fail(id, Error::permanent("refused")),
            b"\"effects\"" => reply.effects(&id, Effects::new().put("docs", &id, json!(1))),
            b"\"boom\"" => return Err(Error::retryable("the index is down")),
            body => reply.result(
                &id,
                json!({
                    "body": String::from_utf8_lossy(body),
                    "content_type": item.content_type(),
                    "attempt": item.ctx.attempt(),
                    "key": item.ctx.idempotency_key(),
                    "function": item.ctx.function(),
                    "event": item.ctx.event().map(|e| e.kind.clone()),
                    "subscription": item.ctx.subscription(),
                }),
            ),
        };
    }
    Ok(reply)
}

async fn post(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: String) -> (u16, serde_json::Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::post(format!("http://{addr}/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_batch_is_answered_per_item_and_a_sync_call_as_a_batch_of_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_batch_on(listener, handler, async move {
        let _ = stopped.await;
    }));
    let batch = [("content-type", BATCH_CONTENT_TYPE), ("keel-function", "index"), ("keel-batch-size", "5")];
    let items = json!([
        {"id": "a", "attempt": 1, "idempotency_key": "a", "payload": {"ok": true}, "content_type": "application/json"},
        {"id": "b", "attempt": 3, "idempotency_key": "b", "payload": "later"},
        {"id": "c", "attempt": 1, "idempotency_key": "c", "payload": "no"},
        {"id": "d", "attempt": 1, "idempotency_key": "run/step", "payload": "effects"},
        {"id": "e", "attempt": 2, "idempotency_key": "e", "payload_base64": "aGk=", "content_type": "text/plain",
         "subscription": "welcome", "event": {"id": "e1", "type": "user.registered", "source": "s"}},
    ]);
    // Spaces in a payload reach the handler as sent.
    let (status, answer) = post(addr, &batch, items.to_string().replace(r#"{"ok":true}"#, r#"{"ok": true}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["failed"],
        json!([{"id": "b", "error": "busy", "retry_after": 2}, {"id": "c", "error": "refused", "permanent": true}])
    );
    assert_eq!(
        answer["results"]["a"],
        json!({"body": "{\"ok\": true}", "content_type": "application/json", "attempt": 1, "key": "a",
               "function": "index", "event": null, "subscription": null}),
        "the payload as sent, with the item's own context and the batch's"
    );
    assert_eq!(
        answer["results"]["e"],
        json!({"body": "hi", "content_type": "text/plain", "attempt": 2, "key": "e", "function": "index",
               "event": "user.registered", "subscription": "welcome"})
    );
    assert_eq!(answer["effects"]["d"]["kv"], json!([{"ns": "docs", "key": "d", "value": 1}]));

    let (status, problem) =
        post(addr, &batch, json!([{"id": "x", "attempt": 1, "idempotency_key": "x", "payload": "boom"}]).to_string())
            .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (503, Some("the index is down")),
        "a failed batch fails every item"
    );
    let (status, _) = post(addr, &batch, "[{\"id\": 1}]".into()).await;
    assert_eq!(status, 400, "a malformed batch");

    let single =
        |id: &'static str| [("keel-invocation-id", id), ("keel-attempt", "1"), ("content-type", "application/json")];
    let (status, result) = post(addr, &single("s1"), "{\"ok\": 1}".into()).await;
    assert_eq!((status, result["body"].as_str()), (200, Some("{\"ok\": 1}")));
    assert_eq!(post(addr, &single("s2"), "\"no\"".into()).await.0, 422);
    assert_eq!(post(addr, &single("s3"), "\"later\"".into()).await.0, 503);
    let (status, envelope) = post(addr, &single("s4"), "\"effects\"".into()).await;
    assert_eq!((status, &envelope["kv"][0]["key"]), (200, &json!("s4")));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
