//! Semantic checks: turns the raw file shape into the resolved [`Config`], applying defaults and
//! collecting every problem (not just the first) with the key path it belongs to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::locate::Anchor;
use super::raw::{RawByteSize, RawConfig, RawDuration, RawSystemEvents};
use super::{Config, ServerConfig, StorageConfig};
use crate::system_events::SystemEventsConfig;

mod auth;
mod command;
mod dependency;
mod edge;
mod flow;
mod function;
mod limits;
mod region;
mod sandbox;
mod schedule;
mod schema;
mod subscription;
mod workflow;

const DEFAULT_LISTEN: &str = "127.0.0.1:7733";
const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RESULT_BYTES: u64 = 6 * 1024 * 1024;
const DEFAULT_STORAGE_URL: &str = "sqlite://.keel/keel.db";
const DEFAULT_MAX_EVENT_HOPS: u32 = 16;
const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const DURATION_HINT: &str = r#"expected a duration like "250ms", "30s", "5m""#;
const BYTE_SIZE_HINT: &str =
    r#"expected a byte size like 1048576, "512KiB", "1MiB", "2MB" (units B, KB, MB, GB, KiB, MiB, GiB)"#;

/// One semantic problem, located later by key path.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Problem {
    pub(super) path: Vec<String>,
    pub(super) anchor: Anchor,
    pub(super) message: String,
}

/// Resolves `raw` against the defaults, or returns every problem found. Relative file paths
/// (`ca_file`) are read from `dir`, the config file's directory, or the working directory when
/// there is no file; `env` looks up the variables `env:VAR` values name.
pub(super) fn validate(
    raw: RawConfig,
    dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut check = Checker { problems: Vec::new(), dir: dir.map(Path::to_path_buf) };
    let server = check.server(&raw);
    let storage = check.storage(&raw);
    let mut functions = BTreeMap::new();
    for (name, function) in &raw.functions {
        let dependencies = check.function_dependencies(name, function.dependencies.as_ref(), &raw.dependencies);
        let grants = function.grants.as_ref().map(|g| check.grants(name, g, &raw_names(&raw.functions), &raw.topics));
        if let Some(mut resolved) = check.function(name, function) {
            resolved.dependencies = dependencies;
            resolved.grants = grants;
            functions.insert(name.clone(), resolved);
        }
    }
    let mut dependencies = BTreeMap::new();
    for (name, dependency) in &raw.dependencies {
        if let Some(resolved) = check.dependency(name, dependency, env) {
            dependencies.insert(name.clone(), resolved);
        }
    }
    let topics = check.topics(&raw.topics);
    let function_names = raw.functions.keys().cloned().collect();
    let subscriptions = check.subscriptions(&raw.subscriptions, &topics, &functions, &function_names);
    let auth = check.auth(&raw, server.as_ref());
    let schedules = check.schedules(&raw.schedules, &function_names, &topics);
    let workflows = check.workflows(&raw.workflows, &function_names, &topics);
    let region = raw.region.as_ref().map(|r| check.region(r, storage.as_ref(), env));
    let kv = check.kv_namespaces(&raw.kv, raw.region.as_ref());
    match (server, storage, auth, check.problems.is_empty()) {
        (Some(server), Some(storage), Some(auth), true) => {
            let chaos_enabled = raw.chaos.enabled.unwrap_or(false);
            Ok(Config {
                server,
                storage,
                functions,
                topics,
                subscriptions,
                dependencies,
                auth,
                schedules,
                workflows,
                chaos_enabled,
                region: region.flatten(),
                kv,
            })
        }
        _ => Err(check.problems),
    }
}

fn raw_names<T>(map: &BTreeMap<String, T>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

/// `"512KiB"` → 524288. Decimal (KB) and binary (KiB) units; whole numbers only.
fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let count: u64 = text[..digits].parse().ok()?;
    let unit: u64 = match text[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    count.checked_mul(unit)
}

/// Whether `url` names a store Keel knows: SQLite now, PostgreSQL once its backend lands.
fn check_storage_url(url: &str) -> Result<(), String> {
    const EXPECTED: &str = r#"expected "sqlite://PATH", "sqlite::memory:" or "postgres://USER@HOST/DB""#;
    if url == "sqlite::memory:" {
        return Ok(());
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(format!(r#"missing the database path; {EXPECTED} (got "{url}")"#));
        }
        return Ok(());
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return url::Url::parse(url)
            .map(drop)
            .map_err(|e| format!(r#"not a valid PostgreSQL URL ({e}); {EXPECTED} (got "{url}")"#));
    }
    Err(format!(r#"unknown database scheme; {EXPECTED} (got "{url}")"#))
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

#[derive(Debug, Default)]
struct Checker {
    problems: Vec<Problem>,
    /// The config file's directory, which relative paths are relative to.
    dir: Option<PathBuf>,
}

impl Checker {
    fn report(&mut self, path: Vec<String>, anchor: Anchor, message: String) {
        self.problems.push(Problem { path, anchor, message });
    }

    /// A path as written in the file: relative to the config file's directory (the working
    /// directory when there is no file), like `cwd` and a command's program.
    fn relative_to_config(&self, text: &str) -> PathBuf {
        match &self.dir {
            Some(dir) if Path::new(text).is_relative() => dir.join(text),
            _ => PathBuf::from(text),
        }
    }

    fn server(&mut self, raw: &RawConfig) -> Option<ServerConfig> {
        let s = &raw.server;
        let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse::<SocketAddr>().ok();
        if listen.is_none() {
            let message = format!(
                r#"expected an IP address and port like "127.0.0.1:7733" or "[::1]:7733" (got "{listen_text}")"#
            );
            self.report(key(&["server", "listen"]), Anchor::Value, message);
        }
        let body_limit = self.byte_size(key(&["server", "body_limit"]), &s.body_limit, DEFAULT_BODY_LIMIT);
        let grace = self.duration(key(&["server", "shutdown_grace"]), &s.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let max_result =
            self.byte_size(key(&["server", "max_result_bytes"]), &s.max_result_bytes, DEFAULT_MAX_RESULT_BYTES);
        let max_event_hops = match s.max_event_hops {
            None => Some(DEFAULT_MAX_EVENT_HOPS),
            Some(n) if (1..=1000).contains(&n) => Some(n as u32),
            Some(n) => {
                self.report(
                    key(&["server", "max_event_hops"]),
                    Anchor::Value,
                    format!("must be between 1 and 1000 (got {n})"),
                );
                None
            }
        };
        let max_connections = match s.max_connections {
            None => Some(DEFAULT_MAX_CONNECTIONS),
            Some(n) if (1..=1_000_000).contains(&n) => Some(n as u32),
            Some(n) => {
                self.report(
                    key(&["server", "max_connections"]),
                    Anchor::Value,
                    format!("must be between 1 and 1000000 (got {n})"),
                );
                None
            }
        };
        let header_timeout =
            self.positive_duration(key(&["server", "header_timeout"]), &s.header_timeout, DEFAULT_HEADER_TIMEOUT);
        let body_timeout =
            self.positive_duration(key(&["server", "body_timeout"]), &s.body_timeout, DEFAULT_BODY_TIMEOUT);
        let idle_timeout =
            self.positive_duration(key(&["server", "idle_timeout"]), &s.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        let max_inflight_requests = match s.max_inflight_requests {
            None => Some(ServerConfig::DEFAULT_MAX_INFLIGHT_REQUESTS),
            Some(n) if (1..=1_000_000).contains(&n) => Some(n as u32),
            Some(n) => {
                self.report(
                    key(&["server", "max_inflight_requests"]),
                    Anchor::Value,
                    format!("must be between 1 and 1000000 (got {n})"),
                );
                None
            }
        };
        let tls = s.tls.as_ref().and_then(|raw| self.tls(raw));
        let firewall = s.firewall.as_ref().map_or(Some(Default::default()), |raw| self.firewall(raw));
        let throttle = s.throttle.as_ref().map_or(Some(Default::default()), |raw| self.throttle(raw));
        let system_events = s.system_events.as_ref().map_or(Some(Default::default()), |raw| self.system_events(raw));
        let limits = s.limits.as_ref().map_or(Some(Default::default()), |raw| self.limits(raw));
        Some(ServerConfig {
            listen: listen?,
            body_limit: body_limit?,
            shutdown_grace: grace?,
            max_result_bytes: max_result?,
            max_event_hops: max_event_hops?,
            max_connections: max_connections?,
            header_timeout: header_timeout?,
            body_timeout: body_timeout?,
            idle_timeout: idle_timeout?,
            max_inflight_requests: max_inflight_requests?,
            tls,
            firewall: firewall?,
            throttle: throttle?,
            system_events: system_events?,
            limits: limits?,
        })
    }

    fn system_events(&mut self, raw: &RawSystemEvents) -> Option<SystemEventsConfig> {
        let per_kind = match raw.per_kind {
            None => Some(SystemEventsConfig::DEFAULT_PER_KIND),
            Some(n) if (1..=10_000).contains(&n) => Some(n as u32),
            Some(n) => {
                let at = key(&["server", "system_events", "per_kind"]);
                self.report(at, Anchor::Value, format!("must be between 1 and 10000 (got {n})"));
                None
            }
        };
        let at = key(&["server", "system_events", "window"]);
        let window = self.positive_duration(at, &raw.window, SystemEventsConfig::DEFAULT_WINDOW);
        Some(SystemEventsConfig { per_kind: per_kind?, window: window? })
    }

    fn storage(&mut self, raw: &RawConfig) -> Option<StorageConfig> {
        let url = raw.storage.url.clone().unwrap_or_else(|| DEFAULT_STORAGE_URL.to_owned());
        if let Err(message) = check_storage_url(&url) {
            self.report(key(&["storage", "url"]), Anchor::Value, message);
            return None;
        }
        Some(StorageConfig { url, fsync: raw.storage.fsync.unwrap_or(true) })
    }

    fn duration(&mut self, path: Vec<String>, raw: &Option<RawDuration>, default: Duration) -> Option<Duration> {
        let Some(RawDuration(text)) = raw else {
            return Some(default);
        };
        let parsed = crate::duration::parse_duration(text).ok();
        if parsed.is_none() {
            self.report(path, Anchor::Value, format!(r#"{DURATION_HINT} (got "{text}")"#));
        }
        parsed
    }

    fn byte_size(&mut self, path: Vec<String>, raw: &Option<RawByteSize>, default: u64) -> Option<u64> {
        let (bytes, got) = match raw {
            None => return Some(default),
            Some(RawByteSize::Bytes(n)) => (u64::try_from(*n).ok(), n.to_string()),
            Some(RawByteSize::Text(text)) => (parse_byte_size(text), format!("{text:?}")),
        };
        match bytes {
            Some(n) if n > 0 => Some(n),
            _ => {
                self.report(path, Anchor::Value, format!("{BYTE_SIZE_HINT}, at least 1 byte (got {got})"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_decimal_and_binary_units() {
        assert_eq!(parse_byte_size("1MiB"), Some(1_048_576));
        assert_eq!(parse_byte_size("512KiB"), Some(524_288));
        assert_eq!(parse_byte_size("2MB"), Some(2_000_000));
        assert_eq!(parse_byte_size("10 b"), Some(10));
        assert_eq!(parse_byte_size("1.5MiB"), None);
        assert_eq!(parse_byte_size("MiB"), None);
        assert_eq!(parse_byte_size("99999999999GiB"), None);
    }

    #[test]
    fn storage_urls_name_a_known_store() {
        assert_eq!(check_storage_url("sqlite::memory:"), Ok(()));
        assert_eq!(check_storage_url("sqlite://relative/keel.db"), Ok(()));
        assert_eq!(check_storage_url("postgresql://u@h:5432/db"), Ok(()));
        assert_eq!(
            check_storage_url("postgres://u@h:99999/db"),
            Err(r#"not a valid PostgreSQL URL (invalid port number); expected "sqlite://PATH", "sqlite::memory:" or "postgres://USER@HOST/DB" (got "postgres://u@h:99999/db")"#.to_owned())
        );
    }

    #[test]
    fn problems_in_different_sections_are_all_collected() {
        let mut raw = RawConfig::default();
        raw.server.listen = Some("x".into());
        raw.storage.url = Some("redis://x".into());
        let problems = validate(raw, None, &|_| None).unwrap_err();
        let paths: Vec<String> = problems.iter().map(|p| p.path.join(".")).collect();
        assert_eq!(paths, ["server.listen", "storage.url"]);
    }
}
