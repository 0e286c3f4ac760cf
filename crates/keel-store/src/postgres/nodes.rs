//! The `nodes` table: each node's heartbeat, and the leases each holds, for `GET /v1/cluster`
//! and for noticing dead nodes (see `ops::reclaim`).

use std::collections::BTreeMap;

use keel_core::clock::Millis;
use keel_core::store::{NodeBeat, NodeState};
use keel_core::Result;

use super::rows::{db_err, execute, query, Tx};

/// A node silent this long, holding no lease, is forgotten.
const FORGET_AFTER_MS: Millis = 24 * 3600 * 1000;

/// The database's clock in milliseconds, in SQL: liveness is measured on it, never on a node's.
pub(crate) const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::BIGINT";

/// Records `beat`; returns the node's clock minus the database's.
pub(crate) async fn heartbeat(tx: &Tx<'_>, beat: &NodeBeat) -> Result<Millis> {
    let seen = query(
        tx,
        &format!(
            "INSERT INTO nodes (id, addr, started_at, heartbeat_at, draining, seen_at) \
             VALUES ($1, $2, $3, $4, $5, {DB_NOW_MS}) \
             ON CONFLICT (id) DO UPDATE SET addr = EXCLUDED.addr, \
               heartbeat_at = GREATEST(nodes.heartbeat_at, EXCLUDED.heartbeat_at), draining = EXCLUDED.draining, \
               seen_at = EXCLUDED.seen_at \
             RETURNING seen_at"
        ),
        &[&beat.id, &beat.addr, &beat.started_at, &beat.now, &beat.draining],
    )
    .await
    .map_err(db_err)?;
    let seen_at: Millis = seen.first().map_or(beat.now, |r| r.get(0));
    execute(
        tx,
        "DELETE FROM nodes WHERE heartbeat_at < $1 AND NOT EXISTS (SELECT 1 FROM invocations \
         WHERE status = 'running' AND split_part(lease_owner, '/', 1) = nodes.id)",
        &[&(beat.now - FORGET_AFTER_MS)],
    )
    .await
    .map_err(db_err)?;
    Ok(beat.now - seen_at)
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
    let rows = query(
        tx,
        &format!(
            "SELECT id, addr, started_at, heartbeat_at, draining, {DB_NOW_MS} - seen_at, heartbeat_at - seen_at \
             FROM nodes ORDER BY id"
        ),
        &[],
    )
    .await
    .map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: String = r.get(0);
            let leases = held.get(&id).copied().unwrap_or(0) as u64;
            NodeState {
                id,
                addr: r.get(1),
                started_at: r.get(2),
                heartbeat_at: r.get(3),
                leases,
                draining: r.get(4),
                silent_ms: r.get(5),
                clock_skew_ms: r.get(6),
            }
        })
        .collect())
}
