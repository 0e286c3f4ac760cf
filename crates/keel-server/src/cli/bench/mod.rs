//! `keel bench`: Keel's speed measured against the machine's own limit. It starts a built-in
//! no-op function and (unless `--url` names a running server) a `keel serve` child on a
//! temporary store, runs the scenarios, and reports each one's figures and ratio to `direct`,
//! the same load sent straight to the no-op function.
//!
//! # Layout
//! - this file: the arguments and the order scenarios run in.
//! - [`noop`]: the no-op function; [`server`]: the `keel serve` child; [`load`]: the closed-loop
//!   load generator; [`report`]: the table, the JSON and the targets.
//! - one file per family of scenarios: [`throughput`] (`direct`, `sync`, `async`), [`batch`]
//!   (`async-batch`: bulk admission and batch delivery), [`egress`]
//!   (a dependency called through Keel), [`depth`] (`depth`, `memory`), [`recovery`], [`pending`]
//!   (`replay`, `fanout`); [`auth`]: `sync+auth` and `async+auth`, the cost of access control.

mod auth;
mod batch;
mod depth;
mod egress;
mod load;
mod noop;
mod pending;
mod recovery;
mod report;
mod server;
mod throughput;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use http::StatusCode;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::client::{Access, ClientError, KeelClient};
use crate::cli::DEFAULT_URL;
use egress::Holder;
use load::{LoadError, Target};
use noop::NoopFunction;
use report::{Machine, Report, Scenario};
use server::BenchServer;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "A,B")]
    pub(crate) scenarios: Vec<ScenarioName>,

    /// Requests per load run (async invocations, sync invokes; runs at concurrency 1 send a quarter).
    #[arg(long, value_name = "N")]
    pub(crate) requests: Option<u64>,

    /// Requests in flight at once.
    #[arg(long, value_name = "C")]
    pub(crate) concurrency: Option<usize>,

    /// Small sizes everywhere: a smoke run of every scenario in seconds.
    #[arg(long)]
    pub(crate) quick: bool,

    /// Queue depths for `depth`, comma-separated, ascending.
    #[arg(long, value_delimiter = ',', value_name = "N,N")]
    pub(crate) depths: Vec<u64>,

    /// Invocations queued when `recovery` kills the server.
    #[arg(long, value_name = "N")]
    pub(crate) recovery_queued: Option<u64>,

    /// Run the server without fsync (`storage.fsync = false`); the report says so.
    #[arg(long)]
    pub(crate) no_fsync: bool,

    /// Where the no-op function listens (with --url, the server's `noop` function must call
    /// `http://ADDR/noop`).
    #[arg(long, value_name = "ADDR")]
    pub(crate) noop_listen: Option<SocketAddr>,

    /// An outside no-op function to call instead of the built-in one (nginx `return 200`, say):
    /// `direct` goes straight to it and the server's `noop` function calls it. `async` then
    /// times its end through the API; scenarios that count calls at the built-in function
    /// (`fanout`, `depth`, `recovery`, `memory`, `--auth`) are skipped.
    #[arg(long, value_name = "URL")]
    pub(crate) function_url: Option<String>,

    /// Then run `sync` and `async` again on a second server with `[auth] mode = "keys"`, every
    /// request carrying an admin key, each case compared with auth off. With --url: sends
    /// KEEL_API_KEY / --api-key to that server instead, without the comparison.
    #[arg(long)]
    pub(crate) auth: bool,
}

/// Every scenario, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScenarioName {
    Direct,
    Sync,
    Egress,
    Async,
    AsyncBatch,
    Replay,
    Fanout,
    Depth,
    Recovery,
    Memory,
}

/// Why a bench could not finish.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Server(String),
}

/// The sizes and switches every scenario reads.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) requests: u64,
    pub(crate) concurrency: usize,
    pub(crate) depths: Vec<u64>,
    pub(crate) recovery_queued: u64,
    pub(crate) fsync: bool,
    /// Progress bars are drawn only for people (never with --json).
    pub(crate) progress: bool,
    /// Sent as `authorization: Bearer KEY` with every request to Keel (load and API calls).
    pub(crate) api_key: Option<String>,
}

impl Settings {
    fn from_args(args: &BenchArgs, json: bool) -> Self {
        let (requests, concurrency, depths, queued) = if args.quick {
            (400, 8, vec![100, 2_000], 2_000)
        } else {
            (20_000, 32, vec![1_000, 100_000, 1_000_000], 100_000)
        };
        let mut depths = if args.depths.is_empty() { depths } else { args.depths.clone() };
        depths.sort_unstable();
        Settings {
            requests: args.requests.unwrap_or(requests).max(1),
            concurrency: args.concurrency.unwrap_or(concurrency).max(1),
            depths,
            recovery_queued: args.recovery_queued.unwrap_or(queued).max(1),
            fsync: !args.no_fsync,
            progress: !json,
            api_key: None,
        }
    }

    /// A client for the Keel server at `base`, sending the key when there is one.
    pub(crate) fn client(&self, base: &str) -> Result<KeelClient, ClientError> {
        KeelClient::connect(&Access { url: base.to_owned(), api_key: self.api_key.clone(), ca_file: None })
    }

    /// A load target at Keel's `url` answered with `expect`, sending the key when there is one.
    pub(crate) fn target(&self, url: &str, expect: StatusCode) -> Result<Target, LoadError> {
        let target = Target::post(url, expect)?;
        match &self.api_key {
            Some(key) => target.with_header("authorization", &format!("Bearer {key}")),
            None => Ok(target),
        }
    }

    /// Requests of a run at concurrency 1, which is slow by nature.
    pub(crate) fn requests_c1(&self) -> u64 {
        (self.requests / 4).max(1)
    }

    /// A progress bar for a long step (hidden for --json, and when stderr is not a terminal).
    pub(crate) fn progress(&self, label: &str, total: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total).with_message(label.to_owned());
        let style = ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    }
}

/// `keel bench`.
pub(crate) async fn run(args: BenchArgs, access: &Access, json: bool) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::from_args(&args, json);
    let wanted = |name| args.scenarios.is_empty() || args.scenarios.contains(&name);
    // The default address means "start a server"; any other --url (or KEEL_URL) names one.
    let url = &access.url;
    let external = (url.trim_end_matches('/') != DEFAULT_URL).then(|| url.to_owned());
    if args.auth && external.is_some() {
        settings.api_key = access.api_key.clone();
    }
    let noop_addr = args.noop_listen.unwrap_or_else(|| {
        let port = if external.is_some() { 7799 } else { 0 };
        SocketAddr::from(([127, 0, 0, 1], port))
    });
    let noop = NoopFunction::start(noop_addr).await?;
    let function_url = args.function_url.clone().unwrap_or_else(|| noop.url());
    // The built-in no-op counts calls; an outside one does not.
    let counted = args.function_url.is_none().then_some(&noop);
    let mut scenarios = Vec::new();

    // `direct` always runs: every ratio needs it.
    let direct = throughput::direct(&settings, &function_url).await?;
    // `holder`, for `egress`, is in the config of the server the bench starts (not under --url).
    let (mut server, mut holder, base) = match &external {
        Some(url) => (None, None, url.clone()),
        None => {
            let holder = Holder::start().await?;
            let url = holder.url();
            let mut server = BenchServer::new(&function_url, Some(&url), settings.concurrency * 2, settings.fsync)?;
            server.start().await?;
            let base = server.base_url();
            (Some(server), Some(holder), base)
        }
    };
    let idle_rss = server.as_ref().and_then(BenchServer::rss_mb);
    if wanted(ScenarioName::Direct) {
        scenarios.push(direct.scenario());
    }
    if wanted(ScenarioName::Sync) {
        scenarios.push(throughput::sync(&settings, &direct, &base, server.as_ref()).await?);
    }
    if wanted(ScenarioName::Egress) {
        scenarios.push(match holder.as_mut() {
            Some(holder) => egress::run(&settings, &direct, holder, &base, server.as_ref()).await?,
            None => Scenario::skipped("egress", "needs a server keel bench starts itself (no --url)"),
        });
    }
    if wanted(ScenarioName::Async) {
        scenarios.push(throughput::asynchronous(&settings, &direct, counted, &base, server.as_ref()).await?);
    }
    if wanted(ScenarioName::AsyncBatch) {
        scenarios.push(batch::run(&settings, &direct, &noop, &base, server.as_ref()).await?);
    }
    if wanted(ScenarioName::Replay) {
        scenarios.push(pending::replay(&settings, &direct, &base).await?);
    }
    let builtin =
        |name: &'static str| Scenario::skipped(name, "counts calls at the built-in no-op (no --function-url)");
    if wanted(ScenarioName::Fanout) {
        scenarios.push(match counted {
            Some(noop) => pending::fanout(&settings, &direct, noop, &base).await?,
            None => builtin("fanout"),
        });
    }
    if let Some(server) = server.as_mut() {
        server.kill().await?;
    }
    // Right after the auth-off runs, so that both sides see the machine alike.
    if args.auth && counted.is_none() {
        scenarios.push(builtin("sync+auth"));
        scenarios.push(builtin("async+auth"));
    } else if args.auth {
        scenarios.extend(match &external {
            None => {
                auth::run(&settings, &direct, &noop, holder.as_ref().map(Holder::url).as_deref(), &scenarios).await?
            }
            Some(_) => auth::skipped(&scenarios, settings.api_key.is_some()),
        });
    }
    let own = |name: &'static str| Scenario::skipped(name, "needs a server keel bench starts itself (no --url)");
    let depth = match (&external, counted, wanted(ScenarioName::Depth) || wanted(ScenarioName::Memory)) {
        (None, Some(noop), true) => Some(depth::run(&settings, &direct, noop).await?),
        _ => None,
    };
    let unmeasured = |name| if counted.is_none() { builtin(name) } else { own(name) };
    if wanted(ScenarioName::Depth) {
        scenarios.push(depth.as_ref().map(|d| d.scenario()).unwrap_or_else(|| unmeasured("depth")));
    }
    if wanted(ScenarioName::Recovery) {
        scenarios.push(match (&external, counted) {
            (None, Some(noop)) => recovery::run(&settings, noop).await?,
            _ => unmeasured("recovery"),
        });
    }
    if wanted(ScenarioName::Memory) {
        scenarios.push(match (&depth, idle_rss) {
            (Some(depth), Some(idle)) => depth::memory(idle, depth),
            _ => unmeasured("memory"),
        });
    }

    let store = match external {
        Some(url) => format!("the server at {url}"),
        None => "SQLite, a temporary file".to_owned(),
    };
    let fsync = server.is_some().then_some(settings.fsync);
    let report = Report {
        machine: Machine::probe(store, fsync),
        settings: serde_json::json!({
            "requests": settings.requests,
            "requests_at_concurrency_1": settings.requests_c1(),
            "concurrency": settings.concurrency,
            "depths": settings.depths,
            "recovery_queued": settings.recovery_queued,
            "quick": args.quick,
            "function_url": args.function_url,
        }),
        targets: report::check_targets(&scenarios, settings.concurrency),
        scenarios,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}
