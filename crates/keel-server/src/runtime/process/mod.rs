//! The process pool of one `command` function: starts instances on demand (cold starts), lends
//! each attempt an instance with a free slot (at most `instance_concurrency` in flight on it),
//! starts more while demand exceeds capacity (up to `max_instances`), and stops instances idle
//! for `idle_timeout` (down to `min_instances`, zero by default).
//!
//! - `instance`: one instance's life (spawn under a watchdog, readiness, supervision, stop).
//! - `keeper`: the background task that keeps `min_instances` up and stops idle instances.
//! - `output`: stdout/stderr lines → Keel log lines; `stats`: cold starts and restart backoff.
//! - `view`: the pool's live state as `GET /v1/functions/{name}` shows it.
//!
//! A function with `sandbox` has its instances started through the `keel __sandbox` trampoline
//! (see [`crate::sandbox`]); what this host enforces of it is said once when the pool starts.

mod instance;
mod keeper;
mod output;
mod stats;
mod view;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keel_core::clock::{Clock, Millis};
use keel_core::config::CommandConfig;
use keel_core::lifecycle::AttemptReport;
use keel_core::outcome::Outcome;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::url::{failed_attempt, AttemptCall, Unreached, UrlRuntime};
use stats::{ColdStarts, CrashStreak, STABLE_AFTER};
pub(crate) use view::PoolView;

/// One `command` function's instances.
#[derive(Debug)]
pub(crate) struct ProcessPool {
    function: Arc<str>,
    config: CommandConfig,
    /// `command[0]` resolved once; an error is reported by every start that needs it.
    program: Result<PathBuf, String>,
    /// How instances are sandboxed, when `sandbox` is set.
    sandbox: Option<Sandboxing>,
    keel_url: String,
    clock: Arc<dyn Clock>,
    /// A std Mutex, not a tokio one: it is never held across an await.
    state: Mutex<PoolState>,
    /// Wakes waiting attempts and the keeper: an instance became ready, freed a slot, or left.
    changed: Notify,
}

/// A sandboxed function's instances: through which `keel` they start, with what spec, and what
/// of it this host enforces.
#[derive(Debug)]
struct Sandboxing {
    /// The trampoline binary; an error is reported by every start, as for `program`.
    trampoline: Result<PathBuf, String>,
    /// The `--spec` argument.
    spec: String,
    support: crate::sandbox::Support,
}

impl Sandboxing {
    fn new(config: &keel_core::config::SandboxConfig) -> Self {
        let trampoline = crate::sandbox::trampoline_exe();
        let host = crate::sandbox::Host::detect(config, trampoline.as_deref().ok());
        let spec = serde_json::to_string(&crate::sandbox::Spec::from(config)).unwrap_or_default();
        Self { trampoline, spec, support: crate::sandbox::Support::of(config, &host) }
    }
}

#[derive(Debug, Default)]
struct PoolState {
    slots: Vec<Slot>,
    next_id: u64,
    /// Attempts waiting for a free slot: the demand that decides whether to start another.
    waiting: usize,
    streak: CrashStreak,
    last_failure_at: Option<Instant>,
    /// Failed starts so far, so that a waiter can tell a start failed while it waited.
    start_failures: u64,
    last_error: Option<String>,
    cold_starts: ColdStarts,
    stopping: bool,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    port: u16,
    pid: Option<u32>,
    state: InstanceState,
    in_flight: u32,
    started_at: Millis,
    ready_at: Option<Instant>,
    idle_since: Instant,
    /// Taken to ask the instance's task to stop it.
    stop: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InstanceState {
    Starting,
    Ready,
    Stopping,
}

/// An instance lent to one attempt; gives the slot back when dropped.
#[derive(Debug)]
struct Lease {
    pool: Arc<ProcessPool>,
    id: u64,
    port: u16,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        if let Some(slot) = state.slots.iter_mut().find(|s| s.id == self.id) {
            slot.in_flight -= 1;
            if slot.in_flight == 0 {
                slot.idle_since = Instant::now();
            }
        }
        drop(state);
        self.pool.changed.notify_waiters();
    }
}

impl ProcessPool {
    pub(crate) fn new(function: &str, config: CommandConfig, keel_url: String, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            function: function.into(),
            program: instance::resolve_program(&config.command[0]),
            sandbox: config.sandbox.as_deref().map(Sandboxing::new),
            config,
            keel_url,
            clock,
            state: Mutex::default(),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().expect("process pool lock")
    }

    /// Kills one ready instance with SIGKILL (a chaos crash): its attempts fail as a crashed
    /// instance's do, and the pool starts another on demand. The pid it killed, if any.
    pub(crate) fn kill_one(&self) -> Option<u32> {
        let pid = self.lock().slots.iter().filter(|s| s.state == InstanceState::Ready).find_map(|s| s.pid)?;
        let target = rustix::process::Pid::from_raw(pid as i32)?;
        let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
        tracing::warn!(function = %self.function, pid, "chaos: instance killed");
        Some(pid)
    }

    /// Starts the keeper (and with it `min_instances`).
    pub(crate) fn start(self: &Arc<Self>) {
        if let Some(sandbox) = &self.sandbox {
            let support = sandbox.support.describe();
            match &sandbox.trampoline {
                Ok(exe) => tracing::info!(function = %self.function, trampoline = %exe.display(), "sandbox {support}"),
                Err(e) => tracing::error!(function = %self.function, "sandbox: instances cannot start: {e}"),
            }
        }
        tokio::spawn(keeper::run(self.clone()));
    }

    /// One attempt on an instance: waits for a free slot (starting an instance if demand calls
    /// for one) within the attempt's timeout, then calls it like any HTTP function.
    ///
    /// An instance that refuses the connection is retired and the same attempt goes to another:
    /// the request never left, and such an instance has almost always just died (the kernel
    /// closes its port when it exits, a moment before Keel learns of the exit and removes it).
    /// Without this, the retry of an attempt killed with its instance could be lent that same
    /// dead instance and be spent on it.
    pub(crate) async fn call(
        self: &Arc<Self>,
        http: &UrlRuntime,
        call: &AttemptCall<'_>,
        clock: &dyn Clock,
    ) -> AttemptReport {
        let started_at = clock.now_ms();
        let deadline = Instant::now() + call.timeout;
        loop {
            let lease = match self.acquire(deadline).await {
                Ok(lease) => lease,
                Err((outcome, error)) => return failed_attempt(call, started_at, clock.now_ms(), outcome, error),
            };
            let url = format!("http://127.0.0.1:{}{}", lease.port, self.config.path);
            let url = match ::url::Url::parse(&url) {
                Ok(url) => url,
                Err(e) => {
                    return failed_attempt(call, started_at, clock.now_ms(), Outcome::Permanent, format!("{url}: {e}"))
                }
            };
            match http.try_call(&url, call, started_at, clock).await {
                Ok(report) => return report,
                Err(Unreached(report)) => {
                    let error = report.attempt.error.as_deref().unwrap_or_default();
                    tracing::warn!(function = %self.function, instance = lease.id, %error, "instance unreachable: retiring it");
                    self.retire(lease.id);
                    if Instant::now() >= deadline {
                        return report;
                    }
                }
            }
        }
    }

    /// Takes instance `id` out of service: no attempt is lent it any more, and its task is asked
    /// to stop it (a process that already exited is reported as the crash it was).
    fn retire(&self, id: u64) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.iter_mut().find(|s| s.id == id && s.state != InstanceState::Stopping) {
            slot.state = InstanceState::Stopping;
            if let Some(stop) = slot.stop.take() {
                let _ = stop.send(());
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Lease, (Outcome, String)> {
        let failures_seen = self.lock().start_failures;
        loop {
            // Created before the check, so a change between the check and the wait is not missed.
            let changed = self.changed.notified();
            let wake_at = {
                let mut state = self.lock();
                if state.stopping {
                    return Err((Outcome::Transient, format!("function {}: keel is shutting down", self.function)));
                }
                let per_instance = self.config.instance_concurrency;
                let free = state
                    .slots
                    .iter_mut()
                    .filter(|s| s.state == InstanceState::Ready && s.in_flight < per_instance)
                    .min_by_key(|s| (s.in_flight, s.id));
                if let Some(slot) = free {
                    slot.in_flight += 1;
                    return Ok(Lease { pool: self.clone(), id: slot.id, port: slot.port });
                }
                let coming = state.count(InstanceState::Starting) as u64 * u64::from(per_instance);
                let alive = state.slots.iter().filter(|s| s.state != InstanceState::Stopping).count();
                if state.start_failures > failures_seen && alive == 0 {
                    let error = state.last_error.clone().unwrap_or_default();
                    return Err((Outcome::Transient, error));
                }
                let mut wake_at = deadline;
                if state.waiting as u64 + 1 > coming && alive < self.config.max_instances as usize {
                    match self.restart_allowed_at(&state) {
                        Some(at) => wake_at = wake_at.min(at),
                        None => self.start_instance(&mut state),
                    }
                }
                state.waiting += 1;
                wake_at
            };
            let _ = tokio::time::timeout_at(wake_at, changed).await;
            let mut state = self.lock();
            state.waiting -= 1;
            if Instant::now() >= deadline {
                let busy = state.count(InstanceState::Ready);
                let starting = state.count(InstanceState::Starting);
                return Err((
                    Outcome::Timeout,
                    format!(
                        "function {}: no instance free before the attempt's timeout ({busy} busy, {starting} starting, max_instances {})",
                        self.function, self.config.max_instances
                    ),
                ));
            }
        }
    }

    /// When the crash streak still forbids a start, the instant it may happen.
    fn restart_allowed_at(&self, state: &PoolState) -> Option<Instant> {
        let at = state.last_failure_at? + state.streak.restart_delay();
        (at > Instant::now()).then_some(at)
    }

    fn start_instance(self: &Arc<Self>, state: &mut PoolState) {
        state.next_id += 1;
        let id = state.next_id;
        // The port is free now; the program binds it a moment later. Another process could take
        // it in between: the instance would then fail readiness or crash, and be replaced.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port());
        let (stop, stop_rx) = oneshot::channel();
        state.slots.push(Slot {
            id,
            port,
            pid: None,
            state: InstanceState::Starting,
            in_flight: 0,
            started_at: self.clock.now_ms(),
            ready_at: None,
            idle_since: Instant::now(),
            stop: Some(stop),
        });
        tracing::info!(function = %self.function, instance = id, port, "starting an instance");
        tokio::spawn(instance::run(self.clone(), id, port, stop_rx));
    }

    fn set_pid(&self, id: u64, pid: Option<u32>) {
        if let Some(slot) = self.lock().slots.iter_mut().find(|s| s.id == id) {
            slot.pid = pid;
        }
    }

    fn mark_ready(&self, id: u64, cold_start: Duration) {
        let mut state = self.lock();
        state.cold_starts.record(cold_start);
        if let Some(slot) = state.slots.iter_mut().find(|s| s.id == id && s.state == InstanceState::Starting) {
            slot.state = InstanceState::Ready;
            slot.ready_at = Some(Instant::now());
            slot.idle_since = Instant::now();
        }
        drop(state);
        let ms = cold_start.as_millis() as u64;
        tracing::info!(function = %self.function, instance = id, cold_start_ms = ms, "instance ready");
        self.changed.notify_waiters();
    }

    fn start_failed(&self, id: u64, error: String) {
        tracing::warn!(function = %self.function, instance = id, %error, "instance failed to start");
        let mut state = self.lock();
        state.slots.retain(|s| s.id != id);
        state.start_failures += 1;
        state.streak.failed(false);
        state.last_failure_at = Some(Instant::now());
        state.last_error = Some(error);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Instance `id` is gone: stopped on purpose (`crash` = `None`) or crashed.
    fn exited(&self, id: u64, crash: Option<String>) {
        let mut state = self.lock();
        let slot = state.slots.iter().position(|s| s.id == id).map(|i| state.slots.remove(i));
        if let Some(error) = crash {
            let stable = slot.and_then(|s| s.ready_at).is_some_and(|at| at.elapsed() >= STABLE_AFTER);
            state.streak.failed(stable);
            state.last_failure_at = Some(Instant::now());
            state.last_error = Some(error);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Stops every instance (SIGTERM, then SIGKILL after a grace period) and waits until they
    /// have exited. No instance starts afterwards.
    pub(crate) async fn shutdown(&self) {
        let deadline = Instant::now() + instance::STOP_GRACE + Duration::from_secs(1);
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.lock();
                state.stopping = true;
                for slot in &mut state.slots {
                    slot.state = InstanceState::Stopping;
                    if let Some(stop) = slot.stop.take() {
                        let _ = stop.send(());
                    }
                }
                if state.slots.is_empty() {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::warn!(function = %self.function, "instances still exiting after the stop grace period");
                return;
            }
        }
    }
}

impl PoolState {
    fn count(&self, state: InstanceState) -> usize {
        self.slots.iter().filter(|s| s.state == state).count()
    }
}
