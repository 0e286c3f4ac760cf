//! `recovery`: a server working through a full queue is SIGKILLed and restarted on the same
//! store. Measured from the restart: when `/readyz` first answers, when the no-op function gets
//! its first call again, and when nothing is left queued, running or retrying.

use std::time::{Duration, Instant};

use super::noop::NoopFunction;
use super::report::{Case, Scenario};
use super::server::BenchServer;
use super::throughput::{confirm_settled, wait_for_calls};
use super::{BenchError, Settings};

/// Share of the queue done before the kill: enough to be mid-work with most still queued.
const DONE_BEFORE_KILL: u64 = 100;
/// Lets the killed server's last answers reach the no-op function before the count is read.
const SETTLE: Duration = Duration::from_millis(100);

pub(crate) async fn run(settings: &Settings, noop: &NoopFunction) -> Result<Scenario, BenchError> {
    let queued = settings.recovery_queued;
    let mut server = BenchServer::new(&noop.url(), None, settings.concurrency * 2, settings.fsync)?;
    server.prefill(queued, Duration::ZERO, &settings.progress(&format!("queueing {queued}"), queued)).await?;
    let before_start = noop.calls();
    server.start().await?;
    let kill_after = (queued / DONE_BEFORE_KILL).max(1);
    wait_for_calls(noop, before_start + kill_after, &indicatif::ProgressBar::hidden(), before_start).await?;
    server.kill().await?;
    tokio::time::sleep(SETTLE).await;
    let at_kill = noop.calls();
    let left = queued.saturating_sub(at_kill - before_start);

    let restart = Instant::now();
    let ready = server.start().await?;
    let first = wait_for_calls(noop, at_kill + 1, &indicatif::ProgressBar::hidden(), at_kill).await?;
    // Calls answered before the kill but not yet committed run again, so at least `left` more
    // calls come; after them, the API says when the queue is really empty.
    wait_for_calls(noop, at_kill + left, &settings.progress("draining after restart", left), at_kill).await?;
    confirm_settled(&settings.client(&server.base_url())?, true).await?;
    let drained = restart.elapsed();
    let reruns = (noop.calls() - at_kill).saturating_sub(left);
    server.kill().await?;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let case = Case::new("restart", None)
        .with("queued_at_kill", left as f64)
        .with("ready_ms", ms(ready))
        .with("first_completion_ms", ms(first - restart))
        .with("drained_ms", ms(drained))
        .with("drain_per_s", left as f64 / drained.as_secs_f64())
        .with("reruns", reruns as f64);
    Ok(Scenario { name: "recovery", cases: vec![case], skipped: None })
}
