//! The metrics this crate records, through the `metrics` facade (the server installs the
//! recorder; with none installed they cost a branch): group-commit latency and size per backend.

use std::future::Future;
use std::time::Instant;

/// Seconds from the start of a group commit to its durable end.
pub const STORE_COMMIT_DURATION_SECONDS: &str = "keel_store_commit_duration_seconds";
/// Jobs (admissions, completions, ...) committed together in one transaction.
pub const STORE_COMMIT_GROUP_SIZE: &str = "keel_store_commit_group_size";

/// Runs one async group commit of `jobs` jobs and records its latency and size.
pub(crate) async fn timed_commit_async<T>(backend: &'static str, jobs: usize, commit: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = commit.await;
    record_commit(backend, jobs, started);
    out
}

/// Records a group commit of `jobs` jobs that began at `started` and is durable now. (The SQLite
/// writer and sync threads are plain threads: std's `Instant` is their clock.)
pub(crate) fn record_commit(backend: &'static str, jobs: usize, started: Instant) {
    metrics::histogram!(STORE_COMMIT_DURATION_SECONDS, "backend" => backend).record(started.elapsed().as_secs_f64());
    metrics::histogram!(STORE_COMMIT_GROUP_SIZE, "backend" => backend).record(jobs as f64);
}
