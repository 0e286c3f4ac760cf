//! The HTTP API (v1): routes → handlers. Every error is RFC 9457 problem+json ([`problem`]).

mod body;
mod cluster;
mod dlq;
mod events;
mod functions;
mod health;
mod idempotency;
mod invocations;
mod invoke;
mod kv;
mod metrics;
mod problem;
mod view;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::state::Shared;
use problem::Problem;

/// The router of one node, without a socket: tests can drive it with `oneshot`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let body_limit = shared.config.server.body_limit as usize;
    // Plain POST routes get idempotency keys from a layer; the invoke routes handle their own.
    let keyed = axum::middleware::from_fn_with_state(shared.clone(), idempotency::keyed);
    Router::new()
        .route("/v1/functions", get(functions::list))
        .route("/v1/functions/{name}", get(functions::get))
        .route("/v1/functions/{name}/invoke", post(invoke::invoke_sync))
        .route("/v1/functions/{name}/invocations", post(invoke::invoke_async))
        .route("/v1/invocations", get(invocations::list))
        .route("/v1/invocations/{id}", get(invocations::get))
        .route("/v1/invocations/{id}/result", get(invocations::result))
        .route("/v1/invocations/{id}/cancel", post(invocations::cancel).layer(keyed.clone()))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/redrive", post(dlq::redrive_matching).layer(keyed.clone()))
        .route("/v1/dlq/{id}/redrive", post(dlq::redrive).layer(keyed.clone()))
        .route("/v1/dlq/{id}", delete(dlq::discard))
        .route("/v1/cluster", get(cluster::get))
        .route("/v1/topics/{topic}/events", post(events::publish).layer(keyed))
        .route("/v1/events/{id}", get(events::get))
        .route("/v1/kv/{ns}/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(crate::telemetry::observe_request))
        .with_state(shared)
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
