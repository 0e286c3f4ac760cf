//! Chaos faults on PostgreSQL: target and kind kept as JSON text; expired rows are ignored, so
//! every node reads the same active set.

use keel_core::chaos::Fault;
use keel_core::clock::Millis;
use keel_core::Result;

use super::rows::{db_err, execute, query, Tx};

pub(crate) async fn add(tx: &Tx<'_>, fault: &Fault) -> Result<()> {
    let (target, kind) = crate::fault_json::encode(fault);
    execute(
        tx,
        "INSERT INTO chaos_faults (id, target, kind, rate, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&fault.id, &target, &kind, &fault.rate, &fault.created_at, &fault.expires_at],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn list(tx: &Tx<'_>, now: Millis) -> Result<Vec<Fault>> {
    let rows = query(
        tx,
        "SELECT id, target, kind, rate, created_at, expires_at FROM chaos_faults WHERE expires_at > $1 \
         ORDER BY created_at, id",
        &[&now],
    )
    .await
    .map_err(db_err)?;
    rows.iter().map(|r| crate::fault_json::decode(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect()
}

pub(crate) async fn remove(tx: &Tx<'_>, id: &str) -> Result<bool> {
    Ok(execute(tx, "DELETE FROM chaos_faults WHERE id = $1", &[&id]).await.map_err(db_err)? > 0)
}
