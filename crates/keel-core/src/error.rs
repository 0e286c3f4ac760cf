//! The store-level error type shared by every backend.

/// Errors a store or the domain can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested record does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The record exists but is not in a state that allows the operation (or already exists).
    #[error("{0}")]
    InvalidState(String),
    /// The caller no longer holds the lease (or idempotency key) it acted under — it expired, was
    /// taken back, or was taken over: nothing was written, and trying again cannot help.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// A write's precondition (a KV version, `if_absent`) did not hold: nothing was written.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The record changed since the change was decided on it (a workflow run moved on): nothing
    /// was written. Read it again and decide again.
    #[error("stale: {0}")]
    Stale(String),
    /// The storage backend failed (I/O, corruption, a closed writer) before the write could
    /// commit: nothing was written. Worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The write was sent to be committed but the store never confirmed it (the connection was
    /// lost, or time ran out, during the commit): it may or may not have been applied.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The store refused the call for a reason no retry mends: a constraint it breaks, a value
    /// that cannot be read back (a bug, or a damaged database). Logged loudly; never retried.
    #[error("store error that retrying cannot mend: {0}")]
    Bug(String),
}

impl Error {
    /// True when the same call may succeed if tried again later (after an unknown outcome, a
    /// retry may also find the first try applied).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::OutcomeUnknown(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
