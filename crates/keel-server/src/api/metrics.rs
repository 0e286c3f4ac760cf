//! `GET /metrics`: Prometheus text of this node (see `telemetry` and `metric_definitions.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::state::Shared;

/// The text exposition format, version 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics of this node (`keel_*`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "getMetrics",
    responses((status = 200, description = "The Prometheus text exposition format, version 0.0.4.",
        body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], crate::telemetry::render(&shared).await)
}
