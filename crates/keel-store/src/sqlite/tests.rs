//! The conformance suite and SQLite-specific behaviour (group commit, the file lock).

use std::sync::Arc;

use keel_core::store::prelude::*;

use super::SqliteStore;

async fn make() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db");
    (SqliteStore::open(path.to_str().unwrap(), true).unwrap(), dir)
}

async fn make_in_memory() -> (SqliteStore, ()) {
    (SqliteStore::open(":memory:", false).unwrap(), ())
}

keel_core::store_conformance!(make);

mod in_memory {
    use super::*;
    keel_core::store_conformance!(make_in_memory);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_file() {
    let (_store, dir) = make().await;
    let path = dir.path().join("keel.db");
    let err = SqliteStore::open(path.to_str().unwrap(), true).unwrap_err();
    assert!(err.to_string().contains("in use by another keel process"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_commit_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    let store = Arc::new(SqliteStore::open(&path, true).unwrap());
    let mut tasks = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let new = new_invocation(format!("{i:05}"));
            store.enqueue(new).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A duplicate id fails alone; the rest of its group still commits.
    let dup = new_invocation("00001".into());
    assert!(store.enqueue(dup).await.is_err());
    drop(store);
    let reopened = SqliteStore::open(&path, true).unwrap();
    let filter = keel_core::store::ListFilter { limit: 1000, ..Default::default() };
    assert_eq!(reopened.list(filter).await.unwrap().items.len(), 500);
}

/// A store whose WAL fsync can be held: while [`Gate::hold`] is on, every fsync waits.
struct Gate {
    held: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// The name of the thread of each fsync made, in order.
    made: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Gate {
    fn hold(&self, held: bool) {
        *self.held.0.lock().unwrap() = held;
        self.held.1.notify_all();
    }

    /// The fsyncs made so far.
    fn syncs(&self) -> usize {
        self.made.lock().unwrap().len()
    }

    /// The thread of each fsync made so far, in order.
    fn threads(&self) -> Vec<String> {
        self.made.lock().unwrap().clone()
    }
}

fn gated_store(path: &str) -> (Arc<SqliteStore>, Gate) {
    let gate = Gate { held: Arc::default(), made: Arc::default() };
    let (held, made) = (gate.held.clone(), gate.made.clone());
    let mut fsync = super::writer::sync_wal(format!("{path}-wal"));
    let sync: super::writer::SyncWal = Box::new(move || {
        drop(held.1.wait_while(held.0.lock().unwrap(), |held| *held).unwrap());
        let synced = fsync();
        made.lock().unwrap().push(std::thread::current().name().unwrap_or_default().to_string());
        synced
    });
    (Arc::new(SqliteStore::open_with(path, true, sync).unwrap()), gate)
}

/// With fsync on, the writer commits without one and the sync thread fsyncs the WAL: a commit
/// is visible to readers before it is durable. Neither the write's answer nor a read that saw it
/// may come before that fsync, or a crash could lose what was handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_answered_before_the_wal_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    let (store, gate) = gated_store(&path);
    store.enqueue(new_invocation("before".into())).await.unwrap();

    gate.hold(true);
    let before = gate.syncs();
    let writing = store.clone();
    let mut write = tokio::spawn(async move { writing.enqueue(new_invocation("held".into())).await });
    // Committed: another connection sees the row...
    let look = rusqlite::Connection::open(&path).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while look.query_row("SELECT count(*) FROM invocations WHERE id = 'held'", [], |r| r.get::<_, i64>(0)).unwrap() == 0
    {
        assert!(std::time::Instant::now() < deadline, "the row was never committed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ...but it is not durable, so the write is not answered, nor is a read that sees it.
    let reading = store.clone();
    let mut read = tokio::spawn(async move { reading.get("held").await });
    let wait = std::time::Duration::from_millis(300);
    assert!(tokio::time::timeout(wait, &mut write).await.is_err(), "the write was answered before its fsync");
    assert!(tokio::time::timeout(wait, &mut read).await.is_err(), "a read handed out a commit before its fsync");

    gate.hold(false);
    let stored = write.await.unwrap().unwrap();
    let seen = read.await.unwrap().unwrap().expect("the read sees the durable row");
    assert_eq!((seen.id.as_str(), seen.status), (stored.id.as_str(), stored.status));
    assert!(gate.syncs() > before, "the WAL was synced for it");
    // A read with no commit in flight answers at once.
    assert!(store.get("before").await.unwrap().is_some());
}

/// The one exception: a lease is answered once its group has committed, before the fsync
/// (`Writer::write_visible`). It acknowledges nothing to a client, and the attempt it starts is
/// recorded by a later write, whose answer waits for an fsync that covers the lease too: an
/// admission made while the fsync is held is not answered until it is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_answered_at_its_commit_and_a_write_after_it_only_once_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    let (store, gate) = gated_store(&path);
    store.enqueue(new_invocation("due".into())).await.unwrap();

    gate.hold(true);
    let before = gate.syncs();
    let wait = std::time::Duration::from_secs(10);
    let leased = tokio::time::timeout(wait, store.lease(lease_of("f", 2))).await;
    let leased = leased.expect("the lease waited for the fsync").unwrap();
    let ids: Vec<&str> = leased.invocations.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["due"]);
    assert_eq!(gate.syncs(), before, "answered with its fsync held");
    let writing = store.clone();
    let mut write = tokio::spawn(async move { writing.enqueue(new_invocation("after".into())).await });
    let held = std::time::Duration::from_millis(300);
    assert!(tokio::time::timeout(held, &mut write).await.is_err(), "a write was answered before its fsync");

    gate.hold(false);
    write.await.unwrap().unwrap();
    assert!(gate.syncs() > before);
    let seen = store.get("due").await.unwrap().unwrap();
    assert_eq!(
        (seen.status, seen.lease.map(|l| l.owner)),
        (keel_core::invocation::Status::Running, Some("node-a".into()))
    );
}

/// Single admissions and completions that wait for the writer together run as one job of each
/// kind (`writer::Coalesced`), and each is still answered alone: a duplicate id refuses only its
/// own admission, a lost lease only its own completion, and everything else is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_waiting_for_the_writer_run_together_and_are_answered_alone() {
    use keel_core::invocation::{Attempt, Completion, Lease, Status, StoredResponse, Transition};
    use keel_core::outcome::Outcome;
    use keel_core::Error;

    let (store, _dir) = make().await;
    let store = Arc::new(store);
    let lease = Lease { owner: "node-a".into(), leased_at: 1, expires_at: 60_000 };
    for i in 0..4 {
        let new =
            keel_core::invocation::NewInvocation { lease: Some(lease.clone()), ..new_invocation(format!("c{i}")) };
        store.enqueue(new).await.unwrap();
    }
    let (held, release) = hold_writer(&store).await;

    let mut admissions = Vec::new();
    for id in ["a0", "a1", "c0", "a2", "a3"] {
        let store = store.clone();
        admissions.push(tokio::spawn(async move { store.enqueue(new_invocation(id.into())).await }));
    }
    let completion = |id: &str, owner: &str| Completion {
        id: id.into(),
        owner: owner.into(),
        fence: 0,
        now: 100,
        attempt: Some(Attempt {
            number: 1,
            started_at: 50,
            ended_at: 90,
            outcome: Outcome::Success,
            http_status: Some(200),
            error: None,
        }),
        next: Transition::Succeed {
            response: StoredResponse { status: 200, content_type: None, body: bytes::Bytes::from_static(b"{}") },
        },
        effects: None,
        run: None,
    };
    let mut completions = Vec::new();
    for (id, owner) in [("c0", "node-a"), ("c1", "node-a"), ("c2", "node-b"), ("c3", "node-a")] {
        let (store, c) = (store.clone(), completion(id, owner));
        let urgency = if id == "c1" { Urgency::Now } else { Urgency::Unhurried };
        completions.push(tokio::spawn(async move { store.complete(c, urgency).await }));
    }
    // Every write is waiting, each kind in one job.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting = (store.admissions.waiting(), store.completions.waiting());
        if waiting == ((5, Some(false)), (4, Some(false))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not every write joined its kind's job: {waiting:?}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let mut answers = Vec::new();
    for a in admissions {
        answers.push(a.await.unwrap().map(|inv| inv.id));
    }
    assert!(matches!(&answers[2], Err(Error::InvalidState(why)) if why.contains("c0 already exists")), "{answers:?}");
    let stored: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok().cloned()).collect();
    assert_eq!(stored, ["a0", "a1", "a2", "a3"]);
    let mut answers = Vec::new();
    for c in completions {
        answers.push(c.await.unwrap());
    }
    assert!(matches!(answers[2], Err(Error::LeaseLost(_))), "{answers:?}");
    assert!(answers.iter().enumerate().all(|(i, a)| i == 2 || a.is_ok()), "{answers:?}");

    for (id, status, attempts) in [
        ("a0", Status::Queued, 0),
        ("a3", Status::Queued, 0),
        ("c0", Status::Succeeded, 1),
        ("c1", Status::Succeeded, 1),
        ("c2", Status::Running, 0),
        ("c3", Status::Succeeded, 1),
    ] {
        let inv = store.get(id).await.unwrap().unwrap_or_else(|| panic!("{id} is stored"));
        assert_eq!((inv.status, inv.attempts.len()), (status, attempts), "{id}");
    }
}

/// A group cannot be durable before the fsync in flight ends, so the writes that are waiting
/// once a group's own have run join that group instead of committing in one of their own: one
/// commit per fsync. And who fsyncs: the sync thread when a job waits as a group commits (the
/// writer goes on with it), the writer itself when none waits and the sync thread is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_waiting_while_an_fsync_runs_join_the_group_instead_of_committing_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    let (store, gate) = gated_store(&path);
    store.enqueue(new_invocation("before".into())).await.unwrap();
    assert_eq!(gate.threads().last().map(String::as_str), Some("keel-sqlite-writer"), "alone, the writer fsyncs");
    let durable = store.writer.durable().expect("fsync is on");
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };

    // A group that commits while an admission waits: its fsync goes to the sync thread, held.
    gate.hold(true);
    let first = durable.seen();
    let (holder, release) = hold_writer(&store).await;
    let writing = store.clone();
    let waited = tokio::spawn(async move { writing.enqueue(new_invocation("held".into())).await });
    wait_until("the admission never queued", &|| store.admissions.waiting() == (1, Some(false)));
    release.send(()).unwrap();
    wait_until("the first group never committed", &|| durable.seen() == first + 1);
    // The writer runs the admission, then waits for that fsync's end, while two more queue.
    wait_until("the admission was never taken", &|| store.admissions.waiting() == (0, None));
    let mut waiting = Vec::new();
    for id in ["a", "b"] {
        let store = store.clone();
        waiting.push(tokio::spawn(async move { store.enqueue(new_invocation(id.into())).await }));
    }
    wait_until("the admissions never queued", &|| store.admissions.waiting() == (2, Some(false)));
    assert_eq!(durable.seen(), first + 1, "nothing committed while the fsync ran");
    gate.hold(false);
    holder.await.unwrap().unwrap();
    waited.await.unwrap().unwrap();
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(durable.seen(), first + 2, "the admission that waited and the two after it committed in one group");
    let threads = gate.threads();
    assert_eq!(
        threads[threads.len() - 2..],
        ["keel-sqlite-sync".to_string(), "keel-sqlite-writer".to_string()],
        "the held fsync was the sync thread's, the last the writer's: {threads:?}"
    );
    assert!(store.get("b").await.unwrap().is_some());
}

/// Holds the writer inside a job of its own, from when this returns until the sender is used:
/// the job's task, and its release.
async fn hold_writer(
    store: &Arc<SqliteStore>,
) -> (tokio::task::JoinHandle<keel_core::Result<()>>, std::sync::mpsc::Sender<()>) {
    let (entered, in_job) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holding = store.clone();
    let held = tokio::spawn(async move {
        holding
            .writer
            .write(move |_| {
                entered.send(()).unwrap();
                released.recv().unwrap();
                Ok(())
            })
            .await
    });
    tokio::task::spawn_blocking(move || in_job.recv().unwrap()).await.unwrap();
    (held, release)
}

fn new_invocation(id: String) -> keel_core::invocation::NewInvocation {
    keel_core::invocation::NewInvocation::plain(id, "f", bytes::Bytes::from_static(b"{}"), 1)
}

fn finished_sync(id: String) -> keel_core::invocation::Invocation {
    let mut inv = new_invocation(id).into_stored();
    inv.status = keel_core::invocation::Status::Succeeded;
    inv.sync = true;
    inv.due_at = None;
    inv
}

/// A job that changes more pages than SQLite's default keeps in memory for a savepoint (64 KiB)
/// still rolls back alone when it fails, and the job that shares its group commits. The writer's
/// savepoint journals are kept in memory (`temp_store = MEMORY`), not spilled to a temporary file
/// on every large group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_larger_than_a_spilled_savepoint_journal_rolls_back_alone_in_memory() {
    let (store, _dir) = make().await;
    let store = Arc::new(store);
    let temp_store: i64 =
        store.writer.write(|c| Ok(c.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap())).await.unwrap();
    assert_eq!(temp_store, 2, "the writer keeps its temporary files, savepoint journals among them, in memory");
    // 64 rows of 16 KB: about 1 MiB of pages, which the failing job changes in place.
    store
        .writer
        .write(|c| {
            c.execute_batch(
                "CREATE TABLE scratch (n INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 64)
                 INSERT INTO scratch SELECT n, randomblob(16000) FROM k;",
            )
            .unwrap();
            Ok(())
        })
        .await
        .unwrap();
    let digest = |c: &rusqlite::Connection| -> Vec<Vec<u8>> {
        c.prepare("SELECT b FROM scratch ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = store.writer.write(move |c| Ok(digest(c))).await.unwrap();

    let (held, release) = hold_writer(&store).await;
    let failing = store.writer.write(|c| {
        let changed = c.execute("UPDATE scratch SET b = zeroblob(16000)", []).unwrap();
        assert_eq!(changed, 64);
        Err::<(), _>(keel_core::Error::InvalidState("refused after writing".into()))
    });
    let sharing = store.writer.write(|c| {
        c.execute("INSERT INTO scratch (n, b) VALUES (65, x'01')", []).unwrap();
        Ok(())
    });
    tokio::pin!(failing, sharing);
    // Each job reaches the writer's queue on its first poll: both wait behind the held job, so
    // they run as one group, each in its own savepoint.
    async fn queue<F: std::future::Future>(job: std::pin::Pin<&mut F>) {
        tokio::select! {
            biased;
            _ = job => panic!("a job ran while the writer was held"),
            _ = std::future::ready(()) => {}
        }
    }
    queue(failing.as_mut()).await;
    queue(sharing.as_mut()).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert!(matches!(failing.await, Err(keel_core::Error::InvalidState(_))));
    sharing.await.unwrap();

    let after = store.writer.write(move |c| Ok(digest(c))).await.unwrap();
    assert_eq!(after.len(), 65, "the job that shared the group committed");
    assert!(after[..64] == before[..], "the failing job's changes were undone");
    assert_eq!(after[64], [1]);
}

/// A payload of more than 512 bytes, in a row that will change, is kept in `invocation_payloads`
/// and the row holds an empty one, so a lease or a completion does not write it again. A small
/// payload, or one of a row that is final when written, stays in the row. A payload kept apart
/// goes when its row goes, whatever deletes it.
#[tokio::test]
async fn large_payloads_of_rows_that_will_change_are_kept_apart_and_go_with_their_row() {
    use keel_core::idempotency::{KeyClaim, KeyRef, StoredReply};
    use keel_core::invocation::{Lease, Status};

    let (store, _dir) = make().await;
    let sized = |id: &str, len: usize| keel_core::invocation::NewInvocation {
        payload: bytes::Bytes::from(vec![b'x'; len]),
        ..new_invocation(id.into())
    };
    store.enqueue(sized("small", 512)).await.unwrap();
    store.enqueue(sized("large", 513)).await.unwrap();
    let mut finished = sized("finished", 4_000).into_stored();
    (finished.status, finished.sync, finished.due_at) = (Status::Succeeded, true, None);
    store.record_finished(finished, None, Urgency::Now).await.unwrap();
    let mut running = sized("keyed", 4_000).into_stored();
    (running.status, running.sync, running.due_at) = (Status::Running, true, None);
    running.lease = Some(Lease { owner: "h1".into(), leased_at: 1, expires_at: 1_000 });
    let claim = KeyClaim {
        key: KeyRef { scope: "anonymous".into(), route: "POST /v1/functions/f/invoke".into(), key: "k".into() },
        fingerprint: "fp".into(),
        holder: "h1".into(),
        now: 1,
        lease_until: 1_000,
        expires_at: 60_000,
    };
    store.begin_sync(running, claim.clone()).await.unwrap();

    type Lengths = Vec<(String, i64)>;
    async fn placed(store: &SqliteStore) -> (Lengths, Lengths) {
        let rows = store.writer.write(|c| {
            let lengths = |sql: &str| -> Lengths {
                c.prepare(sql)
                    .unwrap()
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            };
            Ok((
                lengths("SELECT id, length(payload) FROM invocations ORDER BY id"),
                lengths("SELECT id, length(payload) FROM invocation_payloads ORDER BY id"),
            ))
        });
        rows.await.unwrap()
    }
    let (inline, apart) = placed(&store).await;
    let owned = |rows: &[(&str, i64)]| rows.iter().map(|&(id, len)| (id.to_string(), len)).collect::<Vec<_>>();
    assert_eq!(inline, owned(&[("finished", 4_000), ("keyed", 0), ("large", 0), ("small", 512)]));
    assert_eq!(apart, owned(&[("keyed", 4_000), ("large", 513)]));

    // The keyed call finishes: its running row is replaced by its final record, payload inline.
    let mut done = store.get("keyed").await.unwrap().unwrap();
    assert_eq!(done.payload.len(), 4_000);
    (done.status, done.lease) = (Status::Succeeded, None);
    let reply = StoredReply { status: 200, headers: Vec::new(), body: bytes::Bytes::from_static(b"{}") };
    store.finish_sync(done, None, claim.key, "h1".into(), reply).await.unwrap();
    // And a row deleted by hand takes its payload with it.
    store.writer.write(|c| Ok(c.execute("DELETE FROM invocations WHERE id = 'large'", []).unwrap())).await.unwrap();
    let (inline, apart) = placed(&store).await;
    assert_eq!(inline, owned(&[("finished", 4_000), ("keyed", 4_000), ("small", 512)]));
    assert_eq!(apart, []);
    assert_eq!(store.get("keyed").await.unwrap().unwrap().payload.len(), 4_000);
}

/// Records nobody waits on may wait for company before they commit: alone, with each other, or
/// taken along by a write someone waits on — each way they commit, and survive reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_behind_commit_alone_together_and_with_hurried_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    let store = Arc::new(SqliteStore::open(&path, true).unwrap());
    let liveness = std::time::Duration::from_secs(10);
    // Alone: nothing else comes, the window closes and it commits.
    tokio::time::timeout(liveness, store.record_finished(finished_sync("lone".into()), None, Urgency::Unhurried))
        .await
        .unwrap()
        .unwrap();
    // Many at once, with hurried enqueues among them and hurry signals.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 50 == 0 {
                store.hurry();
            }
            if i % 10 == 0 {
                store.enqueue(new_invocation(format!("q{i:04}"))).await.map(|_| ())
            } else {
                store.record_finished(finished_sync(format!("b{i:04}")), None, Urgency::Unhurried).await
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(liveness, t).await.unwrap().unwrap().unwrap();
    }
    drop(store);
    let reopened = SqliteStore::open(&path, true).unwrap();
    let all = reopened.list(keel_core::store::ListFilter { limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(all.items.len(), 301);
    assert_eq!(all.items.iter().filter(|i| i.status == keel_core::invocation::Status::Queued).count(), 30);
}

#[test]
fn store_errors_say_whether_a_retry_can_help() {
    use keel_core::Error;
    let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
    for transient in [rusqlite::ffi::SQLITE_BUSY, rusqlite::ffi::SQLITE_LOCKED, rusqlite::ffi::SQLITE_IOERR_FSYNC] {
        assert!(matches!(super::rows::db_err(failure(transient)), Error::Unavailable(_)), "{transient}");
    }
    for bug in
        [rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY, rusqlite::ffi::SQLITE_CORRUPT, rusqlite::ffi::SQLITE_MISMATCH]
    {
        let e = super::rows::db_err(failure(bug));
        assert!(matches!(e, Error::Bug(_)) && !e.is_transient(), "{bug}: {e:?}");
    }
    let unreadable = rusqlite::Error::InvalidColumnType(0, "status".into(), rusqlite::types::Type::Blob);
    assert!(matches!(super::rows::db_err(unreadable), Error::Bug(_)));
}

/// Payloads, results and KV are readable by their owner only, whatever the umask: a directory
/// Keel creates is 0700, the database and its `-wal`, `-shm` and `.lock` files are 0600.
#[tokio::test]
async fn the_store_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("keel.db");
    // The most permissive umask, for as long as the files are being created.
    let previous = rustix::process::umask(rustix::fs::Mode::empty());
    let opened = SqliteStore::open(path.to_str().unwrap(), true);
    let store = opened.unwrap();
    let written = store.enqueue(new_invocation("01P".into())).await;
    rustix::process::umask(previous);
    written.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

fn lease_of(function: &str, now: i64) -> keel_core::store::LeaseRequest {
    keel_core::store::LeaseRequest {
        function: function.into(),
        owner: "node-a".into(),
        now,
        expires_at: now + 30_000,
        limit: 10,
        keys: None,
    }
}

/// A pause is durable: a restarted node still holds the function's work, and resuming it then
/// releases the work.
#[tokio::test]
async fn a_pause_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    let store = SqliteStore::open(&path, true).unwrap();
    store.enqueue(new_invocation("01A".into())).await.unwrap();
    store.set_paused("f", true, 7).await.unwrap();
    drop(store);
    let reopened = SqliteStore::open(&path, true).unwrap();
    assert_eq!(reopened.paused().await.unwrap(), [("f".to_string(), 7)]);
    let leased = reopened.lease(lease_of("f", 10)).await.unwrap();
    assert!(leased.invocations.is_empty());
    assert_eq!(leased.next_due_at, None);
    reopened.set_paused("f", false, 11).await.unwrap();
    drop(reopened);
    let resumed = SqliteStore::open(&path, true).unwrap();
    assert!(resumed.paused().await.unwrap().is_empty());
    assert_eq!(resumed.lease(lease_of("f", 12)).await.unwrap().invocations.len(), 1);
}

/// A database written before flow control (schema version 4) upgrades in place: its
/// invocations read back without a `concurrency_key`, and new ones keep theirs.
#[tokio::test]
async fn a_database_from_before_flow_control_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        super::schema::migrate_to(&mut conn, 4).unwrap();
        conn.execute(
            "INSERT INTO invocations (id, function, status, payload, created_at, updated_at, due_at) \
             VALUES ('01OLD', 'f', 'queued', X'7B7D', 1, 1, 1)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, true).unwrap();
    let old = store.get("01OLD").await.unwrap().unwrap();
    assert_eq!(old.concurrency_key, None);
    let new = keel_core::invocation::NewInvocation {
        concurrency_key: Some("tenant".into()),
        ..new_invocation("01NEW".into())
    };
    store.enqueue(new).await.unwrap();
    assert_eq!(store.get("01NEW").await.unwrap().unwrap().concurrency_key.as_deref(), Some("tenant"));
    assert!(store.paused().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_lease_cost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db").to_str().unwrap().to_string();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, false).unwrap());
    crate::lease_cost::measure(store, "sqlite").await;
}

/// An insert leaves NULL columns unbound, so each use of a statement must start from cleared
/// parameters: rows with NULLs after rows with values, in one statement used twice and in the
/// next use of the cached one, read back NULL.
#[tokio::test]
async fn a_row_of_nulls_after_rows_of_values_reads_back_null() {
    let (store, _dir) = make().await;
    let with = |i: usize| {
        let mut new = new_invocation(format!("w{i:02}"));
        new.content_type = Some("application/json".into());
        new.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        new.concurrency_key = Some("k".into());
        new
    };
    let without = |i: usize| new_invocation(format!("n{i:02}"));
    // 20 rows: two uses of the 10-row statement, values then NULLs.
    let first: Vec<_> = (0..10).map(with).chain((0..10).map(without)).collect();
    store.enqueue_all(first).await.unwrap();
    // The cached statement again, values; then NULLs only.
    store.enqueue_all((10..20).map(with).collect()).await.unwrap();
    store.enqueue_all((10..20).map(without).collect()).await.unwrap();
    for i in 0..20 {
        let inv = store.get(&format!("n{i:02}")).await.unwrap().unwrap();
        assert_eq!((inv.content_type, inv.traceparent, inv.concurrency_key), (None, None, None), "n{i:02}");
    }
    let inv = store.get("w19").await.unwrap().unwrap();
    assert_eq!(inv.content_type.as_deref(), Some("application/json"));
    assert_eq!(inv.concurrency_key.as_deref(), Some("k"));
}

/// The statements every invocation runs (its row inserted, alone or many a statement, with its
/// attempts; its completion) open no temporary B-tree. SQLite builds one, each time a statement
/// runs, for an `IN` list of three or more values, such as a partial index's condition that the
/// statement must check: two of them cost the writer 3.3 of its 17.2 µs per async invocation.
/// And the ordered deliveries' subquery still reads its partial index, whose condition it must
/// imply.
#[tokio::test]
async fn the_hot_statements_open_no_temporary_b_tree_and_ordered_deliveries_read_their_index() {
    let (store, _dir) = make().await;
    store
        .writer
        .write(|conn| {
            // Unbound parameters are NULL: EXPLAIN only compiles the statement.
            let opcodes = |sql: &str| -> Vec<String> {
                let mut st = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
                let mut rows = st.raw_query();
                let mut ops = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    ops.push(row.get(1).unwrap());
                }
                ops
            };
            let hot = [
                super::ops::INVOCATIONS.sql(0),
                super::ops::INVOCATIONS.sql(2),
                super::rows::ATTEMPTS.sql(0),
                super::rows::ATTEMPTS.sql(2),
                super::ops::COMPLETE_INVOCATION,
            ];
            for sql in hot {
                let ops = opcodes(sql);
                assert!(!ops.is_empty());
                assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{sql}: {ops:?}");
            }
            let waiting =
                format!("SELECT 1 FROM invocations AS c WHERE c.function = 'f' AND {}", super::ops::NOT_WAITING);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {waiting}"))
                .unwrap()
                .query_map([], |row| row.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(plan.iter().any(|step| step.contains("USING INDEX invocations_ordering")), "{plan:?}");
            Ok(())
        })
        .await
        .unwrap();
}

/// A list by an open status (queued, retrying, running, dead; and failed, cancelled, discarded,
/// which few reach) reads that status's own index, not the function's whole history: what it
/// answers is what a walk of the history answers, page by page, and its plan names no index of
/// the history. Past `sort_up_to` waiting
/// invocations, a list of waiting ones walks the history instead (it meets them soon), and
/// answers the same.
#[tokio::test]
async fn lists_by_an_open_status_read_their_own_index_and_answer_as_a_walk_of_the_history() {
    use keel_core::invocation::Status;
    use keel_core::store::ListFilter;
    let (store, _dir) = make().await;
    let news = (0..600).map(|i| new_invocation(format!("f{i:04}"))).chain((0..6).map(|i| {
        let mut new = new_invocation(format!("g{i:04}"));
        new.function = "g".into();
        new
    }));
    store.enqueue_all(news.collect()).await.unwrap();
    // Most of the history succeeded; a few of each open status, in both functions.
    store
        .writer
        .write(|conn| {
            conn.execute_batch(
                "UPDATE invocations SET status = 'succeeded', due_at = NULL WHERE id LIKE 'f%' AND id NOT IN
                     ('f0010', 'f0011', 'f0012', 'f0013', 'f0020', 'f0300', 'f0301', 'f0400', 'f0590', 'f0591', 'f0592');
                 UPDATE invocations SET status = 'retrying' WHERE id IN ('f0020', 'f0301', 'g0001');
                 UPDATE invocations SET status = 'running', due_at = NULL, lease_owner = 'n', leased_at = 1,
                     lease_expires_at = 100 WHERE id IN ('f0400', 'f0591', 'g0002');
                 UPDATE invocations SET status = 'dead', due_at = NULL WHERE id IN ('f0592', 'g0003');
                 UPDATE invocations SET status = 'failed', due_at = NULL WHERE id IN ('f0011', 'f0012', 'g0004');
                 UPDATE invocations SET status = 'cancelled', due_at = NULL WHERE id IN ('f0013');",
            )
            .map_err(super::rows::db_err)
        })
        .await
        .unwrap();
    let walked = |conn: &rusqlite::Connection, filter: &ListFilter| -> Vec<String> {
        let mut sql = String::from("SELECT id FROM invocations NOT INDEXED WHERE status = ?1");
        if let Some(f) = &filter.function {
            sql.push_str(&format!(" AND function = '{f}'"));
        }
        sql.push_str(" ORDER BY id DESC");
        let status = filter.status.unwrap().as_str();
        conn.prepare(&sql).unwrap().query_map([status], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let expected = [
        (Status::Queued, Some("f"), vec!["f0590", "f0300", "f0010"]),
        (Status::Retrying, Some("f"), vec!["f0301", "f0020"]),
        (Status::Running, Some("f"), vec!["f0591", "f0400"]),
        (Status::Dead, Some("f"), vec!["f0592"]),
        (Status::Failed, Some("f"), vec!["f0012", "f0011"]),
        (Status::Cancelled, Some("f"), vec!["f0013"]),
        (Status::Discarded, Some("f"), vec![]),
        (Status::Failed, None, vec!["g0004", "f0012", "f0011"]),
        (Status::Queued, None, vec!["g0005", "g0000", "f0590", "f0300", "f0010"]),
        (Status::Running, None, vec!["g0002", "f0591", "f0400"]),
        (Status::Dead, None, vec!["g0003", "f0592"]),
    ];
    for (status, function, ids) in expected {
        store
            .writer
            .write(move |conn| {
                let filter =
                    ListFilter { function: function.map(Into::into), status: Some(status), ..Default::default() };
                assert_eq!(walked(conn, &filter), ids, "{status} of {function:?}: the test's own walk");
                for sort_up_to in [super::ops::SORT_WAITING_UP_TO, 0] {
                    let (sql, args) = super::ops::list_query(conn, &filter, sort_up_to).unwrap();
                    let plan: Vec<String> = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .unwrap()
                        .query_map(rusqlite::params_from_iter(args), |row| row.get(3))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    // A walk of the history: its function's index, or the table (or its id
                    // index) scanned; a search of the id index by id is a page's rows read.
                    let walks = plan.iter().any(|step| {
                        step.contains("invocations_by_function")
                            || step == "SCAN invocations"
                            || step.starts_with("SCAN invocations USING") && step.contains("sqlite_autoindex")
                    });
                    // A sort carries ids, not whole rows (and so not every payload).
                    let sorts_rows = plan.iter().any(|step| step == "USE TEMP B-TREE FOR ORDER BY")
                        && !sql.contains("WHERE id IN (SELECT id FROM");
                    assert!(!sorts_rows, "{status} of {function:?}, up to {sort_up_to}: {plan:?}");
                    // Past `sort_up_to` waiting ones, the planner chooses (it may walk).
                    let hinted = !(matches!(status, Status::Queued | Status::Retrying) && sort_up_to == 0);
                    assert!(!(hinted && walks), "{status} of {function:?}, up to {sort_up_to}: {plan:?}");
                    // Page by page, one at a time, as a client follows the cursor.
                    let mut seen = Vec::new();
                    let mut cursor = None;
                    loop {
                        let page = ListFilter { limit: 1, cursor, ..filter.clone() };
                        let (sql, args) = super::ops::list_query(conn, &page, sort_up_to).unwrap();
                        let got: Vec<String> = conn
                            .prepare(&sql)
                            .unwrap()
                            .query_map(rusqlite::params_from_iter(args), |row| row.get::<_, String>(0))
                            .unwrap()
                            .map(Result::unwrap)
                            .collect();
                        assert!(got.len() <= 2, "a page of 1 overfetches one: {got:?}");
                        seen.extend(got.first().cloned());
                        if got.len() < 2 {
                            break;
                        }
                        cursor = got.first().cloned();
                    }
                    assert_eq!(seen, ids, "{status} of {function:?}, up to {sort_up_to}");
                }
                Ok(())
            })
            .await
            .unwrap();
    }
    // And through the store, as the API asks.
    let page = store
        .list(ListFilter { function: Some("f".into()), status: Some(Status::Queued), limit: 2, ..Default::default() })
        .await
        .unwrap();
    let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!((ids, page.next_cursor.as_deref()), (vec!["f0590", "f0300"], Some("f0300")));
}

/// Write system calls made so far by the calling thread (`syscw` of `/proc/thread-self/io`).
fn write_calls_of_this_thread() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    let line = io.lines().find(|l| l.starts_with("syscw:")).expect("syscw");
    line["syscw:".len()..].trim().parse().expect("a count")
}

/// A connection to `path` in WAL mode, commits without an fsync (as the writer's), through
/// `vfs` (`None`: the default one).
fn wal_connection(path: &std::path::Path, vfs: Option<&str>) -> rusqlite::Connection {
    let conn = match vfs {
        Some(vfs) => rusqlite::Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), vfs),
        None => rusqlite::Connection::open(path),
    }
    .unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
         CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
    )
    .unwrap();
    conn
}

/// What a crash at this instant would leave: the database and its WAL as they are in the file
/// system now (not the wal-index, which recovery rebuilds from the WAL's frames and checksums),
/// copied to `to` and opened there. The rows of `t`, by key: their number and their bytes.
fn rows_a_crash_would_leave(path: &std::path::Path, to: &std::path::Path) -> (i64, i64) {
    std::fs::copy(path, to).unwrap();
    let wal = |p: &std::path::Path| std::path::PathBuf::from(format!("{}-wal", p.display()));
    std::fs::copy(wal(path), wal(to)).unwrap();
    let copy = rusqlite::Connection::open(to).unwrap();
    copy.query_row("SELECT count(*), COALESCE(sum(length(v) + k), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
}

/// The writer's VFS ("keel", `wal_writes.c`) writes a commit's WAL frames with two system calls
/// where the default VFS makes two a page, and the commit is whole in the file when COMMIT
/// returns: a copy of the files taken then, as a crash would leave them, has it.
#[test]
fn the_writers_vfs_writes_a_commits_frames_at_once_and_whole_before_the_commit_returns() {
    let dir = tempfile::tempdir().unwrap();
    let commit_forty_pages = |conn: &rusqlite::Connection, round: i64| {
        let before = write_calls_of_this_thread();
        conn.execute_batch("BEGIN").unwrap();
        for k in 0..40 {
            conn.execute("INSERT OR REPLACE INTO t VALUES (?1, ?2)", rusqlite::params![k, vec![round as u8; 3000]])
                .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        write_calls_of_this_thread() - before
    };
    let plain = wal_connection(&dir.path().join("plain.db"), None);
    let gathered = wal_connection(&dir.path().join("keel.db"), Some(super::WAL_VFS));
    for round in 1..=3 {
        // Forty rows of 3,000 bytes: a page each, and the pages of the tree above them.
        let calls = commit_forty_pages(&plain, round);
        assert!(calls >= 80, "the default VFS: two writes a frame, {calls} in all");
        let calls = commit_forty_pages(&gathered, round);
        // About 170 KB of frames: in pieces of up to 120 KiB, the commit frame's header ending
        // the second, then its page (the WAL's own header joins the first commit's frames).
        assert!(calls <= 3, "gathered: {calls} writes for a commit of forty pages");
        let left = rows_a_crash_would_leave(&dir.path().join("keel.db"), &dir.path().join("copy.db"));
        assert_eq!(left, (40, 40 * 3000 + (0..40).sum::<i64>()), "round {round}");
    }
}

/// A transaction larger than the page cache writes frames before its commit (the cache spills),
/// and when it changes a page it already wrote, SQLite writes that frame again in place and
/// rewrites the checksums of the frames after it, the commit frame's last: those writes are not
/// in sequence, and the last is a header alone. Each commit is still whole in the file when it
/// returns, and other connections read what it wrote.
#[test]
fn the_writers_vfs_keeps_a_commit_whole_when_the_cache_spills_and_frames_are_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db");
    let conn = wal_connection(&path, Some(super::WAL_VFS));
    conn.execute_batch("PRAGMA cache_size = 10").unwrap();
    let reader = rusqlite::Connection::open(&path).unwrap();
    let mut expected = 0;
    for round in 1..=4i64 {
        conn.execute_batch("BEGIN").unwrap();
        // Each row twice: the first pass spills pages, the second changes them again.
        for pass in 0..2 {
            for k in 0..200 {
                let fill = (round * 10 + pass) as u8;
                conn.execute("INSERT OR REPLACE INTO t VALUES (?1, ?2)", rusqlite::params![k, vec![fill; 1500]])
                    .unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        expected = 200 * 1500 + (0..200).sum::<i64>();
        let copy = dir.path().join(format!("copy{round}.db"));
        assert_eq!(rows_a_crash_would_leave(&path, &copy), (200, expected), "round {round}");
        let last: Vec<u8> = reader.query_row("SELECT v FROM t WHERE k = 199", [], |r| r.get(0)).unwrap();
        assert_eq!(last, vec![(round * 10 + 1) as u8; 1500], "round {round}: another connection reads the commit");
    }
    drop(conn);
    let reopened = rusqlite::Connection::open(&path).unwrap();
    let after: i64 = reopened.query_row("SELECT sum(length(v) + k) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(after, expected);
}

/// A first attempt that succeeded is kept in its invocation's row, not in `attempts`, for a sync
/// call's record and for an async completion alike, and reads back as it was written. Any other
/// attempt has its row of `attempts`: a failure, a retry's success, and a success whose stored
/// reply is not its own status (as when an effects envelope names another).
#[tokio::test]
async fn a_first_success_is_kept_in_its_row_and_any_other_attempt_in_attempts() {
    use crate::first_attempt::scenario::{self, attempt};
    use keel_core::outcome::Outcome;
    let (store, _dir) = make().await;
    scenario::run(&store).await;
    let in_attempts: Vec<(String, u32)> = store
        .writer
        .write(|c| {
            let mut st = c.prepare("SELECT invocation_id, number FROM attempts ORDER BY 1, 2").unwrap();
            Ok(st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect())
        })
        .await
        .unwrap();
    let expected = scenario::IN_ATTEMPTS.map(|(id, n)| (id.to_string(), n));
    assert_eq!(in_attempts, expected, "a1's and s1's first successes are kept in their rows");

    // A row stored before the change: its first success is in `attempts`, and is read from there.
    store
        .writer
        .write(|c| {
            c.execute_batch(
                "UPDATE invocations SET first_started_at = NULL, first_ended_at = NULL WHERE id = 'a1';
                 INSERT INTO attempts (invocation_id, number, started_at, ended_at, outcome, http_status, error)
                     VALUES ('a1', 1, 10, 17, 'success', 200, NULL);",
            )
            .map_err(super::rows::db_err)
        })
        .await
        .unwrap();
    let old = store.get("a1").await.unwrap().unwrap();
    assert_eq!(old.attempts, vec![attempt(1, Outcome::Success, Some(200))], "an attempt stored before, read back");
}
