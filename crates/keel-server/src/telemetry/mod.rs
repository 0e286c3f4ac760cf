//! Telemetry: structured logs and OpenTelemetry traces ([`init`]), the Prometheus recorder and
//! its scrape (`scrape.rs`), the span of each attempt (`spans.rs`) and of each HTTP request with
//! its metrics (`http.rs`). Metric names live in `metric_definitions.rs`.
//!
//! - `logs.rs`: the subscriber: `RUST_LOG` filter, JSON lines or pretty text, and the OTLP layer.
//! - `lines.rs`: the log lines' way to stdout, written behind in groups by a thread of their own.
//! - `otel.rs`: the OTLP/HTTP exporter, on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - `recent.rs`: each function's last hour of attempts by the minute, for the console.

mod http;
mod lines;
mod logs;
mod otel;
pub(crate) mod recent;
mod scrape;
mod spans;

pub(crate) use http::{HttpMetrics, Observed};
pub use logs::{init, Telemetry};
pub(crate) use scrape::{install_recorder, render};
pub(crate) use spans::{
    attempt_span, batch_span, current_traceparent, emit_span, record_attempt, run_span, trace_id_of,
};
