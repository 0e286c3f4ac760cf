//! The nodes of a SQLite store: in practice only this process, since the file lock keeps every
//! other one out. Heartbeats are kept in memory: they matter only while the node runs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use keel_core::clock::Millis;
use keel_core::store::{NodeBeat, NodeState};
use keel_core::Result;
use rusqlite::Connection;

use super::rows::db_err;

/// The last heartbeat of each node, by id, with when it arrived.
#[derive(Debug, Default)]
pub(crate) struct Nodes(Mutex<BTreeMap<String, (NodeBeat, Instant)>>);

impl Nodes {
    pub(crate) fn beat(&self, beat: NodeBeat) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(beat.id.clone(), (beat, Instant::now()));
    }

    /// Every node that reported, with the leases `held` counts for it.
    pub(crate) fn states(&self, held: &BTreeMap<String, u64>) -> Vec<NodeState> {
        let beats = self.0.lock().unwrap_or_else(|p| p.into_inner());
        beats
            .values()
            .map(|(b, arrived)| NodeState {
                id: b.id.clone(),
                addr: b.addr.clone(),
                started_at: b.started_at,
                heartbeat_at: b.now,
                leases: held.get(&b.id).copied().unwrap_or(0),
                draining: b.draining,
                silent_ms: arrived.elapsed().as_millis() as Millis,
                // One process, one clock.
                clock_skew_ms: 0,
            })
            .collect()
    }
}

/// Running invocations per node (a sync holder is named `node/request`).
pub(crate) fn leases_by_node(conn: &Connection) -> Result<BTreeMap<String, u64>> {
    let owners: Vec<(String, u64)> = conn
        .prepare_cached(
            "SELECT lease_owner, COUNT(*) FROM invocations WHERE status = 'running' AND lease_owner IS NOT NULL \
             GROUP BY lease_owner",
        )
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db_err)?;
    let mut held = BTreeMap::new();
    for (owner, n) in owners {
        let node = owner.split('/').next().unwrap_or_default().to_string();
        *held.entry(node).or_insert(0) += n;
    }
    Ok(held)
}
