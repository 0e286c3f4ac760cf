//! Liveness and readiness.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keel_core::store::ListFilter;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::state::Shared;

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "getHealth",
    responses(
        (status = 200, description = "The process answers.", body = Health, example = json!({"status": "ok"})),
    )
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers and the node is not draining.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "getReadiness",
    responses(
        (status = 200, description = "Ready for work.", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "Draining (`draining`) or the store is unavailable (`not-ready`).",
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again."))),
    )
)]
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Result<Json<Health>, Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    shared.store.list(ListFilter { limit: 1, ..Default::default() }).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: store unavailable");
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready", "the store is unavailable")
            .retry_after(1)
    })?;
    Ok(Json(Health { status: "ready" }))
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}
