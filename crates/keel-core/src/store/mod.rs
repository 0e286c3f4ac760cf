//! The storage abstraction: one trait, implemented by the SQLite store (and PostgreSQL next),
//! and one conformance suite (`testkit`, feature `testkit`) that every implementation runs.
//!
//! Every write is durable when its future resolves: a store acknowledges only what it has
//! committed (fsync'd unless durability was turned off).

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::events::{NewEvent, Outgoing, Published, StoredEvent};
use crate::idempotency::{KeyClaim, KeyDecision, KeyRecord, KeyRef, StoredReply};
use crate::invocation::{CommitEffects, Completion, Invocation, NewInvocation, Status};
use crate::kv::{KvEntry, KvItem, KvWrite};
use crate::{Error, Result};

pub use access::AccessStore;
pub use chaos::ChaosStore;
pub use schedules::{ScheduleState, ScheduleStore, Tick, TickTaken, TickWork};
pub use workflows::{RunFilter, RunStarted, RunUpdate, WorkflowStore};

pub mod access;
pub mod chaos;
pub mod faulty;
pub mod schedules;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod workflows;

/// Default and largest page sizes of a list.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The page size a list asked for `limit` gets: at most [`MAX_LIMIT`]; 0 means
/// [`DEFAULT_LIMIT`]. Every paged list (invocations, the audit log) uses this one rule.
pub fn page_size(limit: usize) -> usize {
    match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// A request to lease due work of one function.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub function: String,
    pub owner: String,
    pub now: Millis,
    /// The lease lapses at this time unless the attempt completes first.
    pub expires_at: Millis,
    pub limit: usize,
    /// The function's `concurrency_key` limit, when it has one: no value's attempts in flight
    /// may exceed it (invocations without a key are not limited).
    pub keys: Option<KeyLimit>,
}

/// Per-key concurrency for one lease: `running` holds how many attempts of each key value are
/// in flight now on the requesting node (values with none are left out). The lease skips
/// invocations of a value already at `limit`, takes at most `limit - running` of each other
/// value, and reports `next_due_at` over the values it could still take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimit {
    pub limit: u32,
    pub running: std::collections::BTreeMap<String, u32>,
}

/// What a lease call returns.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// Now `running`, held by the requester, oldest due first.
    pub invocations: Vec<Invocation>,
    /// When the function's next queued or retrying invocation comes due, if any remains.
    pub next_due_at: Option<Millis>,
}

/// Which leases [`InvocationStore::reclaim_leases`] takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// Every lease: at start-up of a store only one node uses (SQLite).
    All,
    /// Leases that expired before the given time: their holder died or hung.
    ExpiredBefore(Millis),
}

/// Filters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub function: Option<String>,
    pub status: Option<Status>,
    /// Deliveries of this subscription only.
    pub subscription: Option<String>,
    /// At most [`MAX_LIMIT`]; 0 means [`DEFAULT_LIMIT`].
    pub limit: usize,
    /// The last id of the previous page: lists run newest first.
    pub cursor: Option<String>,
}

impl ListFilter {
    /// The page size actually used.
    pub fn page_size(&self) -> usize {
        page_size(self.limit)
    }
}

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from a query that asked for one row more than `size`: that row's presence says a
    /// next page exists, and the cursor is the last kept row's `id`.
    pub fn from_overfetched(mut items: Vec<T>, size: usize, id: impl Fn(&T) -> &str) -> Self {
        let next_cursor = if items.len() > size {
            items.truncate(size);
            items.last().map(|last| id(last).to_owned())
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// How often a node reports that it is alive ([`NodeStore::heartbeat`]).
pub const HEARTBEAT_EVERY_MS: Millis = 2_000;
/// A node whose last heartbeat is older than this is taken for dead: a shared store's
/// [`InvocationStore::reclaim_leases`] takes its leases back without waiting for them to expire. Measured
/// on the store's clock, so a node whose clock is off does not look dead (or alive) for it.
pub const NODE_TIMEOUT_MS: Millis = 15_000;

/// A node's report that it is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    /// The node id: the owner named in its leases.
    pub id: String,
    /// Where its gateway listens.
    pub addr: String,
    pub started_at: Millis,
    pub now: Millis,
    /// The node is draining: it admits nothing new and finishes what it holds. It keeps beating
    /// until the drain is over, so the others leave its leases alone meanwhile.
    pub draining: bool,
}

/// A node as the store knows it, for `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub id: String,
    pub addr: String,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
    /// Invocations it holds leases on now (async attempts and sync calls).
    pub leases: u64,
    /// Its last heartbeat said it was draining.
    pub draining: bool,
    /// How long ago its last heartbeat arrived, by the store's clock (the database's, for a
    /// shared store: nodes' clocks may disagree, the database's is the one they share).
    pub silent_ms: Millis,
    /// Its clock minus the store's, at its last heartbeat (0 for an embedded store).
    pub clock_skew_ms: Millis,
}

/// The backlog of one function (or one subscription's deliveries to it), for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub function: String,
    /// Set for event deliveries: their subscription.
    pub subscription: Option<String>,
    /// Invocations waiting for an attempt (`queued` and `retrying`, due or not).
    pub waiting: u64,
    /// The earliest `due_at` among the waiting invocations already due, if any.
    pub oldest_due_at: Option<Millis>,
    /// Invocations in the DLQ (`dead`).
    pub dead: u64,
}

/// Called with a function's name when another node made work of it due (see
/// [`NodeStore::on_wakeup`]).
pub type WakeFn = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The store's own life and the nodes that use it: start-up, wake-ups from other nodes, heartbeats,
/// shutdown, and the backlog figures of a metrics scrape.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// True when this process is the store's only user (SQLite's file lock): every lease found
    /// at start-up then belongs to a stopped predecessor and can be taken back at once.
    fn is_exclusive(&self) -> bool {
        false
    }

    /// Asks to hear of work other nodes enqueue, retry, redrive or take back, so idle
    /// dispatchers here wake at once (PostgreSQL: LISTEN/NOTIFY). A store only one process
    /// uses has nothing to tell: the default ignores `wake`.
    fn on_wakeup(&self, wake: WakeFn) {
        let _ = wake;
    }

    /// Called once at a clean shutdown, after the last write: leaves the store tidy for the next
    /// start and for backups (SQLite folds its write-ahead log back into the database file). A
    /// store with nothing to tidy keeps the default.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// Backlog and DLQ size per function and subscription: one grouped query, meant for each
    /// metrics scrape, never for a request.
    async fn queue_stats(&self, now: Millis) -> Result<Vec<QueueStats>>;

    /// Records that node `beat.id` is alive (each node calls this every [`HEARTBEAT_EVERY_MS`]).
    async fn heartbeat(&self, beat: NodeBeat) -> Result<()>;

    /// The nodes that have reported, with their last heartbeat and the leases each holds.
    async fn nodes(&self) -> Result<Vec<NodeState>>;

    /// Regions: whether the database is a replica still in recovery, and its epoch row. A store
    /// that cannot be replicated (SQLite) is never in recovery and keeps no epoch.
    async fn region_view(&self) -> Result<crate::region::LocalView> {
        Ok(crate::region::LocalView::default())
    }

    /// Writes `epoch` unless the database already holds one as high: true when written.
    async fn raise_epoch(&self, epoch: crate::region::Epoch, now: Millis) -> Result<bool> {
        let _ = (epoch, now);
        Err(Error::InvalidState("regions with a primary and a standby need PostgreSQL".into()))
    }

    /// Ends a replica's recovery (PostgreSQL's `pg_promote`), waiting until it accepts writes.
    /// Returns when the last transaction it replayed from the primary had committed there (what
    /// was committed after it, under asynchronous replication, is lost), or `None` when the
    /// database was not in recovery (nothing to do) or never replayed one.
    async fn promote(&self) -> Result<Option<Millis>> {
        Err(Error::InvalidState("regions with a primary and a standby need PostgreSQL".into()))
    }
}

/// Invocations and their attempts: admission, leases, completions (with their effects), pauses,
/// and the operator's cancel, redrive and discard.
#[async_trait]
pub trait InvocationStore: Send + Sync {
    /// Admits an async invocation: durable when this returns.
    async fn enqueue(&self, new: NewInvocation) -> Result<Invocation>;

    /// Admits several async invocations in one transaction (a bulk admission): all of them, or
    /// none when any cannot be stored. Durable when this returns; answered in order.
    async fn enqueue_all(&self, news: Vec<NewInvocation>) -> Result<Vec<Invocation>>;

    /// Records a finished sync invocation (`succeeded` or `failed`) with its attempts, and the
    /// effects of its success in the same transaction (refused whole if a precondition fails).
    /// A record written behind its reply is [`Urgency::Unhurried`].
    async fn record_finished(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        urgency: Urgency,
    ) -> Result<()>;

    /// Records finished sync invocations without effects — history written behind their
    /// replies — in one transaction, all or none: [`InvocationStore::record_finished`] for many,
    /// with one commit and (on SQLite) many rows a statement. Shared, not moved: a caller whose
    /// batch the store could not take ([`Error::is_transient`](crate::Error::is_transient)) tries
    /// the same batch again without copying it.
    async fn record_finished_all(&self, invocations: Arc<Vec<Invocation>>, urgency: Urgency) -> Result<()>;

    /// Commits at once whatever [`Urgency::Unhurried`] writes are held back for company (someone
    /// is held up by them).
    fn hurry(&self) {}

    /// Leases up to `limit` due invocations of one function (status `running`). A paused
    /// function's work is never leased ([`InvocationStore::set_paused`]). A store may answer
    /// once the lease is visible to every later write, before it is durable (SQLite does): a
    /// lease acknowledges nothing, and a crash that loses it (of the machine, for SQLite)
    /// leaves the invocations queued, with no attempt counted, to run again.
    async fn lease(&self, request: LeaseRequest) -> Result<Leased>;

    /// Pauses (`true`) or resumes a function, durably and for every node: while paused, its
    /// work is admitted and held but never leased. Resuming wakes every node's dispatcher of it.
    /// Pausing a paused function keeps its first `paused_at`; resuming one not paused does
    /// nothing (but still wakes the dispatchers).
    async fn set_paused(&self, function: &str, paused: bool, now: Millis) -> Result<()>;

    /// The functions paused now, with when each was paused, sorted by name.
    async fn paused(&self) -> Result<Vec<(String, Millis)>>;

    /// Records an attempt and moves the invocation on. Refused with
    /// [`Error::InvalidState`] when the caller no longer holds the
    /// lease: then nothing is written.
    /// A completion nobody waits on (no effects, nothing ordered behind it) is
    /// [`Urgency::Unhurried`].
    async fn complete(&self, completion: Completion, urgency: Urgency) -> Result<()>;

    /// Records several completions (the items of one batch call) in one transaction, each judged
    /// alone as [`InvocationStore::complete`] judges it: one refused (its lease lost, a failed
    /// precondition of its effects, its workflow run moved on) writes nothing of its own and
    /// answers its error in its place, while the others commit. The outer `Err` is the
    /// transaction's (unavailable, or an outcome unknown): then any of them may be retried alone.
    async fn complete_all(&self, completions: Vec<Completion>, urgency: Urgency) -> Result<Vec<Result<()>>>;

    /// Takes leases back: each becomes an interrupted (transient) attempt, due again now.
    /// Returns the functions that got work back, so their dispatchers can be woken.
    async fn reclaim_leases(&self, scope: Reclaim, now: Millis) -> Result<Vec<String>>;

    /// One invocation with its attempt history.
    async fn get(&self, id: &str) -> Result<Option<Invocation>>;

    /// Invocations newest first, without attempt histories.
    async fn list(&self, filter: ListFilter) -> Result<Page<Invocation>>;

    /// Cancels a queued or retrying invocation.
    async fn cancel(&self, id: &str, now: Millis) -> Result<Invocation>;

    /// Requeues a dead invocation (same id, history kept, a fresh retry budget).
    async fn redrive(&self, id: &str, now: Millis) -> Result<Invocation>;

    /// Requeues dead invocations matching `filter` (status is ignored: always `dead`).
    async fn redrive_matching(&self, filter: ListFilter, now: Millis) -> Result<Vec<Invocation>>;

    /// Discards a dead invocation (status `discarded`).
    async fn discard(&self, id: &str, now: Millis) -> Result<Invocation>;
}

/// Idempotency keys. Each call applies [`crate::idempotency::decide`] inside one transaction with
/// the work the key admits.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Admits an async invocation under a key: on `Claim` the invocation and the completed key
    /// record (answering `reply`) commit together; otherwise nothing is written.
    async fn enqueue_keyed(&self, new: NewInvocation, claim: KeyClaim, reply: StoredReply) -> Result<KeyDecision>;

    /// [`KeyStore::enqueue_keyed`] for a bulk admission: on `Claim` every invocation and the
    /// completed key record commit together (all or nothing); otherwise nothing is written. The
    /// key record names the first invocation.
    async fn enqueue_all_keyed(
        &self,
        news: Vec<NewInvocation>,
        claim: KeyClaim,
        reply: StoredReply,
    ) -> Result<KeyDecision>;

    /// Starts a keyed sync invocation: on `Claim`, `invocation` is stored `running` (held by
    /// `claim.holder` until `claim.lease_until`) with the in-flight key record; on `TakeOver`,
    /// the stored invocation of the dead holder is `running` again under the new holder.
    async fn begin_sync(&self, invocation: Invocation, claim: KeyClaim) -> Result<KeyDecision>;

    /// Records a finished keyed sync invocation (with all its attempts) and completes its key
    /// record with `reply`, in one transaction. A holder that lost the key writes nothing.
    async fn finish_sync(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        key: KeyRef,
        holder: String,
        reply: StoredReply,
    ) -> Result<()>;

    /// The key record as it stands, read without a write (and without locking it): lets a
    /// replay be answered without a transaction. Deciding to do work still goes through a claim.
    async fn peek_key(&self, key: &KeyRef) -> Result<Option<KeyRecord>>;

    /// Claims a key for work that is not an invocation (redrive, cancel): on `Claim` or
    /// `TakeOver` the record is in flight, held by `claim.holder`.
    async fn claim_key(&self, claim: KeyClaim) -> Result<KeyDecision>;

    /// Completes a claimed key with the response to replay.
    async fn complete_key(&self, key: KeyRef, holder: String, reply: StoredReply) -> Result<()>;

    /// Gives a claimed key up (the work failed before it produced an answer worth keeping).
    async fn release_key(&self, key: KeyRef, holder: String) -> Result<()>;

    /// Deletes at most `limit` key records that expired before `now`; returns how many.
    async fn purge_expired_keys(&self, now: Millis, limit: usize) -> Result<usize>;
}

/// Events, stored with their deliveries.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores events with their deliveries in one transaction. An event whose `source` + `id`
    /// was published before is not stored again (nor delivered): its original id is returned.
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>>;

    /// An event with the state of each of its deliveries.
    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>>;

    /// Regions: the oldest (at most `limit`) events waiting in the outbox for `peer`, in the
    /// order they were stored.
    async fn outbox_next(&self, peer: &str, limit: usize) -> Result<Vec<Outgoing>>;

    /// Regions: removes `peer`'s outbox rows `seqs` (the peer acknowledged them).
    async fn outbox_ack(&self, peer: &str, seqs: &[i64]) -> Result<()>;

    /// Regions: the outbox rows waiting, per peer (peers with none are absent).
    async fn outbox_depth(&self) -> Result<Vec<(String, u64)>>;
}

/// The key-value store, with versions as preconditions.
#[async_trait]
pub trait KvStore: Send + Sync {
    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<KvEntry>>;

    /// Applies one write if its precondition holds ([`Error::PreconditionFailed`](crate::Error)
    /// otherwise); returns the new version, `None` after a delete.
    async fn kv_write(&self, write: KvWrite, now: Millis) -> Result<Option<i64>>;

    /// One page of a namespace's keys with their values, in byte order of the keys: only those
    /// that start with `prefix` (`%` and `_` are plain characters), only those after the key
    /// `after` (the previous page's `next_cursor`). At most `limit` by the rule of
    /// [`page_size`]; `next_cursor` is the page's last key when more follow.
    async fn kv_list(&self, ns: &str, prefix: Option<&str>, after: Option<&str>, limit: usize) -> Result<Page<KvItem>>;
}

/// Everything Keel keeps, by concern: a store implements each part ([`NodeStore`],
/// [`InvocationStore`], [`KeyStore`], [`EventStore`], [`KvStore`], [`AccessStore`],
/// [`ScheduleStore`], [`WorkflowStore`], [`ChaosStore`]) and is then a `Store`. Callers hold an `Arc<dyn Store>` and call any part's
/// methods on it.
pub trait Store:
    NodeStore
    + InvocationStore
    + KeyStore
    + EventStore
    + KvStore
    + AccessStore
    + ScheduleStore
    + WorkflowStore
    + ChaosStore
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
}

impl<T> Store for T where
    T: NodeStore
        + InvocationStore
        + KeyStore
        + EventStore
        + KvStore
        + AccessStore
        + ScheduleStore
        + WorkflowStore
        + ChaosStore
        + Send
        + Sync
        + std::fmt::Debug
        + 'static
{
}

/// Whether a write may wait for company: the SQLite writer commits an unhurried write with
/// others that arrive within a couple of milliseconds (one fsync for all), and commits a write
/// someone waits on at once, taking what is waiting along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Someone waits on it (a reply, effects others will read, an ordered delivery behind it).
    Now,
    /// Nobody waits on it: it may be held back briefly to share a commit.
    Unhurried,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_list_pages_by_the_same_rule() {
        for (asked, got) in [(0, DEFAULT_LIMIT), (1, 1), (MAX_LIMIT, MAX_LIMIT), (MAX_LIMIT + 1, MAX_LIMIT)] {
            assert_eq!(page_size(asked), got, "limit {asked}");
            assert_eq!(ListFilter { limit: asked, ..Default::default() }.page_size(), got);
            assert_eq!(crate::auth::AuditFilter { limit: asked, ..Default::default() }.page_size(), got);
        }
    }
}

/// Every part of [`Store`] in scope at once, for code that calls a concrete store (`SqliteStore`,
/// `PgStore`) rather than a `dyn Store`: `use keel_core::store::prelude::*;`.
pub mod prelude {
    pub use super::{
        AccessStore, ChaosStore, EventStore, InvocationStore, KeyStore, KvStore, NodeStore, ScheduleStore, Store,
        Urgency, WorkflowStore,
    };
}
