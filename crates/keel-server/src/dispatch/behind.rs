//! Records written behind the reply: an unkeyed sync invocation without effects is answered as
//! soon as the function answered, and its record (history, not work: nothing runs again from it)
//! is committed in the background, waiting up to the store's unhurried window (2 ms on SQLite)
//! to share its commit and fsync with others. Reads of such an invocation commit what is held
//! back at once and wait for its record, so a client that GETs the id it was just given still
//! finds it without waiting out the window. A crash in that window loses the record of a call
//! whose caller already had its answer — never work, never effects.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::invocation::Invocation;
use keel_core::store::{Store, Urgency};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The records on their way to the store.
#[derive(Debug, Default)]
pub(crate) struct WrittenBehind {
    /// Ids whose record is not committed yet. A std Mutex: nothing awaits while it is held.
    pending: Mutex<HashSet<String>>,
    /// Signalled whenever a record is committed (or failed).
    settled: Notify,
}

impl WrittenBehind {
    /// Commits `inv` in the background; its commit may wait briefly for company.
    ///
    /// Always unhurried, whatever the load: nobody waits on it (a read hurries it), and at one
    /// call in flight a commit of its own cost the writer 103–113 µs of CPU per call, fsync
    /// included, and the call 30 µs of p50 latency on a 2-core machine (BENCHMARKS.md, "Round
    /// three, continued").
    pub(crate) fn push(self: &Arc<Self>, store: Arc<dyn Store>, inv: Invocation) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(inv.id.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let id = inv.id.clone();
            let recorded = store.record_finished(inv, None, Urgency::Unhurried).await;
            if let Err(e) = recorded {
                tracing::error!(invocation_id = %id, error = %e, "recording a sync invocation failed");
            }
            me.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            me.settled.notify_waiters();
        });
    }

    fn is_pending(&self, id: &str) -> bool {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Waits (up to `limit`) for the record of `id` if it is on its way, committing at once what
    /// `store` holds back for company.
    pub(crate) async fn wait_for(&self, store: &dyn Store, id: &str, limit: Duration) {
        if self.is_pending(id) {
            store.hurry();
        }
        let end = Instant::now() + limit;
        loop {
            let settled = self.settled.notified();
            if !self.is_pending(id) || tokio::time::timeout_at(end, settled).await.is_err() {
                return;
            }
        }
    }

    /// Waits (up to `limit`) for the records on their way now — not for later ones — so a list
    /// read after a sync call's reply includes that call.
    pub(crate) async fn wait_for_current(&self, store: &dyn Store, limit: Duration) {
        let end = Instant::now() + limit;
        let current: Vec<String> = self.pending.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        if !current.is_empty() {
            store.hurry();
        }
        loop {
            let settled = self.settled.notified();
            if !current.iter().any(|id| self.is_pending(id)) {
                return;
            }
            if tokio::time::timeout_at(end, settled).await.is_err() {
                return;
            }
        }
    }

    /// Waits (until `end`) for every record on its way: a drain ends with them committed.
    pub(crate) async fn drained(&self, store: &dyn Store, end: Instant) -> bool {
        store.hurry();
        loop {
            let settled = self.settled.notified();
            if self.pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                return true;
            }
            if tokio::time::timeout_at(end, settled).await.is_err() {
                return false;
            }
        }
    }
}
