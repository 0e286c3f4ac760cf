//! What every handler, dispatcher and attempt shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel_core::clock::Clock;
use keel_core::config::Config;
use keel_core::store::Store;

use crate::functions::Functions;
use crate::runtime::Runtime;

/// Shared by the gateway and the dispatchers of one node.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) runtime: Runtime,
    /// Access control: API keys, function tokens.
    pub(crate) auth: Arc<crate::auth::Auth>,
    pub(crate) functions: Functions,
    /// Each dependency's live state and the outbound client (`egress/`).
    pub(crate) egress: crate::egress::Egress,
    /// Names this node's leases.
    pub(crate) node_id: String,
    /// Set once shutdown begins: admission answers 503 while in-flight work finishes.
    pub(crate) draining: AtomicBool,
    /// Each function's metric handles (`metric_definitions.rs`).
    pub(crate) metrics: crate::metric_definitions::Metrics,
    /// Sync invocation records committed after their reply (`dispatch/behind.rs`).
    pub(crate) behind: Arc<crate::dispatch::behind::WrittenBehind>,
    /// Completed idempotency key records, for answering replays without the store.
    pub(crate) replays: crate::replay_cache::ReplayCache,
    /// `[server.limits]`: request heads, JSON nesting, idempotency-key records per caller.
    pub(crate) limits: Arc<crate::limits::RequestLimits>,
    /// Where to SIGKILL this node on purpose (tests and chaos only).
    pub(crate) crash_at: Option<crate::faults::CrashPoint>,
    /// Keel's operational events on `keel.system` (`system_events.rs`).
    pub(crate) system_events: crate::system_events::SystemEvents,
    /// Every random draw of a decision (backoff jitter), seeded by `NodeOptions::seed`.
    pub(crate) rng: std::sync::Mutex<fastrand::Rng>,
    /// The chaos faults this node applies (`chaos.rs`).
    pub(crate) chaos: Arc<crate::chaos::Chaos>,
    /// The console overview's last read of the backlog (`console/backlog.rs`).
    pub(crate) backlog: crate::console::Backlog,
    /// `[region]`: where this node stands — active, standby or fenced (`regions/`).
    pub(crate) region: Arc<crate::regions::Region>,
}

impl Shared {
    /// The retry policy of an invocation: its subscription's for an event delivery, else its
    /// function's.
    pub(crate) fn retry_policy<'a>(
        &'a self,
        function: &'a crate::functions::Function,
        inv: &keel_core::invocation::Invocation,
    ) -> &'a keel_core::retry::RetryPolicy {
        inv.delivery
            .as_ref()
            .and_then(|d| self.config.subscriptions.iter().find(|s| s.name == d.subscription))
            .map_or(&function.config.retry, |s| &s.retry)
    }

    /// A uniform draw in [0, 1) for a decision (the jitter of a backoff).
    pub(crate) fn sample(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64()
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
