//! The backlog and DLQ numbers behind `/metrics` ([`NodeStore::queue_stats`](keel_core::store::NodeStore)):
//! one grouped read over the waiting and dead rows only.

use keel_core::clock::Millis;
use keel_core::store::QueueStats;
use keel_core::Result;
use rusqlite::Connection;

use super::rows::db_err;

/// Function, subscription, waiting, oldest due, dead. The waiting rows are read through the
/// partial index `invocations_due` and the dead ones through `invocations_dead`, so the cost
/// follows the backlog and the DLQ, not the history: one `status IN` over all three statuses
/// implies neither partial index, and SQLite scanned every invocation ever kept (140 ms at
/// 234,000 rows, on every `/metrics` scrape and `GET /v1/functions`).
const QUEUE_STATS: &str = "SELECT function, subscription, SUM(waiting), MIN(oldest), SUM(dead) FROM ( \
       SELECT function, subscription, 1 AS waiting, CASE WHEN due_at <= ?1 THEN due_at END AS oldest, 0 AS dead \
         FROM invocations WHERE status IN ('queued', 'retrying') \
       UNION ALL \
       SELECT function, subscription, 0, NULL, 1 FROM invocations WHERE status = 'dead') \
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

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// The backlog read may only touch the rows that wait or are dead: its plan reads the
    /// invocations through the two partial indexes, never a scan of the table or of an index
    /// that holds every row (`invocations_by_function` did, before).
    #[test]
    fn queue_stats_reads_only_the_waiting_and_dead_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", super::QUEUE_STATS)).unwrap();
        let steps: Vec<String> =
            plan.query_map([0], |row| row.get::<_, String>(3)).unwrap().collect::<Result<_, _>>().unwrap();
        let reads: Vec<&String> = steps.iter().filter(|s| s.contains(" invocations")).collect();
        assert_eq!(reads.len(), 2, "{steps:#?}");
        assert!(reads[0].contains("USING INDEX invocations_due"), "{steps:#?}");
        assert!(reads[1].contains("USING INDEX invocations_dead"), "{steps:#?}");
    }
}
