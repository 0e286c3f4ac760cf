//! Many invocations at once against a function that fails often: nothing is lost, nothing runs
//! to success twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

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

/// Every invocation of `function` with `status`, paging through the list.
pub(crate) async fn all_with_status(base: &str, function: &str, status: &str) -> Vec<String> {
    let (mut ids, mut cursor) = (Vec::new(), String::new());
    loop {
        let url = format!("{base}/v1/invocations?function={function}&status={status}&limit=1000{cursor}");
        let (code, _, page) = get_json(&url).await;
        assert_eq!(code, 200, "{page}");
        ids.extend(page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
}

/// How many invocations of `function` are queued, running or retrying.
async fn pending(base: &str, function: &str) -> usize {
    let mut pending = 0;
    for status in ["queued", "running", "retrying"] {
        pending += all_with_status(base, function, status).await.len();
    }
    pending
}

/// The succeeded invocations of `function` once `done` accepts them and nothing is pending, or
/// a failure naming what is missing after `limit`.
///
/// Nothing pending is checked both before and after the succeeded ones are listed: the lists
/// are separate requests, and an invocation finishing between them would otherwise be missing
/// from both (neither pending when looked for, nor yet succeeded when listed).
async fn wait_settled(
    base: &str,
    function: &str,
    limit: Duration,
    done: impl Fn(&HashSet<String>) -> Result<(), String>,
) -> HashSet<String> {
    crate::support::eventually_or_why(&format!("{function} settled"), limit, || async {
        let before = pending(base, function).await;
        let succeeded: HashSet<String> = all_with_status(base, function, "succeeded").await.into_iter().collect();
        let after = pending(base, function).await;
        match done(&succeeded) {
            Ok(()) if before == 0 && after == 0 => Ok(succeeded),
            verdict => Err(format!("{after} of {function} pending; {}", verdict.err().unwrap_or_default())),
        }
    })
    .await
}

/// Waits until `function` has at least `n` succeeded invocations and none is pending; returns
/// the succeeded ids.
pub(crate) async fn wait_succeeded(base: &str, function: &str, n: usize, limit: Duration) -> HashSet<String> {
    wait_settled(base, function, limit, |succeeded| {
        (succeeded.len() >= n).then_some(()).ok_or_else(|| format!("{} of {n} succeeded", succeeded.len()))
    })
    .await
}

/// Waits until every id of `accepted` succeeded and nothing of `function` is pending; returns
/// every succeeded id (an invocation whose 202 was lost in a crash may be among them).
pub(crate) async fn wait_all_succeeded(
    base: &str,
    function: &str,
    accepted: &[String],
    limit: Duration,
) -> HashSet<String> {
    wait_settled(base, function, limit, |succeeded| {
        let missing: Vec<&String> = accepted.iter().filter(|id| !succeeded.contains(*id)).collect();
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(format!("{} accepted not succeeded (first {first})", missing.len())),
        }
    })
    .await
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
    let succeeded = wait_all_succeeded(&keel.url, "shaky", &accepted, Duration::from_secs(120)).await;
    let accepted_set: HashSet<String> = accepted.iter().cloned().collect();
    assert_eq!(succeeded, accepted_set, "exactly the accepted invocations succeeded");

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
