//! The workflows part of a store: runs, started with their first step's invocation and moved on
//! in the same transaction as each step's completion. Every change names the run `version` it was
//! decided on and is refused with [`Error::Stale`](crate::Error::Stale) when the run changed since
//! (an operator's cancel racing a step's end): the caller reads the run again and decides again.

use async_trait::async_trait;

use crate::events::NewEvent;
use crate::invocation::NewInvocation;
use crate::workflow::{Run, RunStatus};
use crate::Result;

use super::{page_size, Page};

/// A run's change, decided by [`crate::workflow`] on the run as it was at `expected_version`.
#[derive(Debug, Clone)]
pub struct RunUpdate {
    /// The run after the change (its `version` one past `expected_version`).
    pub run: Run,
    pub expected_version: u64,
    /// The step or compensation it starts.
    pub start: Option<NewInvocation>,
    /// An invocation cancelled with the change (a queued or retrying step of a cancelled run):
    /// refused whole with [`Error::InvalidState`](crate::Error::InvalidState) when it is no
    /// longer queued or retrying.
    pub cancel_invocation: Option<String>,
    /// Published with the change: the run's `keel.workflow.*` event when it ended.
    pub events: Vec<NewEvent>,
}

/// What starting a run came to.
#[derive(Debug, Clone)]
pub enum RunStarted {
    /// Stored, with its first step's invocation.
    Started(Run),
    /// A run of the same workflow was started with the same idempotency key: nothing was written.
    Existing(Run),
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    /// At most [`super::MAX_LIMIT`]; 0 means [`super::DEFAULT_LIMIT`].
    pub limit: usize,
    /// The last id of the previous page.
    pub cursor: Option<String>,
}

impl RunFilter {
    pub fn page_size(&self) -> usize {
        page_size(self.limit)
    }
}

#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Stores a new run and its first step's invocation in one transaction; see [`RunStarted`].
    async fn start_run(&self, run: Run, first: NewInvocation) -> Result<RunStarted>;

    async fn get_run(&self, id: &str) -> Result<Option<Run>>;

    async fn list_runs(&self, filter: RunFilter) -> Result<Page<Run>>;

    /// Applies a change made outside a step's completion (an operator's cancel).
    async fn update_run(&self, update: RunUpdate) -> Result<()>;
}
