//! A database outage under load: admission answers 503 problem+json (never 500, never a hang)
//! while PostgreSQL is down, and every accepted invocation completes once it is back; a sync
//! call whose effects could not be committed is never answered as a success.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use keel_store::pg_testkit::own_cluster;
use serde_json::Value;

use super::Cluster;
use crate::load::wait_all_succeeded;
use crate::support::{get_json, request, send, Functions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_call_whose_effects_were_not_committed_is_not_answered_as_a_success() {
    let Some(postgres) = own_cluster() else { return };
    let database = postgres.create_database().await.unwrap();
    let (fns, addr) = Functions::start().await;
    let functions = format!("[topics.done]\n\n[functions.record]\nurl = \"http://{addr}/fx/record?ms=2000\"\n");
    let cluster = Cluster::start(&database, &functions, 1).await;
    let url = format!("{}/v1/functions/record/invoke", cluster.url(0));
    let call = tokio::spawn(async move { request("POST", &url, &[], "{}").await });
    let record = format!("{}/v1/functions/record", cluster.url(0));
    crate::support::eventually("the call in flight", Duration::from_secs(5), || async {
        (get_json(&record).await.2["in_flight"] == 1).then_some(())
    })
    .await;
    // The function is running; the database goes away before its effects can be committed.
    postgres.stop().unwrap();
    let (status, headers, body) = tokio::time::timeout(Duration::from_secs(60), call).await.expect("answered").unwrap();
    postgres.resume().unwrap();
    let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(fns.calls().len(), 1, "the function answered (with effects) once");
    assert_eq!(status, 503, "not the function's 200: its effects were not committed: {problem}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(problem["type"].as_str().unwrap().ends_with(":outcome-unknown"), "{problem}");
    let id = problem["invocation_id"].as_str().expect("names the invocation");
    assert!(headers.contains_key("retry-after"));
    let (kv, _, _) = get_json(&format!("{}/v1/kv/done/{id}", cluster.url(0))).await;
    assert_eq!(kv, 404, "and indeed nothing of it was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_5s_under_load_answers_503_and_then_completes_every_accepted_invocation() {
    let Some(postgres) = own_cluster() else { return };
    let database = postgres.create_database().await.unwrap();
    let (fns, addr) = Functions::start().await;
    let functions = format!(
        "[functions.work]\nurl = \"http://{addr}/slow?ms=30\"\nconcurrency = 8\ntimeout = \"5s\"\n\
         retry = {{ max_attempts = 20, initial = \"50ms\", max = \"1s\" }}\n"
    );
    let cluster = Cluster::start(&database, &functions, 2).await;
    let replies = Arc::new(Mutex::new(Vec::<Admission>::new()));
    let stop_at = Instant::now() + Duration::from_secs(12);
    let submitters: Vec<_> = (0..8)
        .map(|i| {
            let (base, replies) = (cluster.url(i % 2).to_string(), replies.clone());
            tokio::spawn(async move { submit_until(&base, stop_at, &replies).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    postgres.resume().unwrap();
    for s in submitters {
        s.await.unwrap();
    }

    let replies = replies.lock().unwrap().clone();
    let accepted: Vec<String> = replies.iter().filter(|r| r.status == 202).filter_map(|r| r.id.clone()).collect();
    let refused: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    let other: Vec<_> = replies.iter().filter(|r| r.status != 202 && r.status != 503).collect();
    assert!(other.is_empty(), "only 202 or 503, never 500: {other:?}");
    assert!(!refused.is_empty(), "admission during the outage was refused");
    assert!(refused.iter().all(|r| r.content_type == "application/problem+json"), "503s are problem+json: {refused:?}");
    let slowest = replies.iter().map(|r| r.took).max().unwrap();
    assert!(slowest < Duration::from_secs(16), "no admission hangs (slowest {slowest:?})");
    wait_all_succeeded(cluster.url(0), "work", &accepted, Duration::from_secs(90)).await;
    let successes = fns.successes();
    assert!(accepted.iter().all(|id| successes.contains_key(id)), "the function completed every accepted one");
    eprintln!("outage: {} accepted, {} refused with 503, slowest answer {slowest:?}", accepted.len(), refused.len());
}

/// One answer to an async invoke.
#[derive(Debug, Clone)]
struct Admission {
    status: u16,
    content_type: String,
    /// When accepted.
    id: Option<String>,
    /// When refused: the problem's `detail`, so that an unexpected answer says why.
    #[allow(dead_code, reason = "read through Debug, in the message of a failed assertion")]
    detail: Option<String>,
    took: Duration,
}

/// Submits async invocations one after another until `stop_at`, recording each answer.
async fn submit_until(base: &str, stop_at: Instant, replies: &Mutex<Vec<Admission>>) {
    while Instant::now() < stop_at {
        let req = hyper::Request::post(format!("{base}/v1/functions/work/invocations"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let sent = Instant::now();
        let (status, headers, body) = send(req).await.unwrap_or_else(|e| panic!("the node answers: {e}"));
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        if status == 503 {
            assert!(headers.contains_key("retry-after"), "a 503 says when to retry");
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        let id = body["id"].as_str().map(str::to_string);
        let detail = body["detail"].as_str().map(str::to_string);
        replies.lock().unwrap().push(Admission { status, content_type, id, detail, took: sent.elapsed() });
        if status == 503 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
