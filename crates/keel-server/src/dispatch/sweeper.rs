//! Background sweeps: take back leases whose holder died or hung, so their invocations run
//! again; purge expired idempotency key records.

use std::sync::Arc;
use std::time::Duration;

use keel_core::store::Reclaim;
use tokio::sync::watch;

use crate::state::Shared;

/// How often expired leases are looked for: off the hot path, leases last minutes.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

pub(crate) async fn sweep_expired_leases(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = shared.clock.now_ms();
        match shared.store.reclaim_leases(Reclaim::ExpiredBefore(now), now).await {
            Ok(functions) => {
                for name in functions {
                    tracing::warn!(function = %name, "took back expired leases");
                    shared.functions.wake(&name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired leases failed"),
        }
    }
}

/// How often expired idempotency key records are purged, and how much one sweep may delete.
const PURGE_EVERY: Duration = Duration::from_secs(60);
const PURGE_BATCH: usize = 1_000;
const PURGE_BATCHES_PER_SWEEP: usize = 10;

/// Deletes expired idempotency key records in bounded batches, so a backlog never turns into
/// one long write that stalls admissions.
pub(crate) async fn purge_expired_keys(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PURGE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for _ in 0..PURGE_BATCHES_PER_SWEEP {
            match shared.store.purge_expired_keys(shared.clock.now_ms(), PURGE_BATCH).await {
                Ok(n) if n < PURGE_BATCH => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired idempotency keys failed");
                    break;
                }
            }
        }
    }
}
