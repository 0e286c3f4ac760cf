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

/// Readiness: the store answers and the node is not draining (nor fenced). A node of a standby
/// region is ready to serve reads and answers `standby`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "getReadiness",
    responses(
        (status = 200, description = "Ready for work (`ready`), or for reads only in a standby region (`standby`).", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "Draining (`draining`), fenced by a newer region epoch (`fenced`), or the store is unavailable (`not-ready`).",
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again."))),
    )
)]
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Result<Json<Health>, Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    let standing = shared.region.standing();
    if let keel_core::region::Standing::Fenced { .. } = standing {
        return Err(shared.region.refusal().unwrap_or_else(Problem::draining));
    }
    shared.store.list(ListFilter { limit: 1, ..Default::default() }).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: store unavailable");
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready", "the store is unavailable")
            .retry_after(1)
    })?;
    // A standby serves reads: ready, and says so.
    Ok(Json(Health { status: if standing.is_active() { "ready" } else { "standby" } }))
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}
