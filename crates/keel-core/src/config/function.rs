//! The resolved model of one `[functions.NAME]` table: what every function has, and where its
//! attempts go — a URL that already serves it, or a program Keel runs as a pool of instances.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::retry::RetryPolicy;

#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub name: String,
    /// Where attempts are sent.
    pub target: FunctionTarget,
    pub timeout: Duration,
    pub sync_timeout: Duration,
    /// How long an `Idempotency-Key` record of this function is kept (default 24 h).
    pub idempotency_ttl: Duration,
    /// Most calls of this function in flight at once: attempts, or (for a batch function)
    /// batch requests, each of up to `batch.max_size` attempts.
    pub concurrency: u32,
    pub retry: RetryPolicy,
    /// Shedding, queue cap, rate limit, per-key concurrency and breaker.
    pub flow: crate::flow::FlowConfig,
    /// `ca_file` of a `url` function: a PEM file of CA certificates trusted for its https URL on
    /// top of the system's roots (checked when the config is loaded, made absolute against the
    /// config file's directory).
    pub ca_file: Option<PathBuf>,
    /// The dependencies this function may call through egress (each one configured).
    pub dependencies: Vec<String>,
    /// `grants`, as scopes (`kv:NS:read|write`, `publish:TOPIC`, `invoke:FN`); `None` when the
    /// function declares none. With auth on, a function may do only what these grant (its
    /// token carries them); with auth off, a function that declares them is still held to them
    /// in its effects.
    pub grants: Option<Vec<crate::auth::Scope>>,
    /// `input_schema`: every invoke body must be JSON that passes it, or is refused (400
    /// `invalid-input`) before anything is stored.
    pub input_schema: Option<crate::schema::JsonSchema>,
    /// `batch`: async invocations and event deliveries of this function go to it in batches
    /// (DESIGN.md, "Batch delivery and bulk admission"); `None`: one per request.
    pub batch: Option<BatchConfig>,
    /// `http2 = true`: attempts go to the function over HTTP/2, many at once on one connection
    /// — with prior knowledge (h2c) for an http:// URL and a `command` function's instances, by
    /// ALPN `h2` for an https:// URL. The function must speak it: no HTTP/1.1 fallback.
    pub http2: bool,
}

/// `batch = { max_size = 100, max_wait = "5ms" }` of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most items in one request (1–1000).
    pub max_size: u32,
    /// How long the first item of a batch waits for others before the batch is sent anyway.
    pub max_wait: Duration,
}

impl BatchConfig {
    pub const DEFAULT_MAX_SIZE: u32 = 100;
    pub const LARGEST_MAX_SIZE: u32 = 1000;
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(5);
    /// Items wait leased: this much waiting stays well inside a lease's margin past the
    /// attempt's timeout.
    pub const LONGEST_MAX_WAIT: Duration = Duration::from_secs(10);
}

impl FunctionConfig {
    /// Attempts of this function that may be in flight at once: `concurrency`, times
    /// `batch.max_size` for a batch function (each of its `concurrency` requests carries up to
    /// that many).
    pub fn attempt_slots(&self) -> u32 {
        self.concurrency.saturating_mul(self.batch.map_or(1, |b| b.max_size))
    }

    /// The scopes of this function's token: its grants and `egress:DEP` for each dependency.
    pub fn token_scopes(&self) -> Vec<crate::auth::Scope> {
        let mut scopes = self.grants.clone().unwrap_or_default();
        scopes.extend(self.dependencies.iter().map(|d| crate::auth::Scope::Egress(d.clone())));
        scopes
    }

    /// The scopes this function's effects are held to, if any: with auth on, its grants (none
    /// declared: nothing is allowed); with auth off, its grants only when it declares them.
    pub fn effect_scopes(&self, auth: crate::config::AuthMode) -> Option<&[crate::auth::Scope]> {
        match (&self.grants, auth) {
            (Some(grants), _) => Some(grants),
            (None, crate::config::AuthMode::Keys) => Some(&[]),
            (None, crate::config::AuthMode::None) => None,
        }
    }

    /// The configured URL of a `url` function.
    pub fn url(&self) -> Option<&url::Url> {
        match &self.target {
            FunctionTarget::Url(url) => Some(url),
            FunctionTarget::Command(_) => None,
        }
    }

    /// The process settings of a `command` function.
    pub fn command(&self) -> Option<&CommandConfig> {
        match &self.target {
            FunctionTarget::Url(_) => None,
            FunctionTarget::Command(command) => Some(command),
        }
    }
}

/// `url = "…"` or `command = […]`: exactly one is configured.
#[derive(Debug, Clone)]
pub enum FunctionTarget {
    /// Where Keel POSTs invocations; http or https.
    Url(url::Url),
    /// A program Keel starts, scales between `min_instances` and `max_instances`, and stops.
    Command(CommandConfig),
}

/// A managed `command` function: how to run it and how to scale it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// The program and its arguments; never empty.
    pub command: Vec<String>,
    /// The instance's whole environment apart from Keel's own variables (`PORT`, `KEEL_URL`,
    /// `KEEL_FUNCTION`, `KEEL_INSTANCE`): nothing is inherited from Keel's environment.
    pub env: BTreeMap<String, String>,
    /// Working directory of each instance; Keel's own when `None`.
    pub cwd: Option<PathBuf>,
    /// Instances kept running even with no work (0 = scale to zero).
    pub min_instances: u32,
    pub max_instances: u32,
    /// Most attempts in flight on one instance.
    pub instance_concurrency: u32,
    /// An instance above `min_instances` with nothing in flight for this long is stopped.
    pub idle_timeout: Duration,
    /// How long a new instance has to become ready.
    pub startup_timeout: Duration,
    /// Readiness is `GET health_path` answering 200; without it, accepting a TCP connection.
    pub health_path: Option<String>,
    /// Path and query attempts are POSTed to on the instance (`/` by default).
    pub path: String,
    /// Limits each instance runs under; `None` when `sandbox` is not set. Boxed: most functions
    /// have none, and it would double the size of every `FunctionTarget`.
    pub sandbox: Option<Box<SandboxConfig>>,
}

/// `sandbox = { … }` of a `command` function: what each of its instances is held to. Keel
/// applies it in the instance's own process just before the program starts (see
/// `keel_server`'s `sandbox` module); every limit is per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Address space in bytes (`RLIMIT_AS`): an allocation past it fails.
    pub memory: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes and threads of the instance's user (`RLIMIT_NPROC`): counted per user by the
    /// kernel, and not enforced for root, so it binds best together with `user`.
    pub processes: Option<u64>,
    /// CPU time in whole seconds, rounded up (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL a
    /// second later.
    pub cpu: Option<u64>,
    /// Paths the instance may read (and execute) beneath, besides the system's own directories
    /// and the program; absolute, resolved against the config file's directory. Landlock.
    pub read: Vec<std::path::PathBuf>,
    /// Paths the instance may read and write beneath. Landlock.
    pub write: Vec<std::path::PathBuf>,
    /// The user the instance runs as (only when Keel runs as root).
    pub user: Option<SandboxUser>,
}

/// A user from the system's user database, resolved when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl SandboxConfig {
    /// Whether filesystem rules (`read`/`write`) were asked for.
    pub fn restricts_paths(&self) -> bool {
        !self.read.is_empty() || !self.write.is_empty()
    }
}

/// Defaults of the scaling keys, shown in docs and in `GET /v1/functions`.
impl CommandConfig {
    pub const DEFAULT_MAX_INSTANCES: u32 = 4;
    pub const DEFAULT_INSTANCE_CONCURRENCY: u32 = 16;
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
    /// Environment variables Keel sets itself; `env` may not name them.
    pub const RESERVED_ENV: [&'static str; 4] = ["PORT", "KEEL_URL", "KEEL_FUNCTION", "KEEL_INSTANCE"];
}
