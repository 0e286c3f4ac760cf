//! Keel's configuration: the resolved model ([`Config`]) and [`load`], which layers built-in
//! defaults → `keel.toml` → `KEEL_` environment variables → command-line flags.
//!
//! # Layout
//! - `function`: the resolved model of one function (`url` or managed `command`).
//! - `raw`: the file's shape as serde reads it (unknown keys rejected).
//! - `layers`: env and flag overrides, written into the parsed TOML tree.
//! - `locate`: which layer set a key, and where in the file (`keel.toml:12:15`).
//! - `validate`: semantic checks and defaults; reports every problem, not just the first.
//!
//! Every error names where the value came from, its dotted key and what would be valid:
//! `keel.toml:12:15: functions.charge.retry.max_attempts: must be at least 1 (got 0)`.

mod dependency;
mod function;
mod layers;
mod locate;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use locate::{dotted, Anchor, LineIndex, Locator, SourceMap};

pub use dependency::{BulkheadConfig, DependencyConfig, DependencyHeader, DependencyRetry};
pub use function::{BatchConfig, CommandConfig, FunctionConfig, FunctionTarget, SandboxConfig, SandboxUser};

/// A TOML value, for flag overrides built by the command line.
pub use toml::Value as TomlValue;

/// Everything Keel's server needs to start, after all layers and checks.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// Keyed by function name, which is also `FunctionConfig::name`.
    pub functions: BTreeMap<String, FunctionConfig>,
    /// Declared topics, keyed by name: events may be published (and emitted) to these only.
    pub topics: BTreeMap<String, TopicConfig>,
    pub subscriptions: Vec<SubscriptionConfig>,
    /// `[dependencies.NAME]`, keyed by name: what functions may call through egress.
    pub dependencies: BTreeMap<String, DependencyConfig>,
    pub auth: AuthConfig,
    /// `[schedules.NAME]`, keyed by name.
    pub schedules: BTreeMap<String, ScheduleConfig>,
    /// `[workflows.NAME]`, keyed by name.
    pub workflows: BTreeMap<String, WorkflowConfig>,
    /// `[chaos] enabled`: false (the default) makes the fault routes answer 404 and injects
    /// nothing.
    pub chaos_enabled: bool,
    /// `[region]`: `None` for a node that knows of no other region.
    pub region: Option<RegionConfig>,
    /// `[kv.NS]`, keyed by namespace: only namespaces configured there (all others live in
    /// every region alike).
    pub kv: BTreeMap<String, KvNamespaceConfig>,
}

/// `[kv.NS]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvNamespaceConfig {
    /// `home`: the region that serves the namespace (this one or a peer); calls made in another
    /// region are forwarded there.
    pub home: Option<String>,
}

/// `[region]`: which region this node belongs to, its part, and the other regions' APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    pub name: String,
    pub role: crate::region::Role,
    /// Region name → base URL of its Keel API (no trailing slash).
    pub peers: BTreeMap<String, String>,
    /// Sent to peers as `Authorization: Bearer …` (resolved from `env:VAR`).
    pub key: Option<String>,
    /// A standby promotes itself once its primary has been unreachable this long.
    pub failover_after: Option<std::time::Duration>,
}

/// `[workflows.NAME]`: its steps, run one after another and compensated in reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowConfig {
    pub name: String,
    pub definition: crate::workflow::Definition,
}

/// `[schedules.NAME]`: each tick of `cadence` invokes a function or publishes an event, once.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub name: String,
    pub cadence: crate::schedule::Cadence,
    pub target: ScheduleTarget,
    /// `payload` as JSON bytes (`{}` when none is given): the invocation's body or the event's data.
    pub payload: bytes::Bytes,
    pub missed: crate::schedule::Missed,
}

/// What a schedule's tick makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleTarget {
    /// An async invocation of this function.
    Function(String),
    /// An event published to this topic.
    Topic(String),
}

/// `[topics.NAME]`.
#[derive(Debug, Clone, Default)]
pub struct TopicConfig {
    /// `schema`: each event's `data` must pass it, whether published or emitted by effects.
    pub schema: Option<crate::schema::JsonSchema>,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub mode: AuthMode,
}

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Every route is open: allowed only while every listen address is loopback.
    #[default]
    None,
    /// Every route but `/healthz` and `/readyz` needs an API key or a function token.
    Keys,
}

/// `server.tls`: the API is served over https with this certificate chain and key (PEM files,
/// absolute after loading; read again on SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// `[[subscriptions]]`: each matching event of `topic` becomes one delivery to `function`.
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    pub name: String,
    pub topic: String,
    pub function: String,
    pub filter: crate::events::Filter,
    /// The function's policy with this subscription's `retry` keys laid over it.
    pub retry: crate::retry::RetryPolicy,
    pub ordered_by: Option<OrderedBy>,
    /// `scope`: a global subscription also receives the events published in peer regions.
    pub scope: SubscriptionScope,
}

/// `[[subscriptions]] scope`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SubscriptionScope {
    /// Only events published in this region (the default).
    #[default]
    Local,
    /// Events published in this region and, with `[region] role = "active"`, in its peers.
    Global,
}

/// How a subscription orders its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderedBy {
    /// Events sharing a `subject` are delivered one at a time, in publish order.
    Subject,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub body_limit: u64,
    /// How long in-flight invocations may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Largest function result stored, in bytes.
    pub max_result_bytes: u64,
    /// Longest chain of events emitted by deliveries before the next one is dead-lettered.
    pub max_event_hops: u32,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: u32,
    /// How long a client has to send a request's headers, from its first byte (or from the
    /// connection's opening); past it the connection is closed.
    pub header_timeout: Duration,
    /// How long a request body may go without a byte while it is being read; past it the
    /// request is answered 408 and the connection closed.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests before it is closed.
    pub idle_timeout: Duration,
    /// API requests served at once; one more is answered 503 `overloaded` at once.
    pub max_inflight_requests: u32,
    /// Serve https instead of http.
    pub tls: Option<TlsConfig>,
    /// `[server.firewall]`: which client addresses and requests are served.
    pub firewall: crate::edge::FirewallConfig,
    /// `[server.throttle]`: requests a second per API key and per client address.
    pub throttle: crate::edge::ThrottleConfig,
    /// `server.system_events`: the rate limit per kind of Keel's events on `keel.system`.
    pub system_events: crate::system_events::SystemEventsConfig,
    /// `[server.limits]`: request heads, JSON nesting, idempotency-key records a minute.
    pub limits: crate::limits::LimitsConfig,
}

impl ServerConfig {
    pub const DEFAULT_MAX_INFLIGHT_REQUESTS: u32 = 10_000;
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://…` (checked here, refused later by the
    /// server until the PostgreSQL store exists).
    pub url: String,
    pub fsync: bool,
}

impl StorageConfig {
    /// The SQLite database path (`":memory:"` for `sqlite::memory:`), or `None` for other stores.
    pub fn sqlite_path(&self) -> Option<&str> {
        match self.url.as_str() {
            "sqlite::memory:" => Some(":memory:"),
            url => url.strip_prefix("sqlite://"),
        }
    }
}

impl StorageConfig {
    /// Makes a relative SQLite path (the default `.keel/keel.db`, or one written in the file)
    /// relative to `dir`, the config file's directory, like the paths of `command` functions:
    /// where state lives does not depend on where `keel serve` was started.
    fn resolve_path(&mut self, dir: &Path) {
        if let Some(path) = self.url.strip_prefix("sqlite://").filter(|p| Path::new(p).is_relative()) {
            self.url = format!("sqlite://{}", dir.join(path).display());
        }
    }
}

/// The layers above the file. Tests build one by hand instead of touching the process env.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `(name, value)`, e.g. `("KEEL_SERVER__LISTEN", "0.0.0.0:7733")`.
    pub env: Vec<(String, String)>,
    /// `(dotted key path, flag name for messages, value)`, e.g. `("server.listen", "--listen", …)`.
    pub flags: Vec<(String, String, toml::Value)>,
    /// The variables `env:VAR` values (a dependency's `headers`) may name: the process's whole
    /// environment for `keel serve`, a map of their own in tests.
    pub vars: BTreeMap<String, String>,
}

impl Overrides {
    /// The process's `KEEL_…__…` variables, sorted by name so that errors come in a stable order.
    /// Variables without `__` (such as `KEEL_URL`) belong to the CLI and are skipped.
    pub fn from_process_env() -> Self {
        let mut env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .filter(|(name, _)| layers::is_override_var(name))
            .collect();
        env.sort();
        let vars = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        Overrides { env, flags: Vec::new(), vars }
    }
}

impl Overrides {
    /// Whether an environment variable or a flag sets the dotted `key` (such as `storage.url`),
    /// or a table holding it: a path given there is relative to the working directory, as on any
    /// command line.
    fn sets(&self, key: &str) -> bool {
        let covers = |path: &str| key == path || key.starts_with(&format!("{path}."));
        let env = self.env.iter().filter_map(|(var, _)| layers::env_key_path(var)).map(|path| path.join("."));
        env.chain(self.flags.iter().map(|(path, _, _)| path.clone())).any(|path| covers(&path))
    }
}

/// Where a configured value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A position in the config file. `line` is 0 when the error is about the file as a whole.
    File {
        path: String,
        line: usize,
        column: usize,
    },
    Env {
        var: String,
    },
    Flag {
        name: String,
    },
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: Location,
    /// Dotted key path (`functions.charge.timeout`); empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::File { path, line: 0, .. } => write!(f, "{path}: ")?,
            Location::File { path, line, column } => write!(f, "{path}:{line}:{column}: ")?,
            Location::Env { var } => write!(f, "env {var}: ")?,
            Location::Flag { name } => write!(f, "flag {name}: ")?,
            Location::Default => {}
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one load, shown one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Loads the config file at `path` (defaults only when `None`) and applies `overrides`.
/// A `path` that cannot be read is an error naming it.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let Some(path) = path else {
        return load_str("", "", overrides);
    };
    let file_name = path.display().to_string();
    if let Some(why) = crate::limits::config_file_too_large(path) {
        return Err(ConfigErrors(vec![ConfigError {
            location: Location::File { path: file_name, line: 0, column: 0 },
            key: String::new(),
            message: format!("cannot read the config file: {why}"),
        }]));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let dir = path.parent().unwrap_or(Path::new(""));
            let mut config = load_in(&file_name, &text, overrides, Some(dir))?;
            config.resolve_paths(dir);
            if !overrides.sets("storage.url") {
                config.storage.resolve_path(dir);
            }
            Ok(config)
        }
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            location: Location::File { path: file_name, line: 0, column: 0 },
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])),
    }
}

impl Config {
    /// Makes the relative paths of `command` functions — a program named with a `/` (like
    /// `./bin/charge`) and `cwd` — relative to `dir`, the config file's directory, as a reader of
    /// the file expects. A bare program name (`python3`) is still looked up on `PATH`.
    fn resolve_paths(&mut self, dir: &Path) {
        for function in self.functions.values_mut() {
            if let FunctionTarget::Command(command) = &mut function.target {
                if let Some(program) = command.command.first_mut() {
                    if program.contains('/') && Path::new(program.as_str()).is_relative() {
                        *program = dir.join(program.as_str()).display().to_string();
                    }
                }
                if let Some(cwd) = command.cwd.as_mut().filter(|c| c.is_relative()) {
                    *cwd = dir.join(&*cwd);
                }
            }
        }
    }
}

/// [`load`] for a file already in memory; `file_name` is only used in error messages (a
/// relative `ca_file` is read from the working directory).
pub fn load_str(file_name: &str, text: &str, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    load_in(file_name, text, overrides, None)
}

/// [`load_str`] with `dir`, the directory relative paths read at load time are relative to.
fn load_in(file_name: &str, text: &str, overrides: &Overrides, dir: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |span| LineIndex::new(text).position(span.start));
        ConfigErrors(vec![ConfigError {
            location: Location::File { path: file_name.to_owned(), line, column },
            key: String::new(),
            message: syntax_message(e.message()),
        }])
    })?;
    let applied = layers::apply(&mut table, overrides).map_err(ConfigErrors)?;
    let locator = Locator::new(file_name, SourceMap::from_text(text), applied);

    let raw: raw::RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path: Vec<String> = e.path().iter().map(ToString::to_string).collect();
        let (anchor, message) = describe_structural_error(e.inner().message());
        ConfigErrors(vec![ConfigError { location: locator.locate(&path, anchor), key: dotted(&path), message }])
    })?;

    validate::validate(raw, dir, &|var| overrides.vars.get(var).cloned()).map_err(|problems| {
        ConfigErrors(
            problems
                .into_iter()
                .map(|p| ConfigError {
                    location: locator.locate(&p.path, p.anchor),
                    key: dotted(&p.path),
                    message: p.message,
                })
                .collect(),
        )
    })
}

/// Serde's wording, in the file's terms: keys and tables rather than fields, structs and `i64`.
fn describe_structural_error(message: &str) -> (Anchor, String) {
    if let Some(rest) = message.strip_prefix("unknown field") {
        return (Anchor::Key, format!("unknown key{rest}"));
    }
    let message = match message.find(", expected struct Raw") {
        Some(end) => format!("{}, expected a table", &message[..end]),
        None => message
            .replace("expected a map", "expected a table")
            .replace("expected i64", "expected an integer")
            .replace("expected f64", "expected a number"),
    };
    (Anchor::Value, message)
}

/// The parser says "duplicate key" for a repeated `[table]` too; say what the rule is.
fn syntax_message(message: &str) -> String {
    match message {
        "duplicate key" => "duplicate key: each key and each [table] may be defined only once".into(),
        other => format!("invalid TOML: {other}"),
    }
}
