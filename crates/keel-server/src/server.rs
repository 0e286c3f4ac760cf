//! Running a node: open the store, take back a dead predecessor's leases, start a dispatcher per
//! function and the HTTP gateway; on shutdown, drain.
//!
//! Drain order: admission answers 503 at once; dispatchers stop leasing; attempts in flight get
//! up to `server.shutdown_grace` to finish and record their outcome; `command` functions'
//! instances get SIGTERM (SIGKILL after their grace); then the HTTP server stops, the store is
//! tidied (SQLite folds its write-ahead log into the database file), and last the heartbeat
//! stops (it says `draining` meanwhile, so no other node takes the leases back). The publisher of
//! `keel.system` events stops just before the store is tidied, with what was emitted stored.
//! Whatever is still queued stays on disk for the next start.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use keel_core::clock::{Clock, SystemClock};
use keel_core::config::Config;
use keel_core::store::{Reclaim, Store};
use keel_store::StoreOptions;
use tokio::net::TcpListener;
use tokio::signal::unix::SignalKind;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::functions::Functions;
use crate::listener::Tls;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::{api, dispatch, listener};

pub use crate::listener::TlsError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] keel_store::OpenError),
    #[error("the store failed at start-up: {0}")]
    Recovery(#[from] keel_core::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The HTTP client of functions could not be built (a `ca_file` unreadable since the config
    /// was checked).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A function's `sandbox.user` needs Keel to run as root, and it does not.
    #[error("function {function}: sandbox.user = {user:?} needs Keel to run as root (switching user takes it); run Keel as root or remove `user`")]
    SandboxUser { function: String, user: String },
    /// `server.tls` names files that no longer hold a usable certificate and key.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a node takes from outside besides its config and store: the clock every decision reads,
/// and the seed of the randomness it draws (backoff jitter). The defaults are the system clock
/// and a random seed.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub clock: Arc<dyn Clock>,
    /// `Some`: the jitter of every retry is drawn from this seed, so a run can be repeated.
    pub seed: Option<u64>,
    /// The simulation's functions, answering every call in place of the network (`crate::sim`).
    #[cfg(test)]
    pub(crate) wire: Option<Arc<dyn crate::sim::Wire>>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            seed: None,
            #[cfg(test)]
            wire: None,
        }
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_dispatch: Arc<watch::Sender<bool>>,
    /// Stops the heartbeat, last: the node is alive to the others until its drain is over.
    stop_heartbeat: watch::Sender<bool>,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<std::io::Result<()>>,
    /// `server.tls`, reloaded by [`Node::reload_tls`].
    tls: Option<Arc<Tls>>,
    /// Stops the publisher of `keel.system` events, once nothing is left to emit them but before
    /// the store closes.
    stop_events: watch::Sender<bool>,
    events: JoinHandle<()>,
}

impl Node {
    /// Starts a node serving on `listener` (bind `127.0.0.1:0` in tests).
    pub async fn start(config: Config, listener: TcpListener) -> Result<Node, StartError> {
        let store = keel_store::open(&StoreOptions { url: config.storage.url.clone(), fsync: config.storage.fsync })?;
        Self::start_with_store(config, listener, store).await
    }

    /// Starts a node on a store opened by the caller (one wrapped in a
    /// [`FaultyStore`](keel_core::store::faulty::FaultyStore), say) instead of `config.storage`.
    pub async fn start_with_store(
        config: Config,
        listener: TcpListener,
        store: Arc<dyn Store>,
    ) -> Result<Node, StartError> {
        Self::start_with(config, listener, store, NodeOptions::default()).await
    }

    /// Starts a node with its clock and randomness given ([`NodeOptions`]): what a test or a
    /// simulation needs to make a run repeatable.
    pub async fn start_with(
        config: Config,
        listener: TcpListener,
        store: Arc<dyn Store>,
        options: NodeOptions,
    ) -> Result<Node, StartError> {
        crate::telemetry::install_recorder();
        crate::sandbox::check_user(&config)?;
        let clock = options.clock;
        let now = clock.now_ms();
        // Where this node's region stands decides whether it may write at all: a standby's
        // database is a read-only replica.
        let region = Arc::new(crate::regions::Region::new(config.region.as_ref()));
        let active = region.look(&store, now).await.is_active();
        let auth = Arc::new(crate::auth::Auth::new(&config));
        if active {
            take_back_leases(store.as_ref(), now).await?;
            auth.start(store.as_ref(), now).await?;
        } else if auth.is_on() {
            auth.refresh(store.as_ref()).await?;
        }
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.server.listen, source })?;
        let tls = config.server.tls.as_ref().map(Tls::load).transpose()?.map(Arc::new);
        let (system_events, system_events_rx) = crate::system_events::SystemEvents::channel();
        let chaos = crate::chaos::Chaos::new(config.chaos_enabled, clock.clone(), options.seed);
        // Faults on the store hook in at its writes, only when chaos is enabled.
        let store: Arc<dyn Store> = match config.chaos_enabled {
            true => Arc::new(keel_core::store::faulty::FaultyStore::with_hook(store, chaos.clone())),
            false => store,
        };
        let shared = Arc::new(Shared {
            runtime: {
                let runtime = Runtime::new(&config, addr, clock.clone(), auth.clone())
                    .map_err(|e| StartError::Client(e.to_string()))?
                    .with_chaos(chaos.clone());
                #[cfg(test)]
                let runtime = runtime.with_wire(options.wire.clone());
                runtime
            },
            functions: Functions::from_config(&config, now, &system_events),
            egress: crate::egress::Egress::new(&config, now, &system_events)
                .map_err(|e| StartError::Client(e.to_string()))?,
            node_id: format!("node-{}", keel_core::id::new_id(now)),
            draining: false.into(),
            behind: Default::default(),
            replays: Default::default(),
            backlog: Default::default(),
            limits: Arc::new(crate::limits::RequestLimits::new(config.server.limits, clock.clone())),
            crash_at: crate::faults::CrashPoint::from_env(),
            rng: std::sync::Mutex::new(match options.seed {
                Some(seed) => fastrand::Rng::with_seed(seed),
                None => fastrand::Rng::new(),
            }),
            metrics: crate::metric_definitions::Metrics::register(&config),
            chaos,
            system_events,
            auth,
            config,
            store,
            clock,
            region,
        });
        shared.runtime.start();
        // Stored pauses hold from the first request on.
        crate::flow::refresh(&shared, false).await;
        let (stop_dispatch, stop_rx) = watch::channel(false);
        let stop_dispatch = Arc::new(stop_dispatch);
        tokio::spawn(crate::flow::keep(shared.clone(), stop_rx.clone()));
        tokio::spawn(crate::auth::keep(shared.clone(), stop_rx.clone()));
        let (stop_events, stop_events_rx) = watch::channel(false);
        let events = tokio::spawn(crate::system_events::run(shared.clone(), system_events_rx, stop_events_rx));
        let (stop_heartbeat, stop_heartbeat_rx) = watch::channel(false);
        let work = {
            let (shared, stop_rx) = (shared.clone(), stop_rx.clone());
            move || start_work(&shared, addr, &stop_rx, stop_heartbeat_rx)
        };
        let activate: Box<dyn FnOnce() + Send> = match active {
            true => {
                work();
                Box::new(|| {})
            }
            // A standby promoted: take back the old primary's leases, then work.
            false => Box::new({
                let shared = shared.clone();
                move || {
                    tokio::spawn(async move {
                        let now = shared.clock.now_ms();
                        if let Err(e) = take_back_leases(shared.store.as_ref(), now).await {
                            tracing::warn!(error = %e, "region: taking back leases after the promotion failed; the sweeper will");
                        }
                        if let Err(e) = shared.auth.start(shared.store.as_ref(), now).await {
                            tracing::warn!(error = %e, "region: preparing signing keys after the promotion failed");
                        }
                        work();
                    });
                }
            }),
        };
        // A fenced node stops leasing, at once; what is in flight finishes.
        let fence: Box<dyn Fn() + Send> = Box::new({
            let stop_dispatch = stop_dispatch.clone();
            move || {
                let _ = stop_dispatch.send(true);
            }
        });
        tokio::spawn(crate::regions::watch(shared.clone(), Some(activate), fence, stop_rx.clone()));
        let (stop_http, stop_http_rx) = oneshot::channel::<()>();
        let app = api::router(shared.clone());
        let limits = listener::Limits::of(&shared.config.server);
        let http = tokio::spawn(listener::serve(listener, app, limits, tls.clone(), async move {
            let _ = stop_http_rx.await;
        }));
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, functions = shared.functions.iter().count(), node = %shared.node_id, "keel is listening");
        Ok(Node { addr, shared, stop_dispatch, stop_heartbeat, stop_http, http, tls, stop_events, events })
    }

    /// What the node's tasks share (the simulation drives its API in-process).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads `server.tls`'s certificate and key again (what SIGHUP does): new connections get
    /// the new certificate, open ones keep theirs. On failure the old certificate stays in use.
    /// `Ok(false)` when the node serves plain HTTP.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        let Some(tls) = &self.tls else { return Ok(false) };
        let reloaded = tls.reload();
        // In the audit log, as the node itself (`local`), whether it took or not.
        let shared = self.shared.clone();
        let detail = match &reloaded {
            Ok(()) => serde_json::json!({ "ok": true }),
            Err(error) => serde_json::json!({ "ok": false, "error": error.to_string() }),
        };
        tokio::spawn(async move {
            let local = crate::auth::Principal::Local;
            crate::auth::record(&shared, &local, "tls.reload", "server.tls", None, detail).await;
        });
        reloaded.map(|()| true)
    }

    /// Drains and stops the node (see the module doc for the order).
    pub async fn shutdown(self) {
        let grace_end = Instant::now() + self.shared.config.server.shutdown_grace;
        self.shared.draining.store(true, Ordering::Release);
        let _ = self.stop_dispatch.send(true);
        for function in self.shared.functions.iter() {
            let all = function.slots;
            // Admissions stored leased first: each has its slot once it gives its room back, and
            // none is admitted so from now on (the rest are stored queued).
            if tokio::time::timeout_at(grace_end, function.admitting.acquire_many(all)).await.is_err() {
                tracing::warn!(function = %function.config.name, "grace period over with admissions still waiting for a slot; they run after restart");
            }
            if tokio::time::timeout_at(grace_end, function.permits.acquire_many(all)).await.is_err() {
                tracing::warn!(function = %function.config.name, in_flight = function.in_flight(), "grace period over; in-flight attempts will be retried after restart");
            }
            let recorded = function.unrecorded.acquire_many(all);
            if tokio::time::timeout_at(grace_end, recorded).await.is_err() {
                tracing::warn!(function = %function.config.name, "grace period over with outcomes not yet recorded");
            }
        }
        if !self.shared.behind.drained(self.shared.store.as_ref(), grace_end).await {
            tracing::warn!("grace period over with sync invocation records not yet written");
        }
        // Instances go after the attempts they were serving, before the gateway they may call.
        self.shared.runtime.shutdown().await;
        let _ = self.stop_http.send(());
        if tokio::time::timeout_at(grace_end, self.http).await.is_err() {
            tracing::warn!("grace period over with requests still open");
        }
        let _ = self.stop_events.send(true);
        if tokio::time::timeout_at(grace_end.max(Instant::now() + EVENTS_GRACE), self.events).await.is_err() {
            tracing::warn!("system events still being published at shutdown were dropped");
        }
        if let Err(e) = self.shared.store.close().await {
            tracing::warn!(error = %e, "the store could not be tidied at shutdown; the next start will");
        }
        let _ = self.stop_heartbeat.send(true);
        tracing::info!("keel stopped");
    }
}

/// Takes back what a stopped predecessor held: every lease when this process is the store's only
/// user, else the leases already expired (the sweeper takes the rest as they expire).
async fn take_back_leases(store: &dyn Store, now: keel_core::clock::Millis) -> keel_core::Result<()> {
    let scope = if store.is_exclusive() { Reclaim::All } else { Reclaim::ExpiredBefore(now) };
    let reclaimed = store.reclaim_leases(scope, now).await?;
    if !reclaimed.is_empty() {
        tracing::warn!(functions = ?reclaimed, "took back attempts interrupted by the previous stop");
    }
    Ok(())
}

/// Starts what only an active node runs: a dispatcher per function (and its batch collector),
/// the scheduler, key expiry, chaos faults, the replicators to peer regions, the heartbeat and
/// the lease sweeper. A standby starts them once promoted.
fn start_work(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    stop_rx: &watch::Receiver<bool>,
    stop_heartbeat_rx: watch::Receiver<bool>,
) {
    for function in shared.functions.iter() {
        tokio::spawn(dispatch::run(shared.clone(), function.clone(), stop_rx.clone()));
        if function.batch.is_some() {
            tokio::spawn(dispatch::batch::collect(shared.clone(), function.clone()));
        }
    }
    tokio::spawn(dispatch::purge_expired_keys(shared.clone(), stop_rx.clone()));
    tokio::spawn(crate::scheduler::run(shared.clone(), stop_rx.clone()));
    tokio::spawn(crate::chaos::keep(shared.clone(), stop_rx.clone()));
    crate::regions::replicate::start(shared, stop_rx);
    crate::cluster::join(shared, addr, stop_rx.clone(), stop_heartbeat_rx);
    tokio::spawn(dispatch::sweep_expired_leases(shared.clone(), stop_rx.clone()));
}

/// How long the last `keel.system` events may take to be stored at shutdown, past the grace.
const EVENTS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// `keel serve`: binds `server.listen`, runs until SIGTERM or SIGINT, then drains. SIGHUP
/// reloads the TLS certificate and key.
pub async fn serve(config: Config) -> Result<(), StartError> {
    raise_open_files_limit(config.server.max_connections);
    let addr = config.server.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    // Before the node serves: a SIGHUP or SIGTERM sent once it answers must find its handler,
    // not the default action, which ends the process at once (no reload, no drain).
    let mut hangup = signal(SignalKind::hangup());
    let shutdown = shutdown_signal();
    let node = Node::start(config, listener).await?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => match node.reload_tls() {
                Ok(true) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Ok(false) => tracing::info!("SIGHUP: nothing to reload (server.tls is not set)"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: the TLS certificate was not reloaded; the old one stays in use"),
            },
        }
    }
    tracing::info!("shutdown signal received; draining");
    node.shutdown().await;
    Ok(())
}

fn signal(kind: SignalKind) -> tokio::signal::unix::Signal {
    tokio::signal::unix::signal(kind).unwrap_or_else(|e| panic!("installing a handler for {kind:?}: {e}"))
}

/// SIGTERM or SIGINT (Ctrl-C), their handlers installed now, not when first awaited.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut term = signal(SignalKind::terminate());
    let mut interrupt = signal(SignalKind::interrupt());
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
}

/// File descriptors a node needs besides its connections: the store, function connections and
/// instances, logs.
const SPARE_FILES: u64 = 1024;

/// Raises the soft limit on open files to the hard one: every connection is a file, and once
/// they run out nothing is answered, `/healthz` included. Says so when even the hard limit leaves
/// too few for `server.max_connections`.
fn raise_open_files_limit(max_connections: u32) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open files limit"),
            Err(e) => tracing::warn!(error = %e, limit = ?limit.current, "could not raise the open files limit"),
        }
    }
    let wanted = u64::from(max_connections) + SPARE_FILES;
    if let Some(current) = getrlimit(Resource::Nofile).current.filter(|n| *n < wanted) {
        tracing::warn!(
            open_files = current,
            max_connections,
            "the open files limit is below server.max_connections plus {SPARE_FILES}: connections may be refused \
             by the system before Keel's limit (raise `ulimit -n`)"
        );
    }
}
