//! Invocations and attempts: the records Keel keeps for every call of a function.
//!
//! Lifecycle: `queued` → `running` (leased by a dispatcher) → `succeeded`, or `retrying` → … →
//! `dead` (in the DLQ) → `queued` again on redrive, or `discarded`. `cancelled` ends a queued or
//! retrying invocation. Sync invocations that do not succeed end `failed`.

use bytes::Bytes;
use serde::Serialize;

use crate::clock::Millis;
use crate::outcome::Outcome;

/// Where an invocation is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
    Discarded,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Queued,
        Status::Running,
        Status::Retrying,
        Status::Succeeded,
        Status::Failed,
        Status::Dead,
        Status::Cancelled,
        Status::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Dead => "dead",
            Status::Cancelled => "cancelled",
            Status::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True when nothing more will happen to the invocation without an operator (redrive).
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running | Status::Retrying)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call of the function for an invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// 1-based, counted across redrives.
    pub number: u32,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub outcome: Outcome,
    /// The function's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// What went wrong, truncated to [`MAX_ERROR_LEN`].
    pub error: Option<String>,
}

/// How the error of an interrupted attempt begins (and so the invocation's, until its next attempt).
const INTERRUPTED: &str = "interrupted: ";

impl Attempt {
    /// The attempt an async lease taken back stands for: begun at `leased_at`, cut at `now`, a
    /// transient failure (it is retried), counted against the retry budget — but never the
    /// attempt that uses it up (see [`crate::lifecycle::exhausted_before_attempt`]).
    pub fn interrupted(number: u32, leased_at: Millis, now: Millis, owner: &str) -> Self {
        let error = format!("{INTERRUPTED}the lease held by {owner} was taken back before the attempt finished");
        Self::cut(number, leased_at, now, error)
    }

    /// Whether `error` (an attempt's or an invocation's) says the attempt was interrupted: Keel
    /// cannot tell whether such an attempt ever reached the function.
    pub fn is_interruption(error: &str) -> bool {
        error.starts_with(INTERRUPTED)
    }

    /// The attempt of a keyed sync invocation whose node stopped mid-call: the invocation failed,
    /// and a retry with the same key takes it over.
    pub fn interrupted_sync(number: u32, leased_at: Millis, now: Millis, owner: &str) -> Self {
        let error = format!(
            "{INTERRUPTED}{owner} stopped during this sync invocation; retry with the same key to run it again"
        );
        Self::cut(number, leased_at, now, error)
    }

    fn cut(number: u32, started_at: Millis, ended_at: Millis, error: String) -> Self {
        Attempt { number, started_at, ended_at, outcome: Outcome::Transient, http_status: None, error: Some(error) }
    }
}

/// Longest error text kept per attempt, in bytes.
pub const MAX_ERROR_LEN: usize = 1024;

/// Cuts `text` to at most [`MAX_ERROR_LEN`] bytes on a character boundary.
pub fn truncate_error(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// A function's response as stored: replayed raw by `GET /v1/invocations/{id}/result`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// A dispatcher's hold on a running invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub owner: String,
    pub leased_at: Millis,
    pub expires_at: Millis,
}

/// An invocation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub id: String,
    pub function: String,
    pub status: Status,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When the next attempt is due (queued and retrying only).
    pub due_at: Option<Millis>,
    /// Attempts made so far, across redrives.
    pub attempt_count: u32,
    /// `attempt_count` when the invocation was last redriven: each redrive gets a fresh budget.
    pub budget_start: u32,
    pub redrives: u32,
    /// The backoff delay used before the current retry (decorrelated jitter builds on it).
    pub last_delay_ms: Option<u64>,
    pub lease: Option<Lease>,
    /// The final (or latest) response of the function.
    pub response: Option<StoredResponse>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
    /// A sync invocation (its caller waits): never leased by a dispatcher.
    pub sync: bool,
    /// Set when this invocation delivers an event to a subscription.
    pub delivery: Option<Delivery>,
    /// The value of its function's `concurrency_key` header, when it came with one: at most
    /// `limit` attempts of one value are in flight at once, retries included.
    pub concurrency_key: Option<String>,
    /// Set when this invocation is a step (or a compensation) of a workflow run.
    pub workflow: Option<crate::workflow::StepRef>,
    /// The attempt history, oldest first (empty in lists).
    pub attempts: Vec<Attempt>,
}

impl Invocation {
    /// The `idempotency-key` its attempts carry: the invocation id, or a workflow step's
    /// `{run_id}/{step}` — the same for every attempt and redrive.
    pub fn contract_key(&self) -> &str {
        self.workflow.as_ref().and(self.idempotency_key.as_deref()).unwrap_or(&self.id)
    }

    /// Attempts made since the last redrive: what the retry policy counts.
    pub fn attempts_in_budget(&self) -> u32 {
        self.attempt_count - self.budget_start
    }
}

/// What the gateway hands the store to admit an async invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvocation {
    pub id: String,
    pub function: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub created_at: Millis,
    /// Later than `created_at` when the caller asked for a delay (`keel-delay`).
    pub due_at: Millis,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
    pub delivery: Option<Delivery>,
    /// See [`Invocation::concurrency_key`].
    pub concurrency_key: Option<String>,
    /// Leased at admission by the node that runs it once durable (nothing due was waiting, and
    /// it had room or a free slot): stored `running` under this lease, so no dispatcher leases
    /// it, and a crash before it completes is handled like any other lease. `None`: stored
    /// `queued`.
    pub lease: Option<Lease>,
    /// See [`Invocation::workflow`].
    pub workflow: Option<crate::workflow::StepRef>,
}

/// What makes an invocation an event delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub subscription: String,
    /// Keel's id of the event (not the publisher's CloudEvents `id`).
    pub event_id: String,
    /// The CloudEvents binary-mode headers sent with every attempt.
    pub headers: Vec<(String, String)>,
    /// Deliveries sharing a key run one at a time in publish order (`ordered_by = "subject"`).
    pub ordering_key: Option<String>,
    /// How many deliveries led to this event: events emitted by this delivery get `hops + 1`.
    pub hops: u32,
}

impl NewInvocation {
    /// A direct invocation of `function` created and due at `now`: no content type, key,
    /// trace, delivery, concurrency key, lease or workflow step (what tests and tools start
    /// from, setting the rest).
    pub fn plain(id: impl Into<String>, function: impl Into<String>, payload: Bytes, now: Millis) -> Self {
        Self {
            id: id.into(),
            function: function.into(),
            payload,
            content_type: None,
            created_at: now,
            due_at: now,
            idempotency_key: None,
            traceparent: None,
            delivery: None,
            concurrency_key: None,
            lease: None,
            workflow: None,
        }
    }

    /// The invocation as it is once stored: queued (running, when leased at admission), no
    /// attempts.
    pub fn into_stored(self) -> Invocation {
        Invocation {
            id: self.id,
            function: self.function,
            status: if self.lease.is_some() { Status::Running } else { Status::Queued },
            payload: self.payload,
            content_type: self.content_type,
            created_at: self.created_at,
            updated_at: self.created_at,
            due_at: Some(self.due_at),
            attempt_count: 0,
            budget_start: 0,
            redrives: 0,
            last_delay_ms: None,
            lease: self.lease,
            response: None,
            error: None,
            idempotency_key: self.idempotency_key,
            traceparent: self.traceparent,
            sync: false,
            delivery: self.delivery,
            concurrency_key: self.concurrency_key,
            workflow: self.workflow,
            attempts: Vec::new(),
        }
    }
}

/// The state an attempt's completion moves a running invocation to.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Done: keep the response.
    Succeed { response: StoredResponse },
    /// Try again at `due_at`, after a backoff of `delay_ms`.
    Retry { due_at: Millis, delay_ms: u64, error: String },
    /// Into the DLQ.
    Die { error: String, response: Option<StoredResponse> },
    /// Back to `queued`, due now, for any node to lease: an invocation its node leased but never
    /// attempted and gives back (an admission that got no slot in time). With no attempt.
    Requeue,
}

/// A dispatcher's report of one finished attempt (or of a budget already used up).
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: String,
    /// The lease owner: a completion from a node that lost its lease is refused.
    pub owner: String,
    /// The invocation's `attempt_count` when the lease was taken: the lease's fencing token. A
    /// lease taken back is charged an attempt, so a completion from it is refused even when the
    /// same node has leased the invocation again since.
    pub fence: u32,
    pub now: Millis,
    /// `None` when no call was made (the budget was used up by interrupted attempts).
    pub attempt: Option<Attempt>,
    pub next: Transition,
    /// Committed with a `Succeed` transition, or not at all (a failed precondition refuses the
    /// whole completion with [`Error::PreconditionFailed`](crate::Error::PreconditionFailed)).
    pub effects: Option<CommitEffects>,
    /// The workflow run this completion moves on (a step's end), committed with it or not at
    /// all: refused whole with [`Error::Stale`](crate::Error::Stale) when the run changed.
    pub run: Option<Box<crate::store::RunUpdate>>,
}

/// The effects of a successful attempt, ready to commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitEffects {
    pub kv: Vec<crate::kv::KvWrite>,
    pub events: Vec<crate::events::NewEvent>,
}
