//! The closed-loop load generator: `concurrency` workers, each sending its next request as soon
//! as the previous one answered, over pooled keep-alive connections, until `total` were sent.
//! Every latency is kept (microseconds), so percentiles are exact rather than bucketed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::ProgressBar;

/// The payload every scenario sends: small, like most function inputs.
pub(crate) const PAYLOAD: &[u8] = br#"{"bench":true}"#;

/// One kind of request, sent again and again.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) uri: Uri,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// The status every answer must have; any other counts as a failure.
    pub(crate) expect: StatusCode,
    /// What every request carries ([`PAYLOAD`] unless [`Target::with_body`] says otherwise).
    pub(crate) body: Bytes,
}

impl Target {
    pub(crate) fn post(url: &str, expect: StatusCode) -> Result<Self, LoadError> {
        let uri = url.parse().map_err(|_| LoadError(format!("not a URL: {url}")))?;
        let headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        Ok(Target { uri, headers, expect, body: Bytes::from_static(PAYLOAD) })
    }

    /// Sends `body` as `content_type` instead of the JSON payload.
    pub(crate) fn with_body(mut self, body: Bytes, content_type: &'static str) -> Self {
        self.headers.retain(|(name, _)| name != CONTENT_TYPE);
        self.headers.push((CONTENT_TYPE, HeaderValue::from_static(content_type)));
        self.body = body;
        self
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Result<Self, LoadError> {
        let value = HeaderValue::from_str(value).map_err(|_| LoadError(format!("bad {name} header: {value}")))?;
        self.headers.push((HeaderName::from_static(name), value));
        Ok(self)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        request.headers_mut().extend(self.headers.iter().map(|(n, v)| (n.clone(), v.clone())));
        request
    }
}

/// A request that failed or answered an unexpected status: the run is not valid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LoadError(pub(crate) String);

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct LoadResult {
    pub(crate) requests: u64,
    pub(crate) elapsed: Duration,
    /// Every request's latency in microseconds, sorted.
    latencies_us: Vec<u32>,
}

impl LoadResult {
    pub(crate) fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at percentile `p` (0–100), in milliseconds (nearest rank).
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        percentile_us(&self.latencies_us, p) as f64 / 1000.0
    }
}

fn percentile_us(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps float error (99.9% of 1000 = 999.000…1) from skipping a rank.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The percentiles every latency figure reports.
pub(crate) const PERCENTILES: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// A keep-alive HTTP/1 client with room for `concurrency` idle connections per host.
pub(crate) fn client(concurrency: usize) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(concurrency.max(1)).build(connector)
}

/// Sends `total` requests to `target` from `concurrency` workers; `progress` advances per answer.
pub(crate) async fn closed_loop(
    target: &Target,
    total: u64,
    concurrency: usize,
    progress: &ProgressBar,
) -> Result<LoadResult, LoadError> {
    let http = client(concurrency);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, target, next, progress) = (http.clone(), target.clone(), next.clone(), progress.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let sent = Instant::now();
                let response =
                    http.request(target.request()).await.map_err(|e| LoadError(format!("{}: {e}", target.uri)))?;
                let status = response.status();
                let body = response.into_body().collect().await.map_err(|e| LoadError(e.to_string()))?.to_bytes();
                if status != target.expect {
                    let body = String::from_utf8_lossy(&body);
                    return Err(LoadError(format!(
                        "{} answered {status}, expected {}: {body}",
                        target.uri, target.expect
                    )));
                }
                latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                progress.inc(1);
            }
            Ok::<_, LoadError>(latencies)
        });
    }
    let mut latencies_us = Vec::with_capacity(total as usize);
    while let Some(joined) = workers.join_next().await {
        let worker = joined.map_err(|e| LoadError(format!("a load worker panicked: {e}")))?;
        latencies_us.extend(worker?);
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Ok(LoadResult { requests: latencies_us.len() as u64, elapsed, latencies_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile_us(&sorted, 50.0), 500);
        assert_eq!(percentile_us(&sorted, 99.9), 999);
        assert_eq!(percentile_us(&sorted, 100.0), 1000);
        assert_eq!(percentile_us(&sorted, 0.0), 1);
        assert_eq!(percentile_us(&[], 50.0), 0);
    }

    #[tokio::test]
    async fn sends_exactly_the_total_and_times_each() {
        let noop = super::super::noop::NoopFunction::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let target = Target::post(&noop.url(), StatusCode::OK).unwrap();
        let result = closed_loop(&target, 50, 4, &ProgressBar::hidden()).await.unwrap();
        assert_eq!((result.requests, noop.calls()), (50, 50));
        assert!(result.percentile_ms(50.0) <= result.percentile_ms(99.9));
    }

    #[tokio::test]
    async fn an_unexpected_status_fails_the_run() {
        let noop = super::super::noop::NoopFunction::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let target = Target::post(&noop.url(), StatusCode::ACCEPTED).unwrap();
        let error = closed_loop(&target, 5, 2, &ProgressBar::hidden()).await.unwrap_err();
        assert!(error.0.contains("answered 200 OK, expected 202"), "{error}");
    }
}
