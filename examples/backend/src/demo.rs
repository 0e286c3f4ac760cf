//! `keel-example demo`: the example backend under the chaos experiments checked in under
//! `examples/backend/experiments/` — the email provider down, the payment provider failing and
//! slow, command instances killed, and Keel itself SIGKILLed and restarted under load — each
//! with its verdict and report.
//!
//! Keel runs in a child process (`keel-example demo-node`) so that it can be SIGKILLed; the
//! stand-in providers run here, so that what they did (mails sent, cards charged, per
//! idempotency key) outlives every restart and can be compared with what the load was told.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_server::client::{Access, KeelClient};
use keel_server::experiment::{self, Controller, Verdict};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::app::{self, Options};
use crate::providers::{self, Behaviour};

/// The experiments, in the order the demo runs them: (file name, text).
pub const EXPERIMENTS: [(&str, &str); 4] = [
    ("email-outage", include_str!("../experiments/email-outage.toml")),
    ("payments-flaky", include_str!("../experiments/payments-flaky.toml")),
    ("instance-crash", include_str!("../experiments/instance-crash.toml")),
    ("keel-restart", include_str!("../experiments/keel-restart.toml")),
];

/// What `keel-example demo` takes from its flags.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Every time in the experiments scaled by this (1.0: as written; CI runs them shorter).
    pub time_scale: f64,
    /// Where the reports go, one folder per experiment.
    pub report: PathBuf,
    /// Only these experiments (all when empty).
    pub only: Vec<String>,
}

/// Runs the demo; true when every experiment's hypothesis held.
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let names: Vec<&str> = EXPERIMENTS.iter().map(|(name, _)| *name).collect();
    if let Some(unknown) = options.only.iter().find(|o| !names.contains(&o.as_str())) {
        anyhow::bail!("no experiment named {unknown:?}: {}", names.join(", "));
    }
    // Checked here: the Keel child scales its breakers by it too.
    experiment::check_time_scale(options.time_scale)?;
    // Healthy providers: the faults are the experiments'.
    let quiet = Behaviour { error_rate: 0.0, latency: Duration::from_millis(10) };
    let email = providers::start("email", quiet).await?;
    let payments = providers::start("payments", quiet).await?;
    let state = std::env::temp_dir().join(format!("keel-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let keel = KeelProcess::start(&state, &email.url, &payments.url, options.time_scale).await?;
    println!("Keel is running the example backend at {} (log: {})\n", keel.url, keel.log.display());

    let mut all_held = true;
    let started = Instant::now();
    for (name, text) in EXPERIMENTS {
        if !options.only.is_empty() && !options.only.iter().any(|o| o == name) {
            continue;
        }
        let text = text.replace("${PAYMENTS_URL}", &payments.url).replace("${EMAIL_URL}", &email.url);
        let file = format!("examples/backend/experiments/{name}.toml");
        let spec = experiment::parse(&file, &text)?;
        println!("── {} ({file})", spec.title);
        let run_options = experiment::Options {
            progress: true,
            time_scale: options.time_scale,
            controller: Some(keel.clone() as std::sync::Arc<dyn Controller>),
        };
        let began = Instant::now();
        let report = experiment::run(&spec, keel.client(), run_options).await?;
        let dir = options.report.join(name);
        report.write(&dir)?;
        print!("{}", report.summary());
        println!("  report: {} ({:.0} s)\n", dir.join("report.md").display(), began.elapsed().as_secs_f64());
        all_held &= report.verdict == Verdict::Held;
    }
    println!(
        "{} in {:.0} s. Reports in {}/",
        if all_held { "Every hypothesis held" } else { "A hypothesis did NOT hold" },
        started.elapsed().as_secs_f64(),
        options.report.display()
    );
    keel.stop().await;
    let _ = std::fs::remove_dir_all(&state);
    Ok(all_held)
}

/// The Keel child process, restartable.
struct KeelProcess {
    url: String,
    listen: SocketAddr,
    state: PathBuf,
    log: PathBuf,
    email_url: String,
    payments_url: String,
    time_scale: f64,
    live: Mutex<Option<(Child, KeelClient)>>,
}

impl KeelProcess {
    async fn start(
        state: &Path,
        email_url: &str,
        payments_url: &str,
        time_scale: f64,
    ) -> anyhow::Result<std::sync::Arc<Self>> {
        // A free port, kept across restarts.
        let listen = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let process = std::sync::Arc::new(KeelProcess {
            url: format!("http://{listen}"),
            listen,
            state: state.to_owned(),
            log: state.join("keel.log"),
            email_url: email_url.to_owned(),
            payments_url: payments_url.to_owned(),
            time_scale,
            live: Mutex::new(None),
        });
        process.spawn().await?;
        Ok(process)
    }

    fn client(&self) -> KeelClient {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.as_ref().map(|(_, client)| client.clone()).expect("started")
    }

    /// Starts `keel-example demo-node` and waits until it is ready; its key is read from a file.
    async fn spawn(&self) -> anyhow::Result<KeelClient> {
        let key_file = self.state.join("api-key");
        let _ = std::fs::remove_file(&key_file);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let exe = std::env::current_exe().context("finding this program's path")?;
        let child = Command::new(exe)
            .arg("demo-node")
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--email-url")
            .arg(&self.email_url)
            .arg("--payments-url")
            .arg(&self.payments_url)
            .arg("--key-file")
            .arg(&key_file)
            .arg("--time-scale")
            .arg(self.time_scale.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting keel-example demo-node")?;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(key) = std::fs::read_to_string(&key_file) {
                let access = Access { url: self.url.clone(), api_key: Some(key.trim().to_owned()), ca_file: None };
                let client = KeelClient::connect(&access)?;
                if client.get_json("/readyz").await.is_ok() {
                    *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some((child, client.clone()));
                    return Ok(client);
                }
            }
            if Instant::now() > until {
                anyhow::bail!("keel did not become ready within 30 s (see {})", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&self) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((mut child, _)) = live {
            if let Some(pid) = child.id() {
                // SIGTERM: a drain, so the function instances are stopped too.
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

impl Controller for KeelProcess {
    fn restart(&self) -> Pin<Box<dyn std::future::Future<Output = anyhow::Result<KeelClient>> + Send + '_>> {
        Box::pin(async move {
            let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((mut child, _)) = live {
                child.start_kill().context("SIGKILL keel")?; // tokio's kill is SIGKILL
                child.wait().await?;
            }
            self.spawn().await
        })
    }
}

/// Scales the `open_for` of every breaker, the functions' and the dependencies', by `scale`.
fn scale_breakers(config: &mut keel_core::config::Config, scale: f64) {
    let breakers = config
        .functions
        .values_mut()
        .filter_map(|f| f.flow.breaker.as_mut())
        .chain(config.dependencies.values_mut().filter_map(|d| d.breaker.as_mut()));
    for breaker in breakers {
        breaker.open_for = breaker.open_for.mul_f64(scale);
    }
}

/// What `keel-example demo-node` takes.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub email_url: String,
    pub payments_url: String,
    pub key_file: PathBuf,
    /// The demo's time scale: every breaker's `open_for` is scaled by it, like the experiments'
    /// times, so that an experiment's recovery (written to outlast a breaker opened by its
    /// faults) holds at any scale.
    pub time_scale: f64,
}

/// `keel-example demo-node`: Keel with the example backend and chaos enabled, its providers
/// elsewhere (the demo's), a new admin key written to `key_file` once it listens.
pub async fn node(options: NodeOptions) -> anyhow::Result<()> {
    let quiet = Behaviour { error_rate: 0.0, latency: Duration::ZERO };
    let app_options =
        Options { listen: options.listen, state_dir: options.state_dir.clone(), email: quiet, payments: quiet };
    let exe = std::env::current_exe().context("finding this program's path")?;
    let mut config = app::config(&app_options, &exe, &options.email_url, &options.payments_url)?;
    config.chaos_enabled = true;
    scale_breakers(&mut config, options.time_scale);
    let listener =
        TcpListener::bind(options.listen).await.with_context(|| format!("listening on {}", options.listen))?;
    let store =
        keel_store::open(&keel_store::StoreOptions { url: config.storage.url.clone(), fsync: config.storage.fsync })
            .context("opening the store")?;
    let secret = app::quickstart_key(store.as_ref()).await?;
    let node = keel_server::Node::start_with_store(config, listener, store).await?;
    let partial = options.key_file.with_extension("partial");
    std::fs::write(&partial, &secret)?;
    std::fs::rename(&partial, &options.key_file)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        _ = term.recv() => {}
    }
    node.shutdown().await;
    Ok(())
}
