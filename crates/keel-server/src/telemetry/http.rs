//! What the outer layer (`api::front_layer`) does around every HTTP request: its span (a child
//! of the caller's `traceparent`, whose context becomes the request's `traceparent`, so the work
//! it admits continues the same trace), and its metrics by matched route template and status.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use metrics::{counter, histogram};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Span;

use super::spans::{set_remote_parent, traceparent_of};
use crate::metric_definitions::{HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS};
use crate::trace;

/// Requests that matched no route share one label, so unknown paths cannot grow the series.
const UNMATCHED: &str = "unmatched";

/// One request being observed: its span, and what its metrics are labelled with.
pub(crate) struct Observed {
    started: Instant,
    method: &'static str,
    route: String,
    span: Span,
}

impl Observed {
    /// Opens the request's span (a child of the caller's `traceparent`) and sets the request's
    /// `traceparent` to the context the work it admits continues.
    pub(crate) fn start(request: &mut Request) -> Self {
        let started = Instant::now();
        let method = method_label(request.method());
        let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
        let span = tracing::info_span!(
            "request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = %route,
            http.response.status_code = Empty,
            trace_id = Empty,
        );
        let received =
            request.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(trace::parse_traceparent);
        set_remote_parent(&span, received.as_deref());
        // With traces exported, the request span is the parent of what it admits; without, the
        // caller's traceparent (or a new one) still ties the logs of this work together.
        let traceparent = traceparent_of(&span).or(received).unwrap_or_else(trace::new_traceparent);
        span.record("trace_id", super::trace_id_of(Some(&traceparent)));
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            request.headers_mut().insert("traceparent", value);
        }
        Self { started, method, route, span }
    }

    /// The span the request's work runs in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records the answer's status on the span and the request in the metrics.
    pub(crate) fn finish(self, response: Response) -> Response {
        let Self { started, method, route, span } = self;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        let elapsed = started.elapsed().as_secs_f64();
        histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route.clone()).record(elapsed);
        counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route, "status" => status.to_string())
            .increment(1);
        response
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
