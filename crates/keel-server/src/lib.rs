//! Keel's server: the HTTP gateway, the dispatcher and the runtimes that call functions, and
//! the `keel` command line.
//!
//! # Layout
//!
//! - [`server`]: start a node on a bound listener ([`server::Node::start`]), serve until a
//!   shutdown signal, then drain ([`serve`] wires that to SIGTERM/SIGINT for `keel serve`).
//! - `listener/`: accepting connections under `server.max_connections`, and serving each with
//!   the header, body and idle timeouts.
//! - `api/`: the HTTP API (axum): one file per area (`invoke` and `bulk`, `invocations`, `dlq`, `functions`, `health`),
//!   `problem` (RFC 9457 errors), `view` (JSON shapes), `body` (bodies and queries), `edge`
//!   (the firewall by client address and method/path, the throttles per address and per key).
//! - `dispatch/`: one dispatcher task per function (`mod.rs`), one async attempt (`attempt.rs`),
//!   a batch function's batches (`batch.rs`), sync invocations run in the request (`sync.rs`),
//!   the expired-lease sweeper (`sweeper.rs`).
//! - `runtime/`: how an attempt reaches a function (`url.rs`: pooled keep-alive HTTP client and
//!   the function contract; `process/`: the instance pool of each `command` function — cold
//!   starts, scale-out to `max_instances`, scale to zero, crash replacement, the watchdog).
//! - `functions.rs`: each function's bulkhead and wake-up signal; `flow.rs`: its flow control
//!   (pause, shedding, rate limit, per-key concurrency, breaker, queue cap); `state.rs`: what all share;
//!   `events.rs`: fan-out of events into deliveries and effects into what the store commits;
//!   `trace.rs`: W3C trace context; `faults.rs`: crash points for tests and chaos.
//! - `egress/`: functions' calls to their dependencies (`/v1/egress/…`): the caller check,
//!   breaker, rate limit, bulkhead, retries within a retry budget, forwarded idempotency keys.
//! - `scheduler.rs`: the task that turns due schedule ticks into invocations or events (every
//!   node runs it; the store makes each tick unique).
//! - `chaos.rs`: chaos faults on a node — the active set read from the store each second, and
//!   the hits the runtime (`runtime/mod.rs`), egress (`egress/call.rs`) and store edges ask for.
//! - `workflows.rs`: workflow runs (sagas): started with their first step, moved on in each
//!   step's completion (decided by `keel_core::workflow`), cancelled, counted when they end.
//! - `cluster.rs`: this node's heartbeat, the wake-ups other nodes send it, and the nodes it sees
//!   join and go (`keel.node.joined|lost`).
//! - [`regions`]: where this node's region stands (active, standby, fenced) from its database
//!   and its peers, the refusal of writes meanwhile, and the promotion of a standby region.
//! - `system_events.rs`: Keel's operational events (dead invocations, breakers, pauses, shedding,
//!   nodes) published to the reserved topic `keel.system`, rate-limited per kind.
//! - [`telemetry`]: logs, traces (OTLP), the Prometheus recorder and `/metrics`, the spans of
//!   requests and attempts; `metric_definitions.rs`: every metric's name, and the cheap calls
//!   that record them.
//! - [`sandbox`]: the limits of `command` functions' instances, applied by `keel __sandbox` (a
//!   trampoline between the watchdog and the program), what this host can enforce of them, and
//!   which limit a dead instance ran into.
//! - `fuzzing/`: a fuzz target per parser Keel owns (config, CloudEvents, effects, headers,
//!   cursors, names, tokens, networks), their corpus replay and the stable engine's runs.
//! - `console/`: the web console at `/console` (server-rendered pages over the API's own
//!   functions, behind its access layer).
//! - `cli/` and `main.rs`: the `keel` command.
#![forbid(unsafe_code)]

mod api;
mod auth;
mod body;
mod chaos;
pub mod client;
mod cluster;
pub mod console;
mod dispatch;
mod egress;
mod events;
mod faults;
mod flow;
mod functions;
/// The fuzz targets of every parser Keel owns, for the cargo-fuzz crate in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing;
mod header_values;
mod limits;
mod listener;
mod metric_definitions;
mod problem;
pub mod regions;
mod replay_cache;
mod runtime;
pub mod sandbox;
mod scheduler;
pub mod server;
#[cfg(test)]
mod sim;
mod state;
mod system_events;
pub mod telemetry;
mod trace;
mod workflows;

/// Every route of the HTTP API (the OpenAPI test checks that each one is documented).
pub use api::{route_scopes, routes};
/// Chaos experiments: `keel chaos run` and the example's `demo`.
pub use chaos::experiment;
pub use listener::lanes;
pub use server::{serve, Node, NodeOptions, TlsError};

/// What `keel keys … -c keel.toml` needs to write keys straight into the store.
pub use auth::secret::new_signing_key;
/// Keel's https-capable HTTP client, built once per `keel` command as for every outgoing call.
pub use runtime::client::{
    build_client as build_https_client, ClientError as HttpsSetupError, HttpClient as HttpsClient,
};

/// Makes an API key in `store` directly, with no server involved (what `keel keys create -c`
/// and the example backend's quick start do), and records it in the audit log as `local`.
/// Returns the key and its secret, which nothing keeps: show it once.
pub async fn create_api_key(
    store: &dyn keel_core::store::Store,
    name: &str,
    scopes: Vec<keel_core::auth::Scope>,
    expires_at: Option<keel_core::clock::Millis>,
) -> keel_core::Result<(keel_core::auth::ApiKey, String)> {
    use keel_core::clock::Clock;
    let now = keel_core::clock::SystemClock.now_ms();
    let (key, secret) = auth::secret::new_api_key(name, scopes, expires_at, now);
    store.create_api_key(key.clone()).await?;
    let detail = serde_json::json!({ "name": key.name, "scopes": key.scopes });
    let entry =
        keel_core::auth::AuditEntry::new(now, keel_core::auth::ACTOR_LOCAL, "key.create", &key.id, None, detail);
    store.audit(entry).await?;
    Ok((key, secret))
}
