//! Scenarios for features that land after the core: `replay` (idempotent replays/s) and `fanout`
//! (events/s × subscriptions). Each probes the server first and is skipped, with a note, when the
//! server lacks the feature — so the bench runs on every server version.

use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, StatusCode};

use super::load::{self, Target, PAYLOAD};
use super::report::{Case, Scenario};
use super::throughput::Direct;
use super::{BenchError, Settings};
use crate::cli::client::KeelClient;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `replay`: one sync invoke with an `Idempotency-Key`, then the same request again and again;
/// every answer must be the stored one (`idempotent-replayed: true`), the function not called.
pub(crate) async fn replay(settings: &Settings, direct: &Direct, base: &str) -> Result<Scenario, BenchError> {
    let keel = KeelClient::new(base)?;
    let key = format!("keel-bench-{}", keel_core::id::new_id(0));
    let path = "/v1/functions/noop/invoke";
    let headers = [(IDEMPOTENCY_KEY, key.clone()), (http::header::CONTENT_TYPE, "application/json".to_owned())];
    let mut replayed = false;
    for _ in 0..2 {
        let response = keel.send(Method::POST, path, &headers, Bytes::from_static(PAYLOAD)).await?;
        if !response.status.is_success() {
            return Err(response.problem().into());
        }
        replayed = response.header("idempotent-replayed") == Some("true");
    }
    if !replayed {
        return Ok(Scenario::skipped(
            "replay",
            "this server does not replay Idempotency-Key requests yet (idempotency has not landed)",
        ));
    }
    let (n, c) = (settings.requests, settings.concurrency);
    let target = Target::post(&format!("{base}{path}"), StatusCode::OK)?.with_header("idempotency-key", &key)?;
    let run = load::closed_loop(&target, n, c, &settings.progress(&format!("replay c={c}"), n)).await?;
    let case = Case::new(format!("c={c}"), Some(run.per_second() / direct.many.per_second()))
        .with("per_s", run.per_second())
        .with("p50_ms", run.percentile_ms(50.0))
        .with("p99_ms", run.percentile_ms(99.0));
    Ok(Scenario { name: "replay", cases: vec![case], skipped: None })
}

/// `fanout` will publish events to a topic with several subscriptions, all to `noop`, and report
/// events/s × subscriptions from first publish to last delivery (counted at the no-op function,
/// as `async` does). Until the server has events it is skipped; once it has, the bench's server
/// config gains the topic and subscriptions and this probe gives way to the run.
pub(crate) async fn fanout(keel: &KeelClient) -> Result<Scenario, BenchError> {
    let headers = [(http::header::CONTENT_TYPE, "application/json".to_owned())];
    let response =
        keel.send(Method::POST, "/v1/topics/keel-bench/events", &headers, Bytes::from_static(PAYLOAD)).await?;
    // Keel answers an unrouted path with a 404 problem whose detail is "no route for PATH".
    let unrouted = String::from_utf8_lossy(&response.body).contains("no route for");
    let why = if response.status == StatusCode::NOT_FOUND && (unrouted || !response.is_problem()) {
        "this server has no events yet (POST /v1/topics/{topic}/events is not routed)"
    } else {
        "this server has events, but keel bench does not declare topics and subscriptions yet"
    };
    Ok(Scenario::skipped("fanout", why))
}
