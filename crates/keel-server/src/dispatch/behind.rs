//! Records written behind the reply: an unkeyed sync invocation without effects is answered as
//! soon as the function answered, and its record (history, not work: nothing runs again from it)
//! is committed in the background, waiting up to the store's unhurried window (2 ms on SQLite)
//! to share its commit and fsync with others. Reads of such an invocation commit what is held
//! back at once and wait for its record, so a client that GETs the id it was just given still
//! finds it without waiting out the window. A crash in that window loses the record of a call
//! whose caller already had its answer — never work, never effects. A batch the store cannot
//! take (it is down, or a commit's outcome was lost) is tried again for up to a minute.
//!
//! The records on their way are bounded ([`Bounds`]): past the bound, a call's answer waits
//! until its own record is committed, so a store slower than the calls slows the callers down
//! instead of filling Keel's memory.

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

/// How many records (and how many bytes of their payloads and results) may be on their way
/// before a call's answer waits for its record. At the rates measured (SQLite about 45,000 sync
/// calls/s, PostgreSQL about 34,000) a few hundred are on their way; 10,000 is a fifth of a
/// second of calls, and a store that falls that far behind is slower than the calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { records: 10_000, bytes: 64 << 20 }
    }
}

/// How long a batch the store cannot take (it is down, or a commit's outcome was lost) is tried
/// again before its records are given up, and the first and the longest wait between tries.
/// While it is tried, the records after it gather, up to their [`Bounds`].
const RETRY_FOR: Duration = Duration::from_secs(60);
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// How long a call's answer waits for its record at most, past the bounds. Each batch settles
/// within the store's time limit (15 s), committed or given up; this bounds a caller's wait
/// when several such batches are ahead of its own.
const BACKLOG_WAIT: Duration = Duration::from_secs(30);

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
    bounds: Bounds,
}

#[derive(Debug, Default)]
struct Held {
    /// Ids whose record is not committed yet: gathering, or in the batch on its way.
    pending: Pending,
    /// Records not yet handed to the store.
    gathering: Vec<Invocation>,
    /// A task is handing batches to the store (at most one is).
    flushing: bool,
    /// Records on their way (gathering, or in the batch in the store), and the bytes of their
    /// payloads and results.
    records: usize,
    bytes: usize,
    /// Past the bounds: answers wait for their records.
    over: bool,
}

impl Held {
    /// Whether the records on their way are past `bounds`, and whether that changed.
    fn check(&mut self, bounds: Bounds) -> (bool, bool) {
        let over = self.records > bounds.records || self.bytes > bounds.bytes;
        (over, over != std::mem::replace(&mut self.over, over))
    }
}

/// The bytes a record holds beyond its fixed fields: its payload and its result.
fn weight(inv: &Invocation) -> usize {
    inv.payload.len() + inv.response.as_ref().map_or(0, |r| r.body.len())
}

/// Bodies up to this size are copied out of their read buffers by [`compact`].
const COMPACT_UP_TO: usize = 64 << 10;

/// Copies `inv`'s payload and result out of the buffers they were read into. Each is a slice of
/// a connection's read buffer (`body::read_whole` and the client keep the first chunk as it is),
/// and a slice keeps its whole buffer alive: a record held back for a while pinned about 14 KB
/// for a payload and a result of a few bytes (BENCHMARKS.md, "Records written behind, bounded").
/// A larger body came in several chunks and was already copied into a buffer of its own size.
fn compact(inv: &mut Invocation) {
    if inv.payload.len() <= COMPACT_UP_TO {
        inv.payload = bytes::Bytes::copy_from_slice(&inv.payload);
    }
    if let Some(response) = inv.response.as_mut().filter(|r| r.body.len() <= COMPACT_UP_TO) {
        response.body = bytes::Bytes::copy_from_slice(&response.body);
    }
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
    #[cfg(test)]
    fn with_bounds(bounds: Bounds) -> Self {
        WrittenBehind { bounds, ..Default::default() }
    }

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
    ///
    /// Past the [`Bounds`] it answers `Some(Backlogged)`: the caller waits on it
    /// ([`Backlogged::settled`]) before answering, until its record is committed.
    #[must_use = "past the bounds, the answer waits for its record"]
    pub(crate) fn push(self: &Arc<Self>, store: Arc<dyn Store>, mut inv: Invocation) -> Option<Backlogged> {
        let (start, key, (over, changed)) = {
            let mut held = self.held();
            // A record that will wait (the batches ahead hold MAX_BATCH already) lets go of its
            // read buffers; one on its way for a few milliseconds keeps them, uncopied.
            if held.records >= MAX_BATCH {
                compact(&mut inv);
            }
            let key = held.pending.key(&inv.id);
            held.pending.insert(key);
            held.records += 1;
            held.bytes += weight(&inv);
            held.gathering.push(inv);
            let start = !std::mem::replace(&mut held.flushing, true);
            (start, key, held.check(self.bounds))
        };
        if changed {
            self.report(over);
        }
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.flush(store).await });
        }
        over.then_some(Backlogged { key })
    }

    /// Logs the records on their way crossing their bounds, either way.
    fn report(&self, over: bool) {
        let Bounds { records, bytes } = self.bounds;
        match over {
            true => tracing::warn!(
                records,
                bytes,
                "sync invocation records are falling behind the store: answers wait for their records"
            ),
            false => tracing::info!("sync invocation records caught up with the store: answers no longer wait"),
        }
    }

    /// Hands what gathered to the store, a batch at a time, until nothing is left.
    async fn flush(&self, store: Arc<dyn Store>) {
        loop {
            let (batch, keys, bytes) = {
                let mut held = self.held();
                if held.gathering.is_empty() {
                    held.flushing = false;
                    return;
                }
                let batch: Vec<Invocation> = match held.gathering.len() > MAX_BATCH {
                    true => held.gathering.drain(..MAX_BATCH).collect(),
                    false => std::mem::take(&mut held.gathering),
                };
                let keys: Vec<u64> = batch.iter().map(|inv| held.pending.key(&inv.id)).collect();
                let bytes: usize = batch.iter().map(weight).sum();
                (batch, keys, bytes)
            };
            self.commit(store.as_ref(), Arc::new(batch)).await;
            let (over, changed) = {
                let mut held = self.held();
                for &key in &keys {
                    held.pending.remove(key);
                }
                held.records -= keys.len();
                held.bytes -= bytes;
                held.check(self.bounds)
            };
            if changed {
                self.report(over);
            }
            self.settled.notify_waiters();
        }
    }

    /// Commits `batch`, trying it again while the store cannot take it (down, or a commit whose
    /// outcome is unknown), for up to [`RETRY_FOR`]: a store away for less loses no record. A
    /// batch the store refuses (an id stored before) is given up at once, all or none; after an
    /// unknown outcome such a refusal most likely means the first try was committed.
    async fn commit(&self, store: &dyn Store, batch: Arc<Vec<Invocation>>) {
        let started = Instant::now();
        let mut delay = FIRST_RETRY;
        let mut unknown = false;
        loop {
            let urgency = if self.hurried.swap(false, Ordering::AcqRel) { Urgency::Now } else { Urgency::Unhurried };
            let error = match store.record_finished_all(batch.clone(), urgency).await {
                Ok(()) => return,
                Err(e) => e,
            };
            let (first, records) = (&batch[0].id, batch.len());
            if !error.is_transient() {
                match unknown {
                    true => {
                        tracing::warn!(%first, records, %error, "sync invocation records refused when tried again after an unknown outcome: most likely the first try was committed")
                    }
                    false => tracing::error!(%first, records, %error, "recording sync invocations failed"),
                }
                return;
            }
            if started.elapsed() >= RETRY_FOR {
                tracing::error!(%first, records, %error, "recording sync invocations failed: given up after trying for 60 s");
                return;
            }
            unknown |= matches!(error, keel_core::Error::OutcomeUnknown(_));
            tracing::warn!(%first, records, %error, retry_in_ms = delay.as_millis() as u64, "recording sync invocations failed: trying again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
    }

    fn is_pending(&self, key: u64) -> bool {
        self.held().pending.contains(key)
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
        let key = self.held().pending.key(id);
        if self.is_pending(key) {
            self.hurry(store);
        }
        self.settle(key, limit).await;
    }

    /// Waits (up to `limit`) until no record of `key` is on its way.
    async fn settle(&self, key: u64, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let settled = self.settled.notified();
            if !self.is_pending(key) || tokio::time::timeout_at(end, settled).await.is_err() {
                return;
            }
        }
    }

    /// Records on their way now: to the store, or gathering for it.
    pub(crate) fn on_their_way(&self) -> usize {
        self.held().records
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

/// A record pushed past the [`Bounds`]: its call's answer waits for it.
#[derive(Debug)]
pub(crate) struct Backlogged {
    key: u64,
}

impl Backlogged {
    /// Waits (up to [`BACKLOG_WAIT`]) until the record is committed, or its batch given up.
    /// It does not hurry the store: the batches ahead are full, and commit at their own pace.
    pub(crate) async fn settled(self, behind: &WrittenBehind) {
        metrics::counter!(crate::metric_definitions::SYNC_ANSWERS_HELD_TOTAL).increment(1);
        behind.settle(self.key, BACKLOG_WAIT).await;
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
                        assert!(behind.push(store.clone(), finished(format!("01T{t}{i:03}"))).is_none());
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
        assert!(behind.push(store.clone(), finished("01DUP".into())).is_none());
        let ids: Vec<String> = (0..MAX_BATCH + 2).map(|i| format!("01B{i:05}")).collect();
        for id in &ids {
            assert!(behind.push(store.clone(), finished(id.clone())).is_none());
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

    /// Past its bound of records, a pushed record's answer waits until the record is committed,
    /// and once the records on their way are back under it, answers no longer wait. On one
    /// thread the flushing task runs only when the test awaits.
    #[tokio::test]
    async fn past_the_bound_of_records_an_answer_waits_for_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let behind = Arc::new(WrittenBehind::with_bounds(Bounds { records: 3, bytes: usize::MAX }));
        for i in 0..3 {
            let held = behind.push(store.clone(), finished(format!("01R{i}")));
            assert!(held.is_none(), "record {i} is within the bound: its answer goes at once");
        }
        assert_eq!(behind.on_their_way(), 3);
        let held = behind.push(store.clone(), finished("01R3".into())).expect("the fourth is past the bound");
        held.settled(&behind).await;
        let got = store.get("01R3").await.unwrap().expect("committed when its answer goes");
        assert_eq!(got, finished("01R3".into()));
        assert!(behind.drained(store.as_ref(), Instant::now() + Duration::from_secs(10)).await);
        assert_eq!(behind.on_their_way(), 0);
        assert!(behind.push(store.clone(), finished("01R4".into())).is_none(), "back under the bound");
    }

    /// The bytes of payloads and results on their way have a bound of their own: one record of
    /// a large result is past it alone.
    #[tokio::test]
    async fn past_the_bound_of_bytes_an_answer_waits_for_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let behind = Arc::new(WrittenBehind::with_bounds(Bounds { records: usize::MAX, bytes: 1_000 }));
        let small = finished("01SMALL".into());
        assert!(behind.push(store.clone(), small).is_none(), "2 bytes of payload, none of result");
        let mut large = finished("01LARGE".into());
        large.response = Some(keel_core::invocation::StoredResponse {
            status: 200,
            content_type: Some("application/json".into()),
            body: bytes::Bytes::from(vec![b' '; 1_000]),
        });
        let held = behind.push(store.clone(), large.clone()).expect("1,002 bytes on their way: past 1,000");
        held.settled(&behind).await;
        assert_eq!(store.get("01LARGE").await.unwrap(), Some(large));
        assert!(behind.drained(store.as_ref(), Instant::now() + Duration::from_secs(10)).await);
        assert!(behind.push(store.clone(), finished("01AFTER".into())).is_none(), "the bytes went with it");
    }

    /// Once MAX_BATCH records are on their way, a record pushed lets go of the buffer its payload
    /// and result were read into: a slice of a 16 KiB buffer becomes a copy of its own. Before
    /// that, records keep their bodies as they are; and a body over COMPACT_UP_TO is never
    /// copied. On one thread the flushing task runs only when the test awaits.
    #[tokio::test]
    async fn a_record_that_will_wait_lets_go_of_its_read_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let behind = Arc::new(WrittenBehind::default());
        let buffer = bytes::Bytes::from(vec![b'x'; 16 << 10]);
        let sliced = |id: &str| {
            let mut inv = finished(id.into());
            inv.payload = buffer.slice(..2);
            inv.response = Some(keel_core::invocation::StoredResponse {
                status: 200,
                content_type: None,
                body: buffer.slice(2..4),
            });
            inv
        };
        let shares_buffer = |behind: &WrittenBehind| {
            let held = behind.held();
            let last = held.gathering.last().unwrap();
            let within = |b: &bytes::Bytes| buffer.as_ptr_range().contains(&b.as_ptr());
            (within(&last.payload), within(&last.response.as_ref().unwrap().body))
        };
        assert!(behind.push(store.clone(), sliced("01FIRST")).is_none());
        assert_eq!(shares_buffer(&behind), (true, true), "the first record keeps its bodies as they are");
        for i in 1..MAX_BATCH {
            assert!(behind.push(store.clone(), finished(format!("01C{i:05}"))).is_none());
        }
        let pushed = sliced("01WAITS");
        assert!(behind.push(store.clone(), pushed.clone()).is_none());
        assert_eq!(shares_buffer(&behind), (false, false), "past MAX_BATCH, both bodies are copies");
        let mut large = finished("01LARGE".into());
        large.payload = bytes::Bytes::from(vec![b'y'; COMPACT_UP_TO + 1]);
        let at = large.payload.as_ptr();
        assert!(behind.push(store.clone(), large).is_none());
        assert_eq!(behind.held().gathering.last().unwrap().payload.as_ptr(), at, "a large body is not copied");
        behind.wait_for(store.as_ref(), "01WAITS", Duration::from_secs(10)).await;
        assert_eq!(store.get("01WAITS").await.unwrap(), Some(pushed), "the copies are what is recorded");
    }

    /// A batch the store cannot take (down, or a commit whose outcome was lost) is tried again
    /// until it is in: no record is lost to a store away for a moment. After an unknown outcome
    /// the second try is refused (the first was committed), and the batch settles with its
    /// records in the store, once each.
    #[tokio::test]
    async fn a_batch_the_store_could_not_take_is_tried_again_until_it_is_in() {
        use keel_core::store::faulty::{Fault, FaultyStore, Write};
        let dir = tempfile::tempdir().unwrap();
        let faulty = Arc::new(FaultyStore::new(open(&dir)));
        let store: Arc<dyn Store> = faulty.clone();
        let behind = Arc::new(WrittenBehind::default());
        let liveness = Duration::from_secs(10);
        // Down twice: the third try commits. Committed but unconfirmed: the second is refused.
        for (fault, times, id) in [(Fault::Unavailable, 2, "01DOWN"), (Fault::CommitThenUnknown, 1, "01UNKNOWN")] {
            for _ in 0..times {
                faulty.plan(Write::RecordFinished, fault);
            }
            assert!(behind.push(store.clone(), finished(id.into())).is_none());
            assert!(behind.drained(store.as_ref(), Instant::now() + liveness).await, "{fault:?}: the batch settles");
            assert_eq!(faulty.pending(), 0, "{fault:?}: every planned fault fired");
            assert_eq!(store.get(id).await.unwrap(), Some(finished(id.into())), "{fault:?}: the record is in");
        }
        let all = store.list(ListFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(all.items.len(), 2, "each record once");
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
        assert!(behind.push(store.clone(), finished("01DUP".into())).is_none());
        assert!(behind.push(store.clone(), finished("01WITH".into())).is_none());
        let liveness = Duration::from_secs(10);
        assert!(behind.drained(store.as_ref(), Instant::now() + liveness).await, "a refused batch settles");
        assert_eq!(store.get("01WITH").await.unwrap(), None, "all or none: its batch was refused");
        assert!(behind.push(store.clone(), finished("01AFTER".into())).is_none());
        behind.wait_for(store.as_ref(), "01AFTER", liveness).await;
        assert!(store.get("01AFTER").await.unwrap().is_some(), "the next batch commits");
    }
}
