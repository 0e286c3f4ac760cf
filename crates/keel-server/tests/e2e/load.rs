//! Many invocations at once against a function that fails often: nothing is lost, nothing runs
//! to success twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::support::{get_json, send, Functions, Keel, SendError};

/// Submits `n` async invocations of `function`, at most 64 in flight; returns the accepted ids.
///
/// A submission may fail (the crash tests SIGKILL the server under it): it is then not counted
/// as accepted. It may never hang: each has its own connection and [`send`]'s deadline, and one
/// that outlives it fails the test, naming it.
pub(crate) async fn submit_many(base: &str, function: &str, n: usize) -> Vec<String> {
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..n {
        let gate = gate.clone();
        let url = format!("{base}/v1/functions/{function}/invocations");
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire().await.unwrap();
            let req = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!("{{\"i\":{i}}}"))))
                .unwrap();
            let (status, _, body) = match send(req).await {
                Ok(reply) => reply,
                Err(SendError::Transport(_)) => return None,
                Err(e @ SendError::Deadline(_)) => panic!("submission {i} to {url}: {e}"),
            };
            (status == 202).then_some(())?;
            let body: Value = serde_json::from_slice(&body).ok()?;
            Some(body["id"].as_str()?.to_string())
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            ids.push(id);
        }
    }
    ids
}

/// Waits until `function` has at least `n` succeeded invocations and none is still pending;
/// returns the succeeded ids.
pub(crate) async fn wait_succeeded(base: &str, function: &str, n: usize, limit: Duration) -> Vec<String> {
    let end = Instant::now() + limit;
    loop {
        let (_, _, page) =
            get_json(&format!("{base}/v1/invocations?function={function}&status=succeeded&limit=1000")).await;
        let ids: Vec<String> = page["items"]
            .as_array()
            .map(|a| a.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let (_, _, pending) =
            get_json(&format!("{base}/v1/invocations?function={function}&status=queued&limit=1")).await;
        let (_, _, retrying) =
            get_json(&format!("{base}/v1/invocations?function={function}&status=retrying&limit=1")).await;
        let (_, _, running) =
            get_json(&format!("{base}/v1/invocations?function={function}&status=running&limit=1")).await;
        let idle = [pending, retrying, running].iter().all(|p| p["items"].as_array().is_some_and(|a| a.is_empty()));
        if ids.len() >= n && idle {
            return ids;
        }
        assert!(Instant::now() < end, "only {} of {n} succeeded after {limit:?}", ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_invocations_against_30_percent_failures_all_succeed_exactly_once() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.shaky]\nurl = \"http://{addr}/random?p=0.3\"\nconcurrency = 32\n\
         retry = {{ max_attempts = 25, initial = \"5ms\", max = \"40ms\" }}\n"
    ))
    .await;
    let accepted = submit_many(&keel.url, "shaky", 1000).await;
    assert_eq!(accepted.len(), 1000, "every submission is accepted");
    let mut succeeded = wait_succeeded(&keel.url, "shaky", 1000, Duration::from_secs(120)).await;
    let mut accepted_sorted = accepted.clone();
    accepted_sorted.sort();
    succeeded.sort();
    assert_eq!(succeeded, accepted_sorted, "exactly the accepted invocations succeeded");

    let successes = fns.successes();
    for id in &accepted {
        assert_eq!(
            successes.get(id),
            Some(&1),
            "invocation {id} completed {:?} times at the function",
            successes.get(id)
        );
    }
    let failures = fns.calls().iter().filter(|c| c.status == 503).count();
    assert!(failures > 200, "the function did fail often ({failures} failures), so retries were exercised");
}
