//! Chaos experiments (`keel chaos run experiment.toml`, and `keel-example demo`): load on a
//! running Keel, faults injected through `/v1/chaos/faults` at set times, a steady-state
//! hypothesis checked before the faults (the method is skipped when it does not hold), during
//! them when asked, and after recovery; rollbacks always run. The result is a [`Report`]:
//! the verdict, each probe's figure in each window, and the series the charts draw.
//!
//! Everything the runner knows it learns from Keel's API as a client would (answers, ids,
//! `/metrics`, `/v1/invocations`, `/v1/dlq`, `/v1/kv`): an experiment tests the deployment,
//! not the code's idea of itself.

mod charts;
mod probe;
mod report;
pub mod spec;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::Method;
use serde_json::Value;

pub use self::probe::{Outcome, Window};
pub use self::report::{ProbeResult, Report, Verdict};
pub use self::spec::{load, parse, Action, Experiment, Load, LoadTarget, Probe, ProbeKind, SpecError};
use crate::client::{encode, idempotency_header, KeelClient};

/// What a runner that started Keel itself can do to it.
pub trait Controller: Send + Sync {
    /// SIGKILLs Keel and starts it again; the client for the new process (its key may differ).
    fn restart(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<KeelClient>> + Send + '_>>;
}

/// How to run an experiment.
#[derive(Clone, Default)]
pub struct Options {
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Scale every time in the file (duration, warmup, step times, fault durations) by this
    /// factor; 1.0 when 0. CI runs the checked-in experiments at a fraction of their length.
    pub time_scale: f64,
    /// For `action = "restart-keel"`.
    pub controller: Option<Arc<dyn Controller>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("progress", &self.progress)
            .field("time_scale", &self.time_scale)
            .field("controller", &self.controller.is_some())
            .finish()
    }
}

/// One answer to a load request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index into setup ++ load.
    pub load: usize,
    /// When it was sent, seconds after the load started (negative for setup).
    pub at: f64,
    pub latency_ms: f64,
    /// None: no answer (connection refused or reset).
    pub status: Option<u16>,
    /// The invocation (or event, for a topic) the answer named.
    pub id: Option<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The DLQ's size at a moment of the run (seconds after the load started), in all and by function.
#[derive(Debug, Clone)]
pub struct DlqSample {
    pub at: f64,
    pub total: u64,
    pub by_function: Vec<(String, u64)>,
}

/// A window in which faults were on (or Keel was restarting), seconds after the load started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultWindow {
    pub label: String,
    pub start: f64,
    pub end: f64,
}

/// The runner's state shared with its load and sampler tasks.
struct Run {
    client: RwLock<KeelClient>,
    samples: Mutex<Vec<Sample>>,
    /// (seconds after start, DLQ size) from `/metrics`, once a second.
    dlq: Mutex<Vec<DlqSample>>,
    started: Instant,
    run_id: String,
}

impl Run {
    fn client(&self) -> KeelClient {
        self.client.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Checks a `--time-scale` given by a user: above 0 and at most 10.
pub fn check_time_scale(scale: f64) -> anyhow::Result<()> {
    if !(scale > 0.0 && scale <= 10.0) {
        anyhow::bail!("--time-scale must be above 0 and at most 10");
    }
    Ok(())
}

/// Runs `experiment` against the Keel `client` talks to.
pub async fn run(experiment: &Experiment, client: KeelClient, options: Options) -> anyhow::Result<Report> {
    let scale = if options.time_scale > 0.0 { options.time_scale } else { 1.0 };
    let scaled = |d: Duration| d.mul_f64(scale);
    let duration = scaled(experiment.duration);
    let warmup = scaled(experiment.warmup);
    let run = Arc::new(Run {
        client: RwLock::new(client),
        samples: Mutex::default(),
        dlq: Mutex::default(),
        started: Instant::now(),
        run_id: format!("{:08x}", fastrand::u32(..)),
    });
    let loads: Vec<Load> = experiment.setup.iter().chain(&experiment.load).cloned().collect();
    let progress = Progress::new(options.progress, duration);
    let floor = keel_core::id::floor(now_ms() - 1_000);

    // Setup: every request, at its rate, before anything else; all must succeed.
    for (index, load) in experiment.setup.iter().enumerate() {
        progress.message(format!("setup: {} × {}", load.count, load.target));
        let mut tasks = tokio::task::JoinSet::new();
        let gap = Duration::from_secs_f64(1.0 / load.rate);
        for n in 0..load.count {
            let (run, load) = (run.clone(), load.clone());
            tasks.spawn(async move { send(&run, index, &load, n).await });
            tokio::time::sleep(gap).await;
        }
        while tasks.join_next().await.is_some() {}
    }
    let setup_failed: Vec<String> = {
        let samples = run.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .filter(|s| !s.ok())
            .map(|s| format!("{}: {}", loads[s.load].name, status_text(s.status)))
            .collect()
    };
    let mut notes = Vec::new();
    if !setup_failed.is_empty() {
        notes.push(format!("setup failed: {}", setup_failed.join(", ")));
        let report = Report::aborted(experiment, &run.run_id, notes, "the setup requests did not all succeed");
        return Ok(report);
    }
    let baselines = probe::baselines(&experiment.hypothesis, &run.client()).await?;

    // The load, the sampler and the method.
    let load_start = Instant::now();
    let offset = run.elapsed();
    // Stops the load tasks (the sampler is aborted).
    let stop = tokio::sync::watch::channel(false);
    let mut load_tasks = tokio::task::JoinSet::new();
    for (i, load) in experiment.load.iter().enumerate() {
        let index = experiment.setup.len() + i;
        let (run, load, stop) = (run.clone(), load.clone(), stop.1.clone());
        load_tasks.spawn(drive(run, index, load, duration, load_start, stop));
    }
    let sampler = tokio::spawn(sample_dlq(run.clone(), offset));

    tokio::time::sleep(warmup).await;
    let samples_now = run.samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let dlq_now = run.dlq.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let before = Window { name: "before", start: 0.0, end: warmup.as_secs_f64() };
    let held_before =
        probe::check_window(&experiment.hypothesis, &loads, &samples_now, &dlq_now, offset, &before, false)
            .iter()
            .all(|r| r.held);
    let mut windows: Vec<FaultWindow> = Vec::new();
    let mut faults = Vec::new();
    let mut method_error = None;
    if held_before {
        progress.message("the steady state holds; starting the method".into());
        for step in &experiment.method {
            let at = scaled(step.at);
            let elapsed = load_start.elapsed();
            if at > elapsed {
                progress.sleep(at - elapsed, load_start).await;
            }
            let start = load_start.elapsed().as_secs_f64();
            match &step.action {
                Action::Fault { request, duration: fault_for, label } => {
                    let fault_for = scaled(*fault_for);
                    let mut request = request.clone();
                    request["duration"] = Value::String(format!("{}ms", fault_for.as_millis().max(1)));
                    match inject(&run.client(), &request).await {
                        Ok(id) => {
                            progress.message(format!("fault on: {label}"));
                            faults.push(id);
                            windows.push(FaultWindow {
                                label: label.clone(),
                                start,
                                end: start + fault_for.as_secs_f64(),
                            });
                        }
                        Err(e) => {
                            method_error = Some(format!("injecting {label}: {e}"));
                            break;
                        }
                    }
                }
                Action::RestartKeel => {
                    let Some(controller) = options.controller.as_ref() else {
                        method_error = Some("restart-keel needs a runner that started Keel (keel-example demo)".into());
                        break;
                    };
                    progress.message("SIGKILL keel, starting it again".into());
                    match controller.restart().await {
                        Ok(client) => *run.client.write().unwrap_or_else(|e| e.into_inner()) = client,
                        Err(e) => {
                            method_error = Some(format!("restarting keel: {e:#}"));
                            break;
                        }
                    }
                    let end = load_start.elapsed().as_secs_f64();
                    windows.push(FaultWindow { label: "keel SIGKILLed and restarted".into(), start, end });
                }
            }
        }
    } else {
        progress.message("the steady state does not hold before any fault: the method is skipped".into());
        let _ = stop.0.send(true);
    }
    let left = duration.saturating_sub(load_start.elapsed());
    if !left.is_zero() && held_before && method_error.is_none() {
        progress.sleep(left, load_start).await;
    }
    let _ = stop.0.send(true);
    while load_tasks.join_next().await.is_some() {}
    let load_ended = load_start.elapsed().as_secs_f64();

    // Rollbacks, always: the run's faults first, then what the file asks.
    let client = run.client();
    for id in &faults {
        let _ = client.send(Method::DELETE, &format!("/v1/chaos/faults/{}", encode(id)), &[], Bytes::new()).await;
    }
    for rollback in &experiment.rollbacks {
        match rollback {
            spec::Rollback::ClearFaults => {}
            spec::Rollback::Resume(function) => {
                let path = format!("/v1/functions/{}/resume", encode(function));
                if let Err(e) = client.post_json(&path, None, None).await {
                    notes.push(format!("rollback: resuming {function}: {e}"));
                }
            }
        }
    }

    // Recovery: wait for the run's work to finish; redrive for `dlq_drained`; wait again.
    progress.message("waiting for the run's invocations to finish".into());
    let settle = experiment.settle;
    let functions = probe::watched_functions(experiment);
    let settled = probe::settle(&client, &functions, &floor, settle).await;
    if !settled {
        notes.push(format!("not every invocation of {} had finished after {settle:?}", functions.join(", ")));
    }
    let redriven = probe::redrive(&client, &experiment.hypothesis).await;
    if redriven > 0 {
        notes.push(format!("{redriven} dead invocations redriven"));
        probe::settle(&client, &functions, &floor, settle).await;
    }
    let _ = stop.0.send(true);
    sampler.abort();
    progress.finish();

    let samples = run.samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let dlq = run.dlq.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let fault_start = windows.iter().map(|w| w.start).fold(f64::INFINITY, f64::min);
    let fault_end = windows.iter().map(|w| w.end).fold(0.0, f64::max);
    let mut checks = Vec::new();
    checks.extend(probe::check_window(&experiment.hypothesis, &loads, &samples, &dlq, offset, &before, false));
    if held_before && !windows.is_empty() {
        let during = Window { name: "during", start: fault_start, end: fault_end };
        checks.extend(probe::check_window(&experiment.hypothesis, &loads, &samples, &dlq, offset, &during, true));
        let after_start = fault_end + scaled(experiment.recovery).as_secs_f64();
        if after_start < load_ended {
            let after = Window { name: "after", start: after_start, end: load_ended };
            checks.extend(probe::check_window(&experiment.hypothesis, &loads, &samples, &dlq, offset, &after, false));
        } else {
            notes.push(
                "the faults (and the recovery) lasted until the load ended: no window after them to check".into(),
            );
        }
    } else if held_before {
        let after = Window { name: "after", start: warmup.as_secs_f64(), end: load_ended };
        checks.extend(probe::check_window(&experiment.hypothesis, &loads, &samples, &dlq, offset, &after, false));
    }
    if held_before && method_error.is_none() {
        let end = probe::check_end(&experiment.hypothesis, &loads, &samples, &baselines, &client, &floor).await;
        checks.extend(end);
    }
    if let Some(error) = &method_error {
        notes.push(error.clone());
    }
    Ok(Report::new(
        experiment,
        report::Parts {
            run_id: run.run_id.clone(),
            loads,
            samples,
            dlq,
            offset,
            windows,
            checks,
            notes,
            held_before,
            broken: method_error.is_some(),
            duration: load_ended,
        },
    ))
}

/// A load's requests at its rate, each sent on time whatever the answers take (an open loop:
/// a slow Keel does not slow the load down, as real users do not wait for each other).
async fn drive(
    run: Arc<Run>,
    index: usize,
    load: Load,
    duration: Duration,
    start: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let gap = Duration::from_secs_f64(1.0 / load.rate);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(start), gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests = tokio::task::JoinSet::new();
    let mut n = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if start.elapsed() >= duration || *stop.borrow() {
            break;
        }
        let (run, load) = (run.clone(), load.clone());
        requests.spawn(async move { send(&run, index, &load, n).await });
        n += 1;
    }
    while requests.join_next().await.is_some() {}
}

/// Sends request `n` of a load and records its answer.
async fn send(run: &Run, index: usize, load: &Load, n: u64) {
    let at = run.elapsed();
    let body = load.payload.render(n, &run.run_id);
    let mut headers: Vec<(HeaderName, String)> = vec![(CONTENT_TYPE, "application/json".to_owned())];
    if let Some(key) = &load.idempotency_key {
        headers.push(idempotency_header(&key.render(n, &run.run_id)));
    }
    let path = match &load.target {
        LoadTarget::Function(name) if load.sync => format!("/v1/functions/{}/invoke", encode(name)),
        LoadTarget::Function(name) => format!("/v1/functions/{}/invocations", encode(name)),
        LoadTarget::Topic(topic) => format!("/v1/topics/{}/events", encode(topic)),
    };
    let sent = Instant::now();
    let body = Bytes::from(body);
    let mut answer = run.client().send(Method::POST, &path, &headers, body.clone()).await;
    // Keel down (refused, reset): again with the same key, for up to a minute.
    while answer.is_err() && load.retry_unanswered && sent.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = run.client().send(Method::POST, &path, &headers, body.clone()).await;
    }
    let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let (status, id) = match answer {
        Ok(response) => {
            let id = match &load.target {
                LoadTarget::Function(_) if load.sync => response.header("keel-invocation-id").map(str::to_owned),
                LoadTarget::Function(_) => serde_json::from_slice::<Value>(&response.body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned)),
                LoadTarget::Topic(_) => serde_json::from_slice::<Value>(&response.body)
                    .ok()
                    .and_then(|v| v["ids"][0].as_str().map(str::to_owned)),
            };
            (Some(response.status.as_u16()), id)
        }
        Err(_) => (None, None),
    };
    let sample = Sample { load: index, at, latency_ms, status, id };
    run.samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
}

/// The DLQ's size once a second, from `/metrics` (`keel_dlq_invocations`).
async fn sample_dlq(run: Arc<Run>, offset: f64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let at = run.elapsed() - offset;
        if let Ok(response) = run.client().send(Method::GET, "/metrics", &[], Bytes::new()).await {
            if response.status.is_success() {
                let text = String::from_utf8_lossy(&response.body);
                let by_function = probe::dlq_from_metrics(&text);
                let total = by_function.iter().map(|(_, n)| n).sum();
                run.dlq.lock().unwrap_or_else(|e| e.into_inner()).push(DlqSample { at, total, by_function });
            }
        }
    }
}

async fn inject(client: &KeelClient, request: &Value) -> anyhow::Result<String> {
    let answer = client.post_json("/v1/chaos/faults", Some(request), None).await?;
    answer["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no fault id in {answer}"))
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |s| s.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The progress bar: the load's time, with what is happening.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(show: bool, duration: Duration) -> Self {
        if !show {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(duration.as_secs().max(1)),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos:>3}/{len}s  {msg}") {
            bar.set_style(style);
        }
        Progress(Some(bar))
    }

    fn message(&self, message: String) {
        match &self.0 {
            Some(bar) => bar.set_message(message),
            None => tracing::info!(target: "keel::chaos", "{message}"),
        }
    }

    /// Sleeps, moving the bar with the load's time.
    async fn sleep(&self, duration: Duration, start: Instant) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(250))).await;
            if let Some(bar) = &self.0 {
                bar.set_position(start.elapsed().as_secs());
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
