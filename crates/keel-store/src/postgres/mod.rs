//! The PostgreSQL store, for clusters: several `keel serve` nodes on one database share the work.
//!
//! - Every operation runs in one transaction on a pooled connection, bounded in time: a pool wait
//!   timeout, a connect timeout, a server-side `statement_timeout` and an overall deadline, so a
//!   database outage answers `Unavailable` (the API's 503) instead of hanging.
//! - Enqueues and completions are group-committed by `writer.rs` (statements in `batch.rs`).
//! - Nodes lease with `FOR UPDATE SKIP LOCKED`; a lease is taken back when it expires or when its
//!   node's heartbeat stops (`ops::reclaim`), and LISTEN/NOTIFY wakes idle dispatchers on every
//!   node (`notify.rs`).
//! - Migrations run once per store, before its first statement (`schema.rs`).
//! - API keys, signing keys and the audit log: `access.rs` (a first signing key is added under an
//!   advisory lock, so nodes starting together make one).

mod access;
mod batch;
mod chaos;
mod events;
mod keys;
mod nodes;
mod notify;
mod ops;
mod region;
mod rows;
mod schedules;
mod schema;
mod stats;
mod transitions;
mod workflows;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use keel_core::auth::{ApiKey, AuditEntry, AuditFilter, SigningKey};
use keel_core::clock::Millis;
use keel_core::events::{NewEvent, Outgoing, Published, StoredEvent};
use keel_core::idempotency::{KeyClaim, KeyDecision, KeyRecord, KeyRef, StoredReply};
use keel_core::invocation::{CommitEffects, Completion, Invocation, NewInvocation};
use keel_core::kv::{KeyRange, KvEntry, KvItem, KvWrite};
use keel_core::store::{
    AccessStore, EventStore, InvocationStore, KeyStore, KvStore, LeaseRequest, Leased, ListFilter, NodeBeat, NodeState,
    NodeStore, Page, Reclaim, ScheduleState, ScheduleStore, Tick, TickTaken, Urgency, WakeFn, NODE_TIMEOUT_MS,
};
use keel_core::store::{Page as RunPage, RunFilter, RunStarted, RunUpdate, WorkflowStore};
use keel_core::workflow::Run;
use keel_core::{Error, Result};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::OpenError;
use rows::db_err;
use writer::{Work, Writer};

/// Connections per node: enough for the writers, the dispatchers' leases and API reads.
const POOL_SIZE: usize = 16;
/// How long a call waits for a free pooled connection, and for a new one to connect.
const POOL_WAIT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The server cancels a statement running longer (sent as a connection option).
const STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// No store call takes longer than this, whatever the network does.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The PostgreSQL implementation of [`Store`](keel_core::store::Store).
#[derive(Debug)]
pub struct PgStore {
    pool: Pool,
    writer: Writer,
    /// Set once migrations ran; a failed attempt (database down) is retried by the next call.
    schema: OnceCell<()>,
    /// For the listener, which needs a connection of its own.
    config: tokio_postgres::Config,
    /// The LISTEN task, stopped with the store.
    listener: Mutex<Option<JoinHandle<()>>>,
    /// How long a node may stay silent before its leases are taken back ([`NODE_TIMEOUT_MS`];
    /// shorter in tests, which cannot make the database's clock run faster).
    node_timeout: Millis,
    /// Whether this node's clock was last seen off the database's by more than [`MAX_SKEW_MS`].
    skewed: AtomicBool,
}

/// A node clock this far off the database's is reported: leases are written on node clocks.
const MAX_SKEW_MS: Millis = 2_000;

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// Runs `$body` (an expression using the transaction `$tx`) in one transaction, committed if it
/// succeeded, within [`CALL_TIMEOUT`]. A failure once COMMIT was sent is
/// [`Error::OutcomeUnknown`]: the transaction may have committed.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let committing = AtomicBool::new(false);
        store
            .bounded(&committing, async {
                store.ready().await?;
                let mut client = store.client().await?;
                let $tx = client.transaction().await.map_err(db_err)?;
                let out = $body.await?;
                committing.store(true, Ordering::Relaxed);
                $tx.commit().await.map_err(rows::commit_err)?;
                Ok(out)
            })
            .await
    }};
}

impl PgStore {
    /// Prepares a store for `url` (`postgres://user:password@host:port/db`). Nothing connects
    /// yet: the first call does, and applies migrations. Needs a tokio runtime.
    pub fn open(url: &str) -> Result<Self, OpenError> {
        let err = |reason: String| OpenError::Postgres { reason };
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| err(format!("invalid url: {e}")))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("keel")
            .options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        tokio::runtime::Handle::try_current().map_err(|_| err("the store needs a tokio runtime".into()))?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| err(e.to_string()))?;
        let writer = Writer::start(pool.clone());
        Ok(Self {
            pool,
            writer,
            schema: OnceCell::new(),
            config,
            listener: Mutex::new(None),
            node_timeout: NODE_TIMEOUT_MS,
            skewed: AtomicBool::new(false),
        })
    }

    /// The same store, taking a node for dead after `node_timeout` of silence.
    #[cfg(test)]
    pub(crate) fn with_node_timeout(mut self, node_timeout: Millis) -> Self {
        self.node_timeout = node_timeout;
        self
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| Error::Unavailable(format!("PostgreSQL: {e}")))
    }

    async fn ready(&self) -> Result<()> {
        self.schema
            .get_or_try_init(|| async {
                let mut client = self.client().await?;
                let tx = client.transaction().await.map_err(db_err)?;
                schema::migrate(&tx)
                    .await
                    .map_err(|e| Error::Unavailable(format!("migrating the schema: {}", rows::describe(&e))))?;
                tx.commit().await.map_err(db_err)
            })
            .await
            .map(|_| ())
    }

    /// Runs `call` within [`CALL_TIMEOUT`]; running out of time once `committing` was set is
    /// an unknown outcome, before that a plain failure.
    async fn bounded<T>(
        &self,
        committing: &AtomicBool,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| {
            let why = format!("PostgreSQL did not answer within {}s", CALL_TIMEOUT.as_secs());
            Err(match committing.load(Ordering::Relaxed) {
                true => Error::OutcomeUnknown(why),
                false => Error::Unavailable(why),
            })
        })
    }

    async fn write(&self, work: Work) -> Result<Option<Invocation>> {
        // Once handed to the writer, the job may commit whenever its group does, even after
        // this call stopped waiting.
        let handed = AtomicBool::new(false);
        self.bounded(&handed, async {
            self.ready().await?;
            handed.store(true, Ordering::Relaxed);
            self.writer.write(work).await
        })
        .await
    }
}

#[async_trait]
impl NodeStore for PgStore {
    fn on_wakeup(&self, wake: WakeFn) {
        let task = notify::spawn_listener(self.config.clone(), wake);
        if let Some(old) = self.listener.lock().unwrap_or_else(|p| p.into_inner()).replace(task) {
            old.abort();
        }
    }

    async fn heartbeat(&self, beat: NodeBeat) -> Result<()> {
        let skew: Millis = in_tx!(self, |tx| nodes::heartbeat(&tx, &beat))?;
        let skewed = skew.abs() > MAX_SKEW_MS;
        if skewed != self.skewed.swap(skewed, Ordering::Relaxed) {
            match skewed {
                true => tracing::warn!(node = %beat.id, skew_ms = skew, "this node's clock is off the database's: \
                    leases and retry times are written on node clocks; keep clocks in sync (NTP)"),
                false => {
                    tracing::info!(node = %beat.id, skew_ms = skew, "this node's clock agrees with the database's again")
                }
            }
        }
        Ok(())
    }

    async fn queue_stats(&self, now: Millis) -> Result<Vec<keel_core::store::QueueStats>> {
        in_tx!(self, |tx| stats::queue_stats(&tx, now))
    }

    async fn nodes(&self) -> Result<Vec<NodeState>> {
        in_tx!(self, |tx| nodes::nodes(&tx))
    }

    async fn region_view(&self) -> Result<keel_core::region::LocalView> {
        in_tx!(self, |tx| region::view(&tx))
    }

    async fn raise_epoch(&self, epoch: keel_core::region::Epoch, now: Millis) -> Result<bool> {
        in_tx!(self, |tx| region::raise(&tx, &epoch, now))
    }

    async fn promote(&self) -> Result<Option<Millis>> {
        let client = self.client().await?;
        let state = "SELECT pg_is_in_recovery(), (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::bigint";
        let row = client.query_one(state, &[]).await.map_err(db_err)?;
        let (in_recovery, replayed): (bool, Option<i64>) = (row.get(0), row.get(1));
        if !in_recovery {
            return Ok(None);
        }
        // Waits up to a minute for the replica to finish replaying and accept writes (past the
        // per-statement limit of normal calls).
        client.batch_execute("SET statement_timeout = 0").await.map_err(db_err)?;
        let promoted = client.query_one("SELECT pg_promote(true, 60)", &[]).await.map_err(db_err);
        client.batch_execute("RESET statement_timeout").await.map_err(db_err)?;
        let promoted: bool = promoted?.get(0);
        match promoted {
            true => Ok(replayed),
            false => Err(Error::Unavailable("PostgreSQL did not finish promoting the replica within 60 s".into())),
        }
    }
}

#[async_trait]
impl InvocationStore for PgStore {
    async fn enqueue(&self, new: NewInvocation) -> Result<Invocation> {
        let id = new.id.clone();
        self.write(Work::Enqueue(new)).await?.ok_or(Error::NotFound { what: "invocation", id })
    }

    async fn enqueue_all(&self, news: Vec<NewInvocation>) -> Result<Vec<Invocation>> {
        if news.is_empty() {
            return Ok(Vec::new());
        }
        in_tx!(self, |tx| batch::enqueue_all(&tx, news))
    }

    async fn record_finished(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        _urgency: Urgency,
    ) -> Result<()> {
        in_tx!(self, |tx| ops::record_finished(&tx, &invocation, effects.as_ref()))
    }

    async fn record_finished_all(&self, invocations: Arc<Vec<Invocation>>, _urgency: Urgency) -> Result<()> {
        if invocations.is_empty() {
            return Ok(());
        }
        in_tx!(self, |tx| ops::record_finished_all(&tx, &invocations))
    }

    async fn lease(&self, request: LeaseRequest) -> Result<Leased> {
        in_tx!(self, |tx| ops::lease(&tx, &request))
    }

    async fn set_paused(&self, function: &str, paused: bool, now: Millis) -> Result<()> {
        in_tx!(self, |tx| ops::set_paused(&tx, function, paused, now))
    }

    async fn paused(&self) -> Result<Vec<(String, Millis)>> {
        in_tx!(self, |tx| ops::paused(&tx))
    }

    async fn complete(&self, completion: Completion, _urgency: Urgency) -> Result<()> {
        // Effects can refuse their completion (a failed precondition), and so can a workflow run
        // that moved on: such a completion gets a transaction of its own instead of a place in a
        // group.
        if completion.effects.is_some() || completion.run.is_some() {
            return in_tx!(self, |tx| ops::complete(&tx, &completion));
        }
        self.write(Work::Complete(completion)).await.map(|_| ())
    }

    async fn complete_all(&self, completions: Vec<Completion>, _urgency: Urgency) -> Result<Vec<Result<()>>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        in_tx!(self, |tx| batch::complete_batch(&tx, &completions))
    }

    async fn reclaim_leases(&self, scope: Reclaim, now: Millis) -> Result<Vec<String>> {
        in_tx!(self, |tx| ops::reclaim(&tx, scope, now, self.node_timeout))
    }

    async fn get(&self, id: &str) -> Result<Option<Invocation>> {
        in_tx!(self, |tx| ops::get(&tx, id))
    }

    async fn list(&self, filter: ListFilter) -> Result<Page<Invocation>> {
        in_tx!(self, |tx| ops::list(&tx, &filter))
    }

    async fn cancel(&self, id: &str, now: Millis) -> Result<Invocation> {
        in_tx!(self, |tx| transitions::cancel(&tx, id, now))
    }

    async fn redrive(&self, id: &str, now: Millis) -> Result<Invocation> {
        in_tx!(self, |tx| transitions::redrive(&tx, id, now))
    }

    async fn redrive_matching(&self, filter: ListFilter, now: Millis) -> Result<Vec<Invocation>> {
        in_tx!(self, |tx| transitions::redrive_matching(&tx, &filter, now))
    }

    async fn discard(&self, id: &str, now: Millis) -> Result<Invocation> {
        in_tx!(self, |tx| transitions::discard(&tx, id, now))
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn enqueue_keyed(&self, new: NewInvocation, claim: KeyClaim, reply: StoredReply) -> Result<KeyDecision> {
        in_tx!(self, |tx| keys::enqueue_keyed(&tx, new, &claim, &reply))
    }

    async fn enqueue_all_keyed(
        &self,
        news: Vec<NewInvocation>,
        claim: KeyClaim,
        reply: StoredReply,
    ) -> Result<KeyDecision> {
        in_tx!(self, |tx| keys::enqueue_all_keyed(&tx, news, &claim, &reply))
    }

    async fn begin_sync(&self, invocation: Invocation, claim: KeyClaim) -> Result<KeyDecision> {
        in_tx!(self, |tx| keys::begin_sync(&tx, &invocation, &claim))
    }

    async fn finish_sync(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        key: KeyRef,
        holder: String,
        reply: StoredReply,
    ) -> Result<()> {
        in_tx!(self, |tx| keys::finish_sync(&tx, &invocation, effects.as_ref(), &key, &holder, &reply))
    }

    async fn peek_key(&self, key: &KeyRef) -> Result<Option<KeyRecord>> {
        in_tx!(self, |tx| keys::peek(&tx, key))
    }

    async fn claim_key(&self, claim: KeyClaim) -> Result<KeyDecision> {
        in_tx!(self, |tx| keys::claim(&tx, &claim, None))
    }

    async fn complete_key(&self, key: KeyRef, holder: String, reply: StoredReply) -> Result<()> {
        in_tx!(self, |tx| async { keys::complete(&tx, &key, &holder, &reply).await.map(|_| ()) })
    }

    async fn release_key(&self, key: KeyRef, holder: String) -> Result<()> {
        in_tx!(self, |tx| keys::release(&tx, &key, &holder))
    }

    async fn purge_expired_keys(&self, now: Millis, limit: usize) -> Result<usize> {
        in_tx!(self, |tx| keys::purge_expired(&tx, now, limit))
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>> {
        in_tx!(self, |tx| events::publish(&tx, &events))
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>> {
        in_tx!(self, |tx| events::get_event(&tx, id))
    }

    async fn outbox_next(&self, peer: &str, limit: usize) -> Result<Vec<Outgoing>> {
        in_tx!(self, |tx| events::outbox_next(&tx, peer, limit))
    }

    async fn outbox_ack(&self, peer: &str, seqs: &[i64]) -> Result<()> {
        in_tx!(self, |tx| events::outbox_ack(&tx, peer, seqs))
    }

    async fn outbox_depth(&self) -> Result<Vec<(String, u64)>> {
        in_tx!(self, |tx| events::outbox_depth(&tx))
    }
}

#[async_trait]
impl KvStore for PgStore {
    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<KvEntry>> {
        in_tx!(self, |tx| events::kv_get(&tx, ns, key))
    }

    async fn kv_write(&self, write: KvWrite, now: Millis) -> Result<Option<i64>> {
        in_tx!(self, |tx| events::kv_write(&tx, &write, now))
    }

    async fn kv_list(&self, ns: &str, prefix: Option<&str>, after: Option<&str>, limit: usize) -> Result<Page<KvItem>> {
        let range = KeyRange::new(prefix, after);
        in_tx!(self, |tx| events::kv_list(&tx, ns, &range, limit))
    }
}

#[async_trait]
impl AccessStore for PgStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<()> {
        in_tx!(self, |tx| access::create_api_key(&tx, &key))
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        in_tx!(self, |tx| access::api_keys(&tx))
    }

    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<ApiKey> {
        in_tx!(self, |tx| access::revoke_api_key(&tx, id, now))
    }

    async fn touch_api_keys(&self, used: Vec<(String, Millis)>) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        in_tx!(self, |tx| access::touch_api_keys(&tx, used))
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        in_tx!(self, |tx| access::signing_keys(&tx))
    }

    async fn add_signing_key(&self, key: SigningKey, retire_at: Millis, only_if_none: bool) -> Result<()> {
        in_tx!(self, |tx| access::add_signing_key(&tx, &key, retire_at, only_if_none))
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        in_tx!(self, |tx| access::audit(&tx, &entry))
    }

    async fn audit_log(&self, filter: AuditFilter) -> Result<Page<AuditEntry>> {
        in_tx!(self, |tx| access::audit_log(&tx, &filter))
    }
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn arm_schedules(&self, names: Vec<String>, now: Millis) -> Result<()> {
        in_tx!(self, |tx| schedules::arm(&tx, &names, now))
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>> {
        in_tx!(self, |tx| schedules::list(&tx))
    }

    async fn take_tick(&self, tick: Tick) -> Result<TickTaken> {
        in_tx!(self, |tx| schedules::take(&tx, &tick))
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Millis) -> Result<()> {
        in_tx!(self, |tx| schedules::set_paused(&tx, name, paused, now))
    }
}

#[async_trait]
impl WorkflowStore for PgStore {
    async fn start_run(&self, run: Run, first: NewInvocation) -> Result<RunStarted> {
        in_tx!(self, |tx| workflows::start(&tx, run, first))
    }

    async fn get_run(&self, id: &str) -> Result<Option<Run>> {
        in_tx!(self, |tx| workflows::get(&tx, id))
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<RunPage<Run>> {
        in_tx!(self, |tx| workflows::list(&tx, &filter))
    }

    async fn update_run(&self, update: RunUpdate) -> Result<()> {
        in_tx!(self, |tx| workflows::apply(&tx, &update))
    }
}

#[async_trait]
impl keel_core::store::ChaosStore for PgStore {
    async fn add_fault(&self, fault: keel_core::chaos::Fault) -> Result<()> {
        in_tx!(self, |tx| chaos::add(&tx, &fault))
    }

    async fn faults(&self, now: Millis) -> Result<Vec<keel_core::chaos::Fault>> {
        in_tx!(self, |tx| chaos::list(&tx, now))
    }

    async fn remove_fault(&self, id: &str) -> Result<bool> {
        in_tx!(self, |tx| chaos::remove(&tx, id))
    }
}
