//! Scenarios of features beyond plain invocations: `replay` (idempotent replays/s) and `fanout`
//! (events/s × subscriptions). Each probes the server first and is skipped, with a note, when the
//! server lacks the feature (an older server under `--url`).

use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, StatusCode};

use std::time::Instant;

use super::load::{self, PAYLOAD};
use super::noop::NoopFunction;
use super::report::{Case, Scenario};
use super::throughput::Direct;
use super::{BenchError, Settings};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `replay`: one sync invoke with an `Idempotency-Key`, then the same request again and again;
/// every answer must be the stored one (`idempotent-replayed: true`), the function not called.
pub(crate) async fn replay(settings: &Settings, direct: &Direct, base: &str) -> Result<Scenario, BenchError> {
    let keel = settings.client(base)?;
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
    let target = settings.target(&format!("{base}{path}"), StatusCode::OK)?.with_header("idempotency-key", &key)?;
    let run = load::closed_loop(&target, n, c, &settings.progress(&format!("replay c={c}"), n)).await?;
    let case = Case::new(format!("c={c}"), Some(run.per_second() / direct.many.per_second()))
        .with("per_s", run.per_second())
        .with("p50_ms", run.percentile_ms(50.0))
        .with("p99_ms", run.percentile_ms(99.0));
    Ok(Scenario { name: "replay", cases: vec![case], skipped: None })
}

/// The topic `fanout` publishes to, and how many subscriptions (all to `noop`) it has.
pub(crate) const FANOUT_TOPIC: &str = "keel-bench";
pub(crate) const FANOUT_SUBSCRIPTIONS: usize = 3;

/// `fanout`: N events published (plain JSON, C at a time) to a topic with
/// [`FANOUT_SUBSCRIPTIONS`] subscriptions, timed from the first publish to the last delivery
/// (counted at the no-op function, as `async` does). The ratio is deliveries/s over `direct`.
pub(crate) async fn fanout(
    settings: &Settings,
    direct: &Direct,
    noop: &NoopFunction,
    base: &str,
) -> Result<Scenario, BenchError> {
    let keel = settings.client(base)?;
    let headers = [(http::header::CONTENT_TYPE, "application/json".to_owned())];
    let path = format!("/v1/topics/{FANOUT_TOPIC}/events");
    let initial = noop.calls();
    let probe = keel.send(Method::POST, &path, &headers, Bytes::from_static(PAYLOAD)).await?;
    if probe.status != StatusCode::ACCEPTED {
        return Ok(Scenario::skipped("fanout", "this server does not accept events on the bench's topic"));
    }
    let (n, c) = (settings.requests, settings.concurrency);
    let deliveries = n * FANOUT_SUBSCRIPTIONS as u64;
    // The probe's own deliveries may still be arriving: count from after them.
    let hidden = indicatif::ProgressBar::hidden();
    super::throughput::wait_for_calls(noop, initial + FANOUT_SUBSCRIPTIONS as u64, &hidden, initial).await?;
    let from = noop.calls();
    let target = settings.target(&format!("{base}{path}"), StatusCode::ACCEPTED)?;
    let start = Instant::now();
    let publish = {
        let target = target.clone();
        tokio::spawn(async move { load::closed_loop(&target, n, c, &indicatif::ProgressBar::hidden()).await })
    };
    let progress = settings.progress(&format!("fanout c={c}"), deliveries as _);
    let done = super::throughput::wait_for_calls(noop, from + deliveries, &progress, from).await?;
    let published = publish.await.map_err(|e| BenchError::Server(e.to_string()))??;
    let per_s = deliveries as f64 / (done - start).as_secs_f64();
    let case = Case::new(format!("c={c} x{FANOUT_SUBSCRIPTIONS}"), Some(per_s / direct.many.per_second()))
        .with("deliveries_per_s", per_s)
        .with("events_per_s", per_s / FANOUT_SUBSCRIPTIONS as f64)
        .with("publish_per_s", published.per_second())
        .with("publish_p50_ms", published.percentile_ms(50.0));
    Ok(Scenario { name: "fanout", cases: vec![case], skipped: None })
}
