//! The Keel server under test: this same binary run as `keel serve` in a child process (so it
//! can be SIGKILLed and its memory read from `/proc`), on a free port, with a temporary SQLite
//! store and one function, `noop`, pointing at the bench's no-op function.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::ProgressBar;
use keel_core::auth::Scope;
use keel_core::clock::{Clock, SystemClock};
use keel_core::id::new_id;
use keel_core::invocation::NewInvocation;
use keel_store::StoreOptions;
use tokio::process::{Child, Command};

use super::load::PAYLOAD;
use super::BenchError;
use crate::cli::client::KeelClient;

/// How long a start may take before the bench gives up (a 1M-row store opens in well under it).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Invocations written at once while pre-filling: enough to fill the writer's groups.
const PREFILL_WRITERS: u64 = 512;

/// A `keel serve` child on a temporary store, started and killed as scenarios need.
#[derive(Debug)]
pub(crate) struct BenchServer {
    /// Holds the store and the config; removed when the bench ends.
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl BenchServer {
    /// Writes the config for a server calling `noop_url` with up to `concurrency` attempts. With
    /// `holder_url`, also the dependency `noopdep` (the no-op function) and the function `holder`
    /// that declares it, for `egress`.
    pub(crate) fn new(
        noop_url: &str,
        holder_url: Option<&str>,
        concurrency: usize,
        fsync: bool,
    ) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new().prefix("keel-bench-").tempdir()?;
        let config = dir.path().join("keel.toml");
        let text = format!(
            "[storage]\nurl = \"sqlite://{}\"\nfsync = {fsync}\n\n[functions.noop]\nurl = \"{noop_url}\"\n\
             concurrency = {}\n\n{}{}[topics.{topic}]\n{}",
            dir.path().join("keel.db").display(),
            concurrency.clamp(1, 10_000),
            super::batch::config(noop_url),
            holder_url.map(|url| egress_config(noop_url, url, concurrency)).unwrap_or_default(),
            (0..super::pending::FANOUT_SUBSCRIPTIONS)
                .map(|i| format!(
                    "[[subscriptions]]\nname = \"fan-{i}\"\ntopic = \"{}\"\nfunction = \"noop\"\n",
                    super::pending::FANOUT_TOPIC
                ))
                .collect::<String>(),
            topic = super::pending::FANOUT_TOPIC,
        );
        std::fs::write(&config, text)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(BenchServer { dir, config, port, child: None })
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `keel serve` and waits until `/readyz` answers 200. Returns how long that took.
    pub(crate) async fn start(&mut self) -> Result<Duration, BenchError> {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("-c")
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--log-format", "json"])
            // The default log level, as `keel serve` runs for its users: spans and their fields
            // are built at `info` whether or not a line is written, and that costs CPU per call.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let client = KeelClient::new(&self.base_url()).map_err(|e| BenchError::Server(e.to_string()))?;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(BenchError::Server(format!("keel serve exited with {status}: {}", self.log_tail())));
            }
            if let Ok(response) = client.send(http::Method::GET, "/readyz", &[], Bytes::new()).await {
                if response.status.is_success() {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(BenchError::Server(format!("keel serve not ready after {START_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILLs the server and waits for it to be gone (its store lock is then free).
    pub(crate) async fn kill(&mut self) -> Result<(), BenchError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// The server's resident memory in MB (`VmRSS` in `/proc/PID/status`), when it runs.
    pub(crate) fn rss_mb(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// CPU time the server has used so far, in seconds, when it runs.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&self.child.as_ref()?.id()?.to_string())
    }

    /// Turns on `[auth] mode = "keys"` and makes an admin key straight in the store, while the
    /// server is stopped (SQLite is locked while it runs). Returns the key's secret.
    pub(crate) async fn enable_auth(&mut self) -> Result<String, BenchError> {
        assert!(self.child.is_none(), "making a key needs the server stopped: it holds the store's lock");
        std::fs::OpenOptions::new().append(true).open(&self.config)?.write_all(b"\n[auth]\nmode = \"keys\"\n")?;
        let store = self.open_store(true)?;
        let server_error = |e: keel_core::Error| BenchError::Server(e.to_string());
        let (_, secret) = keel_server::create_api_key(store.as_ref(), "keel-bench", vec![Scope::Admin], None)
            .await
            .map_err(server_error)?;
        store.close().await.map_err(server_error)?;
        Ok(secret)
    }

    /// The server's store, opened by the bench itself: only while the server is stopped.
    fn open_store(&self, fsync: bool) -> Result<std::sync::Arc<dyn keel_core::store::Store>, BenchError> {
        let url = format!("sqlite://{}", self.dir.path().join("keel.db").display());
        keel_store::open(&StoreOptions { url, fsync }).map_err(|e| BenchError::Server(e.to_string()))
    }

    /// Writes `count` queued invocations of `noop` straight into the store while the server is
    /// stopped, due after `delay`. This is set-up, not measurement: it goes through the same
    /// `InvocationStore::enqueue` the gateway uses (the same rows), minus HTTP, so a million take seconds
    /// rather than minutes. Without fsync: the data reaches the OS before the server opens it.
    pub(crate) async fn prefill(&self, count: u64, delay: Duration, progress: &ProgressBar) -> Result<(), BenchError> {
        assert!(self.child.is_none(), "pre-filling needs the server stopped: it holds the store's lock");
        let store = self.open_store(false)?;
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..PREFILL_WRITERS {
            let (store, progress) = (store.clone(), progress.clone());
            let share = count / PREFILL_WRITERS + u64::from(writer < count % PREFILL_WRITERS);
            writers.spawn(async move {
                for _ in 0..share {
                    let now = SystemClock.now_ms();
                    let new = NewInvocation {
                        concurrency_key: None,
                        id: new_id(now),
                        function: "noop".into(),
                        payload: Bytes::from_static(PAYLOAD),
                        content_type: Some("application/json".into()),
                        created_at: now,
                        due_at: now + delay.as_millis() as i64,
                        idempotency_key: None,
                        traceparent: None,
                        delivery: None,
                        lease: None,
                        workflow: None,
                    };
                    store.enqueue(new).await?;
                    progress.inc(1);
                }
                Ok::<_, keel_core::Error>(())
            });
        }
        while let Some(joined) = writers.join_next().await {
            joined.map_err(|e| BenchError::Server(e.to_string()))?.map_err(|e| BenchError::Server(e.to_string()))?;
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("keel.log")
    }

    /// The end of the server's log, for an error message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// The dependency `noopdep` (the no-op function, with a bulkhead that never sheds the bench's
/// load) and the function `holder`, whose single attempt stays running while `egress` calls.
fn egress_config(noop_url: &str, holder_url: &str, concurrency: usize) -> String {
    let places = concurrency.clamp(64, 100_000);
    format!(
        "[dependencies.{dep}]\nurl = \"{noop_url}\"\n\
         bulkhead = {{ max_concurrent = {places}, max_queued = {places}, queue_timeout = \"10s\" }}\n\n\
         [functions.{holder}]\nurl = \"{holder_url}\"\ntimeout = \"1h\"\ndependencies = [\"{dep}\"]\n\n",
        dep = super::egress::DEPENDENCY,
        holder = super::egress::HOLDER,
    )
}

/// CPU time process `pid` (or `self`) has used so far, in seconds: `utime + stime` in
/// `/proc/PID/stat`, counted in Linux's fixed 100 ticks a second.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
