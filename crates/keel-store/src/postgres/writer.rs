//! Group commit: admissions and completions from many concurrent requests are written together,
//! in one transaction of a few set-based statements (`unnest` of arrays), so a thousand
//! invocations cost a handful of round trips and one WAL flush, not a thousand of each.
//!
//! [`WRITERS`] tasks share one queue: while one group commits, the next one gathers. Each job is
//! answered only after its group committed. A group that fails on bad data (not on a lost
//! connection) is retried job by job, so one bad job fails alone.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use keel_core::invocation::{Completion, Invocation, NewInvocation};
use keel_core::{Error, Result};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::batch;
use super::rows::describe;

/// Largest number of jobs committed together.
const MAX_GROUP: usize = 1024;
/// Groups committing at the same time.
const WRITERS: usize = 2;
/// A group that has not committed by then is answered `Unavailable`.
const GROUP_TIMEOUT: Duration = Duration::from_secs(10);

/// One write waiting for its group.
#[derive(Debug)]
pub(crate) enum Work {
    Enqueue(NewInvocation),
    Complete(Completion),
}

/// What a job is answered: the stored invocation for an enqueue, nothing for a completion.
pub(crate) type Answer = Result<Option<Invocation>>;

type Job = (Work, oneshot::Sender<Answer>);

/// Handle to the writer tasks; they stop once every handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer tasks on the current tokio runtime.
    pub(crate) fn start(pool: Pool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(pool.clone(), queue.clone()));
        }
        Self { jobs: tx }
    }

    /// Writes `work` in the next group; resolves once that group committed.
    pub(crate) async fn write(&self, work: Work) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((work, tx)).map_err(|_| Error::Unavailable("the PostgreSQL writer has stopped".into()))?;
        rx.await.map_err(|_| Error::Unavailable("the PostgreSQL writer stopped during a write".into()))?
    }
}

async fn run(pool: Pool, queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(job) => group.push(job),
                None => return,
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        let (works, replies): (Vec<Work>, Vec<_>) = group.into_iter().unzip();
        let answers =
            crate::metric_definitions::timed_commit_async("postgres", works.len(), commit_group(&pool, &works)).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// Commits `works` together; falls back to one transaction per job when the group failed on
/// something one of its jobs carries.
async fn commit_group(pool: &Pool, works: &[Work]) -> Vec<Answer> {
    let committing = AtomicBool::new(false);
    match bounded(&committing, batch::write(pool, works, &committing)).await {
        Ok(answers) => answers,
        Err(e) if works.len() > 1 && is_data_error(&e) => {
            tracing::warn!(error = %describe_group(&e), jobs = works.len(), "group commit failed; writing its jobs one by one");
            let mut answers = Vec::with_capacity(works.len());
            for work in works {
                let committing = AtomicBool::new(false);
                let one = bounded(&committing, batch::write(pool, std::slice::from_ref(work), &committing)).await;
                answers.push(one.map_or_else(|e| Err(failed(&e)), |mut a| a.pop().unwrap_or(Ok(None))));
            }
            answers
        }
        Err(e) => {
            tracing::warn!(error = %describe_group(&e), jobs = works.len(), "group commit failed");
            works.iter().map(|_| Err(failed(&e))).collect()
        }
    }
}

/// Why a group did not commit.
#[derive(Debug)]
pub(crate) enum GroupError {
    Db(tokio_postgres::Error),
    /// No connection could be had, or the group ran out of time before its COMMIT.
    Unavailable(String),
    /// The connection was lost, or time ran out, once COMMIT was sent: the group may have
    /// committed.
    Unknown(String),
}

impl From<tokio_postgres::Error> for GroupError {
    fn from(e: tokio_postgres::Error) -> Self {
        GroupError::Db(e)
    }
}

/// Runs one group write within [`GROUP_TIMEOUT`]; running out of time once its COMMIT was sent
/// leaves its outcome unknown.
async fn bounded(
    committing: &AtomicBool,
    write: impl std::future::Future<Output = Result<Vec<Answer>, GroupError>>,
) -> Result<Vec<Answer>, GroupError> {
    tokio::time::timeout(GROUP_TIMEOUT, write).await.unwrap_or_else(|_| {
        let why = format!("PostgreSQL did not commit within {}s", GROUP_TIMEOUT.as_secs());
        Err(match committing.load(Ordering::Relaxed) {
            true => GroupError::Unknown(why),
            false => GroupError::Unavailable(why),
        })
    })
}

/// A data or constraint error (SQLSTATE classes 22 and 23): caused by a job, not the database.
fn is_data_error(e: &GroupError) -> bool {
    matches!(e, GroupError::Db(e) if e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")))
}

fn describe_group(e: &GroupError) -> String {
    match e {
        GroupError::Db(e) => describe(e),
        GroupError::Unavailable(reason) | GroupError::Unknown(reason) => reason.clone(),
    }
}

/// What each job of a group that did not commit is answered.
pub(crate) fn failed(e: &GroupError) -> Error {
    match e {
        GroupError::Unknown(reason) => Error::OutcomeUnknown(reason.clone()),
        GroupError::Db(e) => super::rows::classify(e),
        GroupError::Unavailable(reason) => Error::Unavailable(reason.clone()),
    }
}

/// Ids already seen in a group: a second job on the same invocation waits for a later statement.
pub(crate) fn first_of_each_id<'a>(ids: impl Iterator<Item = (usize, &'a str)>) -> (Vec<usize>, Vec<usize>) {
    let mut seen = HashSet::new();
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for (i, id) in ids {
        if seen.insert(id) {
            first.push(i);
        } else {
            later.push(i);
        }
    }
    (first, later)
}
