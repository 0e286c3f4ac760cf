//! The overview's backlog and DLQ sizes. The store's grouped count over every waiting and dead
//! invocation (`queue_stats`, meant for metrics scrapes) takes tens of milliseconds at 100k
//! stored invocations, so the overview does not wait for it on every view: a snapshot younger
//! than [`FRESH_MS`] is used as is; an older one, up to [`STALE_MS`], is shown with its time
//! while one background read replaces it; past that (or before the first read) the page waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use keel_core::clock::Millis;
use keel_core::store::QueueStats;

use crate::api::Problem;
use crate::state::Shared;

const FRESH_MS: Millis = 2_000;
const STALE_MS: Millis = 5 * 60_000;

/// The last backlog read, per node.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// A std Mutex: held to copy or replace the snapshot, never across an await.
    last: Mutex<Option<Snapshot>>,
    /// Set while a background read is under way, so a burst of views starts one.
    reading: AtomicBool,
}

#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    /// When it was read.
    pub(super) at: Millis,
    pub(super) stats: Vec<QueueStats>,
}

/// The backlog for a page now: fresh, or stale while a background read runs, or read at once.
pub(super) async fn snapshot(shared: &Arc<Shared>) -> Result<Snapshot, Problem> {
    let now = shared.clock.now_ms();
    let backlog = &shared.backlog;
    let last = backlog.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match last {
        Some(s) if now - s.at < FRESH_MS => Ok(s),
        Some(s) if now - s.at < STALE_MS => {
            if !backlog.reading.swap(true, Ordering::AcqRel) {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(p) = read(&shared).await {
                        tracing::warn!(error = p.detail(), "the console could not read the backlog");
                    }
                    shared.backlog.reading.store(false, Ordering::Release);
                });
            }
            Ok(s)
        }
        _ => read(shared).await,
    }
}

async fn read(shared: &Shared) -> Result<Snapshot, Problem> {
    let at = shared.clock.now_ms();
    let stats = crate::api::functions::backlog(shared).await?;
    let snapshot = Snapshot { at, stats };
    *shared.backlog.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
    Ok(snapshot)
}
