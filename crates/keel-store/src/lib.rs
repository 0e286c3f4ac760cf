//! Keel's storage backends, each an implementation of [`keel_core::store::Store`].
//!
//! # Layout
//!
//! - [`sqlite`]: the embedded default. WAL, one writer thread that group-commits whatever
//!   arrives together (one fsync per group), reader connections for queries.
//!   - `sqlite/writer.rs`: the group-commit writer; `sqlite/schema.rs`: migrations;
//!     `sqlite/rows.rs`: row ↔ domain mapping; `sqlite/ops.rs`: the statements.
//! - [`postgres`]: for clusters of nodes on one database. A connection pool, group-committed
//!   enqueues and completions, `FOR UPDATE SKIP LOCKED` leases, LISTEN/NOTIFY wake-ups, node
//!   heartbeats; `postgres/mod.rs` lists its files.
//! - `header_list.rs`: how both stores keep header lists (JSON pairs).
//! - `scope_list.rs`: how both stores keep an API key's scopes (a JSON array of strings).
//! - `fault_json.rs`: how both stores keep a chaos fault (target and kind as JSON).
//! - `run_json.rs`: how both stores keep a workflow run (columns plus JSON text).
//! - `key_budget.rs`: what a lease with a `concurrency_key` limit may still take (both stores).
//! - [`metric_definitions`]: group-commit latency and size, through the `metrics` facade.
//! - `pg_testkit` (feature `testkit`): a throwaway PostgreSQL cluster for tests.
//!
//! Both run the same conformance suite (`keel_core::store::testkit`).
#![forbid(unsafe_code)]

mod fault_json;
mod first_attempt;
mod header_list;
mod key_budget;
#[cfg(test)]
mod lease_cost;
pub mod metric_definitions;
#[cfg(any(test, feature = "testkit"))]
pub mod pg_testkit;
pub mod postgres;
mod run_json;
mod scope_list;
pub mod sqlite;

use std::sync::Arc;

use keel_core::store::Store;

/// Errors opening a store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported storage url {0:?}: expected sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    Unsupported(String),
    #[error("cannot open {path}: {reason}")]
    Sqlite { path: String, reason: String },
    #[error("cannot use PostgreSQL: {reason}")]
    Postgres { reason: String },
    #[error("{path} is in use by another keel process (its lock file {lock} is held)")]
    Locked { path: String, lock: String },
}

/// Options common to every backend.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// Sync every group commit to disk (off only for benchmarks that say so).
    pub fsync: bool,
}

/// Opens the store a storage url names.
pub fn open(options: &StoreOptions) -> Result<Arc<dyn Store>, OpenError> {
    if let Some(path) = options.url.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::SqliteStore::open(path, options.fsync)?));
    }
    if options.url == "sqlite::memory:" {
        return Ok(Arc::new(sqlite::SqliteStore::open(":memory:", options.fsync)?));
    }
    if options.url.starts_with("postgres://") || options.url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PgStore::open(&options.url)?));
    }
    Err(OpenError::Unsupported(options.url.clone()))
}
