//! What the outer layer (`api::front_layer`) does around every HTTP request: its span (a child
//! of the caller's `traceparent`, whose context becomes the request's `traceparent`, so the work
//! it admits continues the same trace), and its metrics by matched route template and status.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::RwLock;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use foldhash::fast::RandomState;
use metrics::{counter, histogram, Counter, Histogram};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Span;

use super::spans::{exporting_now, set_remote_parent, traceparent_of};
use crate::metric_definitions::{HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS};
use crate::runtime::url::contract::TRACEPARENT;
use crate::trace;

/// Requests that matched no route share one label, so unknown paths cannot grow the series.
const UNMATCHED: &str = "unmatched";

/// One request being observed: its span, and what its metrics are labelled with.
pub(crate) struct Observed {
    started: Instant,
    method: &'static str,
    route: Option<MatchedPath>,
    span: Span,
}

impl Observed {
    /// Opens the request's span (a child of the caller's `traceparent`) and sets the request's
    /// `traceparent` to the context the work it admits continues.
    pub(crate) fn start(request: &mut Request) -> Self {
        let started = Instant::now();
        let method = method_label(request.method());
        let route = request.extensions().get::<MatchedPath>().cloned();
        let label = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        let received =
            request.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(trace::parse_traceparent);
        // Without traces exported, the caller's traceparent (or a new one) ties the logs of this
        // work together, and is known before the span: its trace id is a field from the start.
        let (early, received) = match exporting_now() {
            true => (None, received),
            false => (Some(received.unwrap_or_else(trace::new_traceparent)), None),
        };
        let span = tracing::info_span!(
            "request",
            otel.name = %format_args!("{method} {label}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = label,
            http.response.status_code = Empty,
            trace_id = super::trace_id_of(early.as_deref()),
        );
        // With traces exported, the request span is the parent of what it admits.
        let traceparent = match early {
            Some(traceparent) => traceparent,
            None => {
                set_remote_parent(&span, received.as_deref());
                let traceparent = traceparent_of(&span).or(received).unwrap_or_else(trace::new_traceparent);
                span.record("trace_id", super::trace_id_of(Some(&traceparent)));
                traceparent
            }
        };
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        Self { started, method, route, span }
    }

    /// The span the request's work runs in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records the answer's status on the span (for the trace exporter: the span ends here, so
    /// no line is logged in it with the status) and the request in `metrics`.
    pub(crate) fn finish(self, response: Response, metrics: &HttpMetrics) -> Response {
        let Self { started, method, route, span } = self;
        let status = response.status().as_u16();
        if exporting_now() {
            span.record("http.response.status_code", status);
        }
        let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        metrics.record(method, route, status, started.elapsed().as_secs_f64());
        response
    }
}

/// The handles of `keel_http_requests_total` and `keel_http_request_duration_seconds`, one pair
/// per method, route and status, kept by the router that serves them: a request finds its pair
/// with one hash of the three and a read lock, where the `counter!` and `histogram!` macros
/// built two label sets (with copies of the route and the status) and looked them up in the
/// recorder's registry at every request (BENCHMARKS.md, "Many small cuts"). The series are the
/// same: the routes are the router's templates (or `unmatched`), the statuses HTTP's.
///
/// The handles are the recorder's at their first request: the server installs its recorder
/// before it builds its router.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    hasher: RandomState,
    /// By the hash of (method, route, status); a collision shares the bucket.
    series: RwLock<HashMap<u64, Vec<Series>, RandomState>>,
}

struct Series {
    method: &'static str,
    route: Box<str>,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl HttpMetrics {
    fn record(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let hash = self.hasher.hash_one((method, route, status));
        let matches = |s: &&Series| s.method == method && s.status == status && &*s.route == route;
        let count = |s: &Series| {
            s.requests.increment(1);
            s.duration.record(seconds);
        };
        let series = self.series.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = series.get(&hash).and_then(|bucket| bucket.iter().find(matches)) {
            return count(found);
        }
        drop(series);
        let mut series = self.series.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = series.entry(hash).or_default();
        if let Some(found) = bucket.iter().find(matches) {
            return count(found);
        }
        let added = Series {
            method,
            route: route.into(),
            status,
            requests: counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route.to_owned(), "status" => status.to_string()),
            duration: histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route.to_owned()),
        };
        count(&added);
        bucket.push(added);
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::HttpMetrics;

    const INVOKE: &str = "/v1/functions/{name}/invoke";

    fn count(text: &str, method: &str, status: u16) -> Option<String> {
        let series = format!("keel_http_requests_total{{method=\"{method}\",route=\"{INVOKE}\",status=\"{status}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&series).map(str::to_owned))
    }

    #[test]
    fn each_method_route_and_status_counts_apart_and_keeps_its_handles() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let metrics = HttpMetrics::default();
        metrics::with_local_recorder(&recorder, || {
            metrics.record("POST", INVOKE, 200, 0.001);
            metrics.record("POST", INVOKE, 200, 0.002);
            metrics.record("POST", INVOKE, 429, 0.001);
            metrics.record("GET", INVOKE, 200, 0.001);
        });
        // Outside the recorder's scope: a series seen before still counts (its handles are
        // kept), where a `counter!` here would go nowhere.
        metrics.record("POST", INVOKE, 200, 0.003);
        let text = scrape.render();
        assert_eq!(count(&text, "POST", 200).as_deref(), Some("3"), "{text}");
        assert_eq!(count(&text, "POST", 429).as_deref(), Some("1"), "{text}");
        assert_eq!(count(&text, "GET", 200).as_deref(), Some("1"), "{text}");
        let durations = format!("keel_http_request_duration_seconds_count{{method=\"POST\",route=\"{INVOKE}\"}} ");
        let observed = text.lines().find_map(|line| line.strip_prefix(&durations));
        assert_eq!(observed, Some("4"), "both statuses share the method and route's histogram: {text}");
    }
}
