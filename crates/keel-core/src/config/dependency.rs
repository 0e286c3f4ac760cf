//! The resolved model of one `[dependencies.NAME]` table: a service functions call through Keel's
//! egress (`/v1/egress/NAME/…`), with the protection Keel gives every call to it.

use std::fmt;
use std::time::Duration;

use crate::flow::{BreakerConfig, RateLimitConfig, RetryBudgetConfig};

#[derive(Debug, Clone)]
pub struct DependencyConfig {
    pub name: String,
    /// Calls go to this URL's origin, under its path.
    pub url: url::Url,
    /// A call's whole deadline, retries included.
    pub timeout: Duration,
    pub retry: DependencyRetry,
    pub retry_budget: RetryBudgetConfig,
    /// Off unless configured.
    pub breaker: Option<BreakerConfig>,
    pub bulkhead: BulkheadConfig,
    /// Off unless configured.
    pub rate_limit: Option<RateLimitConfig>,
    /// Headers Keel adds to every call, values resolved at load.
    pub headers: Vec<DependencyHeader>,
    /// A PEM file of CA certificates trusted for this dependency's https URL besides the
    /// system's roots (checked at load, absolute against the config file's directory).
    pub ca_file: Option<std::path::PathBuf>,
}

impl DependencyConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// `retry = { max_attempts = 3, initial = "50ms", max = "1s" }`: tries of one call (the first
/// included), spaced by a doubling backoff from `initial` up to `max`, fully jittered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencyRetry {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for DependencyRetry {
    fn default() -> Self {
        Self { max_attempts: 3, initial: Duration::from_millis(50), max: Duration::from_secs(1) }
    }
}

/// `bulkhead = { max_concurrent = 64, max_queued = 64, queue_timeout = "100ms" }`: calls in
/// flight at once, and callers that may wait (that long at most) for one to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadConfig {
    pub max_concurrent: u32,
    pub max_queued: u32,
    pub queue_timeout: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self { max_concurrent: 64, max_queued: 64, queue_timeout: Duration::from_millis(100) }
    }
}

/// A header Keel adds to the dependency's calls. The value may be a secret: it is never shown
/// (`Debug` hides it, the API shows names only).
#[derive(Clone, PartialEq, Eq)]
pub struct DependencyHeader {
    /// Lowercase.
    pub name: String,
    pub value: String,
    /// The variable the value was read from, for `env:VAR`.
    pub from_env: Option<String>,
}

impl fmt::Debug for DependencyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DependencyHeader")
            .field("name", &self.name)
            .field("value", &"<hidden>")
            .field("from_env", &self.from_env)
            .finish()
    }
}
