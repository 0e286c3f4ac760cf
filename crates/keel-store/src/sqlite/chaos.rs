//! Chaos faults on SQLite: target and kind kept as JSON; expired rows are ignored.

use keel_core::chaos::Fault;
use keel_core::clock::Millis;
use keel_core::{Error, Result};
use rusqlite::{params, Connection};

use super::rows::db_err;

pub(crate) fn add(conn: &Connection, fault: &Fault) -> Result<()> {
    let (target, kind) = crate::fault_json::encode(fault);
    conn.prepare_cached(
        "INSERT INTO chaos_faults (id, target, kind, rate, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut st| st.execute(params![fault.id, target, kind, fault.rate, fault.created_at, fault.expires_at]))
    .map_err(db_err)?;
    Ok(())
}

pub(crate) fn list(conn: &Connection, now: Millis) -> Result<Vec<Fault>> {
    let rows: Vec<(String, String, String, f64, Millis, Millis)> = conn
        .prepare_cached(
            "SELECT id, target, kind, rate, created_at, expires_at FROM chaos_faults WHERE expires_at > ? \
             ORDER BY created_at, id",
        )
        .and_then(|mut st| {
            st.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?.collect()
        })
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(id, target, kind, rate, created_at, expires_at)| {
            crate::fault_json::decode(id, &target, &kind, rate, created_at, expires_at)
        })
        .collect::<std::result::Result<_, Error>>()
}

pub(crate) fn remove(conn: &Connection, id: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM chaos_faults WHERE id = ?")
        .and_then(|mut st| st.execute([id]))
        .map_err(db_err)?;
    Ok(n > 0)
}
