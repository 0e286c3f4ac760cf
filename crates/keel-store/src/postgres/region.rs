//! Regions on PostgreSQL: whether this database is a replica still in recovery, the epoch row,
//! and promotion of a replica (`pg_promote`).

use keel_core::clock::Millis;
use keel_core::region::{Epoch, LocalView};
use keel_core::Result;

use super::rows::{db_err, execute, query, Tx};

pub(crate) async fn view(tx: &Tx<'_>) -> Result<LocalView> {
    let in_recovery: bool = query(tx, "SELECT pg_is_in_recovery()", &[]).await.map_err(db_err)?[0].get(0);
    let rows = query(tx, "SELECT epoch, primary_region FROM region_epoch WHERE id = 1", &[]).await.map_err(db_err)?;
    let epoch = rows.first().map(|r| Epoch { number: r.get::<_, i64>(0) as u64, primary: r.get(1) });
    Ok(LocalView { in_recovery, epoch })
}

/// Writes `epoch` unless the row already holds a number as high: true when written.
pub(crate) async fn raise(tx: &Tx<'_>, epoch: &Epoch, now: Millis) -> Result<bool> {
    let written = execute(
        tx,
        "INSERT INTO region_epoch (id, epoch, primary_region, changed_at) VALUES (1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, primary_region = EXCLUDED.primary_region, \
         changed_at = EXCLUDED.changed_at WHERE region_epoch.epoch < EXCLUDED.epoch",
        &[&(epoch.number as i64), &epoch.primary, &now],
    )
    .await
    .map_err(db_err)?;
    Ok(written > 0)
}
