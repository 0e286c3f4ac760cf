//! The backlog and DLQ numbers behind `/metrics` ([`NodeStore::queue_stats`](keel_core::store::NodeStore)):
//! one grouped read over the waiting and dead rows only (`invocations_by_status`).

use keel_core::clock::Millis;
use keel_core::store::QueueStats;
use keel_core::Result;

use super::rows::{db_err, query, Tx};

const QUEUE_STATS: &str = "SELECT function, subscription, \
       COUNT(*) FILTER (WHERE status IN ('queued', 'retrying')), \
       MIN(due_at) FILTER (WHERE status IN ('queued', 'retrying') AND due_at <= $1), \
       COUNT(*) FILTER (WHERE status = 'dead') \
     FROM invocations WHERE status IN ('queued', 'retrying', 'dead') \
     GROUP BY function, subscription";

pub(crate) async fn queue_stats(tx: &Tx<'_>, now: Millis) -> Result<Vec<QueueStats>> {
    let rows = query(tx, QUEUE_STATS, &[&now]).await.map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|row| QueueStats {
            function: row.get(0),
            subscription: row.get(1),
            waiting: row.get::<_, i64>(2) as u64,
            oldest_due_at: row.get(3),
            dead: row.get::<_, i64>(4) as u64,
        })
        .collect())
}
