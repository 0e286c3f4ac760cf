//! The pool's keeper: keeps `min_instances` running (replacing crashed ones, within the restart
//! backoff) and stops instances idle for `idle_timeout` beyond that floor. It sleeps until the
//! pool changes or the next idle deadline — it does not poll.

use std::sync::Arc;

use tokio::time::Instant;

use super::{InstanceState, PoolState, ProcessPool};

pub(super) async fn run(pool: Arc<ProcessPool>) {
    loop {
        let changed = pool.changed.notified();
        let next = {
            let mut state = pool.lock();
            if state.stopping {
                return;
            }
            keep(&pool, &mut state)
        };
        match next {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, changed).await;
            }
            None => changed.await,
        }
    }
}

/// One pass: start what `min_instances` lacks, stop what has idled out. Returns when it next
/// has something to do without being woken.
fn keep(pool: &Arc<ProcessPool>, state: &mut PoolState) -> Option<Instant> {
    let config = &pool.config;
    let min = config.min_instances as usize;
    let mut next: Option<Instant> = None;
    let alive = |state: &PoolState| state.slots.iter().filter(|s| s.state != InstanceState::Stopping).count();
    while alive(state) < min {
        if let Some(at) = pool.restart_allowed_at(state) {
            next = Some(at);
            break;
        }
        pool.start_instance(state);
    }
    let now = Instant::now();
    let mut idle: Vec<(Instant, u64)> = state
        .slots
        .iter()
        .filter(|s| s.state == InstanceState::Ready && s.in_flight == 0)
        .map(|s| (s.idle_since + config.idle_timeout, s.id))
        .collect();
    idle.sort_unstable();
    let mut spare = alive(state).saturating_sub(min);
    for (deadline, id) in idle {
        if spare == 0 {
            break;
        }
        if deadline > now {
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
            break;
        }
        if let Some(slot) = state.slots.iter_mut().find(|s| s.id == id) {
            tracing::info!(function = %pool.function, instance = id, "stopping an idle instance");
            slot.state = InstanceState::Stopping;
            if let Some(stop) = slot.stop.take() {
                let _ = stop.send(());
            }
            spare -= 1;
        }
    }
    next
}
