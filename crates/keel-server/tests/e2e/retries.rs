//! Retries, backoff, timeouts, `Retry-After` and the DLQ, as a user sees them.

use std::time::Duration;

use crate::support::{fast_retry, post_json, Functions, Keel};

async fn submit(keel: &Keel, function: &str, body: &str) -> String {
    let (status, headers, reply) = post_json(&format!("{}/v1/functions/{function}/invocations", keel.url), body).await;
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/v1/invocations/{id}").as_str());
    assert_eq!(headers["keel-invocation-id"], id.as_str());
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(reply["status"], "queued");
    id
}

#[tokio::test]
async fn failing_twice_with_503_then_succeeding_takes_three_attempts_within_the_policy() {
    let (fns, addr) = Functions::start().await;
    let retry = "retry = { max_attempts = 5, initial = \"100ms\", max = \"1s\", multiplier = 2.0, jitter = \"equal\" }";
    let keel = Keel::start(&format!("[functions.flaky]\nurl = \"http://{addr}/flaky?fail=2\"\n{retry}\n")).await;
    let id = submit(&keel, "flaky", r#"{"n":1}"#).await;
    let inv = keel.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(inv["status"], "succeeded", "{inv}");
    assert_eq!(inv["attempt_count"], 3);
    let outcomes: Vec<_> =
        inv["attempts"].as_array().unwrap().iter().map(|a| (a["outcome"].clone(), a["status"].clone())).collect();
    assert_eq!(
        outcomes,
        [("transient".into(), 503.into()), ("transient".into(), 503.into()), ("success".into(), 200.into())]
    );
    assert_eq!(inv["result"]["attempt"], 3, "the stored result is the function's last answer");

    let calls = fns.calls_for(&id);
    assert_eq!(calls.iter().map(|c| c.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    // Equal jitter: the delay after attempt n lies in [ceiling/2, ceiling], ceiling = 100ms·2^(n-1).
    for (n, pair) in calls.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let ceiling = Duration::from_millis(100 << n);
        assert!(gap >= ceiling / 2, "gap {n}: {gap:?} below {:?}", ceiling / 2);
        // The upper bound has room for a loaded machine (a dispatcher turn, a busy core): the
        // lower bound is the policy's promise; `sim::` checks it on every retry of 200 seeds.
        assert!(gap <= ceiling + Duration::from_secs(1), "gap {n}: {gap:?} far above {ceiling:?}");
    }
    // The function contract's headers, stable across attempts.
    for c in &calls {
        assert_eq!(c.headers["idempotency-key"], id.as_str());
        assert_eq!(c.headers["keel-function"], "flaky");
        assert_eq!(c.headers["content-type"], "application/json");
        assert!(c.headers.contains_key("keel-deadline"));
        assert_eq!(&c.body[..], br#"{"n":1}"#);
    }
    let trace_ids: Vec<_> =
        calls.iter().map(|c| c.headers["traceparent"].to_str().unwrap()[3..35].to_string()).collect();
    assert!(trace_ids.iter().all(|t| t == &trace_ids[0]), "one trace across attempts: {trace_ids:?}");
}

#[tokio::test]
async fn a_400_goes_dead_after_one_attempt_and_redrive_runs_it_again_keeping_history() {
    let (fns, addr) = Functions::start().await;
    let keel =
        Keel::start(&format!("[functions.bad]\nurl = \"http://{addr}/status?code=400\"\n{}\n", fast_retry(5))).await;
    let id = submit(&keel, "bad", "{}").await;
    let inv = keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(inv["status"], "dead", "{inv}");
    assert_eq!(inv["attempt_count"], 1);
    assert_eq!(inv["attempts"][0]["outcome"], "permanent");
    assert!(inv["error"].as_str().unwrap().starts_with("permanent failure: HTTP 400"), "{inv}");

    let (_, _, dlq) = crate::support::get_json(&format!("{}/v1/dlq?function=bad", keel.url)).await;
    let ids: Vec<_> = dlq["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()]);

    let (status, _, redriven) = post_json(&format!("{}/v1/dlq/{id}/redrive", keel.url), "").await;
    assert_eq!(status, 200, "{redriven}");
    assert_eq!(redriven["status"], "queued");
    let inv = keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(inv["status"], "dead");
    assert_eq!(inv["redrives"], 1);
    assert_eq!(inv["attempt_count"], 2, "history kept: the first attempt and the redriven one");
    assert_eq!(fns.calls_for(&id).iter().map(|c| c.attempt).collect::<Vec<_>>(), [1, 2]);

    // Discard takes it out of the DLQ for good.
    let (status, _, _) = crate::support::request("DELETE", &format!("{}/v1/dlq/{id}", keel.url), &[], "").await;
    assert_eq!(status, 200);
    let (_, _, dlq) = crate::support::get_json(&format!("{}/v1/dlq", keel.url)).await;
    assert!(dlq["items"].as_array().unwrap().is_empty());
    let (_, _, inv) = crate::support::get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
    assert_eq!(inv["status"], "discarded");
}

#[tokio::test]
async fn a_function_that_always_fails_is_dead_after_exactly_max_attempts() {
    let (fns, addr) = Functions::start().await;
    let keel =
        Keel::start(&format!("[functions.down]\nurl = \"http://{addr}/status?code=500\"\n{}\n", fast_retry(4))).await;
    let id = submit(&keel, "down", "{}").await;
    let inv = keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(inv["status"], "dead");
    assert_eq!(inv["attempt_count"], 4);
    assert_eq!(fns.calls_for(&id).len(), 4);
    assert!(inv["error"].as_str().unwrap().starts_with("retries exhausted after 4 attempts: HTTP 500"), "{inv}");
    assert_eq!(inv["result_status"], 500);

    // A bulk redrive by function gives a fresh budget of 4.
    let (status, _, body) = post_json(&format!("{}/v1/dlq/redrive", keel.url), r#"{"function":"down"}"#).await;
    assert_eq!((status, body["redriven"].as_u64()), (200, Some(1)));
    let inv = keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(inv["status"], "dead");
    assert_eq!(inv["attempt_count"], 8);
}

#[tokio::test]
async fn a_slow_function_times_out_and_is_retried() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.slow]\nurl = \"http://{addr}/slow?ms=400\"\ntimeout = \"100ms\"\n{}\n",
        fast_retry(3)
    ))
    .await;
    let id = submit(&keel, "slow", "{}").await;
    let inv = keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(inv["status"], "dead");
    let attempts = inv["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for a in attempts {
        assert_eq!(a["outcome"], "timeout", "{a}");
        assert!(a["duration_ms"].as_i64().unwrap() >= 100);
        assert!(a["duration_ms"].as_i64().unwrap() < 400, "the attempt was cut at its timeout: {a}");
        assert!(a["error"].as_str().unwrap().contains("timed out after 100ms"));
    }
    assert_eq!(fns.calls_for(&id).len(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured_as_the_least_delay() {
    let (fns, addr) = Functions::start().await;
    let keel =
        Keel::start(&format!("[functions.busy]\nurl = \"http://{addr}/retry-after?secs=1\"\n{}\n", fast_retry(3)))
            .await;
    let id = submit(&keel, "busy", "{}").await;
    let inv = keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(inv["status"], "succeeded", "{inv}");
    let calls = fns.calls_for(&id);
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After: 1 must delay the retry a second, not {gap:?} (policy max is 50ms)"
    );
}

#[tokio::test]
async fn a_delayed_invocation_waits_and_cancel_stops_a_queued_one() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.ok]\nurl = \"http://{addr}/ok\"\n")).await;
    let url = format!("{}/v1/functions/ok/invocations", keel.url);
    let start = std::time::Instant::now();
    let (status, _, delayed) = crate::support::request("POST", &url, &[("keel-delay", "300ms")], "{}").await;
    assert_eq!(status, 202);
    let delayed: serde_json::Value = serde_json::from_slice(&delayed).unwrap();
    let delayed_id = delayed["id"].as_str().unwrap().to_string();
    let (_, _, later) = crate::support::request("POST", &url, &[("keel-delay", "1h")], "{}").await;
    let later: serde_json::Value = serde_json::from_slice(&later).unwrap();
    let later_id = later["id"].as_str().unwrap();

    let (status, _, cancelled) = post_json(&format!("{}/v1/invocations/{later_id}/cancel", keel.url), "").await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")));
    let inv = keel.wait_final(&delayed_id, Duration::from_secs(5)).await;
    assert_eq!(inv["status"], "succeeded");
    let call = &fns.calls_for(&delayed_id)[0];
    assert!(call.at - start >= Duration::from_millis(300), "ran {:?} after submit", call.at - start);
    assert!(fns.calls_for(later_id).is_empty());
    // Cancelling again is a conflict, not a silent success.
    let (status, _, problem) = post_json(&format!("{}/v1/invocations/{later_id}/cancel", keel.url), "").await;
    assert_eq!(status, 409, "{problem}");
}
