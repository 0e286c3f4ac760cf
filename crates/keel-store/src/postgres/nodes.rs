//! The `nodes` table: each node's heartbeat, and the leases each holds, for `GET /v1/cluster`
//! and for noticing dead nodes (see `ops::reclaim`).

use std::collections::BTreeMap;

use keel_core::clock::Millis;
use keel_core::store::{NodeBeat, NodeState};
use keel_core::Result;

use super::rows::{db_err, execute, query, Tx};

/// A node silent this long, holding no lease, is forgotten.
const FORGET_AFTER_MS: Millis = 24 * 3600 * 1000;

pub(crate) async fn heartbeat(tx: &Tx<'_>, beat: &NodeBeat) -> Result<()> {
    execute(
        tx,
        "INSERT INTO nodes (id, addr, started_at, heartbeat_at, draining) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET addr = EXCLUDED.addr, \
           heartbeat_at = GREATEST(nodes.heartbeat_at, EXCLUDED.heartbeat_at), draining = EXCLUDED.draining",
        &[&beat.id, &beat.addr, &beat.started_at, &beat.now, &beat.draining],
    )
    .await
    .map_err(db_err)?;
    execute(
        tx,
        "DELETE FROM nodes WHERE heartbeat_at < $1 AND NOT EXISTS (SELECT 1 FROM invocations \
         WHERE status = 'running' AND split_part(lease_owner, '/', 1) = nodes.id)",
        &[&(beat.now - FORGET_AFTER_MS)],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn nodes(tx: &Tx<'_>) -> Result<Vec<NodeState>> {
    let held: BTreeMap<String, i64> = query(
        tx,
        "SELECT split_part(lease_owner, '/', 1), COUNT(*) FROM invocations \
         WHERE status = 'running' AND lease_owner IS NOT NULL GROUP BY 1",
        &[],
    )
    .await
    .map_err(db_err)?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let rows = query(tx, "SELECT id, addr, started_at, heartbeat_at, draining FROM nodes ORDER BY id", &[])
        .await
        .map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: String = r.get(0);
            let leases = held.get(&id).copied().unwrap_or(0) as u64;
            NodeState { id, addr: r.get(1), started_at: r.get(2), heartbeat_at: r.get(3), leases, draining: r.get(4) }
        })
        .collect())
}
