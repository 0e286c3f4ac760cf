//! `Idempotency-Key` end to end: concurrency, replays, conflicts, TTL, and crashes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::crash::{free_port, spawn_keel, spawn_keel_with_env, wait_ready};
use crate::support::{get_json, request, send, Functions, Keel, Reply, SendError};

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.2).unwrap_or(Value::Null)
}

async fn keyed(url: &str, key: &str, body: &str, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("content-type", "application/json"), ("idempotency-key", key)];
    headers.extend_from_slice(extra);
    request("POST", url, &headers, body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_requests_run_the_function_once() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.pay]\nurl = \"http://{addr}/slow?ms=300\"\n")).await;
    let url = Arc::new(format!("{}/v1/functions/pay/invoke", keel.url));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { keyed(&url, "order-1", r#"{"amount":5}"#, &[]).await }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert_eq!(fns.calls().len(), 1, "the function ran once for 50 requests");
    let fresh: Vec<_> = replies.iter().filter(|r| r.0 == 200 && !r.1.contains_key("idempotent-replayed")).collect();
    assert_eq!(fresh.len(), 1, "exactly one request ran the work");
    for r in &replies {
        match r.0 {
            200 => assert_eq!(r.2, fresh[0].2, "a replay is the same answer"),
            409 => {
                assert_eq!(r.1["content-type"], "application/problem+json");
                assert!(r.1.contains_key("retry-after"));
            }
            other => panic!("unexpected status {other}: {:?}", r.2),
        }
    }
    assert!(replies.iter().any(|r| r.0 == 409), "overlapping requests are told the key is in use");

    // With `Prefer: wait`, concurrent duplicates wait for the first result instead.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = url.clone();
        tasks.push(tokio::spawn(
            async move { keyed(&url, "order-2", r#"{"amount":7}"#, &[("prefer", "wait=10")]).await },
        ));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert_eq!(fns.calls().len(), 2, "once more for the second key, not 50 times");
    assert!(replies.iter().all(|r| r.0 == 200), "{:?}", replies.iter().map(|r| r.0).collect::<Vec<_>>());
    let replayed = replies.iter().filter(|r| r.1.contains_key("idempotent-replayed")).count();
    assert_eq!(replayed, 49);
    let ids: std::collections::HashSet<_> = replies.iter().map(|r| r.1["keel-invocation-id"].clone()).collect();
    assert_eq!(ids.len(), 1, "every answer names the one invocation");
}

#[tokio::test]
async fn replays_are_byte_identical_and_misuse_is_refused() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.ok]\nurl = \"http://{addr}/ok\"\n[functions.bad]\nurl = \"http://{addr}/status?code=422\"\n"
    ))
    .await;
    let url = format!("{}/v1/functions/ok/invoke", keel.url);
    let first = keyed(&url, "k1", "{\"a\":1}", &[]).await;
    let again = keyed(&url, "\"k1\"", "{\"a\":1}", &[]).await;
    assert_eq!((first.0, again.0), (200, 200));
    assert_eq!(first.2, again.2, "byte-identical body");
    for h in ["content-type", "keel-invocation-id", "keel-attempts"] {
        assert_eq!(first.1[h], again.1[h], "{h}");
    }
    assert!(!first.1.contains_key("idempotent-replayed"));
    assert_eq!(again.1["idempotent-replayed"], "true");
    assert_eq!(fns.calls().len(), 1);

    let other_body = keyed(&url, "k1", "{\"a\":2}", &[]).await;
    assert_eq!(other_body.0, 422, "{:?}", json(&other_body));
    let long_key = "k".repeat(256);
    let too_long = keyed(&url, &long_key, "{}", &[]).await;
    assert_eq!(too_long.0, 400);
    assert!(json(&too_long)["detail"].as_str().unwrap().contains("255"));
    assert_eq!(fns.calls().len(), 1, "refused requests run nothing");

    // A function's 4xx is stored and replayed too.
    let bad = format!("{}/v1/functions/bad/invoke", keel.url);
    let first = keyed(&bad, "k2", "{}", &[]).await;
    let again = keyed(&bad, "k2", "{}", &[]).await;
    assert_eq!((first.0, again.0), (422, 422));
    assert_eq!(first.2, again.2);
    assert_eq!(fns.calls().len(), 2);

    // Async: the same 202 and the same invocation.
    let async_url = format!("{}/v1/functions/ok/invocations", keel.url);
    let a = keyed(&async_url, "k3", "{}", &[]).await;
    let b = keyed(&async_url, "k3", "{}", &[]).await;
    assert_eq!((a.0, b.0), (202, 202));
    assert_eq!(a.2, b.2);
    assert_eq!(a.1["location"], b.1["location"]);
    let id = json(&a)["id"].as_str().unwrap().to_string();
    keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(fns.calls_for(&id).len(), 1);
    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
    assert_eq!(inv["idempotency_key"], "k3");
}

#[tokio::test]
async fn redrive_with_a_key_is_replayed_not_repeated() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.bad]\nurl = \"http://{addr}/status?code=400\"\n")).await;
    let accepted = keyed(&format!("{}/v1/functions/bad/invocations", keel.url), "a", "{}", &[]).await;
    let id = json(&accepted)["id"].as_str().unwrap().to_string();
    keel.wait_final(&id, Duration::from_secs(5)).await;
    let url = format!("{}/v1/dlq/{id}/redrive", keel.url);
    let first = keyed(&url, "r1", "", &[]).await;
    assert_eq!(first.0, 200, "{:?}", json(&first));
    keel.wait_final(&id, Duration::from_secs(5)).await;
    let again = keyed(&url, "r1", "", &[]).await;
    assert_eq!(again.0, 200, "the stored answer, not a 409 for redriving a queued invocation");
    assert_eq!(again.2, first.2);
    assert_eq!(again.1["idempotent-replayed"], "true");
    keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(fns.calls_for(&id).len(), 2, "one original attempt and one redrive, not two");
}

#[tokio::test]
async fn an_expired_key_runs_again() {
    let (fns, addr) = Functions::start().await;
    let clock = keel_core::clock::ManualClock::new(keel_core::clock::Clock::now_ms(&keel_core::clock::SystemClock));
    let functions = format!("[functions.ok]\nurl = \"http://{addr}/ok\"\nidempotency_ttl = \"1s\"\n");
    let keel = Keel::start_with_clock(&functions, Arc::new(clock.clone())).await;
    let url = format!("{}/v1/functions/ok/invoke", keel.url);
    assert_eq!(keyed(&url, "t", "{}", &[]).await.0, 200);
    assert_eq!(keyed(&url, "t", "{}", &[]).await.1["idempotent-replayed"], "true");
    clock.advance(999);
    assert_eq!(keyed(&url, "t", "{}", &[]).await.1["idempotent-replayed"], "true", "within the TTL");
    clock.advance(2);
    let later = keyed(&url, "t", "{}", &[]).await;
    assert_eq!(later.0, 200);
    assert!(!later.1.contains_key("idempotent-replayed"), "after the TTL the key is new again");
    assert_eq!(fns.calls().len(), 2);
}

/// Writes `keel.toml` in `dir`: a SQLite database beside it, and `function` (TOML tables).
pub(crate) fn write_config(dir: &std::path::Path, function: &str) -> std::path::PathBuf {
    let config = dir.join("keel.toml");
    let text = format!("[storage]\nurl = \"sqlite://{}/keel.db\"\n\n{function}", dir.display());
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_admitting_and_replying_is_healed_by_retrying_with_the_key() {
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One attempt only: the attempt the crash cut off before it was sent must not use it up.
    let function = format!("[functions.ok]\nurl = \"http://{addr}/ok\"\nretry = {{ max_attempts = 1 }}\n");
    let config = write_config(dir.path(), &function);
    let (port, log) = (free_port(), dir.path().join("keel.log"));
    let base = format!("http://127.0.0.1:{port}");
    let mut keel = spawn_keel_with_env(&config, port, &log, &[("KEEL_CRASH_AT", "after-admit")]);
    wait_ready(&base, &mut keel).await;
    let url = format!("{base}/v1/functions/ok/invocations");
    let req = hyper::Request::post(&url)
        .header("idempotency-key", "signup-42")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    assert!(matches!(send(req).await, Err(SendError::Transport(_))), "the node died before answering");
    let status = keel.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status}");

    let mut keel = spawn_keel(&config, port, &log);
    wait_ready(&base, &mut keel).await;
    let retry = keyed(&url, "signup-42", "{}", &[]).await;
    assert_eq!(retry.0, 202);
    assert_eq!(retry.1["idempotent-replayed"], "true", "the admission had committed: it is replayed");
    let id = json(&retry)["id"].as_str().unwrap().to_string();
    let inv = crate::support::settled(&base, &id, Duration::from_secs(10)).await;
    assert_eq!(inv["status"], "succeeded", "{inv}");
    let (_, _, all) = get_json(&format!("{base}/v1/invocations")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "one invocation for the key, not two");
    assert_eq!(fns.calls_for(&id).len(), 1, "the function completed it once");
    keel.kill().unwrap();
    keel.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_sync_call_orphaned_by_a_crash_is_taken_over_by_the_retry() {
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("[functions.slow]\nurl = \"http://{addr}/slow?ms=400\"\n"));
    let (port, log) = (free_port(), dir.path().join("keel.log"));
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/v1/functions/slow/invoke");
    let mut keel = spawn_keel(&config, port, &log);
    wait_ready(&base, &mut keel).await;
    let pending = tokio::spawn({
        let url = url.clone();
        async move {
            let req = hyper::Request::post(url)
                .header("idempotency-key", "buy-7")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                .unwrap();
            match send(req).await {
                Err(SendError::Transport(_)) => true,
                Err(e @ SendError::Deadline(_)) => panic!("the orphaned call: {e}"),
                Ok(_) => false,
            }
        }
    });
    crate::support::eventually("the call reaching the function", Duration::from_secs(5), || async {
        (!fns.calls().is_empty()).then_some(())
    })
    .await;
    keel.kill().unwrap();
    keel.wait().unwrap();
    assert!(pending.await.unwrap(), "the caller lost its connection");

    let mut keel = spawn_keel(&config, port, &log);
    wait_ready(&base, &mut keel).await;
    let retry = keyed(&url, "buy-7", "{}", &[]).await;
    assert_eq!(retry.0, 200, "{:?}", json(&retry));
    assert!(!retry.1.contains_key("idempotent-replayed"), "the work ran again");
    let calls = fns.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].headers["idempotency-key"], calls[1].headers["idempotency-key"],
        "the same invocation id downstream, so the function can dedupe"
    );
    assert_eq!(retry.1["keel-invocation-id"], calls[0].headers["idempotency-key"]);
    assert_eq!(calls[1].attempt, 2, "attempts are numbered on");
    let id = retry.1["keel-invocation-id"].to_str().unwrap();
    let (_, _, inv) = get_json(&format!("{base}/v1/invocations/{id}")).await;
    assert_eq!(inv["status"], "succeeded");
    assert_eq!(inv["attempts"][0]["outcome"], "transient", "the interrupted attempt is in the history: {inv}");
    keel.kill().unwrap();
    keel.wait().unwrap();
}
