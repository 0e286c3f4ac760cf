//! The group-commit writer: one thread owns the only write connection. Whatever jobs are waiting
//! when it wakes run in one transaction, each inside a savepoint (a failing job rolls back alone),
//! and are answered only after the transaction committed — one fsync for the whole group.
//!
//! With fsync on, the writer commits without one (`synchronous = NORMAL`) and, when a job is
//! waiting, hands the group's answers to the sync thread, which fsyncs the WAL and only then
//! answers them, while the writer already runs the next group. One fsync covers every group
//! committed before it began. When no job waits and the sync thread is idle, the writer fsyncs
//! and answers the group itself: a hand-over then would buy no overlap, only two thread
//! wake-ups (BENCHMARKS.md, "The writer's own fsync when nothing waits"). A commit is visible
//! to readers before it is durable, so a read waits, before it answers, until everything it
//! could have seen is durable ([`Durable`]): nothing lost by a crash is ever handed out, by a
//! write's answer or by a read.
//!
//! A job nobody waits on (a record written behind its reply, a completion with nothing behind
//! it) may wait up to [`UNHURRIED_WINDOW`] for company, so such records share fsyncs instead of
//! paying one each; any other job, or [`Writer::hurry`], commits the group at once.
//!
//! One kind of write is answered at its group's commit, before the fsync: a lease
//! ([`Writer::write_visible`]). It acknowledges nothing to anyone; what it starts is recorded by
//! a later write whose answer waits for an fsync that covers the lease too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use keel_core::store::Urgency;
use keel_core::{Error, Result};

/// Largest number of jobs committed together.
const MAX_GROUP: usize = 1024;
/// Groups between two checkpoint nudges.
const CHECKPOINT_EVERY: u64 = 64;
/// Longest an unhurried job waits, from its arrival, for others to commit with.
const UNHURRIED_WINDOW: Duration = Duration::from_millis(2);

/// Answers a job's caller once its group's fate is known: once the group is durable, or, for a
/// write that needs only to be visible ([`Writer::write_visible`]), once it has committed.
struct Reply {
    answer: Box<dyn FnOnce(Result<()>) + Send>,
    at_commit: bool,
}

impl Reply {
    /// Given once the group is durable.
    fn durable(answer: impl FnOnce(Result<()>) + Send + 'static) -> Self {
        Self { answer: Box::new(answer), at_commit: false }
    }

    fn give(self, outcome: Result<()>) {
        (self.answer)(outcome)
    }
}

/// A write: runs inside the group's transaction (or, given `None`, is refused without running),
/// reports whether it succeeded, and hands back how to answer its caller.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Reply) + Send>;

/// A job on its way to the writer.
pub(crate) struct Queued {
    job: Job,
    /// Nobody waits on it: it may wait for company (from `at`, at most [`UNHURRIED_WINDOW`]).
    unhurried: bool,
    at: Instant,
}

/// Handle to the writer. Dropping every handle stops its thread.
#[derive(Debug, Clone)]
pub(crate) enum Writer {
    /// The group-commit thread.
    Thread {
        jobs: mpsc::UnboundedSender<Queued>,
        /// Wakes a writer waiting out an unhurried window: a hurried job arrived. Unhurried jobs
        /// wake nobody then (the window's end will), so sharing a commit costs no thread wake-up.
        hurry: Arc<Notify>,
        /// With a sync thread: how far commits are visible, and how far durable.
        durable: Option<Arc<Durable>>,
    },
    /// Each job committed alone, at once, on the caller's thread: no thread and no wall-clock
    /// window, so a single-threaded run on paused time repeats exactly (the simulation's store).
    Inline(Arc<Inline>),
}

/// The connection of an [`Writer::Inline`] writer, and how long each commit takes (paused time).
pub(crate) struct Inline {
    conn: std::sync::Mutex<Connection>,
    commit_delay: Box<dyn Fn() -> Duration + Send + Sync>,
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer that commits each job alone on the caller's thread, after `commit_delay()` of
    /// `tokio::time` (a slow disk, on paused time).
    pub(crate) fn inline(conn: Connection, commit_delay: Box<dyn Fn() -> Duration + Send + Sync>) -> Self {
        Writer::Inline(Arc::new(Inline { conn: std::sync::Mutex::new(conn), commit_delay }))
    }

    /// Starts the writer on `conn`. With a `checkpointer`, the writer nudges it every
    /// [`CHECKPOINT_EVERY`] groups instead of checkpointing itself (auto-checkpoint must be off).
    /// With `sync`, `conn` commits without an fsync (`synchronous = NORMAL`) and each group is
    /// made durable by calling `sync` before it is answered: on a thread of its own while jobs
    /// wait, on the writer's when none does.
    pub(crate) fn start(
        conn: Connection,
        checkpointer: Option<std_mpsc::SyncSender<()>>,
        sync: Option<SyncWal>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let hurry = Arc::new(Notify::new());
        let woken = hurry.clone();
        let (syncer, durable) = match sync {
            Some(sync) => {
                let (marks, durable_marks) = watch::channel(0);
                let marks = Arc::new(marks);
                let sync = Arc::new(std::sync::Mutex::new(sync));
                let durable = Arc::new(Durable { committing: AtomicU64::new(0), durable: durable_marks });
                let (to_sync, synced) = std_mpsc::channel();
                let (its_sync, its_marks) = (sync.clone(), marks.clone());
                std::thread::Builder::new()
                    .name("keel-sqlite-sync".into())
                    .spawn(move || sync_then_answer(synced, &its_sync, &its_marks))?;
                (Some(Syncer { groups: to_sync, durable: durable.clone(), sync, marks }), Some(durable))
            }
            None => (None, None),
        };
        std::thread::Builder::new()
            .name("keel-sqlite-writer".into())
            .spawn(move || run(conn, rx, &woken, checkpointer, syncer))?;
        Ok(Writer::Thread { jobs: tx, hurry, durable })
    }

    /// How a reader finds out what it may answer: `None` when every commit is durable as it ends.
    pub(crate) fn durable(&self) -> Option<Arc<Durable>> {
        match self {
            Writer::Thread { durable, .. } => durable.clone(),
            Writer::Inline(_) => None,
        }
    }

    /// Runs `f` in the next group commit; resolves once that group is durable.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(false, false, f).await
    }

    /// [`Writer::write`], or for a job nobody waits on ([`Urgency::Unhurried`]) one whose group
    /// may wait up to [`UNHURRIED_WINDOW`] for company before it commits.
    pub(crate) async fn write_as<T, F>(&self, urgency: Urgency, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(urgency == Urgency::Unhurried, false, f).await
    }

    /// Runs `f` in the next group commit; resolves once that group has committed, before it is
    /// durable: visible to every later write (the writer runs them in order), and in the WAL
    /// file, so a crash of the process keeps it; a crash of the machine before the fsync may
    /// not. For a lease only: it acknowledges nothing to a client, and what it starts (an
    /// attempt) is recorded by a later write, whose answer waits for an fsync that covers the
    /// lease too. Should the machine lose it, the invocation is still `queued`, with no attempt
    /// counted, and runs again: at least once, as after any crash. Answered at the fsync
    /// instead, a lease held the dispatcher's slots idle for one fsync more each time it leased
    /// (BENCHMARKS.md, "Leases answered at their commit").
    pub(crate) async fn write_visible<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(false, true, f).await
    }

    /// Commits the unhurried jobs waiting for company now (someone is held up by them).
    pub(crate) fn hurry(&self) {
        let Writer::Thread { jobs, hurry, .. } = self else { return };
        let job: Job = Box::new(|_| (true, Reply::durable(|_| {})));
        if jobs.send(Queued { job, unhurried: false, at: Instant::now() }).is_ok() {
            hurry.notify_one();
        }
    }

    /// Runs `write` with the other writes of `kind` waiting for the writer (see [`Coalesced`]);
    /// resolves once its group is durable. An unhurried write lets the job wait for company, as
    /// [`Writer::write_as`] does; a hurried one joining an unhurried job hurries it.
    pub(crate) async fn write_coalesced<I, O>(&self, kind: &Coalesced<I, O>, write: I, urgency: Urgency) -> Result<O>
    where
        I: Send + 'static,
        O: Send + 'static,
    {
        let unhurried = urgency == Urgency::Unhurried;
        let Writer::Thread { jobs, hurry, .. } = self else {
            // One at a time, on the caller's thread: nothing waits to join.
            let run = kind.run;
            return self.submit(unhurried, false, move |conn| only(run(conn, vec![write]))).await;
        };
        let (answer, answered) = oneshot::channel();
        let queue = {
            let mut pending = kind.pending();
            pending.writes.push((write, answer));
            match pending.queued {
                None => {
                    pending.queued = Some(unhurried);
                    true
                }
                Some(true) if !unhurried => {
                    pending.queued = Some(false);
                    drop(pending);
                    self.hurry();
                    false
                }
                Some(_) => false,
            }
        };
        if queue {
            if jobs.send(Queued { job: kind.job(), unhurried, at: Instant::now() }).is_err() {
                kind.refuse_all();
            } else if !unhurried {
                hurry.notify_one();
            }
        }
        answered.await.map_err(|_| Error::Unavailable(STOPPED_DURING.into()))?
    }

    /// Queues `f` as a job: `unhurried`, it may wait for company; `at_commit`, its caller is
    /// answered once its group commits, else once the group is durable.
    async fn submit<T, F>(&self, unhurried: bool, at_commit: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(Error::Unavailable(NOT_STARTED.into())),
            };
            let ok = result.is_ok();
            let answer = Box::new(move |commit: Result<()>| {
                let _ = tx.send(commit.and(result));
            });
            (ok, Reply { answer, at_commit })
        });
        match self {
            Writer::Thread { jobs, hurry, .. } => {
                jobs.send(Queued { job, unhurried, at: Instant::now() })
                    .map_err(|_| Error::Unavailable(STOPPED.into()))?;
                if !unhurried {
                    hurry.notify_one();
                }
            }
            Writer::Inline(inline) => {
                tokio::time::sleep((inline.commit_delay)()).await;
                let conn = inline.conn.lock().unwrap_or_else(|p| p.into_inner());
                let mut replies = Vec::with_capacity(1);
                let outcome = commit_group(&conn, &mut vec![job], &mut replies, &mut |_| {}, &mut || {});
                drop(conn);
                for reply in replies {
                    reply.give(outcome.clone().map_err(Error::Unavailable));
                }
            }
        }
        rx.await.map_err(|_| Error::Unavailable(STOPPED_DURING.into()))?
    }
}

/// Writes of one kind that wait for the writer together, run as one job: a write joins the job
/// already queued for its kind, if one is, instead of queueing a job of its own. Under load the
/// writer then runs one job for N admissions (or N completions), with one savepoint, one answer
/// handed on and multi-row statements, instead of N (BENCHMARKS.md, "Admissions and completions
/// coalesced"). Each write is still answered alone, with its own result, once its group is
/// durable, and it runs no later than it would have alone: it joins a job queued before it.
pub(crate) struct Coalesced<I, O> {
    pending: Arc<std::sync::Mutex<Pending<I, O>>>,
    /// Runs the writes gathered: one answer each, in order. A write refused leaves nothing of
    /// itself written (its answer says why); the others stand. The outer error refuses them all
    /// (the job is rolled back).
    run: Run<I, O>,
}

type Run<I, O> = fn(&Connection, Vec<I>) -> Result<Vec<Result<O>>>;

struct Pending<I, O> {
    writes: Vec<(I, oneshot::Sender<Result<O>>)>,
    /// A job is queued for them: whether it is unhurried.
    queued: Option<bool>,
}

impl<I, O> Pending<I, O> {
    /// Every write waiting, taken: the next one queues a job of its own.
    fn take(&mut self) -> Vec<(I, oneshot::Sender<Result<O>>)> {
        self.queued = None;
        std::mem::take(&mut self.writes)
    }
}

impl<I, O> std::fmt::Debug for Coalesced<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesced").finish_non_exhaustive()
    }
}

impl<I: Send + 'static, O: Send + 'static> Coalesced<I, O> {
    pub(crate) fn new(run: Run<I, O>) -> Self {
        Self { pending: Arc::new(std::sync::Mutex::new(Pending { writes: Vec::new(), queued: None })), run }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending<I, O>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many writes wait for the job queued for them, and whether it is unhurried.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> (usize, Option<bool>) {
        let pending = self.pending();
        (pending.writes.len(), pending.queued)
    }

    /// The job that runs, when the writer comes to it, every write gathered by then.
    fn job(&self) -> Job {
        let (pending, run) = (self.pending.clone(), self.run);
        Box::new(move |conn| {
            let writes = pending.lock().unwrap_or_else(|p| p.into_inner()).take();
            let (inputs, answers): (Vec<I>, Vec<_>) = writes.into_iter().unzip();
            let n = inputs.len();
            let refused = |why: String| (0..n).map(|_| Err(Error::Unavailable(why.clone()))).collect();
            let (ok, results): (bool, Vec<Result<O>>) = match conn.map(|conn| run(conn, inputs)) {
                Some(Ok(results)) => (true, results),
                Some(Err(e)) => (false, refused(reason(e))),
                None => (false, refused(NOT_STARTED.into())),
            };
            debug_assert_eq!(results.len(), answers.len());
            let reply = Reply::durable(move |commit| {
                let failed = commit.err().map(reason);
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(match &failed {
                        None => result,
                        Some(why) => Err(Error::Unavailable(why.clone())),
                    });
                }
            });
            // A write refused was undone by `run`: the job stands unless `run` failed as a whole.
            (ok, reply)
        })
    }

    /// Refuses every write waiting: the writer is gone.
    fn refuse_all(&self) {
        let writes = self.pending().take();
        for (_, answer) in writes {
            let _ = answer.send(Err(Error::Unavailable(STOPPED.into())));
        }
    }
}

/// Why a write was refused when its group's transaction could not begin.
const NOT_STARTED: &str = "the SQLite transaction could not start";
/// Why a write was refused when the writer is gone.
const STOPPED: &str = "the SQLite writer has stopped";
/// Why a write went unanswered: the writer stopped before its group's fate was known.
const STOPPED_DURING: &str = "the SQLite writer stopped during a write";

/// Makes everything written to the WAL so far durable (an fdatasync of the file).
pub(crate) type SyncWal = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// The sync thread's side of the writer.
struct Syncer {
    groups: std_mpsc::Sender<Committed>,
    durable: Arc<Durable>,
    /// The fsync and the durable marks, shared with the sync thread: the writer makes a group
    /// durable itself when the sync thread is idle and no job waits (see `run`).
    sync: Arc<std::sync::Mutex<SyncWal>>,
    marks: Arc<watch::Sender<u64>>,
}

/// A group the writer committed (or failed to), on its way to the sync thread.
struct Committed {
    /// The group's commit number, when it reached its COMMIT.
    seq: Option<u64>,
    outcome: std::result::Result<(), String>,
    replies: Vec<Reply>,
    jobs: usize,
    started: Instant,
}

/// Commit numbers: a group takes the next one just before its COMMIT (so a reader that saw the
/// commit finds the number at least that high afterwards), and whoever fsyncs (the sync thread
/// or the writer) publishes the highest one made durable (once both have stopped, waiting for
/// more fails instead of hanging).
#[derive(Debug)]
pub(crate) struct Durable {
    committing: AtomicU64,
    durable: watch::Receiver<u64>,
}

impl Durable {
    /// The commit number a read that just ended must wait for: every commit it could see has
    /// one no higher.
    pub(crate) fn seen(&self) -> u64 {
        self.committing.load(Ordering::SeqCst)
    }

    /// Resolves once commit `seq` and all before it are durable.
    pub(crate) async fn until(&self, seq: u64) -> Result<()> {
        if *self.durable.borrow() >= seq {
            return Ok(());
        }
        let mut marks = self.durable.clone();
        marks.wait_for(|durable| *durable >= seq).await.map(|_| ()).map_err(|_| sync_stopped())
    }
}

/// What a write or read is told when the sync thread is gone (it never stops while the writer
/// runs, unless it panicked).
fn sync_stopped() -> Error {
    Error::Unavailable("the SQLite sync thread has stopped".into())
}

/// The sync thread: takes every group committed since its last fsync, fsyncs once, publishes
/// the highest commit number as durable, and answers the groups in order. A failed fsync leaves
/// the commits' fate to recovery, as a failed COMMIT does ([`leaves_the_commit_unknown`]): the
/// process stops without answering them.
fn sync_then_answer(
    groups: std_mpsc::Receiver<Committed>,
    sync: &std::sync::Mutex<SyncWal>,
    durable: &watch::Sender<u64>,
) {
    while let Ok(first) = groups.recv() {
        let mut batch = vec![first];
        batch.extend(groups.try_iter());
        make_durable(batch, sync, durable);
    }
}

/// Makes `batch` durable with one fsync, publishes its highest commit number as durable, and
/// answers its groups in order.
fn make_durable(batch: Vec<Committed>, sync: &std::sync::Mutex<SyncWal>, durable: &watch::Sender<u64>) {
    if let Some(top) = batch.iter().filter_map(|g| g.seq).max() {
        let synced = (sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner))();
        if let Err(e) = synced {
            tracing::error!(error = %e, "fsync of the SQLite WAL failed: stopping so that recovery decides");
            std::process::abort();
        }
        durable.send_replace(top);
    }
    for group in batch {
        crate::metric_definitions::record_commit("sqlite", group.jobs, group.started);
        for reply in group.replies {
            reply.give(group.outcome.clone().map_err(Error::Unavailable));
        }
    }
}

/// The fsync of the WAL at `path`, on a descriptor of its own (an fsync covers the file's
/// pages whoever wrote them), opened at the first group that wrote any.
pub(crate) fn sync_wal(path: String) -> SyncWal {
    let mut file: Option<std::fs::File> = None;
    Box::new(move || {
        if file.is_none() {
            match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(opened) => file = Some(opened),
                // No WAL yet: no group has written a page, so none has anything to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        file.as_ref().map_or(Ok(()), std::fs::File::sync_data)
    })
}

fn run(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    hurry: &Notify,
    checkpointer: Option<std_mpsc::SyncSender<()>>,
    syncer: Option<Syncer>,
) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_GROUP);
    let mut groups: u64 = 0;
    // The commit number of the last group handed to the sync thread, and what it made durable.
    let mut sent: u64 = 0;
    let mut synced = syncer.as_ref().map(|s| s.durable.durable.clone());
    // Waits with a deadline need a timer: a runtime of this thread's own, used only for that.
    let timer = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(timer) => timer,
        Err(e) => return tracing::error!(error = %e, "the SQLite writer could not start its timer"),
    };
    while let Some(first) = rx.blocking_recv() {
        groups += 1;
        if let Some(nudge) = checkpointer.as_ref().filter(|_| groups.is_multiple_of(CHECKPOINT_EVERY)) {
            // A full channel means a checkpoint is already pending: nothing to add.
            let _ = nudge.try_send(());
        }
        gather(&timer, &mut rx, hurry, first, &mut group);
        let started = Instant::now();
        // While the sync thread makes an earlier group durable, this one cannot be durable before
        // that fsync ends, so committing before then only adds a commit (and its WAL pages)
        // without answering anyone sooner. Until it ends, the jobs already waiting run in this
        // group's transaction; with none waiting, the group waits for the fsync's end (a wake-up
        // per fsync, none per job) and takes in the jobs that arrived meanwhile. Then it commits:
        // one commit per fsync, however the jobs arrive, up to `MAX_GROUP` jobs.
        let mut taken = group.len();
        let mut more = |group: &mut Vec<Job>| {
            let Some(marks) = synced.as_mut() else { return };
            if taken >= MAX_GROUP || *marks.borrow_and_update() >= sent {
                return;
            }
            if rx.is_empty() && timer.block_on(marks.wait_for(|durable| *durable >= sent)).is_err() {
                return;
            }
            while taken < MAX_GROUP {
                let Ok(next) = rx.try_recv() else { break };
                group.push(next.job);
                taken += 1;
            }
        };
        let before = sent;
        let mut seq = None;
        let outcome = commit_group(&conn, &mut group, &mut replies, &mut more, &mut || {
            seq = syncer.as_ref().map(|s| s.durable.committing.fetch_add(1, Ordering::SeqCst) + 1);
        });
        let jobs = replies.len();
        if let Some(seq) = seq {
            sent = seq;
        }
        // A write that needs only to be visible (a lease) is answered now, not after the fsync.
        for reply in replies.extract_if(.., |r| r.at_commit) {
            reply.give(outcome.clone().map_err(Error::Unavailable));
        }
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs, "SQLite group commit failed");
        }
        match &syncer {
            Some(syncer) => {
                let replies = std::mem::replace(&mut replies, Vec::with_capacity(MAX_GROUP));
                let committed = Committed { seq, outcome, replies, jobs, started };
                // With the sync thread idle (every group it was given is durable) and no job
                // waiting, handing this group over would only cost a wake-up of that thread and,
                // for the next job, one of this: the writer fsyncs it itself. A job arriving
                // meanwhile waits for the fsync's end, as it would for the sync thread's.
                if rx.is_empty() && *syncer.durable.durable.borrow() >= before {
                    make_durable(vec![committed], &syncer.sync, &syncer.marks);
                } else if let Err(std_mpsc::SendError(lost)) = syncer.groups.send(committed) {
                    for reply in lost.replies {
                        reply.give(Err(sync_stopped()));
                    }
                    // The sync thread is gone: so is this one, dropping the last handle on the
                    // durable marks, so that reads waiting for them fail instead of hanging.
                    tracing::error!("the SQLite sync thread has stopped: the writer stops too");
                    return;
                }
            }
            None => {
                crate::metric_definitions::record_commit("sqlite", jobs, started);
                for reply in replies.drain(..) {
                    reply.give(outcome.clone().map_err(Error::Unavailable));
                }
            }
        }
    }
}

/// Collects the group that starts with `first`: every job already waiting, and — while all of
/// them are unhurried — those arriving until the first one's window closes or a hurried one
/// comes (it signals `hurry`).
fn gather(
    timer: &tokio::runtime::Runtime,
    rx: &mut mpsc::UnboundedReceiver<Queued>,
    hurry: &Notify,
    first: Queued,
    group: &mut Vec<Job>,
) {
    let window_ends = tokio::time::Instant::from_std(first.at + UNHURRIED_WINDOW);
    let mut hurried = !first.unhurried;
    group.push(first.job);
    let mut window_open = true;
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(next) => {
                hurried |= !next.unhurried;
                group.push(next.job);
            }
            Err(_) if hurried || !window_open => break,
            // A signal may be stale (a hurried job already taken): then this just looks again.
            Err(_) => {
                window_open =
                    timer.block_on(async { tokio::time::timeout_at(window_ends, hurry.notified()).await }).is_ok();
            }
        }
    }
}

/// Runs `group` in one transaction, each job's answer in `replies`. Before committing it asks
/// `more` for jobs that may still join (it adds them to `group`, or none), and runs those too,
/// until it adds none; `committing` is called just before the COMMIT.
fn commit_group(
    conn: &Connection,
    group: &mut Vec<Job>,
    replies: &mut Vec<Reply>,
    more: &mut dyn FnMut(&mut Vec<Job>),
    committing: &mut dyn FnMut(),
) -> std::result::Result<(), String> {
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        replies.extend(group.drain(..).map(|job| job(None).1));
        return Err(e.to_string());
    }
    // A lone first job needs no savepoint: if it fails, the whole transaction is rolled back
    // (and nothing joins it). Every other job runs in one.
    let mut alone = group.len() == 1;
    loop {
        let mut jobs = std::mem::take(group).into_iter();
        for job in jobs.by_ref() {
            if !alone {
                if let Err(e) = run_cached(conn, "SAVEPOINT job") {
                    replies.push(job(None).1);
                    return abort(conn, jobs, replies, e);
                }
            }
            let (ok, reply) = job(Some(conn));
            replies.push(reply);
            if alone && !ok {
                return conn.execute_batch("ROLLBACK").map_err(|e| e.to_string());
            }
            if !alone {
                let done = if ok {
                    run_cached(conn, "RELEASE job")
                } else {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")
                };
                if let Err(e) = done {
                    return abort(conn, jobs, replies, e);
                }
            }
            alone = false;
        }
        more(group);
        if group.is_empty() {
            break;
        }
    }
    committing();
    run_cached(conn, "COMMIT").map_err(|e| {
        if leaves_the_commit_unknown(&e) {
            // The group's frames, commit marker included, may be in the WAL although the fsync
            // failed: a restart may find them committed. Answering 503 ("not done") would then be
            // a lie about acknowledged-looking work, and retrying the fsync proves nothing (the
            // kernel may have dropped the dirty pages). PostgreSQL's rule: stop, and let recovery
            // decide. Nobody of this group is answered; their clients see the connection drop.
            tracing::error!(error = %e, "SQLite commit failed with an I/O error: stopping so that recovery decides");
            std::process::abort();
        }
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    })
}

/// Whether a failed COMMIT may still have reached the disk: an I/O error (a failed write or
/// fsync of the WAL), as opposed to a refusal that left nothing behind (busy, full, constraint).
fn leaves_the_commit_unknown(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure)
}

/// Past this size the checkpointer has the WAL start over (a `RESTART` checkpoint), and the
/// writer cuts the file back to this size when it does (`journal_size_limit`).
pub(crate) const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// How long a `RESTART` checkpoint waits for readers to leave the WAL (and holds the writer
/// meanwhile) before it gives up until the next nudge.
const RESTART_WAIT: Duration = Duration::from_millis(500);

/// Copies the WAL back into the database file on its own connection and thread, so the writer's
/// commits stay appends to the WAL plus one fsync, never a checkpoint's page copies and fsyncs.
///
/// PASSIVE as a rule: it never blocks the writer or readers; what it cannot copy now waits for
/// the next. But under constant load PASSIVE never lets the WAL start over (a reader is always in
/// it, the writer always appending), so it grows without end — 1.7 GB in a long kill loop, all
/// replayed at each start. Once the file passes `wal_limit` bytes, the checkpoint is `RESTART`:
/// it waits briefly for readers to leave, copies everything, and the writer's next commit starts
/// the WAL over from its beginning, cutting the file back to `journal_size_limit`. A PASSIVE
/// checkpoint runs just before it, so that the RESTART, which holds the writer out while it runs,
/// has only what came since to copy (`async-batch`, seven runs of each: the RESTART took
/// 24–113 ms, median 46, against 31–181 ms, median 93, without it; BENCHMARKS.md). Not
/// `TRUNCATE`: an emptied file must grow again, and appends that grow a file cost each fsync
/// more than appends into blocks it already has (with `TRUNCATE` the bench showed sync calls at
/// concurrency 1 at 20–30% more server CPU; with `RESTART`, as before the change). The writer is
/// held out while the RESTART runs (tens of milliseconds with its copy and the database file's
/// fsync; at most [`RESTART_WAIT`] more when a reader lingers), once per `wal_limit` written; the
/// log line "the SQLite WAL starts over" says for how long (`held_ms`).
pub(crate) fn start_checkpointer(path: &str, wal_limit: u64) -> std::io::Result<std_mpsc::SyncSender<()>> {
    let (tx, rx) = std_mpsc::sync_channel::<()>(1);
    let path = path.to_string();
    let wal = format!("{path}-wal");
    std::thread::Builder::new().name("keel-sqlite-checkpoint".into()).spawn(move || {
        let conn = match Connection::open(&path).and_then(|c| c.execute_batch("PRAGMA synchronous = FULL").map(|_| c)) {
            Ok(conn) => conn,
            Err(e) => return tracing::error!(error = %e, "the SQLite checkpointer could not open the database"),
        };
        while rx.recv().is_ok() {
            let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
            let restart = size > wal_limit;
            if restart {
                // What can be copied without holding the writer out is copied first, so that
                // the RESTART has less to copy while it does.
                let _ = checkpoint(&conn, "PASSIVE", Duration::ZERO);
            }
            let mode = if restart { "RESTART" } else { "PASSIVE" };
            let began = Instant::now();
            let done = checkpoint(&conn, mode, if restart { RESTART_WAIT } else { Duration::ZERO });
            let held_ms = began.elapsed().as_millis() as u64;
            match done {
                Ok(0) if restart => tracing::info!(wal_bytes = size, held_ms, "the SQLite WAL starts over"),
                Ok(0) => {}
                Ok(_) => tracing::debug!(wal_bytes = size, mode, "SQLite checkpoint could not finish; next time"),
                Err(e) => tracing::warn!(error = %e, mode, "SQLite checkpoint failed"),
            }
        }
    })?;
    Ok(tx)
}

/// One `wal_checkpoint` in `mode`, waiting up to `wait` for the locks it needs. Of its row (busy,
/// WAL frames, frames copied), the first column: 1 when it could not finish.
fn checkpoint(conn: &Connection, mode: &str, wait: Duration) -> rusqlite::Result<i64> {
    conn.busy_timeout(wait)?;
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| row.get(0))
}

/// Copies the whole WAL into the database file and empties it (`TRUNCATE`), on a connection of
/// its own: at a clean shutdown, so that the database file alone is complete (for a copy or a
/// backup) and the next start has no log to replay. Waits for readers up to the busy timeout.
pub(crate) fn fold_wal(path: &str) -> Result<()> {
    let conn = Connection::open(path).map_err(|e| Error::Unavailable(format!("opening {path}: {e}")))?;
    let busy = checkpoint(&conn, "TRUNCATE", Duration::from_secs(5))
        .map_err(|e| Error::Unavailable(format!("checkpointing {path}: {e}")))?;
    if busy != 0 {
        return Err(Error::Unavailable(format!("checkpointing {path}: the database was busy")));
    }
    Ok(())
}

/// The one answer of a run of one write.
fn only<O>(results: Result<Vec<Result<O>>>) -> Result<O> {
    results?.pop().unwrap_or_else(|| Err(Error::Bug("a coalesced run gave no answer".into())))
}

/// What a write is told when its group failed with `e` (the writer's failures are all
/// [`Error::Unavailable`]; the text of another is kept).
fn reason(e: Error) -> String {
    match e {
        Error::Unavailable(why) => why,
        e => e.to_string(),
    }
}

/// Runs a parameterless statement from the connection's statement cache (no re-parsing).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Rolls the group back and refuses the jobs that did not run.
fn abort(
    conn: &Connection,
    rest: impl Iterator<Item = Job>,
    replies: &mut Vec<Reply>,
    e: rusqlite::Error,
) -> std::result::Result<(), String> {
    replies.extend(rest.map(|job| job(None).1));
    let _ = conn.execute_batch("ROLLBACK");
    Err(e.to_string())
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::{leaves_the_commit_unknown, start_checkpointer};

    fn failure(extended_code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended_code), None)
    }

    #[test]
    fn only_io_errors_leave_a_commit_unknown() {
        for unknown in [ffi::SQLITE_IOERR_FSYNC, ffi::SQLITE_IOERR_WRITE, ffi::SQLITE_IOERR] {
            assert!(leaves_the_commit_unknown(&failure(unknown)), "{unknown}");
        }
        for refused in [ffi::SQLITE_BUSY, ffi::SQLITE_FULL, ffi::SQLITE_CONSTRAINT, ffi::SQLITE_READONLY] {
            assert!(!leaves_the_commit_unknown(&failure(refused)), "{refused}");
        }
    }

    /// A WAL past the limit starts over and is cut back to the limit by the next commit
    /// (PASSIVE checkpoints alone never shrink the file).
    #[test]
    fn a_wal_past_its_limit_starts_over_and_is_cut_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db").display().to_string();
        let wal = format!("{path}-wal");
        let limit: u64 = 1 << 20;
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {limit}; \
             CREATE TABLE t (b BLOB);"
        ))
        .unwrap();
        for _ in 0..64 {
            conn.execute("INSERT INTO t VALUES (zeroblob(32768))", []).unwrap();
        }
        let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert!(size() > 2 << 20, "the WAL holds the writes: {}", size());
        let restarting = start_checkpointer(&path, limit).unwrap();
        restarting.send(()).unwrap();
        // The next commit starts the WAL over once the checkpoint is done, cutting the file.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() > limit && std::time::Instant::now() < end {
            conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(size() <= limit, "past the limit the WAL is cut back to it: {}", size());
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM t WHERE length(b) > 1", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 64, "nothing is lost by it");
    }
}
