//! The overview's backlog and DLQ sizes. The store's grouped count over every waiting and dead
//! invocation (`queue_stats`, meant for metrics scrapes) takes tens of milliseconds at 100k
//! stored invocations, so a view does not wait for it: a read younger than [`FRESH_MS`] is used
//! as is; an older one (up to [`STALE_MS`]) is shown with its time while one background read
//! replaces it; with none, the view waits for that read at most [`WAIT`], then shows the page
//! without the sizes, and the page's refresh brings them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::Millis;
use keel_core::store::QueueStats;
use tokio::sync::watch;

use crate::state::Shared;

const FRESH_MS: Millis = 2_000;
const STALE_MS: Millis = 5 * 60_000;
/// How long a view with no usable read waits for one (enough for a small store's).
const WAIT: Duration = Duration::from_millis(25);

/// The last backlog read of this node, and whether one is under way.
#[derive(Debug)]
pub(crate) struct Backlog {
    last: watch::Sender<Option<Snapshot>>,
    /// Set while a read runs, so a burst of views starts one.
    reading: AtomicBool,
}

impl Default for Backlog {
    fn default() -> Self {
        Self { last: watch::Sender::new(None), reading: AtomicBool::new(false) }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    /// When it was read.
    pub(super) at: Millis,
    pub(super) stats: Vec<QueueStats>,
}

/// The backlog for a view now: a fresh read, else the last one if not too old, else a read that
/// ends within [`WAIT`], else none yet.
pub(super) async fn snapshot(shared: &Arc<Shared>) -> Option<Snapshot> {
    let now = shared.clock.now_ms();
    let mut reads = shared.backlog.last.subscribe();
    let last = reads.borrow_and_update().clone();
    if let Some(fresh) = last.as_ref().filter(|s| now - s.at < FRESH_MS) {
        return Some(fresh.clone());
    }
    start_read(shared);
    if let Some(stale) = last.filter(|s| now - s.at < STALE_MS) {
        return Some(stale);
    }
    let newer = tokio::time::timeout(WAIT, reads.wait_for(|s| s.as_ref().is_some_and(|s| now - s.at < FRESH_MS))).await;
    match newer {
        Ok(Ok(read)) => read.clone(),
        _ => None,
    }
}

fn start_read(shared: &Arc<Shared>) {
    if shared.backlog.reading.swap(true, Ordering::AcqRel) {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let at = shared.clock.now_ms();
        match crate::api::functions::backlog(&shared).await {
            Ok(stats) => {
                shared.backlog.last.send_replace(Some(Snapshot { at, stats }));
            }
            Err(p) => tracing::warn!(error = p.detail(), "the console could not read the backlog"),
        }
        shared.backlog.reading.store(false, Ordering::Release);
    });
}
