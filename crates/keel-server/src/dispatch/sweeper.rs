//! Takes back leases whose holder died or hung, so their invocations run again.

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
