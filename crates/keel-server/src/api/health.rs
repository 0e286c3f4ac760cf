//! Liveness and readiness.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keel_core::store::ListFilter;
use serde_json::{json, Value};

use super::problem::Problem;
use crate::state::Shared;

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers and the node is not draining.
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    shared.store.list(ListFilter { limit: 1, ..Default::default() }).await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: store unavailable");
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready", "the store is unavailable")
            .retry_after(1)
    })?;
    Ok(Json(json!({"status": "ready"})))
}
