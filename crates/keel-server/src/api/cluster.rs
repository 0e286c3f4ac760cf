//! `GET /v1/cluster`: the nodes sharing this node's store, each with its last heartbeat and the
//! leases it holds. A node silent for longer than `NODE_TIMEOUT_MS` is shown `alive: false`: its
//! leases are being (or have been) taken back by the others.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::store::NODE_TIMEOUT_MS;
use serde_json::{json, Value};

use super::problem::Problem;
use crate::state::Shared;

/// `GET /v1/cluster`
pub(crate) async fn get(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, Problem> {
    let now = shared.clock.now_ms();
    let nodes = shared.store.nodes().await?;
    let items: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "addr": n.addr,
                "started_at": rfc3339(n.started_at),
                "last_heartbeat": rfc3339(n.heartbeat_at),
                "alive": now - n.heartbeat_at <= NODE_TIMEOUT_MS,
                "leases": n.leases,
                "this_node": n.id == shared.node_id,
            })
        })
        .collect();
    Ok(Json(json!({ "node": shared.node_id, "items": items, "next_cursor": null })))
}
