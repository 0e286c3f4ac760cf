//! The embedded SQLite store: WAL, one group-commit writer thread, a small pool of readers.
//!
//! One process owns a database file at a time (an exclusive lock on `PATH.lock`), which is what
//! lets start-up take back every lease left by a killed predecessor at once.

mod access;
mod chaos;
mod events;
mod keys;
mod nodes;
mod ops;
mod rows;
mod schedules;
mod schema;
mod stats;
mod workflows;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use keel_core::auth::{ApiKey, AuditEntry, AuditFilter, SigningKey};
use keel_core::clock::Millis;
use keel_core::events::{NewEvent, Outgoing, Published, StoredEvent};
use keel_core::idempotency::{KeyClaim, KeyDecision, KeyRecord, KeyRef, StoredReply};
use keel_core::invocation::{CommitEffects, Completion, Invocation, NewInvocation};
use keel_core::kv::{KeyRange, KvEntry, KvItem, KvWrite};
use keel_core::store::{
    AccessStore, EventStore, InvocationStore, KeyStore, KvStore, LeaseRequest, Leased, ListFilter, NodeBeat, NodeState,
    NodeStore, Page, Reclaim, Urgency,
};
use keel_core::store::{Page as RunPage, RunFilter, RunStarted, RunUpdate, WorkflowStore};
use keel_core::store::{ScheduleState, ScheduleStore, Tick, TickTaken};
use keel_core::workflow::Run;
use keel_core::{Error, Result};
use rusqlite::{Connection, OpenFlags};

use crate::OpenError;
use writer::Writer;

/// The SQLite implementation of [`Store`](keel_core::store::Store).
#[derive(Debug)]
pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    /// Held for the store's life: a second process on the same file fails to open instead of
    /// corrupting the first one's leases.
    _lock: Option<std::fs::File>,
    nodes: nodes::Nodes,
    /// The paused functions, as committed: this process is the database's only user, so a
    /// lease checks here instead of asking the database (the unpaused lease stays one statement).
    paused: RwLock<HashSet<String>>,
    /// Single admissions and completions waiting for the writer run together (see
    /// [`writer::Coalesced`]).
    admissions: writer::Coalesced<NewInvocation, Invocation>,
    completions: writer::Coalesced<Completion, ()>,
}

#[derive(Debug, Clone)]
enum Readers {
    /// Idle read connections; a read takes one (or opens one) and puts it back.
    Pool { path: String, idle: Arc<Mutex<Vec<Connection>>> },
    /// An in-memory database has a single connection: reads go through the writer.
    Writer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, or `:memory:`.
    pub fn open(path: &str, fsync: bool) -> Result<Self, OpenError> {
        Self::open_with(path, fsync, writer::sync_wal(format!("{path}-wal")))
    }

    /// [`SqliteStore::open`], with `sync_wal` making the WAL durable (when `fsync` is on and the
    /// database is a file).
    fn open_with(path: &str, fsync: bool, sync_wal: writer::SyncWal) -> Result<Self, OpenError> {
        let err = |reason: String| OpenError::Sqlite { path: path.to_string(), reason };
        let memory = path == ":memory:";
        let lock = if memory { None } else { Some(lock_file(path)?) };
        if !memory {
            private_files(path).map_err(err)?;
        }
        // The writer's connection writes the WAL through the VFS "keel" (`wal_writes.c`): a
        // commit's frames reach the file in two writes, not two a page (BENCHMARKS.md, "A
        // commit's WAL frames in two writes"). Readers and the checkpointer never write the WAL.
        let mut conn = match memory {
            true => Connection::open(path),
            false => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), WAL_VFS),
        }
        .map_err(|e| err(e.to_string()))?;
        stable_plans(&conn).map_err(|e| err(e.to_string()))?;
        let sync = if fsync { "FULL" } else { "OFF" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
        ))
        .map_err(|e| err(e.to_string()))?;
        schema::migrate(&mut conn).map_err(|e| err(format!("migrating the schema: {e}")))?;
        // The savepoints' journals stay in memory: every job in a group, and every item in a job
        // of many, runs in one, which keeps the old content of each page it changes. SQLite moves a
        // journal to a temporary file once it passes 64 KiB, 16 pages, which a job of large
        // payloads or of many admissions passes on every group (BENCHMARKS.md, "Savepoint
        // journals in memory"). A journal is dropped when its job is released. Set after the
        // migrations: with it, SQLite's sorter never spills either, and an index built over a
        // large store would be sorted in memory.
        conn.execute_batch("PRAGMA temp_store = MEMORY").map_err(|e| err(e.to_string()))?;
        let paused = ops::paused(&conn).map_err(|e| err(format!("reading paused functions: {e}")))?;
        let paused = RwLock::new(paused.into_iter().map(|(function, _)| function).collect());
        let readers =
            if memory { Readers::Writer } else { Readers::Pool { path: path.to_string(), idle: Arc::default() } };
        let checkpointer = if memory {
            None
        } else {
            let limit = writer::WAL_LIMIT_BYTES;
            conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {limit};"))
                .map_err(|e| err(e.to_string()))?;
            Some(writer::start_checkpointer(path, limit).map_err(|e| err(e.to_string()))?)
        };
        // With fsync on, the writer commits without one and its sync thread fsyncs the WAL before
        // answering (see `writer`). The schema above was committed with the fsync.
        let sync_wal = if fsync && !memory {
            conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(|e| err(e.to_string()))?;
            Some(sync_wal)
        } else {
            None
        };
        let writer = Writer::start(conn, checkpointer, sync_wal).map_err(|e| err(e.to_string()))?;
        Ok(Self::with(writer, readers, lock, paused))
    }

    /// An in-memory store whose every read and write runs at once on the caller's thread, each
    /// write its own transaction, after `commit_delay()` of `tokio::time` (a slow disk). No
    /// thread of its own and no wall-clock window: a run on one thread with paused time, seeded,
    /// repeats exactly — what Keel's deterministic simulation runs on. Not for serving.
    pub fn deterministic(commit_delay: Box<dyn Fn() -> std::time::Duration + Send + Sync>) -> Result<Self, OpenError> {
        let err = |reason: String| OpenError::Sqlite { path: ":memory:".into(), reason };
        let mut conn = Connection::open_in_memory().map_err(|e| err(e.to_string()))?;
        stable_plans(&conn).map_err(|e| err(e.to_string()))?;
        schema::migrate(&mut conn).map_err(|e| err(format!("migrating the schema: {e}")))?;
        Ok(Self::with(Writer::inline(conn, commit_delay), Readers::Writer, None, RwLock::default()))
    }

    fn with(writer: Writer, readers: Readers, lock: Option<std::fs::File>, paused: RwLock<HashSet<String>>) -> Self {
        Self {
            writer,
            readers,
            _lock: lock,
            nodes: nodes::Nodes::default(),
            paused,
            admissions: writer::Coalesced::new(ops::enqueue_each),
            completions: writer::Coalesced::new(ops::complete_each),
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (path, idle) = match &self.readers {
            Readers::Writer => return self.writer.write(f).await,
            Readers::Pool { path, idle } => (path.clone(), idle.clone()),
        };
        let durable = self.writer.durable();
        let marks = durable.clone();
        let (result, seen) = tokio::task::spawn_blocking(move || {
            let taken = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match taken {
                Some(conn) => conn,
                None => open_reader(&path)?,
            };
            let result = f(&conn);
            idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            Ok((result, marks.map_or(0, |d| d.seen())))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))??;
        // What the read saw may be committed and not yet durable: it is answered once it is.
        if let Some(durable) = durable {
            durable.until(seen).await?;
        }
        result
    }
}

/// Keeps a cached statement's plan whatever values are bound: without it, SQLite re-prepares a
/// statement whenever a bound `LIMIT` (the lease's) or range value changes — a parse per lease.
/// And keeps [`STATEMENTS_CACHED`] statements prepared, not rusqlite's 16: a multi-row insert
/// alone has up to seven (`rows::MultiInsert`), and a statement evicted is parsed again.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(|_| ())
}

/// Prepared statements a connection keeps (least recently used out first).
const STATEMENTS_CACHED: usize = 64;

fn open_reader(path: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(rows::db_err)?;
    stable_plans(&conn).map_err(rows::db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(rows::db_err)?;
    Ok(conn)
}

/// The SQLite VFS the writer's connection opens the database with: the default one, with each
/// commit's WAL frames gathered into two writes (`wal_writes.c`, built and linked by build.rs).
const WAL_VFS: &str = "keel";

/// Only the owner may read a store's files: payloads, results and KV are in them. Files are
/// created (and existing ones set) 0600 whatever the umask; SQLite gives the `-wal` and `-shm`
/// files it creates the database file's mode. A directory Keel creates is 0700; one that exists
/// is left as it is.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Creates the database file 0600 if absent, and sets 0600 on it and its companions that exist.
fn private_files(path: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| format!("creating {path}: {e}"))?;
    for file in [path.to_string(), format!("{path}-wal"), format!("{path}-shm")] {
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(FILE_MODE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("making {file} private: {e}")),
            _ => {}
        }
    }
    Ok(())
}

fn lock_file(path: &str) -> Result<std::fs::File, OpenError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let lock_path = format!("{path}.lock");
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| OpenError::Sqlite { path: path.into(), reason: format!("creating {}: {e}", dir.display()) })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&lock_path)
        .map_err(|e| OpenError::Sqlite { path: path.into(), reason: format!("opening {lock_path}: {e}") })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked { path: path.into(), lock: lock_path }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(OpenError::Sqlite { path: path.into(), reason: format!("locking {lock_path}: {e}") })
        }
    }
}

#[async_trait]
impl NodeStore for SqliteStore {
    fn is_exclusive(&self) -> bool {
        true
    }

    async fn heartbeat(&self, beat: NodeBeat) -> Result<()> {
        self.nodes.beat(beat);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let Readers::Pool { path, .. } = &self.readers else {
            return Ok(());
        };
        let path = path.clone();
        tokio::task::spawn_blocking(move || writer::fold_wal(&path))
            .await
            .map_err(|e| Error::Unavailable(format!("checkpoint task failed: {e}")))?
    }

    async fn queue_stats(&self, now: Millis) -> Result<Vec<keel_core::store::QueueStats>> {
        self.read(move |c| stats::queue_stats(c, now)).await
    }

    async fn nodes(&self) -> Result<Vec<NodeState>> {
        let held = self.read(nodes::leases_by_node).await?;
        Ok(self.nodes.states(&held))
    }
}

#[async_trait]
impl InvocationStore for SqliteStore {
    async fn enqueue(&self, new: NewInvocation) -> Result<Invocation> {
        self.writer.write_coalesced(&self.admissions, new, Urgency::Now).await
    }

    async fn enqueue_all(&self, news: Vec<NewInvocation>) -> Result<Vec<Invocation>> {
        self.writer.write(move |c| ops::enqueue_all(c, news)).await
    }

    async fn record_finished(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        urgency: Urgency,
    ) -> Result<()> {
        let job = move |c: &Connection| ops::record_finished(c, &invocation, effects.as_ref());
        self.writer.write_as(urgency, job).await
    }

    async fn record_finished_all(&self, invocations: Arc<Vec<Invocation>>, urgency: Urgency) -> Result<()> {
        if invocations.is_empty() {
            return Ok(());
        }
        let job = move |c: &Connection| ops::record_finished_all(c, &invocations);
        self.writer.write_as(urgency, job).await
    }

    fn hurry(&self) {
        self.writer.hurry();
    }

    async fn lease(&self, request: LeaseRequest) -> Result<Leased> {
        if self.paused.read().unwrap_or_else(|p| p.into_inner()).contains(&request.function) {
            return Ok(Leased::default());
        }
        // Answered at its commit, not at the fsync after it (`Writer::write_visible`).
        self.writer.write_visible(move |c| ops::lease(c, &request)).await
    }

    async fn set_paused(&self, function: &str, paused: bool, now: Millis) -> Result<()> {
        let name = function.to_string();
        self.writer.write(move |c| ops::set_paused(c, &name, paused, now)).await?;
        // Only once committed: a lease that sees the function paused finds it paused on disk.
        let mut set = self.paused.write().unwrap_or_else(|p| p.into_inner());
        match paused {
            true => set.insert(function.to_string()),
            false => set.remove(function),
        };
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<(String, Millis)>> {
        self.read(ops::paused).await
    }

    async fn complete(&self, completion: Completion, urgency: Urgency) -> Result<()> {
        self.writer.write_coalesced(&self.completions, completion, urgency).await
    }

    async fn complete_all(&self, completions: Vec<Completion>, urgency: Urgency) -> Result<Vec<Result<()>>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let job = move |c: &Connection| ops::complete_all(c, &completions);
        self.writer.write_as(urgency, job).await
    }

    async fn reclaim_leases(&self, scope: Reclaim, now: Millis) -> Result<Vec<String>> {
        self.writer.write(move |c| ops::reclaim(c, scope, now)).await
    }

    async fn get(&self, id: &str) -> Result<Option<Invocation>> {
        let id = id.to_string();
        self.read(move |c| ops::get(c, &id)).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Page<Invocation>> {
        self.read(move |c| ops::list(c, &filter)).await
    }

    async fn cancel(&self, id: &str, now: Millis) -> Result<Invocation> {
        let id = id.to_string();
        self.writer.write(move |c| ops::cancel(c, &id, now)).await
    }

    async fn redrive(&self, id: &str, now: Millis) -> Result<Invocation> {
        let id = id.to_string();
        self.writer.write(move |c| ops::redrive(c, &id, now)).await
    }

    async fn redrive_matching(&self, filter: ListFilter, now: Millis) -> Result<Vec<Invocation>> {
        self.writer.write(move |c| ops::redrive_matching(c, &filter, now)).await
    }

    async fn discard(&self, id: &str, now: Millis) -> Result<Invocation> {
        let id = id.to_string();
        self.writer.write(move |c| ops::discard(c, &id, now)).await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn enqueue_keyed(&self, new: NewInvocation, claim: KeyClaim, reply: StoredReply) -> Result<KeyDecision> {
        self.writer.write(move |c| keys::enqueue_keyed(c, new, &claim, &reply)).await
    }

    async fn enqueue_all_keyed(
        &self,
        news: Vec<NewInvocation>,
        claim: KeyClaim,
        reply: StoredReply,
    ) -> Result<KeyDecision> {
        self.writer.write(move |c| keys::enqueue_all_keyed(c, news, &claim, &reply)).await
    }

    async fn begin_sync(&self, invocation: Invocation, claim: KeyClaim) -> Result<KeyDecision> {
        self.writer.write(move |c| keys::begin_sync(c, &invocation, &claim)).await
    }

    async fn finish_sync(
        &self,
        invocation: Invocation,
        effects: Option<CommitEffects>,
        key: KeyRef,
        holder: String,
        reply: StoredReply,
    ) -> Result<()> {
        self.writer.write(move |c| keys::finish_sync(c, &invocation, effects.as_ref(), &key, &holder, &reply)).await
    }

    async fn peek_key(&self, key: &KeyRef) -> Result<Option<KeyRecord>> {
        let key = key.clone();
        self.read(move |c| keys::load(c, &key)).await
    }

    async fn claim_key(&self, claim: KeyClaim) -> Result<KeyDecision> {
        self.writer.write(move |c| keys::claim(c, &claim, None)).await
    }

    async fn complete_key(&self, key: KeyRef, holder: String, reply: StoredReply) -> Result<()> {
        self.writer.write(move |c| keys::complete(c, &key, &holder, &reply).map(|_| ())).await
    }

    async fn release_key(&self, key: KeyRef, holder: String) -> Result<()> {
        self.writer.write(move |c| keys::release(c, &key, &holder)).await
    }

    async fn purge_expired_keys(&self, now: Millis, limit: usize) -> Result<usize> {
        self.writer.write(move |c| keys::purge_expired(c, now, limit)).await
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>> {
        self.writer.write(move |c| events::publish(c, events)).await
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>> {
        let id = id.to_string();
        self.read(move |c| events::get_event(c, &id)).await
    }

    async fn outbox_next(&self, peer: &str, limit: usize) -> Result<Vec<Outgoing>> {
        let peer = peer.to_string();
        self.read(move |c| events::outbox_next(c, &peer, limit)).await
    }

    async fn outbox_ack(&self, peer: &str, seqs: &[i64]) -> Result<()> {
        let (peer, seqs) = (peer.to_string(), seqs.to_vec());
        self.writer.write(move |c| events::outbox_ack(c, &peer, &seqs)).await
    }

    async fn outbox_depth(&self) -> Result<Vec<(String, u64)>> {
        self.read(events::outbox_depth).await
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<KvEntry>> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.read(move |c| events::kv_get(c, &ns, &key)).await
    }

    async fn kv_write(&self, write: KvWrite, now: Millis) -> Result<Option<i64>> {
        self.writer.write(move |c| events::kv_write(c, &write, now)).await
    }

    async fn kv_list(&self, ns: &str, prefix: Option<&str>, after: Option<&str>, limit: usize) -> Result<Page<KvItem>> {
        let (ns, range) = (ns.to_string(), KeyRange::new(prefix, after));
        self.read(move |c| events::kv_list(c, &ns, &range, limit)).await
    }
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<()> {
        self.writer.write(move |c| access::create_api_key(c, &key)).await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(access::api_keys).await
    }

    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<ApiKey> {
        let id = id.to_string();
        self.writer.write(move |c| access::revoke_api_key(c, &id, now)).await
    }

    async fn touch_api_keys(&self, used: Vec<(String, Millis)>) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        self.writer.write(move |c| access::touch_api_keys(c, &used)).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        self.read(access::signing_keys).await
    }

    async fn add_signing_key(&self, key: SigningKey, retire_at: Millis, only_if_none: bool) -> Result<()> {
        self.writer.write(move |c| access::add_signing_key(c, &key, retire_at, only_if_none)).await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.writer.write(move |c| access::audit(c, &entry)).await
    }

    async fn audit_log(&self, filter: AuditFilter) -> Result<Page<AuditEntry>> {
        self.read(move |c| access::audit_log(c, &filter)).await
    }
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn arm_schedules(&self, names: Vec<String>, now: Millis) -> Result<()> {
        self.writer.write(move |c| schedules::arm(c, &names, now)).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>> {
        self.read(schedules::list).await
    }

    async fn take_tick(&self, tick: Tick) -> Result<TickTaken> {
        self.writer.write(move |c| schedules::take(c, tick)).await
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Millis) -> Result<()> {
        let name = name.to_string();
        self.writer.write(move |c| schedules::set_paused(c, &name, paused, now)).await
    }
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn start_run(&self, run: Run, first: NewInvocation) -> Result<RunStarted> {
        self.writer.write(move |c| workflows::start(c, run, first)).await
    }

    async fn get_run(&self, id: &str) -> Result<Option<Run>> {
        let id = id.to_string();
        self.read(move |c| workflows::get(c, &id)).await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<RunPage<Run>> {
        self.read(move |c| workflows::list(c, &filter)).await
    }

    async fn update_run(&self, update: RunUpdate) -> Result<()> {
        self.writer.write(move |c| workflows::apply(c, &update)).await
    }
}

#[async_trait]
impl keel_core::store::ChaosStore for SqliteStore {
    async fn add_fault(&self, fault: keel_core::chaos::Fault) -> Result<()> {
        self.writer.write(move |c| chaos::add(c, &fault)).await
    }

    async fn faults(&self, now: Millis) -> Result<Vec<keel_core::chaos::Fault>> {
        self.read(move |c| chaos::list(c, now)).await
    }

    async fn remove_fault(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.writer.write(move |c| chaos::remove(c, &id)).await
    }
}
