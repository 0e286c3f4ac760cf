//! Conditional increments through two nodes: each invocation reads a counter from Keel's KV and
//! answers an effects envelope that writes `value + 1` only if the version is still the one it
//! read. Concurrent invocations on both nodes conflict; Keel retries the losers; the counter ends
//! at exactly the number of invocations — every increment applied once, none lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::Cluster;
use crate::load::{submit_many, wait_all_succeeded};
use crate::support::{get_json, request};

const EFFECTS: &str = "application/vnd.keel.effects+json";

/// Where the increment function reads the counter: a Keel node, known once the cluster runs.
type KeelUrl = Arc<Mutex<String>>;

async fn increment(State(keel): State<KeelUrl>) -> Response {
    let base = keel.lock().unwrap().clone();
    increment_after(Some(request("GET", &format!("{base}/v1/kv/counters/hits"), &[], "").await))
}

/// The effects envelope of one increment of `counters/hits`, from a read of it (`None`: Keel
/// could not be reached): written only if the version is still the one read, or 503 (retried)
/// when the read failed.
pub(super) fn increment_after(read: Option<crate::support::Reply>) -> Response {
    let (status, headers, body) = read.unwrap_or((503, Default::default(), Default::default()));
    let write = match status {
        404 => serde_json::json!({"ns": "counters", "key": "hits", "value": 1, "if_absent": true}),
        200 => {
            let value: u64 = serde_json::from_slice(&body).unwrap();
            let version: i64 = headers["etag"].to_str().unwrap().trim_matches('"').parse().unwrap();
            serde_json::json!({"ns": "counters", "key": "hits", "value": value + 1, "if_version": version})
        }
        // Keel is briefly unable to answer: a transient failure, retried.
        _ => return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "kv read failed").into_response(),
    };
    let envelope = serde_json::json!({"status": 200, "result": {"wrote": write["value"]}, "kv": [write]});
    ([("content-type", EFFECTS)], envelope.to_string()).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_conditional_increments_through_two_nodes_count_to_30() {
    let Some(database) = keel_store::pg_testkit::fresh_database().await else { return };
    let keel: KeelUrl = Arc::default();
    let app = axum::Router::new().route("/increment", axum::routing::post(increment)).with_state(keel.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let functions = format!(
        "[functions.increment]\nurl = \"http://{addr}/increment\"\nconcurrency = 16\n\
         retry = {{ max_attempts = 100, initial = \"5ms\", max = \"100ms\", jitter = \"full\" }}\n"
    );
    let cluster = Cluster::start(&database, &functions, 2).await;
    *keel.lock().unwrap() = cluster.url(0).to_string();

    let (a, b) =
        tokio::join!(submit_many(cluster.url(0), "increment", 15), submit_many(cluster.url(1), "increment", 15));
    let accepted: Vec<String> = a.into_iter().chain(b).collect();
    assert_eq!(accepted.len(), 30);
    wait_all_succeeded(cluster.url(1), "increment", &accepted, Duration::from_secs(120)).await;

    let (status, headers, value) = get_json(&format!("{}/v1/kv/counters/hits", cluster.url(1))).await;
    assert_eq!(status, 200);
    assert_eq!(value, 30, "every increment applied exactly once");
    assert_eq!(headers["etag"], "\"30\"");
}
