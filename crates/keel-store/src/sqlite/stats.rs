//! The backlog and DLQ numbers behind `/metrics` ([`NodeStore::queue_stats`](keel_core::store::NodeStore)):
//! one grouped read over the waiting and dead rows only.

use keel_core::clock::Millis;
use keel_core::store::QueueStats;
use keel_core::Result;
use rusqlite::Connection;

use super::rows::db_err;

/// Shared by both backends' shape: function, subscription, waiting, oldest due, dead.
const QUEUE_STATS: &str = "SELECT function, subscription, \
       SUM(CASE WHEN status IN ('queued', 'retrying') THEN 1 ELSE 0 END), \
       MIN(CASE WHEN status IN ('queued', 'retrying') AND due_at <= ?1 THEN due_at END), \
       SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END) \
     FROM invocations WHERE status IN ('queued', 'retrying', 'dead') \
     GROUP BY function, subscription";

pub(crate) fn queue_stats(conn: &Connection, now: Millis) -> Result<Vec<QueueStats>> {
    let mut statement = conn.prepare_cached(QUEUE_STATS).map_err(db_err)?;
    let rows = statement
        .query_map([now], |row| {
            Ok(QueueStats {
                function: row.get(0)?,
                subscription: row.get(1)?,
                waiting: row.get::<_, i64>(2)? as u64,
                oldest_due_at: row.get(3)?,
                dead: row.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(db_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
}
