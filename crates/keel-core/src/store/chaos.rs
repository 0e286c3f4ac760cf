//! The chaos part of a store: the faults injected, kept so that every node of a cluster applies
//! them. A fault expires by itself; removing one ends it early.

use async_trait::async_trait;

use crate::chaos::Fault;
use crate::clock::Millis;
use crate::Result;

#[async_trait]
pub trait ChaosStore: Send + Sync {
    /// Stores a fault.
    async fn add_fault(&self, fault: Fault) -> Result<()>;

    /// The faults not expired at `now`, oldest first (expired ones are forgotten).
    async fn faults(&self, now: Millis) -> Result<Vec<Fault>>;

    /// Removes a fault; false when there was none with that id.
    async fn remove_fault(&self, id: &str) -> Result<bool>;
}
