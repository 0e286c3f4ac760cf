//! Runtimes: how an attempt reaches a function. `url` functions are called over a pooled
//! keep-alive HTTP client ([`url`]); managed `command` functions first borrow an instance from
//! their [`process`] pool, then are called the same way. Every attempt of a function that declares
//! dependencies is also recorded by invocation id in [`attempts`], for egress to know its callers.

pub(crate) mod attempts;
pub(crate) mod client;
pub(crate) mod h1;
pub(crate) mod process;
pub(crate) mod url;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::{Clock, Millis};
use keel_core::config::{Config, FunctionTarget};
use keel_core::lifecycle::AttemptReport;

use self::client::ClientError;
pub(crate) use self::process::ProcessPool;
pub(crate) use self::url::{AttemptCall, UrlRuntime};

/// Every function's way in: the shared HTTP client, and a process pool per `command` function.
#[derive(Debug)]
pub(crate) struct Runtime {
    http: UrlRuntime,
    /// The clients of `url` functions with a `ca_file`, by function name; functions naming the
    /// same file share one. `ca_file` is per function rather than one `[server]` list so that a
    /// private CA is trusted only for the functions that need it (a CA trusted for everything
    /// could vouch for any host); the cost, one more connection pool per file, is paid only by
    /// those who configure one, and every other call keeps the one shared pool.
    private_ca: BTreeMap<String, UrlRuntime>,
    pools: BTreeMap<String, Arc<ProcessPool>>,
    /// Each function's attempts calling it right now, and whether it may call out.
    running: BTreeMap<String, Here>,
    /// The attempts running here by invocation id, sync and async alike, of the functions that
    /// declare dependencies: only an attempt of one of those can make an egress call, so only
    /// theirs pay for being known (two copies of names and a lock shared by every worker).
    attempts: attempts::Attempts,
    /// The chaos faults on functions, when chaos is enabled.
    chaos: Option<Arc<crate::chaos::Chaos>>,
}

/// A function's part of [`Runtime::running`].
#[derive(Debug)]
struct Here {
    /// Attempts calling it right now, for `keel_attempts_in_flight`. Counted here, where every
    /// attempt (sync or async) passes, because a concurrency permit is also held by a
    /// dispatcher while it merely looks for due work.
    count: AtomicUsize,
    /// It declares dependencies: its attempts are recorded in [`Runtime::attempts`].
    calls_out: bool,
}

/// One attempt counted in [`Runtime::running`] until dropped (also when the call is cancelled).
struct Running<'a>(&'a AtomicUsize, usize);

impl<'a> Running<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        Self::enter_many(count, 1)
    }

    /// The attempts of a batch call, one per item.
    fn enter_many(count: &'a AtomicUsize, n: usize) -> Self {
        count.fetch_add(n, Ordering::Relaxed);
        Running(count, n)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

impl Runtime {
    /// `gateway` is this node's address, given to instances as `KEEL_URL`; `auth` signs each
    /// attempt's function token.
    pub(crate) fn new(
        config: &Config,
        gateway: SocketAddr,
        clock: Arc<dyn Clock>,
        auth: Arc<crate::auth::Auth>,
    ) -> Result<Self, ClientSetupError> {
        let keel_url = keel_url(gateway);
        let pools = config
            .functions
            .values()
            .filter_map(|f| {
                let command = f.command()?.clone();
                Some((f.name.clone(), ProcessPool::new(&f.name, command, keel_url.clone(), clock.clone())))
            })
            .collect();
        let running = config
            .functions
            .values()
            .map(|f| (f.name.clone(), Here { count: AtomicUsize::new(0), calls_out: !f.dependencies.is_empty() }))
            .collect();
        let max_result_bytes = (config.server.max_result_bytes, config.server.limits.max_json_depth);
        let http = UrlRuntime::new(max_result_bytes, &[], auth.clone()).map_err(|e| ClientSetupError::new(None, e))?;
        let mut by_file: BTreeMap<&Path, UrlRuntime> = BTreeMap::new();
        let mut private_ca = BTreeMap::new();
        for function in config.functions.values() {
            let Some(ca_file) = function.ca_file.as_deref() else { continue };
            let runtime = match by_file.get(ca_file) {
                Some(runtime) => runtime.clone(),
                None => {
                    let runtime = UrlRuntime::new(max_result_bytes, &[ca_file.to_path_buf()], auth.clone())
                        .map_err(|e| ClientSetupError::new(Some(&function.name), e))?;
                    by_file.insert(ca_file, runtime.clone());
                    runtime
                }
            };
            private_ca.insert(function.name.clone(), runtime);
        }
        Ok(Self { http, private_ca, pools, running, attempts: Default::default(), chaos: None })
    }

    /// Has the simulation's functions answer every call in place of the network.
    #[cfg(test)]
    pub(crate) fn with_wire(mut self, wire: Option<Arc<dyn crate::sim::Wire>>) -> Self {
        if let Some(wire) = wire {
            self.http.wire = Some(wire.clone());
            self.private_ca.values_mut().for_each(|r| r.wire = Some(wire.clone()));
        }
        self
    }

    /// Has the chaos faults on functions hit this runtime's attempts.
    pub(crate) fn with_chaos(mut self, chaos: Arc<crate::chaos::Chaos>) -> Self {
        self.chaos = chaos.enabled().then_some(chaos);
        self
    }

    /// Starts each pool's keeper, which brings up `min_instances`.
    pub(crate) fn start(&self) {
        self.pools.values().for_each(ProcessPool::start);
    }

    /// Makes one attempt and reports what happened. Never fails: every failure is an outcome.
    pub(crate) async fn call(&self, call: AttemptCall<'_>, clock: &dyn Clock) -> AttemptReport {
        let here = self.running.get(call.function);
        let _running = here.map(|here| Running::enter(&here.count));
        let _attempt =
            here.is_some_and(|here| here.calls_out).then(|| self.attempts.enter(call.invocation_id, call.function));
        self.reach(call, clock).await
    }

    /// Makes one batch call of `items` (`call` carries their batch, [`AttemptCall::batch_of`]):
    /// while it runs, each item is an attempt in flight, and a caller egress knows by its id.
    /// Reports the call as a whole; [`keel_core::batch::item_reports`] reads each item's out of it.
    pub(crate) async fn call_batch(
        &self,
        call: AttemptCall<'_>,
        items: &[&keel_core::invocation::Invocation],
        clock: &dyn Clock,
    ) -> AttemptReport {
        let here = self.running.get(call.function);
        let _running = here.map(|here| Running::enter_many(&here.count, items.len()));
        let _attempts: Vec<_> = match here.is_some_and(|here| here.calls_out) {
            true => items.iter().map(|inv| self.attempts.enter(&inv.id, call.function)).collect(),
            false => Vec::new(),
        };
        self.reach(call, clock).await
    }

    /// The call itself: a chaos fault's answer, or the function's.
    async fn reach(&self, call: AttemptCall<'_>, clock: &dyn Clock) -> AttemptReport {
        let started_at = clock.now_ms();
        if let Some(report) = self.chaos_hit(&call, started_at, clock).await {
            return report;
        }
        match (call.target, self.pools.get(call.function)) {
            (FunctionTarget::Command(_), Some(pool)) => pool.call(&self.http, &call, clock).await,
            (FunctionTarget::Url(url), _) => {
                let http = self.private_ca.get(call.function).unwrap_or(&self.http);
                // From the attempt's start: a chaos latency counts against its timeout.
                http.call(url, &call, started_at, clock).await
            }
            (FunctionTarget::Command(_), None) => unreachable!("a pool is made for every command function"),
        }
    }

    /// What a chaos fault on the function does to this attempt: the report when it answers in
    /// the function's place (an error, a reset, a timeout); `None` when the call goes on (after
    /// a latency, or a crash of an instance).
    async fn chaos_hit(&self, call: &AttemptCall<'_>, started_at: Millis, clock: &dyn Clock) -> Option<AttemptReport> {
        use keel_core::chaos::{Kind, Target};
        use keel_core::outcome::Outcome;
        let chaos = self.chaos.as_ref()?;
        let target = Target::Function(call.function.to_owned());
        let hit = chaos.hit(&target)?;
        let fault = &hit.fault;
        match hit.kind {
            Kind::Latency { .. } => {
                tokio::time::sleep(Duration::from_millis(hit.delay_ms).min(call.timeout)).await;
                None
            }
            Kind::Error { status } => Some(url::answered_by_chaos(call, (started_at, clock.now_ms()), status, fault)),
            Kind::Abort => {
                let error = format!("connection reset (chaos: fault {fault})");
                Some(url::failed_attempt(call, started_at, clock.now_ms(), Outcome::Transient, error))
            }
            Kind::Timeout => {
                tokio::time::sleep(call.timeout).await;
                let error =
                    format!("timed out after {} (chaos: fault {fault})", humantime::format_duration(call.timeout));
                Some(url::failed_attempt(call, started_at, clock.now_ms(), Outcome::Timeout, error))
            }
            Kind::Crash => {
                // Counted only when there was an instance to kill.
                if self.pools.get(call.function).and_then(|pool| pool.kill_one()).is_some() {
                    chaos.injected(&target, &hit);
                }
                None
            }
        }
    }

    /// How many attempts of `function` are calling it right now.
    pub(crate) fn running(&self, function: &str) -> usize {
        self.running.get(function).map_or(0, |here| here.count.load(Ordering::Relaxed))
    }

    /// The attempts running on this node, by invocation id, of the functions that declare
    /// dependencies.
    pub(crate) fn attempts(&self) -> &attempts::Attempts {
        &self.attempts
    }

    /// The pool of a `command` function.
    pub(crate) fn pool(&self, function: &str) -> Option<&Arc<ProcessPool>> {
        self.pools.get(function)
    }

    /// Stops every instance of every pool.
    pub(crate) async fn shutdown(&self) {
        let mut stops = tokio::task::JoinSet::new();
        for pool in self.pools.values() {
            let pool = pool.clone();
            stops.spawn(async move { pool.shutdown().await });
        }
        stops.join_all().await;
    }
}

/// A client that could not be built at start: a `ca_file` that was valid when the config was
/// checked but no longer is.
#[derive(Debug, thiserror::Error)]
#[error("{}{source}", function.as_ref().map(|f| format!("function {f}: ")).unwrap_or_default())]
pub(crate) struct ClientSetupError {
    function: Option<String>,
    source: ClientError,
}

impl ClientSetupError {
    fn new(function: Option<&str>, source: ClientError) -> Self {
        Self { function: function.map(str::to_owned), source }
    }
}

/// `http://ADDR` of the gateway as a local program reaches it: an unspecified listen address
/// (`0.0.0.0`) is reached on loopback.
fn keel_url(gateway: SocketAddr) -> String {
    let ip = match gateway.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, gateway.port()))
}
