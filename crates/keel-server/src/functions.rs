//! The live side of each configured function: its bulkhead (the `concurrency` permits that sync
//! calls and the dispatcher share) and the signal that wakes its dispatcher.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel_core::config::{Config, FunctionConfig};
use tokio::sync::{Notify, Semaphore};

/// One function's configuration and live state.
#[derive(Debug)]
pub(crate) struct Function {
    pub(crate) config: FunctionConfig,
    /// At most `concurrency` attempts in flight, sync and async together.
    pub(crate) permits: Arc<Semaphore>,
    /// Wakes the dispatcher: new work, a finished attempt, a redrive.
    pub(crate) wake: Notify,
    /// One permit per attempt whose function answered but whose outcome is not recorded yet, at
    /// most `concurrency` of them. An attempt takes one before it gives its concurrency permit
    /// back, so the next call need not wait for a commit, while a node never holds more than
    /// 2 × `concurrency` unrecorded attempts (what a crash of it can make run again); a drain
    /// waits on these too.
    pub(crate) unrecorded: Arc<Semaphore>,
}

/// Calls in flight from which a function counts as busy (PostgreSQL's `commit_siblings`).
const BUSY_FROM: usize = 4;

impl Function {
    pub(crate) fn in_flight(&self) -> usize {
        self.config.concurrency as usize - self.permits.available_permits()
    }

    /// Whether other calls are in flight: then a record nobody waits on may wait briefly to share
    /// its commit (and fsync) with theirs, saving the CPU the load needs. With a few calls in
    /// flight there is CPU to spare, and the record commits at once.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight() >= BUSY_FROM
    }
}

/// Every configured function by name.
#[derive(Debug, Default)]
pub(crate) struct Functions(BTreeMap<String, Arc<Function>>);

impl Functions {
    pub(crate) fn from_config(config: &Config) -> Self {
        Self(
            config
                .functions
                .iter()
                .map(|(name, f)| {
                    let function = Function {
                        config: f.clone(),
                        permits: Arc::new(Semaphore::new(f.concurrency as usize)),
                        wake: Notify::new(),
                        unrecorded: Arc::new(Semaphore::new(f.concurrency as usize)),
                    };
                    (name.clone(), Arc::new(function))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Function>> {
        self.0.get(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Function>> {
        self.0.values()
    }

    /// Wakes the dispatcher of `name`, if that function is configured.
    pub(crate) fn wake(&self, name: &str) {
        if let Some(f) = self.0.get(name) {
            f.wake.notify_one();
        }
    }
}
