//! This node's part in a cluster: it reports a heartbeat (so the others can tell when it dies and
//! take its leases back), and wakes its dispatchers when another node makes their work due.
//!
//! It also says on `keel.system` that it joined, and, on a shared store, which nodes it sees join
//! and get lost. Every node that sees the same change publishes the same event (source
//! `keel://cluster`, id `keel.node.lost/<node>`): the store keeps one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keel_core::store::{NodeBeat, HEARTBEAT_EVERY_MS};
use keel_core::system_events::{NodeChange, NodeWatch, NODE_JOINED, NODE_LOST};
use tokio::sync::watch;

use crate::state::Shared;

/// After a failed heartbeat, the next try comes sooner: a node that was cut off from the database
/// should show it is alive again before the others' sweepers decide it is dead.
const RETRY_FAILED_BEAT: Duration = Duration::from_millis(500);

/// Starts the heartbeat and subscribes to other nodes' wake-ups. The heartbeat says `draining`
/// once `drain` turns true and goes on until `stop` does, when the drain is over: a node that
/// stopped beating as it began draining would have its in-flight attempts taken back and run
/// again by the others while it still finishes them.
pub(crate) fn join(shared: &Arc<Shared>, addr: SocketAddr, drain: watch::Receiver<bool>, stop: watch::Receiver<bool>) {
    // Weak: the store holds this callback, and the store is held by `shared`.
    let weak = Arc::downgrade(shared);
    shared.store.on_wakeup(Arc::new(move |function: &str| {
        if let Some(shared) = weak.upgrade() {
            shared.functions.wake(function);
        }
    }));
    tokio::spawn(heartbeat(shared.clone(), addr.to_string(), drain, stop));
}

async fn heartbeat(
    shared: Arc<Shared>,
    addr: String,
    mut drain: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let started_at = shared.clock.now_ms();
    let mut failing = false;
    let joined = serde_json::json!({ "node": shared.node_id, "addr": addr });
    announce(&shared, NODE_JOINED, &shared.node_id, joined);
    let mut watch = NodeWatch::default();
    loop {
        let draining = *drain.borrow();
        let beat = NodeBeat {
            id: shared.node_id.clone(),
            addr: addr.clone(),
            started_at,
            now: shared.clock.now_ms(),
            draining,
        };
        let pause = match shared.store.heartbeat(beat).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(node = %shared.node_id, "heartbeat recorded again");
                }
                if !shared.store.is_exclusive() {
                    look_at_nodes(&shared, &mut watch).await;
                }
                Duration::from_millis(HEARTBEAT_EVERY_MS as u64)
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(node = %shared.node_id, error = %e, "heartbeat failed; retrying");
                }
                RETRY_FAILED_BEAT
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            // The others learn of the drain at once, not at the next beat.
            _ = drain.wait_for(|d| *d), if !draining => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Where node events come from: the cluster, whichever node saw the change.
const CLUSTER_SOURCE: &str = "keel://cluster";

/// Publishes a node event the same from every node that sees it (the store keeps one).
fn announce(shared: &Shared, kind: &'static str, node: &str, data: serde_json::Value) {
    shared.system_events.emit_shared(kind, node, data, CLUSTER_SOURCE, format!("{kind}/{node}"));
}

/// Compares the store's nodes with the last look, and says which joined and which were lost.
async fn look_at_nodes(shared: &Shared, watch: &mut NodeWatch) {
    let nodes = match shared.store.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return tracing::debug!(error = %e, "reading the cluster's nodes failed"),
    };
    for change in watch.look(&nodes) {
        let (kind, id) = match &change {
            NodeChange::Joined(id) => (NODE_JOINED, id),
            NodeChange::Lost(id) => (NODE_LOST, id),
        };
        let Some(node) = nodes.iter().find(|n| n.id == *id) else { continue };
        if kind == NODE_LOST {
            tracing::warn!(node = %id, silent_ms = node.silent_ms, "a node of the cluster was lost");
        }
        let data = serde_json::json!({
            "node": node.id,
            "addr": node.addr,
            "last_heartbeat": keel_core::clock::rfc3339(node.heartbeat_at),
        });
        announce(shared, kind, id, data);
    }
}
