//! The exact answers to malformed or careless requests: every error is problem+json, with the
//! status the request deserves.

use serde_json::Value;

use crate::support::{request, Keel};

/// `(status, problem)` of a request expected to fail; panics unless the answer is problem+json.
async fn problem(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, response_headers, bytes) = request(method, url, headers, body.to_string()).await;
    let content_type = response_headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(
        content_type,
        "application/problem+json",
        "{method} {url}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    let problem: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(problem["status"].as_u64(), Some(u64::from(status)), "{problem}");
    (status, problem)
}

#[tokio::test]
async fn rejections_raised_before_a_handler_are_problem_json() {
    let keel = Keel::start("").await;
    let (status, body) = problem("GET", &format!("{}/v1/invocations/%FF%FE", keel.url), &[], "").await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("UTF-8"), "{body}");
    let (status, _) = problem("GET", &format!("{}/v1/kv/%FF/k", keel.url), &[], "").await;
    assert_eq!(status, 400);
    let (status, _) = problem("PATCH", &format!("{}/v1/functions", keel.url), &[], "").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn list_queries_clamp_large_limits_and_refuse_malformed_cursors() {
    let keel = Keel::start("").await;
    for path in ["/v1/invocations", "/v1/dlq"] {
        let url = format!("{}{path}", keel.url);
        let (status, _, _) = request("GET", &format!("{url}?limit=258019814203111047168"), &[], "").await;
        assert_eq!(status, 200, "a huge limit is clamped");
        for bad in ["cursor=garbage", "cursor=0", "limit=0", "limit=-1"] {
            let (status, body) = problem("GET", &format!("{url}?{bad}"), &[], "").await;
            assert_eq!(status, 400, "{path}?{bad}: {body}");
        }
    }
}

#[tokio::test]
async fn a_bulk_redrive_needs_a_body_and_an_empty_object_means_all() {
    let keel = Keel::start("").await;
    let url = format!("{}/v1/dlq/redrive", keel.url);
    let (status, body) = problem("POST", &url, &[], "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("send {}"), "{body}");
    let json = [("content-type", "application/json")];
    let (status, _, all) = request("POST", &url, &json, "{}").await;
    assert_eq!((status, serde_json::from_slice::<Value>(&all).unwrap()["redriven"].as_u64()), (200, Some(0)));
    let (status, _, _) = request("POST", &url, &json, r#"{"limit": 1e30}"#).await;
    assert_eq!(status, 200, "a limit past any count means every match");
}

#[tokio::test]
async fn keel_delay_is_one_number_and_one_unit_sent_once_and_only_on_async_invoke() {
    let keel = Keel::start("[functions.f]\nurl = \"http://127.0.0.1:9/\"\n").await;
    let async_url = format!("{}/v1/functions/f/invocations", keel.url);
    for bad in ["0", "30", "1s 2s", "1.5s", "366d"] {
        let (status, body) = problem("POST", &async_url, &[("keel-delay", bad)], "{}").await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _, _) = request("POST", &async_url, &[("keel-delay", "1h")], "{}").await;
    assert_eq!(status, 202);
    let (status, body) = problem("POST", &async_url, &[("keel-delay", "1h"), ("keel-delay", "2h")], "{}").await;
    assert_eq!(status, 400, "{body}");
    let sync_url = format!("{}/v1/functions/f/invoke", keel.url);
    let (status, body) = problem("POST", &sync_url, &[("keel-delay", "1s")], "{}").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("async"), "{body}");
    let twice = [("idempotency-key", "a"), ("idempotency-key", "b")];
    for url in [&async_url, &sync_url] {
        let (status, body) = problem("POST", url, &twice, "{}").await;
        assert_eq!(status, 400, "{body}");
    }
}

#[tokio::test]
async fn kv_preconditions_follow_rfc_9110() {
    let keel = Keel::start("").await;
    let url = format!("{}/v1/kv/users/u1", keel.url);
    let (status, _, _) = request("PUT", &url, &[], "{\"n\": 1}").await;
    assert_eq!(status, 201);
    let (status, body) = problem("PUT", &url, &[("if-match", "W/\"1\"")], "{\"n\": 2}").await;
    assert_eq!(status, 412, "a weak tag never matches for a write: {body}");
    let (status, body) = problem("PUT", &url, &[("if-match", "\"-1\"")], "{\"n\": 2}").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = request("PUT", &url, &[("if-match", "\"1\"")], "{\"n\": 2}").await;
    assert_eq!(status, 200);

    let (status, headers, body) = request("GET", &url, &[("if-none-match", "\"2\"")], "").await;
    assert_eq!((status, headers["etag"].to_str().unwrap(), body.len()), (304, "\"2\"", 0));
    let (status, _, _) = request("GET", &url, &[("if-none-match", "W/\"2\"")], "").await;
    assert_eq!(status, 304, "If-None-Match compares weakly");
    let (status, _, body) = request("GET", &url, &[("if-none-match", "\"1\"")], "").await;
    assert_eq!((status, &body[..]), (200, &b"{\"n\": 2}"[..]));
}

#[tokio::test]
async fn idempotency_key_answers_say_what_is_wrong_and_unknown_topics_are_404_every_time() {
    let keel = Keel::start("[topics.t]\n").await;
    let (status, body) =
        problem("POST", &format!("{}/v1/topics/t/events", keel.url), &[("idempotency-key", "\"k\";x=1")], "{}").await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("takes no parameters"), "{body}");
    let url = format!("{}/v1/topics/nope/events", keel.url);
    for payload in ["{\"a\": 1}", "{\"a\": 2}"] {
        let (status, body) = problem("POST", &url, &[("idempotency-key", "k1")], payload).await;
        assert_eq!((status, body["type"].as_str()), (404, Some("urn:keel:problem:unknown-topic")), "{body}");
    }
}
