//! The shape of `keel.toml` as serde sees it: every key optional, unknown keys rejected.
//!
//! Values stay close to their TOML form (strings, integers) so that `validate` can check them
//! all and report every problem at once; serde only catches structural mistakes (an unknown key,
//! a string where a table belongs), and those stop at the first.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) functions: BTreeMap<String, RawFunction>,
    #[serde(default)]
    pub(super) topics: BTreeMap<String, RawTopic>,
    #[serde(default)]
    pub(super) subscriptions: Vec<RawSubscription>,
    #[serde(default)]
    pub(super) dependencies: BTreeMap<String, RawDependency>,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) schedules: BTreeMap<String, RawSchedule>,
    #[serde(default)]
    pub(super) workflows: BTreeMap<String, RawWorkflow>,
    #[serde(default)]
    pub(super) chaos: RawChaos,
    pub(super) region: Option<RawRegion>,
    #[serde(default)]
    pub(super) kv: BTreeMap<String, RawKvNamespace>,
}

/// `[kv.NS]`: where a KV namespace lives among active-active regions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKvNamespace {
    /// The region that serves this namespace; the others forward to it.
    pub(super) home: Option<String>,
}

/// `[region]`: this region's name and part, and its peer regions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegion {
    pub(super) name: Option<String>,
    pub(super) role: Option<String>,
    /// Region name → the base URL of its Keel API.
    pub(super) peers: Option<BTreeMap<String, String>>,
    /// The API key sent to peers (a literal or `env:VAR`).
    pub(super) key: Option<String>,
    /// A standby promotes itself after the primary has been unreachable this long.
    pub(super) failover_after: Option<RawDuration>,
}

/// `[chaos]`: whether faults may be injected at all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChaos {
    pub(super) enabled: Option<bool>,
}

/// `[workflows.NAME]`: steps run one after another, compensated in reverse when one fails.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    pub(super) steps: Option<Vec<RawStep>>,
    pub(super) notify_topic: Option<String>,
}

/// One of `steps = [{ name, function, compensate }]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: Option<String>,
    pub(super) function: Option<String>,
    pub(super) compensate: Option<String>,
}

/// `[schedules.NAME]`: a function invoked (or an event published) on a cron pattern or a period.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) cron: Option<String>,
    pub(super) every: Option<RawDuration>,
    pub(super) timezone: Option<String>,
    pub(super) function: Option<String>,
    pub(super) topic: Option<String>,
    /// Any TOML value that has a JSON form (no dates).
    pub(super) payload: Option<toml::Value>,
    pub(super) missed: Option<String>,
}

/// `[auth]`: who may call the API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) mode: Option<String>,
}

/// `server.tls = { cert = "cert.pem", key = "key.pem" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

/// A function's `grants`: what its token lets it do on Keel's API and in its effects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrants {
    /// `"NS:read"` / `"NS:write"`.
    pub(super) kv: Option<Vec<String>>,
    /// Topics (may end in `*`).
    pub(super) publish: Option<Vec<String>>,
    /// Functions (may end in `*`).
    pub(super) invoke: Option<Vec<String>>,
}

/// `[dependencies.NAME]`: a service functions call through Keel's egress.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDependency {
    pub(super) url: Option<String>,
    pub(super) timeout: Option<RawDuration>,
    pub(super) retry: Option<RawDependencyRetry>,
    pub(super) retry_budget: Option<RawRetryBudget>,
    pub(super) breaker: Option<RawBreaker>,
    pub(super) bulkhead: Option<RawBulkhead>,
    pub(super) rate_limit: Option<RawRateLimit>,
    /// Header name → a literal value or `env:VAR`.
    pub(super) headers: Option<BTreeMap<String, String>>,
    /// Extra CA certificates (PEM) for an https URL.
    pub(super) ca_file: Option<String>,
}

/// A dependency's `retry`: no multiplier or jitter to choose (doubling, full jitter).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDependencyRetry {
    pub(super) max_attempts: Option<i64>,
    pub(super) initial: Option<RawDuration>,
    pub(super) max: Option<RawDuration>,
}

/// `retry_budget = { ratio = 0.2, min_per_second = 10 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetryBudget {
    pub(super) ratio: Option<f64>,
    pub(super) min_per_second: Option<i64>,
}

/// `bulkhead = { max_concurrent = 32, max_queued = 64, queue_timeout = "100ms" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBulkhead {
    pub(super) max_concurrent: Option<i64>,
    pub(super) max_queued: Option<i64>,
    pub(super) queue_timeout: Option<RawDuration>,
}

/// `[topics.NAME]`: declares a topic.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopic {
    /// A JSON Schema file each event's `data` must pass (relative to keel.toml).
    pub(super) schema: Option<String>,
}

/// `[[subscriptions]]`: topic (+ filter) → function.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscription {
    pub(super) name: Option<String>,
    pub(super) topic: Option<String>,
    pub(super) function: Option<String>,
    pub(super) filter: Option<crate::events::Filter>,
    pub(super) retry: Option<RawRetry>,
    pub(super) ordered_by: Option<String>,
    /// `"local"` (the default) or `"global"`: also receives events published in peer regions.
    pub(super) scope: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) body_limit: Option<RawByteSize>,
    pub(super) shutdown_grace: Option<RawDuration>,
    pub(super) max_result_bytes: Option<RawByteSize>,
    pub(super) max_event_hops: Option<i64>,
    pub(super) max_connections: Option<i64>,
    pub(super) header_timeout: Option<RawDuration>,
    pub(super) body_timeout: Option<RawDuration>,
    pub(super) idle_timeout: Option<RawDuration>,
    pub(super) max_inflight_requests: Option<i64>,
    pub(super) tls: Option<RawTls>,
    pub(super) firewall: Option<RawFirewall>,
    pub(super) throttle: Option<RawThrottle>,
    pub(super) system_events: Option<RawSystemEvents>,
    pub(super) limits: Option<RawLimits>,
}

/// `server.system_events = { per_kind = 10, window = "1m" }`: the rate limit of Keel's own events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSystemEvents {
    pub(super) per_kind: Option<i64>,
    pub(super) window: Option<RawDuration>,
}

/// `[server.limits]`: request heads, JSON nesting, idempotency-key records a minute.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_url_bytes: Option<RawByteSize>,
    pub(super) max_header_bytes: Option<RawByteSize>,
    pub(super) max_headers: Option<i64>,
    pub(super) max_json_depth: Option<i64>,
    pub(super) idempotency_keys_per_minute: Option<i64>,
}

/// `[server.firewall]`: networks as written (`"10.0.0.0/8"`), checked by `validate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFirewall {
    pub(super) allow: Option<Vec<String>>,
    pub(super) deny: Option<Vec<String>>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) rules: Option<Vec<RawRequestRule>>,
}

/// `{ method = "DELETE", path = "/v1/dlq/*", action = "deny" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequestRule {
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
    pub(super) action: Option<String>,
}

/// `[server.throttle]`: `per_key` and `per_address`, each `{ per_second, burst }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThrottle {
    pub(super) per_key: Option<RawRateLimit>,
    pub(super) per_address: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) url: Option<String>,
    pub(super) fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFunction {
    pub(super) url: Option<String>,
    /// A managed function: the program and its arguments. The keys below it apply only to these.
    pub(super) command: Option<Vec<String>>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) cwd: Option<String>,
    pub(super) min_instances: Option<i64>,
    pub(super) max_instances: Option<i64>,
    pub(super) instance_concurrency: Option<i64>,
    pub(super) idle_timeout: Option<RawDuration>,
    pub(super) startup_timeout: Option<RawDuration>,
    pub(super) health_path: Option<String>,
    pub(super) path: Option<String>,
    pub(super) timeout: Option<RawDuration>,
    pub(super) sync_timeout: Option<RawDuration>,
    pub(super) idempotency_ttl: Option<RawDuration>,
    /// Signed, so that `concurrency = -1` gets our range message rather than serde's "expected u32".
    pub(super) concurrency: Option<i64>,
    pub(super) retry: Option<RawRetry>,
    pub(super) max_waiting: Option<i64>,
    pub(super) max_queued: Option<i64>,
    pub(super) rate_limit: Option<RawRateLimit>,
    pub(super) concurrency_key: Option<RawConcurrencyKey>,
    pub(super) breaker: Option<RawBreaker>,
    /// `url` functions only: extra CA certificates (PEM) for an https URL.
    pub(super) ca_file: Option<String>,
    /// `dependencies = ["payments"]`: the dependencies this function may call through egress.
    pub(super) dependencies: Option<Vec<String>>,
    pub(super) grants: Option<RawGrants>,
    /// A JSON Schema file every invoke body must pass (relative to keel.toml).
    pub(super) input_schema: Option<String>,
    /// `command` functions only: limits each instance runs under.
    pub(super) sandbox: Option<RawSandbox>,
    /// `batch = { max_size = 100, max_wait = "5ms" }`: async work delivered in batches.
    pub(super) batch: Option<RawBatch>,
    /// `http2 = true`: attempts go over HTTP/2 (h2c on http://, ALPN `h2` on https://).
    pub(super) http2: Option<bool>,
}

/// `batch = { max_size = 100, max_wait = "5ms" }`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    pub(super) max_size: Option<i64>,
    pub(super) max_wait: Option<RawDuration>,
}

/// `sandbox = { memory = "512MiB", open_files = 256, processes = 32, cpu = "60s", read = […],
/// write = […], user = "nobody" }`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    pub(super) memory: Option<RawByteSize>,
    pub(super) open_files: Option<i64>,
    pub(super) processes: Option<i64>,
    pub(super) cpu: Option<RawDuration>,
    pub(super) read: Option<Vec<String>>,
    pub(super) write: Option<Vec<String>>,
    pub(super) user: Option<String>,
}

/// `rate_limit = { per_second = 50, burst = 10 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    /// A float, which also takes TOML integers (`per_second = 50`).
    pub(super) per_second: Option<f64>,
    pub(super) burst: Option<i64>,
}

/// `concurrency_key = { header = "x-tenant-id", limit = 2 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConcurrencyKey {
    pub(super) header: Option<String>,
    pub(super) limit: Option<i64>,
}

/// `breaker = { consecutive_failures = 5, failure_ratio = 0.5, … }`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub(super) consecutive_failures: Option<i64>,
    pub(super) failure_ratio: Option<f64>,
    pub(super) min_calls: Option<i64>,
    pub(super) window: Option<RawDuration>,
    pub(super) open_for: Option<RawDuration>,
    pub(super) half_open_probes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_attempts: Option<i64>,
    pub(super) initial: Option<RawDuration>,
    pub(super) max: Option<RawDuration>,
    pub(super) multiplier: Option<f64>,
    /// A string rather than `retry::Jitter`, so a bad value is one of many reported errors.
    pub(super) jitter: Option<String>,
}

/// A duration as written (`"250ms"`); parsed by `validate`. Exists for its serde expectation
/// message, which tells someone who wrote `timeout = 30` what to write instead.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawDuration(pub(super) String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration like "250ms", "30s", "5m""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A byte size as written: an integer count of bytes or a string such as `"512KiB"`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RawByteSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;
        impl Visitor<'_> for ByteSizeVisitor {
            type Value = RawByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a byte size: an integer number of bytes or a string like "512KiB", "1MiB", "2MB""#)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawByteSize, E> {
                Ok(RawByteSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawByteSize, E> {
                Ok(RawByteSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawByteSize, E> {
                Ok(RawByteSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RawConfig, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let raw = parse("").unwrap();
        assert!(raw.server.listen.is_none());
        assert!(raw.functions.is_empty());
    }

    #[test]
    fn byte_sizes_accept_integers_and_strings() {
        let raw = parse("[server]\nbody_limit = 1024\nmax_result_bytes = \"6MiB\"\n").unwrap();
        assert_eq!(raw.server.body_limit, Some(RawByteSize::Bytes(1024)));
        assert_eq!(raw.server.max_result_bytes, Some(RawByteSize::Text("6MiB".into())));
    }

    #[test]
    fn byte_size_of_wrong_type_says_what_is_expected() {
        assert_eq!(
            parse("[server]\nbody_limit = true\n").unwrap_err(),
            r#"server.body_limit: invalid type: boolean `true`, expected a byte size: an integer number of bytes or a string like "512KiB", "1MiB", "2MB""#
        );
    }

    #[test]
    fn duration_given_as_integer_says_what_is_expected() {
        assert_eq!(
            parse("[functions.a]\ntimeout = 30\n").unwrap_err(),
            r#"functions.a.timeout: invalid type: integer `30`, expected a duration like "250ms", "30s", "5m""#
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        assert_eq!(
            parse("[functions.a.retry]\nattempts = 3\n").unwrap_err(),
            "functions.a.retry.attempts: unknown field `attempts`, expected one of \
             `max_attempts`, `initial`, `max`, `multiplier`, `jitter`"
        );
    }
}
