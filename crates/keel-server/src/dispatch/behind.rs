//! Records written behind the reply: an unkeyed sync invocation without effects is answered as
//! soon as the function answered, and its record (history, not work: nothing runs again from it)
//! is committed in the background, waiting up to the store's unhurried window (2 ms on SQLite)
//! to share its commit and fsync with others. Reads of such an invocation commit what is held
//! back at once and wait for its record, so a client that GETs the id it was just given still
//! finds it without waiting out the window. A crash in that window loses the record of a call
//! whose caller already had its answer — never work, never effects.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keel_core::invocation::Invocation;
use keel_core::store::{Store, Urgency};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Records a batch takes at most, oldest first; the rest go in the next. A store slower for a
/// while than the calls it records (PostgreSQL's records went one round trip each until
/// 5 December) gathers a backlog, and one batch of all of it could outlast the store's time
/// limit (15 s) and be given up whole: 121,320 records were, in one run. Batches of this size
/// commit in tens of milliseconds on either store.
const MAX_BATCH: usize = 1_000;

/// The records on their way to the store. They go in batches, one at a time: while one batch
/// commits, the records of the calls answered meanwhile gather for the next, so under load a
/// record costs a place in a multi-row `INSERT` rather than a task, a writer job and a savepoint
/// of its own (BENCHMARKS.md, "Round three: the floor of Keel's HTTP stack": the writer's CPU per
/// sync call went from 30 to 18 µs).
#[derive(Debug, Default)]
pub(crate) struct WrittenBehind {
    /// A std Mutex: nothing awaits while it is held.
    held: Mutex<Held>,
    /// Signalled whenever a batch is committed (or failed).
    settled: Notify,
    /// Someone waits for a record: the next batch commits at once.
    hurried: AtomicBool,
}

#[derive(Debug, Default)]
struct Held {
    /// Ids whose record is not committed yet: gathering, or in the batch on its way.
    pending: Pending,
    /// Records not yet handed to the store.
    gathering: Vec<Invocation>,
    /// A task is handing batches to the store (at most one is).
    flushing: bool,
}

/// A set of ids, kept as a count of each id's hash: a record pushed and committed copies no id
/// (a set of `String`s took two copies of each sync call's id). Keel's own ids under a 64-bit
/// hash with a random key (foldhash) share a hash practically never; when two do, a read of one
/// only waits for the other's record too.
#[derive(Debug, Default)]
struct Pending {
    hasher: foldhash::fast::RandomState,
    counts: HashMap<u64, u32, foldhash::fast::RandomState>,
}

impl Pending {
    fn key(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn insert(&mut self, key: u64) {
        *self.counts.entry(key).or_insert(0) += 1;
    }

    fn remove(&mut self, key: u64) {
        if let Some(count) = self.counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&key);
            }
        }
    }

    fn contains(&self, key: u64) -> bool {
        self.counts.contains_key(&key)
    }

    fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The keys held now.
    fn keys(&self) -> Vec<u64> {
        self.counts.keys().copied().collect()
    }
}

impl WrittenBehind {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits `inv` in the background, with the other records that gather meanwhile; its
    /// commit may also wait briefly for the store's other writes.
    ///
    /// Always unhurried, whatever the load: nobody waits on it (a read hurries it), and at one
    /// call in flight a commit of its own cost the writer 103–113 µs of CPU per call, fsync
    /// included, and the call 30 µs of p50 latency on a 2-core machine (BENCHMARKS.md, "Round
    /// three, continued").
    pub(crate) fn push(self: &Arc<Self>, store: Arc<dyn Store>, inv: Invocation) {
        let start = {
            let mut held = self.held();
            let key = held.pending.key(&inv.id);
            held.pending.insert(key);
            held.gathering.push(inv);
            !std::mem::replace(&mut held.flushing, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.flush(store).await });
        }
    }

    /// Hands what gathered to the store, a batch at a time, until nothing is left.
    async fn flush(&self, store: Arc<dyn Store>) {
        loop {
            let (batch, keys) = {
                let mut held = self.held();
                if held.gathering.is_empty() {
                    held.flushing = false;
                    return;
                }
                let batch = match held.gathering.len() > MAX_BATCH {
                    true => held.gathering.drain(..MAX_BATCH).collect(),
                    false => std::mem::take(&mut held.gathering),
                };
                let keys: Vec<u64> = batch.iter().map(|inv| held.pending.key(&inv.id)).collect();
                (batch, keys)
            };
            let first = batch[0].id.clone();
            let urgency = if self.hurried.swap(false, Ordering::AcqRel) { Urgency::Now } else { Urgency::Unhurried };
            if let Err(e) = store.record_finished_all(batch, urgency).await {
                tracing::error!(first = %first, records = keys.len(), error = %e, "recording sync invocations failed");
            }
            let mut held = self.held();
            for &key in &keys {
                held.pending.remove(key);
            }
            drop(held);
            self.settled.notify_waiters();
        }
    }

    fn is_pending(&self, id: &str) -> bool {
        let held = self.held();
        held.pending.contains(held.pending.key(id))
    }

    /// Someone is held up by the records on their way: the batch in the store commits at once,
    /// and so does the next.
    fn hurry(&self, store: &dyn Store) {
        self.hurried.store(true, Ordering::Release);
        store.hurry();
    }

    /// Waits (up to `limit`) for the record of `id` if it is on its way, committing at once what
    /// `store` holds back for company.
    pub(crate) async fn wait_for(&self, store: &dyn Store, id: &str, limit: Duration) {
        if self.is_pending(id) {
            self.hurry(store);
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
        let current = self.held().pending.keys();
        if !current.is_empty() {
            self.hurry(store);
        }
        loop {
            let settled = self.settled.notified();
            let waiting = {
                let held = self.held();
                current.iter().any(|&key| held.pending.contains(key))
            };
            if !waiting {
                return;
            }
            if tokio::time::timeout_at(end, settled).await.is_err() {
                return;
            }
        }
    }

    /// Waits (until `end`) for every record on its way: a drain ends with them committed.
    pub(crate) async fn drained(&self, store: &dyn Store, end: Instant) -> bool {
        self.hurry(store);
        loop {
            let settled = self.settled.notified();
            if self.held().pending.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(end, settled).await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_core::invocation::{Attempt, NewInvocation, Status};
    use keel_core::outcome::Outcome;
    use keel_core::store::ListFilter;
    use keel_store::StoreOptions;

    use super::*;

    fn finished(id: String) -> Invocation {
        let mut inv = NewInvocation {
            id,
            function: "f".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            content_type: Some("application/json".into()),
            created_at: 1_000,
            due_at: 1_000,
            idempotency_key: None,
            concurrency_key: None,
            traceparent: None,
            delivery: None,
            lease: None,
            workflow: None,
        }
        .into_stored();
        inv.status = Status::Succeeded;
        inv.sync = true;
        inv.due_at = None;
        inv.attempt_count = 1;
        inv.attempts = vec![Attempt {
            number: 1,
            started_at: 1_000,
            ended_at: 1_001,
            outcome: Outcome::Success,
            http_status: Some(200),
            error: None,
        }];
        inv
    }

    /// Two records of one hash (forced here: both pushed under one key) stay pending until the
    /// second is committed: a read of either waits for both, never for neither.
    #[test]
    fn a_shared_hash_is_pending_until_its_last_record_is_committed() {
        let mut pending = Pending::default();
        let key = pending.key("01JDQ3Z8Y6P1V0A9W2K5M7N4RT");
        assert_eq!(key, pending.key("01JDQ3Z8Y6P1V0A9W2K5M7N4RT"), "one id, one key");
        pending.insert(key);
        pending.insert(key);
        pending.remove(key);
        assert!(pending.contains(key) && !pending.is_empty());
        pending.remove(key);
        assert!(!pending.contains(key) && pending.is_empty());
        pending.remove(key); // a key not held: nothing happens
        assert!(pending.is_empty());
    }

    fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.path().join("keel.db").display());
        keel_store::open(&StoreOptions { url, fsync: false }).unwrap()
    }

    /// Records pushed from many tasks at once go in batches: each is found as soon as someone
    /// asks for it, and all of them, with their attempts, once drained.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_pushed_together_are_each_found_when_asked_for_and_all_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let behind = Arc::new(WrittenBehind::default());
        let pushers: Vec<_> = (0..8)
            .map(|t| {
                let (behind, store) = (behind.clone(), store.clone());
                tokio::spawn(async move {
                    for i in 0..50 {
                        behind.push(store.clone(), finished(format!("01T{t}{i:03}")));
                        if i % 10 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for pusher in pushers {
            pusher.await.unwrap();
        }
        let liveness = Duration::from_secs(10);
        // A read of one record on its way waits for it alone, not for the drain.
        behind.wait_for(store.as_ref(), "01T7049", liveness).await;
        let got = store.get("01T7049").await.unwrap().expect("the record asked for is committed");
        assert_eq!(got, finished("01T7049".into()));
        assert!(behind.drained(store.as_ref(), Instant::now() + liveness).await);
        let all = store.list(ListFilter { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(all.items.len(), 400);
        for listed in &all.items {
            let inv = store.get(&listed.id).await.unwrap().unwrap();
            assert_eq!(inv, finished(listed.id.clone()), "each record whole, with its attempt");
        }
    }

    /// A backlog goes in batches of at most [`MAX_BATCH`], oldest first: a batch refused gives up
    /// only its own records. On one thread the flushing task runs only once every record has
    /// gathered; the first batch holds an id stored before, so it is refused whole.
    #[tokio::test]
    async fn a_backlog_goes_in_batches_of_at_most_max_batch_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.record_finished(finished("01DUP".into()), None, Urgency::Now).await.unwrap();
        let behind = Arc::new(WrittenBehind::default());
        behind.push(store.clone(), finished("01DUP".into()));
        let ids: Vec<String> = (0..MAX_BATCH + 2).map(|i| format!("01B{i:05}")).collect();
        for id in &ids {
            behind.push(store.clone(), finished(id.clone()));
        }
        let liveness = Duration::from_secs(30);
        assert!(behind.drained(store.as_ref(), Instant::now() + liveness).await);
        // The first batch: the duplicate and the MAX_BATCH - 1 oldest after it, refused.
        for id in [&ids[0], &ids[MAX_BATCH - 2]] {
            assert_eq!(store.get(id).await.unwrap(), None, "{id} was in the refused batch");
        }
        // The next: the three newest, committed.
        for id in &ids[MAX_BATCH - 1..] {
            assert_eq!(store.get(id).await.unwrap(), Some(finished(id.clone())), "{id} went in the next batch");
        }
    }

    /// A batch the store refuses (here, an id stored before) is logged and given up — all or
    /// none — and holds up neither readers nor the records that follow it. On one thread the
    /// flushing task runs only once both records have gathered: they are one batch.
    #[tokio::test]
    async fn a_refused_batch_is_given_up_whole_and_the_next_ones_still_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.record_finished(finished("01DUP".into()), None, Urgency::Now).await.unwrap();
        let behind = Arc::new(WrittenBehind::default());
        behind.push(store.clone(), finished("01DUP".into()));
        behind.push(store.clone(), finished("01WITH".into()));
        let liveness = Duration::from_secs(10);
        assert!(behind.drained(store.as_ref(), Instant::now() + liveness).await, "a refused batch settles");
        assert_eq!(store.get("01WITH").await.unwrap(), None, "all or none: its batch was refused");
        behind.push(store.clone(), finished("01AFTER".into()));
        behind.wait_for(store.as_ref(), "01AFTER", liveness).await;
        assert!(store.get("01AFTER").await.unwrap().is_some(), "the next batch commits");
    }
}
