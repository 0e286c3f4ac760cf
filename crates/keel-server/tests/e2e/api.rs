//! The HTTP API's contract: sync invoke, results, lists, problem+json errors, draining.

use std::time::{Duration, Instant};

use keel_server::Node;
use serde_json::Value;

use crate::support::{
    config, eventually, eventually_or_why, fast_retry, get_json, post_json, request, Functions, Keel, REQUEST_DEADLINE,
};

fn assert_problem(status: u16, headers: &axum::http::HeaderMap, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], expected);
    assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
}

#[tokio::test]
async fn sync_invoke_passes_the_functions_answer_through_and_records_it() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.flaky]\nurl = \"http://{addr}/flaky?fail=2\"\n{r}\n[functions.picky]\nurl = \"http://{addr}/status?code=422\"\n{r}\n",
        r = fast_retry(5)
    ))
    .await;
    let (status, headers, body) = post_json(&format!("{}/v1/functions/flaky/invoke", keel.url), r#"{"a":1}"#).await;
    assert_eq!(status, 200);
    assert_eq!(headers["keel-attempts"], "3");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["attempt"], 3);
    let id = headers["keel-invocation-id"].to_str().unwrap().to_string();
    assert_eq!(fns.calls_for(&id).len(), 3);

    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
    assert_eq!(inv["status"], "succeeded", "the sync invocation is recorded before the reply");
    assert_eq!(inv["attempts"].as_array().unwrap().len(), 3);
    let (status, headers, raw) = request("GET", &format!("{}/v1/invocations/{id}/result", keel.url), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(serde_json::from_slice::<Value>(&raw).unwrap()["attempt"], 3);

    // A function's 4xx is passed through as it is, after one attempt.
    let (status, headers, body) = post_json(&format!("{}/v1/functions/picky/invoke", keel.url), "{}").await;
    assert_eq!(status, 422);
    assert_eq!(headers["keel-attempts"], "1");
    assert_eq!(body["attempt"], 1);
    let id = headers["keel-invocation-id"].to_str().unwrap();
    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
    assert_eq!(inv["status"], "failed");
    let (status, headers, body) = get_json(&format!("{}/v1/invocations/{id}/result", keel.url)).await;
    assert_problem(status, &headers, &body, 409);
}

#[tokio::test]
async fn sync_invoke_answers_502_when_retries_run_out_and_504_at_the_deadline() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.down]\nurl = \"http://{addr}/status?code=503\"\n{}\n\
         [functions.slow]\nurl = \"http://{addr}/slow?ms=2000\"\nsync_timeout = \"300ms\"\n",
        fast_retry(3)
    ))
    .await;
    let (status, headers, body) = post_json(&format!("{}/v1/functions/down/invoke", keel.url), "{}").await;
    assert_problem(status, &headers, &body, 502);
    assert_eq!(body["attempts"], 3);
    assert!(body["detail"].as_str().unwrap().contains("retries exhausted after 3 attempts"), "{body}");
    let id = body["invocation_id"].as_str().unwrap();
    let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
    assert_eq!(inv["status"], "failed");

    let start = Instant::now();
    let (status, headers, body) = post_json(&format!("{}/v1/functions/slow/invoke", keel.url), "{}").await;
    assert_problem(status, &headers, &body, 504);
    assert!(start.elapsed() < Duration::from_millis(1500), "the deadline cut the call: {:?}", start.elapsed());
}

/// A function's answer is read up to `server.max_result_bytes`: one at the limit is passed
/// through whole; one past it fails the attempt for good (no retry), naming the limit.
#[tokio::test]
async fn an_answer_past_max_result_bytes_fails_for_good_and_names_the_limit() {
    let (fns, addr) = Functions::start().await;
    // `/ok` answers `{"attempt":N,"echo":<the request's body>}`.
    let at_the_limit = serde_json::json!({"attempt": 1, "echo": "{}"}).to_string();
    let limit = at_the_limit.len();
    let keel = Keel::start(&format!(
        "[server]\nmax_result_bytes = {limit}\n[functions.ok]\nurl = \"http://{addr}/ok\"\n{}\n",
        fast_retry(3)
    ))
    .await;
    let invoke = format!("{}/v1/functions/ok/invoke", keel.url);
    let (status, _, raw) = request("POST", &invoke, &[("content-type", "application/json")], "{}").await;
    assert_eq!((status, std::str::from_utf8(&raw).unwrap()), (200, at_the_limit.as_str()));

    let (status, headers, body) = post_json(&invoke, "{ }").await;
    assert_problem(status, &headers, &body, 502);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("larger than server.max_result_bytes ({limit} bytes)")), "{body}");
    let id = body["invocation_id"].as_str().unwrap();
    let inv = keel.wait_final(id, Duration::from_secs(5)).await;
    assert_eq!((inv["status"].as_str(), inv["attempt_count"].as_u64()), (Some("failed"), Some(1)), "{inv}");
    assert_eq!(fns.calls_for(id).len(), 1, "permanent: not retried");
}

#[tokio::test]
async fn bad_requests_get_problem_details_and_store_nothing() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.ok]\nurl = \"http://{addr}/ok\"\n")).await;
    let u = &keel.url;
    let (s, h, b) = post_json(&format!("{u}/v1/functions/nope/invoke"), "{}").await;
    assert_problem(s, &h, &b, 404);
    assert!(b["detail"].as_str().unwrap().contains("nope"));
    let (s, h, b) = post_json(&format!("{u}/v1/functions/nope/invocations"), "{}").await;
    assert_problem(s, &h, &b, 404);

    let big = vec![b'x'; 1024 * 1024 + 1];
    let (s, h, b) = request("POST", &format!("{u}/v1/functions/ok/invocations"), &[], big).await;
    assert_problem(s, &h, &serde_json::from_slice(&b).unwrap(), 413);

    let (s, h, b) = request("POST", &format!("{u}/v1/functions/ok/invocations"), &[("keel-delay", "soon")], "{}").await;
    let b: Value = serde_json::from_slice(&b).unwrap();
    assert_problem(s, &h, &b, 400);
    assert!(b["detail"].as_str().unwrap().contains("keel-delay"));

    for query in ["status=bogus", "limit=0", "limit=x", "colour=red"] {
        let (s, h, b) = get_json(&format!("{u}/v1/invocations?{query}")).await;
        assert_problem(s, &h, &b, 400);
    }
    let (s, h, b) = post_json(&format!("{u}/v1/dlq/redrive"), "{\"function\": 3}").await;
    assert_problem(s, &h, &b, 400);
    let (s, h, b) = get_json(&format!("{u}/v1/invocations/01ARZ3NDEKTSV4RRFFQ69G5FAV")).await;
    assert_problem(s, &h, &b, 404);
    let (s, h, b) = get_json(&format!("{u}/v1/nowhere")).await;
    assert_problem(s, &h, &b, 404);
    let (s, h, b) = get_json(&format!("{u}/v1/functions/ok/invoke")).await;
    assert_problem(s, &h, &b, 405);

    let (_, _, all) = get_json(&format!("{u}/v1/invocations")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 0, "nothing refused was stored");
    assert_eq!(get_json(&format!("{u}/healthz")).await.0, 200);
    assert_eq!(get_json(&format!("{u}/readyz")).await.0, 200);
}

#[tokio::test]
async fn lists_filter_by_function_and_status_and_page_with_a_cursor() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.ok]\nurl = \"http://{addr}/ok\"\n[functions.bad]\nurl = \"http://{addr}/status?code=400\"\n"
    ))
    .await;
    for f in ["ok", "ok", "ok", "bad"] {
        let (s, _, _) = post_json(&format!("{}/v1/functions/{f}/invoke", keel.url), "{}").await;
        assert!(s == 200 || s == 400);
    }
    let (_, _, page) = get_json(&format!("{}/v1/invocations?function=ok&limit=2", keel.url)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().expect("a next page").to_string();
    let (_, _, rest) = get_json(&format!("{}/v1/invocations?function=ok&limit=2&cursor={cursor}", keel.url)).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let (_, _, failed) = get_json(&format!("{}/v1/invocations?status=failed", keel.url)).await;
    let failed = failed["items"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["function"], "bad");
}

#[tokio::test]
async fn draining_refuses_new_work_with_503_and_finishes_what_is_running() {
    let (fns, addr) = Functions::start().await;
    let mut keel = Keel::start(&format!("[functions.slow]\nurl = \"http://{addr}/slow?ms=600\"\n")).await;
    let (_, _, accepted) = post_json(&format!("{}/v1/functions/slow/invocations", keel.url), "{}").await;
    let id = accepted["id"].as_str().unwrap().to_string();
    eventually("the attempt to start", Duration::from_secs(5), || async { (!fns.calls().is_empty()).then_some(()) })
        .await;
    let node = keel.node.take().unwrap();
    let url = keel.url.clone();
    let draining = tokio::spawn(node.shutdown());
    eventually("the node to begin draining", Duration::from_secs(5), || async {
        (get_json(&format!("{url}/readyz")).await.0 == 503).then_some(())
    })
    .await;
    let (s, h, b) = post_json(&format!("{url}/v1/functions/slow/invocations"), "{}").await;
    assert_problem(s, &h, &b, 503);
    assert!(h.contains_key("retry-after"));
    assert_eq!(get_json(&format!("{url}/readyz")).await.0, 503);
    draining.await.unwrap();

    // The attempt in flight was allowed to finish and its outcome recorded.
    let node = Node::start(
        config(keel.dir.path(), &format!("[functions.slow]\nurl = \"http://{addr}/slow?ms=600\"\n")),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let (_, _, inv) = get_json(&format!("http://{}/v1/invocations/{id}", node.addr())).await;
    assert_eq!(inv["status"], "succeeded", "{inv}");
    assert_eq!(inv["attempt_count"], 1);
    node.shutdown().await;
}

/// Clients that hang up right after sending an async invoke or an event strand nothing: whatever
/// was stored runs at once (work leased at admission starts even when its request was dropped) —
/// none waits out its lease in `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_mid_admission_strand_no_invocation() {
    use tokio::io::AsyncWriteExt;

    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.ok]\nurl = \"http://{addr}/ok\"\nconcurrency = 64\n[topics.t]\n\
         [[subscriptions]]\nname = \"s\"\ntopic = \"t\"\nfunction = \"ok\"\n"
    ))
    .await;
    let host = keel.url.trim_start_matches("http://").to_string();
    let list = format!("{}/v1/invocations?function=ok&limit=1000", keel.url);
    // Hyper drops a request whose client is gone only once it is being handled; until enough of
    // them were stored to prove something, hang up on more.
    let mut stored_before = 0;
    for round in 0..20 {
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..100 {
            let host = host.clone();
            clients.spawn(async move {
                let body = format!("{{\"n\":{i}}}");
                let path = if i % 3 == 0 { "/v1/topics/t/events" } else { "/v1/functions/ok/invocations" };
                let head = format!(
                    "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\n\r\n",
                    body.len()
                );
                let sent = tokio::time::timeout(REQUEST_DEADLINE, async {
                    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
                    stream.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
                });
                sent.await.expect("connecting and writing a request");
                // Gone without reading the answer.
            });
        }
        while clients.join_next().await.is_some() {}
        stored_before = get_json(&list).await.2["items"].as_array().unwrap().len();
        if stored_before >= 30 || round == 19 {
            break;
        }
    }
    assert!(stored_before > 0, "no hung-up request was ever stored: the test proves nothing");
    // (The server may still be reading some of the requests: what is listed can grow.)
    eventually_or_why("every stored invocation to run once and succeed", Duration::from_secs(10), || async {
        let mut called: Vec<String> = fns.calls().into_iter().map(|c| c.invocation_id).collect();
        let (_, _, page) = get_json(&list).await;
        let items = page["items"].as_array().unwrap();
        let unfinished: Vec<&Value> = items.iter().filter(|i| i["status"] != "succeeded").collect();
        let mut stored: Vec<String> = items.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
        called.sort();
        stored.sort();
        if unfinished.is_empty() && called == stored {
            return Ok(());
        }
        Err(format!(
            "{} of {} stranded (e.g. {:?}); {} calls",
            unfinished.len(),
            items.len(),
            unfinished.first(),
            called.len()
        ))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_the_store_never_confirmed_answers_503_and_still_runs_once_stored() {
    use keel_core::store::faulty::{Fault, FaultyStore, Write};
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("[functions.ok]\nurl = \"http://{addr}/ok\"\n"));
    let options = keel_store::StoreOptions { url: config.storage.url.clone(), fsync: true };
    let store = std::sync::Arc::new(FaultyStore::new(keel_store::open(&options).unwrap()));
    // The admission commits, but its confirmation is lost (a connection cut during COMMIT).
    store.plan(Write::Enqueue, Fault::CommitThenUnknown);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = Node::start_with_store(config, listener, store.clone()).await.unwrap();
    let keel = Keel { url: format!("http://{}", node.addr()), node: Some(node), dir };
    let (status, headers, problem) = post_json(&format!("{}/v1/functions/ok/invocations", keel.url), "{}").await;
    assert_eq!(store.pending(), 0, "the fault fired");
    assert_eq!(status, 503, "not a 202 (unconfirmed), nor a plain failure: {problem}");
    assert!(problem["type"].as_str().unwrap().ends_with(":outcome-unknown"), "{problem}");
    assert!(headers.contains_key("retry-after"));
    let id = problem["invocation_id"].as_str().expect("names the invocation").to_string();
    // It was stored leased by this node: it runs now, not once its lease (90 s) runs out.
    let inv = keel.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(inv["status"], "succeeded", "{inv}");
    assert_eq!(fns.calls_for(&id).len(), 1);
}
