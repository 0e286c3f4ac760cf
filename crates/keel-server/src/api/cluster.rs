//! `GET /v1/cluster`: the nodes sharing this node's store, each with its last heartbeat and the
//! leases it holds. A node silent for longer than `NODE_TIMEOUT_MS` (on the store's clock) is
//! shown `alive: false`: its leases are being (or have been) taken back by the others.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::store::NODE_TIMEOUT_MS;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::regions::replicate::{ReplicatedEvents, ReplicationAnswer};
use crate::regions::RegionView;
use crate::state::Shared;

/// The nodes sharing this node's store, with their heartbeats and leases.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "functions",
    operation_id = "getCluster",
    responses(
        (status = 200, description = "Every node that has registered with the store.", body = Cluster),
        (status = 503, description = super::openapi::UNAVAILABLE,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub(crate) async fn get(State(shared): State<Arc<Shared>>) -> Result<Json<Cluster>, Problem> {
    let nodes = shared.store.nodes().await?;
    let items: Vec<Node> = nodes
        .iter()
        .map(|n| Node {
            id: n.id.clone(),
            addr: n.addr.clone(),
            started_at: rfc3339(n.started_at),
            last_heartbeat: rfc3339(n.heartbeat_at),
            alive: n.silent_ms <= NODE_TIMEOUT_MS,
            leases: n.leases,
            clock_skew_ms: n.clock_skew_ms,
            draining: n.draining,
            this_node: n.id == shared.node_id,
        })
        .collect();
    let region = shared.region.config().map(|_| shared.region.view());
    Ok(Json(Cluster { node: shared.node_id.clone(), region, items, next_cursor: None }))
}

/// This node's region: its name and role, where it stands (active, standby or fenced), the epoch
/// its database holds, and its peers as last seen. Peers read it to fence an old primary.
#[utoipa::path(
    get,
    path = "/v1/region",
    tag = "functions",
    operation_id = "getRegion",
    responses(
        (status = 200, description = "This node's region. Without `[region]`, only `standing`: `active`.", body = RegionView,
            example = json!({"name": "us", "role": "standby", "standing": "standby", "epoch": 1, "primary": "eu",
                "peers": [{"name": "eu", "url": "http://127.0.0.1:7733", "reachable": true, "standing": "active", "epoch": 1, "primary": "eu"}]})),
    )
)]
pub(crate) async fn region(State(shared): State<Arc<Shared>>) -> Json<RegionView> {
    Json(shared.region.view())
}

/// Active-active: events a peer region replicates here (what its replicator sends). Each is stored
/// once per source + id (a second copy is answered `duplicate`), delivered to this region's
/// global subscriptions only, and replicated no further.
#[utoipa::path(
    post,
    path = "/v1/region/events",
    tag = "functions",
    operation_id = "receiveRegionEvents",
    request_body = ReplicatedEvents,
    responses(
        (status = 200, description = "Every event is stored here: each listed, in the order sent, new or a duplicate.", body = ReplicationAnswer),
        (status = 400, description = "An event lacks topic, source, id or type, or its data is not base64."),
        (status = 409, description = "This node's region is not active-active (`not-active-active`): it takes no replicated events."),
        (status = 503, description = super::openapi::UNAVAILABLE,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub(crate) async fn receive_events(
    State(shared): State<Arc<Shared>>,
    body: super::body::RequestBody,
) -> Result<Json<ReplicationAnswer>, Problem> {
    // Refused before the body is looked at (read already, but a body too large or stalled is not
    // what the caller hears): a node that is not active-active takes no events at all.
    crate::regions::replicate::check_active(&shared)?;
    let body = body.read()?;
    shared.limits.check_json("the body", &body)?;
    let batch: ReplicatedEvents = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("the body is not a batch of replicated events: {e}")))?;
    Ok(Json(crate::regions::replicate::receive(&shared, batch).await?))
}

// The answer: the nodes, as one page that is never followed. (No doc comment: it would become
// the schema's description in the OpenAPI document.)
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Cluster {
    /// The id of the node that answered.
    node: String,
    /// The node's region, when `[region]` is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<RegionView>,
    items: Vec<Node>,
    /// Always null: the list is never paginated.
    next_cursor: Option<String>,
}

// One node.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Node {
    id: String,
    addr: String,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    last_heartbeat: String,
    /// False once the node has been silent too long: its leases are taken back by the others.
    alive: bool,
    /// Invocations it holds leases on now.
    leases: u64,
    /// Its clock minus the store's (the database's) at its last heartbeat. Silence is measured
    /// on the database's clock; leases and retry times are written on node clocks, so keep
    /// this small (NTP): a node logs a warning past 2 s.
    clock_skew_ms: i64,
    /// The node is draining: it finishes what it holds and admits nothing new.
    draining: bool,
    /// Whether this is the node that answered.
    this_node: bool,
}
