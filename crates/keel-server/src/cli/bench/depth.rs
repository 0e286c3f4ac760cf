//! `depth`: async throughput with a deep queue already waiting — the cost of an invocation must
//! not grow with the queue — and `memory`: the server's RSS idle and with the deepest queue.
//!
//! The waiting invocations are due in a day, so they sit in the store (and in every index the
//! dispatcher reads) without being run; the measured invocations are due at once. Each depth
//! adds to the previous one's store, so one pre-fill of a million serves every level.

use std::time::Duration;

use super::noop::NoopFunction;
use super::report::{Case, Scenario};
use super::server::BenchServer;
use super::throughput::{self, Direct};
use super::{BenchError, Settings};

/// How far in the future the waiting invocations are due: well past the end of any bench.
const NOT_DUE_FOR: Duration = Duration::from_secs(24 * 3600);

/// Every depth's measured case, in ascending depth.
#[derive(Debug)]
pub(crate) struct DepthRun {
    levels: Vec<(u64, Case)>,
}

pub(crate) async fn run(settings: &Settings, direct: &Direct, noop: &NoopFunction) -> Result<DepthRun, BenchError> {
    let mut server = BenchServer::new(&noop.url(), None, settings.concurrency * 2, settings.fsync)?;
    let mut filled = 0;
    let mut levels = Vec::new();
    for &depth in &settings.depths {
        let more = depth.saturating_sub(filled);
        server.prefill(more, NOT_DUE_FOR, &settings.progress(&format!("queueing {depth}"), more)).await?;
        filled = filled.max(depth);
        let ready = server.start().await?;
        let rss_at_start = server.rss_mb().unwrap_or(0.0);
        let base = server.base_url();
        let case = throughput::async_run(settings, direct, Some(noop), &base, format!("{depth} queued")).await?;
        throughput::confirm_settled(&settings.client(&base)?, false).await?;
        let case = case
            .with("start_ms", ready.as_secs_f64() * 1000.0)
            .with("rss_at_start_mb", rss_at_start)
            .with("rss_mb", server.rss_mb().unwrap_or(0.0));
        levels.push((depth, case));
        server.kill().await?;
    }
    Ok(DepthRun { levels })
}

impl DepthRun {
    /// The report: each depth's throughput, also as a ratio to the shallowest depth's.
    pub(crate) fn scenario(&self) -> Scenario {
        let smallest = self.levels.first().and_then(|(_, c)| c.get("per_s")).unwrap_or(f64::NAN);
        let cases = self
            .levels
            .iter()
            .map(|(_, case)| {
                let mut copy = Case::new(case.case.clone(), case.ratio_to_direct);
                for name in ["per_s", "submit_per_s", "submit_p50_ms", "submit_p99_ms", "start_ms", "rss_mb"] {
                    if let Some(value) = case.get(name) {
                        copy = copy.with(name, value);
                    }
                }
                let per_s = case.get("per_s").unwrap_or(0.0);
                copy.with("vs_smallest", per_s / smallest)
            })
            .collect();
        Scenario { name: "depth", cases, skipped: None }
    }

    fn deepest(&self) -> Option<&(u64, Case)> {
        self.levels.last()
    }
}

/// `memory`: RSS of a fresh idle server, and of the server with the deepest queue (at start, and
/// after an async run on top of it).
pub(crate) fn memory(idle_rss_mb: f64, depth: &DepthRun) -> Scenario {
    let mut cases = vec![Case::new("idle", None).with("rss_mb", idle_rss_mb)];
    if let Some((queued, case)) = depth.deepest() {
        let at_start = case.get("rss_at_start_mb").unwrap_or(0.0);
        let after_run = case.get("rss_mb").unwrap_or(0.0);
        cases.push(
            Case::new("queued", None)
                .with("queued", *queued as f64)
                .with("rss_at_start_mb", at_start)
                .with("rss_mb", at_start.max(after_run)),
        );
    }
    Scenario { name: "memory", cases, skipped: None }
}
