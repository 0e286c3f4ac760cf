//! The throughput scenarios: `direct` (the baseline: straight to the no-op function), `sync`
//! (through `/invoke`, waiting) and `async` (through `/invocations`: first submit to last
//! completion, completions counted at the no-op function).

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use super::load::{self, LoadResult, Target, PERCENTILES};
use super::noop::NoopFunction;
use super::report::{Case, Scenario};
use super::server::{cpu_seconds, BenchServer};
use super::{BenchError, Settings};
use crate::cli::client::KeelClient;

/// Longest wait for the next completion before the bench declares the server stuck.
const STALL: Duration = Duration::from_secs(60);

/// The baseline every ratio divides by: the no-op function called straight.
#[derive(Debug)]
pub(crate) struct Direct {
    pub(crate) c1: LoadResult,
    pub(crate) many: LoadResult,
    pub(crate) concurrency: usize,
    /// CPU microseconds per request at concurrency C: client and no-op function, one HTTP hop.
    pub(crate) hop_cpu: Option<f64>,
}

impl Direct {
    pub(crate) fn scenario(&self) -> Scenario {
        let mut many = latency_case(&format!("c={}", self.concurrency), &self.many, Some(1.0));
        if let Some(us) = self.hop_cpu {
            many = many.with("bench_cpu_us", us);
        }
        let cases = vec![latency_case("c=1", &self.c1, Some(1.0)), many];
        Scenario { name: "direct", cases, skipped: None }
    }
}

/// Throughput and latency percentiles of one run.
fn latency_case(case: &str, run: &LoadResult, ratio: Option<f64>) -> Case {
    let mut case = Case::new(case, ratio).with("per_s", run.per_second());
    for (name, p) in PERCENTILES {
        case = case.with(format!("{name}_ms"), run.percentile_ms(p));
    }
    case
}

/// The no-op function at `function_url` (the built-in one, or `--function-url`) called straight.
pub(crate) async fn direct(settings: &Settings, function_url: &str) -> Result<Direct, BenchError> {
    let target = Target::post(function_url, StatusCode::OK)?;
    let (n1, n) = (settings.requests_c1(), settings.requests);
    let c1 = load::closed_loop(&target, n1, 1, &settings.progress("direct c=1", n1)).await?;
    let c = settings.concurrency;
    let cpu = CpuMeter::start(None);
    let many = load::closed_loop(&target, n, c, &settings.progress(&format!("direct c={c}"), n)).await?;
    let hop_cpu = cpu.finish(Case::new("", None), n).get("bench_cpu_us");
    Ok(Direct { c1, many, concurrency: c, hop_cpu })
}

/// CPU time over a run, per request: the server's (what one request costs it) and the bench's
/// own (load generator and no-op function; for `direct`, the whole cost of one HTTP hop). Figures
/// that move far less than throughput on a shared machine.
pub(crate) struct CpuMeter<'a> {
    server: Option<&'a BenchServer>,
    server_at_start: Option<f64>,
    bench_at_start: Option<f64>,
}

impl<'a> CpuMeter<'a> {
    pub(crate) fn start(server: Option<&'a BenchServer>) -> Self {
        CpuMeter {
            server,
            server_at_start: server.and_then(BenchServer::cpu_seconds),
            bench_at_start: cpu_seconds("self"),
        }
    }

    /// Adds `server_cpu_us` and `bench_cpu_us` (microseconds per request) to `case`, as measured.
    pub(crate) fn finish(self, mut case: Case, requests: u64) -> Case {
        let per_request = |start: Option<f64>, end: Option<f64>| Some((end? - start?) * 1e6 / requests.max(1) as f64);
        if let Some(us) = per_request(self.server_at_start, self.server.and_then(BenchServer::cpu_seconds)) {
            case = case.with("server_cpu_us", us);
        }
        if let Some(us) = per_request(self.bench_at_start, cpu_seconds("self")) {
            case = case.with("bench_cpu_us", us);
        }
        case
    }
}

pub(crate) async fn sync(
    settings: &Settings,
    direct: &Direct,
    base: &str,
    server: Option<&BenchServer>,
) -> Result<Scenario, BenchError> {
    let target = settings.target(&format!("{base}/v1/functions/noop/invoke"), StatusCode::OK)?;
    let cases = through_keel(settings, direct, &target, "sync", server).await?;
    Ok(Scenario { name: "sync", cases, skipped: None })
}

/// `target` (a request through Keel answered `200`) at concurrency 1 and C, each case with its
/// throughput ratio to `direct` at that concurrency, its percentiles, the overhead over `direct`
/// at each percentile and the CPU time per request. `name` labels the progress bars.
pub(crate) async fn through_keel(
    settings: &Settings,
    direct: &Direct,
    target: &Target,
    name: &str,
    server: Option<&BenchServer>,
) -> Result<Vec<Case>, BenchError> {
    let mut cases = Vec::new();
    let c = settings.concurrency;
    for (concurrency, total, baseline) in
        [(1, settings.requests_c1(), &direct.c1), (c, settings.requests, &direct.many)]
    {
        let label = format!("c={concurrency}");
        let cpu = CpuMeter::start(server);
        let run = load::closed_loop(target, total, concurrency, &settings.progress(&format!("{name} {label}"), total))
            .await?;
        let mut case = cpu.finish(latency_case(&label, &run, Some(run.per_second() / baseline.per_second())), total);
        for (name, p) in PERCENTILES {
            case = case.with(format!("overhead_{name}_ms"), run.percentile_ms(p) - baseline.percentile_ms(p));
        }
        cases.push(case);
    }
    Ok(cases)
}

/// `requests` async invocations at the configured concurrency, timed from the first submit to
/// the last call of the no-op function; then checks that none was left behind. With no built-in
/// no-op to count calls at (`--function-url`), the end is when the API says none is left.
pub(crate) async fn asynchronous(
    settings: &Settings,
    direct: &Direct,
    noop: Option<&NoopFunction>,
    base: &str,
    server: Option<&BenchServer>,
) -> Result<Scenario, BenchError> {
    let cpu = CpuMeter::start(server);
    let case = async_run(settings, direct, noop, base, format!("c={}", settings.concurrency)).await?;
    let case = cpu.finish(case, settings.requests);
    confirm_settled(&settings.client(base)?, true).await?;
    Ok(Scenario { name: "async", cases: vec![case], skipped: None })
}

/// One timed async run against the server at `base`; `case` names it (`c=32`, a depth).
/// Completions are counted at `noop`, or without one confirmed through the API.
pub(crate) async fn async_run(
    settings: &Settings,
    direct: &Direct,
    noop: Option<&NoopFunction>,
    base: &str,
    case: String,
) -> Result<Case, BenchError> {
    let (n, c) = (settings.requests, settings.concurrency);
    let target = settings.target(&format!("{base}/v1/functions/noop/invocations"), StatusCode::ACCEPTED)?;
    let before = noop.map(NoopFunction::calls);
    let start = Instant::now();
    let submit = {
        let target = target.clone();
        tokio::spawn(async move { load::closed_loop(&target, n, c, &indicatif::ProgressBar::hidden()).await })
    };
    let done = match (noop, before) {
        (Some(noop), Some(before)) => {
            wait_for_calls(noop, before + n, &settings.progress(&format!("async {case}"), n), before).await?
        }
        _ => {
            // Every submission answered first: until then an empty queue says nothing.
            wait_drained(&settings.client(base)?, &submit).await?
        }
    };
    let elapsed = done - start;
    let submitted = submit.await.map_err(|e| BenchError::Server(e.to_string()))??;
    let per_s = n as f64 / elapsed.as_secs_f64();
    Ok(Case::new(case, Some(per_s / direct.many.per_second()))
        .with("per_s", per_s)
        .with("submit_per_s", submitted.per_second())
        .with("submit_p50_ms", submitted.percentile_ms(50.0))
        .with("submit_p99_ms", submitted.percentile_ms(99.0)))
}

/// Waits until the no-op function has answered `target` calls in all; returns when that was.
/// `progress` shows the calls since `from`.
pub(crate) async fn wait_for_calls(
    noop: &NoopFunction,
    target: u64,
    progress: &indicatif::ProgressBar,
    from: u64,
) -> Result<Instant, BenchError> {
    let mut last = (noop.calls(), Instant::now());
    loop {
        let calls = noop.calls();
        if calls >= target {
            progress.finish_and_clear();
            return Ok(Instant::now());
        }
        if calls != last.0 {
            progress.set_position(calls - from);
            last = (calls, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(BenchError::Server(format!(
                "no completion for {STALL:?} ({} of {} done)",
                calls - from,
                target - from
            )));
        }
        // The bench's own poll, not the server's: a millisecond bounds the timing error.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until `submit` has finished and then until no `noop` invocation is queued, running or
/// retrying, polled through the API every 5 ms; returns when that was.
async fn wait_drained<T>(keel: &KeelClient, submit: &tokio::task::JoinHandle<T>) -> Result<Instant, BenchError> {
    while !submit.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let end = Instant::now() + STALL;
    loop {
        let mut left = 0;
        for status in ["queued", "running", "retrying"] {
            let page = keel.get_json(&format!("/v1/invocations?function=noop&status={status}&limit=1")).await?;
            left += page.get("items").and_then(Value::as_array).map_or(0, Vec::len);
        }
        if left == 0 {
            return Ok(Instant::now());
        }
        if Instant::now() > end {
            return Err(BenchError::Server(format!("invocations still left after {STALL:?}")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Checks through the API that no `noop` invocation is left running, retrying, dead or (when
/// `queued_too`) queued — the last completions may take a moment to be committed.
pub(crate) async fn confirm_settled(keel: &KeelClient, queued_too: bool) -> Result<(), BenchError> {
    confirm_settled_of(keel, "noop", queued_too).await
}

/// [`confirm_settled`] for the invocations of `function`.
pub(crate) async fn confirm_settled_of(keel: &KeelClient, function: &str, queued_too: bool) -> Result<(), BenchError> {
    let mut statuses = vec!["running", "retrying", "dead"];
    if queued_too {
        statuses.push("queued");
    }
    let end = Instant::now() + STALL;
    for status in statuses {
        loop {
            let page = keel.get_json(&format!("/v1/invocations?function={function}&status={status}&limit=1")).await?;
            let left = page.get("items").and_then(Value::as_array).map_or(0, Vec::len);
            if left == 0 {
                break;
            }
            if status == "dead" || Instant::now() > end {
                return Err(BenchError::Server(format!("invocations left {status} after the run")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}
