//! `GET /v1/functions` and `GET /v1/functions/{name}`: each function's configuration and live
//! state — in-flight attempts, flow control (paused, waiting callers, queued work, breaker), and
//! for `command` functions their instances and cold starts. `POST …/pause` and `…/resume`.
//! A command's `env` is shown by name only: its values may be secrets.
//!
//! One type per answer: the structs below are serialized as they are documented.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::config::{CommandConfig, FunctionTarget};
use keel_core::retry::Jitter;
use keel_core::store::QueueStats;
use keel_core::system_events;
use serde::Serialize;
use utoipa::ToSchema;

use crate::functions::Function;
use crate::problem::Problem;
use crate::runtime::process::PoolView;
use crate::state::Shared;

/// Every function, with its configuration and live state.
///
/// In name order. A short list: never paginated, but in the list shape so clients handle it
/// like the others.
#[utoipa::path(
    get,
    path = "/v1/functions",
    tag = "functions",
    operation_id = "listFunctions",
    responses((status = 200, description = "Every configured function.", body = FunctionList))
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<FunctionList>, Problem> {
    let queued = queued(&shared).await?;
    let items = shared.functions.iter().map(|f| view(&shared, f, &queued)).collect();
    Ok(Json(FunctionList { items, next_cursor: None }))
}

/// One function, with its configuration and live state.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    tag = "functions",
    operation_id = "getFunction",
    params(("name" = String, Path, description = "The function.")),
    responses(
        (status = 200, description = "The function.", body = FunctionView),
        (status = 404, description = "No function of that name is configured (`unknown-function`)."),
    )
)]
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, Problem> {
    let f = shared.functions.get(&name).ok_or_else(|| Problem::unknown_function(&name))?;
    Ok(Json(view(&shared, f, &queued(&shared).await?)))
}

/// Pause a function: it starts no attempts until resumed.
///
/// Stored, so it holds across restarts and on every node: no node leases its queued work from
/// the moment this answers; other nodes read the pauses every second (until then they may still
/// start a sync call or an invocation they admit). Async
/// invocations are still accepted and held; sync calls get 503 `function-paused`. Attempts
/// already running finish. Pausing a paused function changes nothing.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/pause",
    tag = "functions",
    operation_id = "pauseFunction",
    params(("name" = String, Path, description = "The function.")),
    responses(
        (status = 200, description = "Paused: the function as it is now.", body = FunctionView),
        (status = 404, description = "No function of that name is configured (`unknown-function`)."),
        (status = 503, description = super::openapi::UNAVAILABLE_OR_DRAINING, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn pause(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, Problem> {
    set_paused(shared, actor, name, true).await
}

/// Resume a paused function: its held work starts, on every node.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/resume",
    tag = "functions",
    operation_id = "resumeFunction",
    params(("name" = String, Path, description = "The function.")),
    responses(
        (status = 200, description = "Resumed: the function as it is now.", body = FunctionView),
        (status = 404, description = "No function of that name is configured (`unknown-function`)."),
        (status = 503, description = super::openapi::UNAVAILABLE_OR_DRAINING, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn resume(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, Problem> {
    set_paused(shared, actor, name, false).await
}

async fn set_paused(
    shared: Arc<Shared>,
    actor: super::access::Actor,
    name: String,
    paused: bool,
) -> Result<Json<FunctionView>, Problem> {
    let f = shared.functions.get(&name).ok_or_else(|| Problem::unknown_function(&name))?.clone();
    let now = shared.clock.now_ms();
    // In a task of its own: once stored, the flag here must follow even if the client left.
    let (shared2, f2) = (shared.clone(), f.clone());
    super::admit_fully(async move {
        let f = f2;
        shared2.store.set_paused(&name, paused, now).await?;
        if f.flow.set_paused(paused) {
            tracing::info!(function = %name, paused, "function {}", if paused { "paused" } else { "resumed" });
            let kind = if paused { system_events::FUNCTION_PAUSED } else { system_events::FUNCTION_RESUMED };
            shared2.system_events.emit(
                kind,
                &name,
                serde_json::json!({ "function": name, "by": actor.principal.actor() }),
            );
        }
        if !paused {
            f.work_queued();
        }
        let action = if paused { "function.pause" } else { "function.resume" };
        actor.record(&shared2, action, &name, serde_json::json!({ "paused": paused })).await;
        Ok(())
    })
    .await?;
    Ok(Json(view(&shared, &f, &queued(&shared).await?)))
}

/// The backlog of every function and subscription, every node's (one grouped query).
pub(crate) async fn backlog(shared: &Shared) -> Result<Vec<QueueStats>, Problem> {
    Ok(shared.store.queue_stats(shared.clock.now_ms()).await?)
}

/// Every function's view with its queued work taken from `backlog` (read earlier): the
/// console's overview, which reads the backlog less often than it shows the live state.
pub(crate) fn list_with(shared: &Shared, backlog: &[QueueStats]) -> FunctionList {
    let queued: Vec<_> = backlog.iter().map(|s| (s.function.clone(), s.waiting)).collect();
    FunctionList { items: shared.functions.iter().map(|f| view(shared, f, &queued)).collect(), next_cursor: None }
}

/// Queued and retrying work per function, every node's (one grouped query).
async fn queued(shared: &Shared) -> Result<Vec<(String, u64)>, Problem> {
    let stats = shared.store.queue_stats(shared.clock.now_ms()).await?;
    Ok(stats.into_iter().map(|s| (s.function, s.waiting)).collect())
}

fn view(shared: &Shared, f: &Function, queued: &[(String, u64)]) -> FunctionView {
    let config = &f.config;
    let retry = &config.retry;
    let flow = &config.flow;
    let now = shared.clock.now_ms();
    let pool = shared.runtime.pool(&config.name).map(|p| p.view());
    FunctionView {
        name: config.name.clone(),
        kind: match config.target {
            FunctionTarget::Url(_) => Kind::Url,
            FunctionTarget::Command(_) => Kind::Command,
        },
        timeout: human(config.timeout),
        sync_timeout: human(config.sync_timeout),
        concurrency: config.concurrency,
        batch: config.batch.map(|b| BatchView { max_size: b.max_size, max_wait: human(b.max_wait) }),
        http2: config.http2,
        retry: RetryView {
            max_attempts: retry.max_attempts,
            initial: human(retry.initial),
            max: human(retry.max),
            multiplier: retry.multiplier,
            jitter: retry.jitter.into(),
        },
        in_flight: f.in_flight() as u32,
        paused: f.flow.is_paused(),
        waiting: f.flow.waiting(),
        max_waiting: flow.max_waiting,
        queued: queued.iter().filter(|(name, _)| *name == config.name).map(|(_, n)| n).sum(),
        max_queued: flow.max_queued,
        rate_limit: flow.rate_limit.map(|r| RateLimitView { per_second: r.per_second, burst: r.burst }),
        concurrency_key: flow
            .concurrency_key
            .as_ref()
            .map(|k| ConcurrencyKeyView { header: k.header.clone(), limit: k.limit }),
        breaker: f.flow.breaker_view(now).map(|b| BreakerView {
            state: b.state.as_str(),
            since: rfc3339(b.since),
            failures: b.failures,
        }),
        url: config.url().map(|u| u.to_string()),
        command: config.command().map(command_view),
        instances: pool.as_ref().map(instances),
        cold_starts: pool.as_ref().map(cold_starts),
        waiting_for_instance: pool.as_ref().map(|p| p.waiting as u64),
        sandbox: pool.as_ref().and_then(|p| p.sandbox.as_ref()).map(|s| SandboxView {
            applied: s.applied.clone(),
            unavailable: s
                .unavailable
                .iter()
                .map(|u| UnavailableView { name: u.name, reason: u.reason.clone() })
                .collect(),
        }),
        last_error: pool.and_then(|p| p.last_error),
    }
}

fn command_view(c: &CommandConfig) -> CommandView {
    CommandView {
        command: c.command.clone(),
        env: c.env.keys().cloned().collect(),
        cwd: c.cwd.as_ref().map(|p| p.display().to_string()),
        path: c.path.clone(),
        health_path: c.health_path.clone(),
        min_instances: c.min_instances,
        max_instances: c.max_instances,
        instance_concurrency: c.instance_concurrency,
        idle_timeout: human(c.idle_timeout),
        startup_timeout: human(c.startup_timeout),
    }
}

fn instances(view: &PoolView) -> Vec<InstanceView> {
    view.instances
        .iter()
        .map(|i| InstanceView {
            id: i.id,
            pid: i.pid,
            port: i.port,
            state: i.state,
            in_flight: i.in_flight,
            started_at: rfc3339(i.started_at),
        })
        .collect()
}

fn cold_starts(view: &PoolView) -> ColdStarts {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    ColdStarts { count: view.cold_starts, last_ms: ms(view.last_cold_start), p50_ms: ms(view.p50_cold_start) }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Every function, in name order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FunctionList {
    items: Vec<FunctionView>,
    /// Always null: the list is never paginated.
    next_cursor: Option<String>,
}

/// A function's configuration and live state (on this node, but `paused` and `queued`, which
/// are every node's). Durations are humantime (`30s`, `1m 30s`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Function)]
pub(crate) struct FunctionView {
    name: String,
    kind: Kind,
    /// The limit of one attempt.
    timeout: String,
    /// A sync invoke's whole deadline, retries included.
    sync_timeout: String,
    /// Attempts in flight at once, at most; for a batch function, batch requests in flight.
    concurrency: u32,
    /// Async work delivered in batches; null: one invocation a request.
    batch: Option<BatchView>,
    /// Attempts go to the function over HTTP/2 (`http2 = true`); false: HTTP/1.1.
    http2: bool,
    retry: RetryView,
    /// Attempts in flight now, on this node.
    in_flight: u32,
    /// Paused: no attempts start until resumed.
    paused: bool,
    /// Sync callers waiting for a free slot now, on this node.
    waiting: u32,
    /// Sync callers that may wait for a slot; one more is answered 503 `overloaded`.
    max_waiting: u32,
    /// Queued and retrying invocations, every node's.
    queued: u64,
    /// Async admissions beyond this many queued are answered 429 `queue-full`; null: no cap.
    max_queued: Option<u64>,
    /// Attempts started per second, at most; null: no limit.
    rate_limit: Option<RateLimitView>,
    /// Attempts in flight per value of a request header, at most; null: no limit.
    concurrency_key: Option<ConcurrencyKeyView>,
    /// The function's circuit breaker on this node; null when none is configured.
    breaker: Option<BreakerView>,
    /// Where a `url` function is called.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    url: Option<String>,
    /// How a `command` function is run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    command: Option<CommandView>,
    /// The instances of a `command` function on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    instances: Option<Vec<InstanceView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    cold_starts: Option<ColdStarts>,
    /// `command` functions: attempts waiting for an instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    waiting_for_instance: Option<u64>,
    /// `command` functions: the latest failed start or crash, with what the program printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// `command` functions with `sandbox`: which of its settings this host applies to each
    /// instance, and which it cannot enforce here (and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<SandboxView>,
}

/// What of a function's `sandbox` is enforced on this node.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Sandbox)]
struct SandboxView {
    /// Applied to every instance: `memory`, `open_files`, `processes`, `cpu`, `user`,
    /// `no_new_privs`, `read`, `write`.
    applied: Vec<&'static str>,
    /// Set but not enforceable here (`processes` for root, `read`/`write` without Landlock).
    unavailable: Vec<UnavailableView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SandboxUnavailable)]
struct UnavailableView {
    name: &'static str,
    reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Url,
    Command,
}

/// The retry policy.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Retry)]
struct RetryView {
    max_attempts: u32,
    initial: String,
    max: String,
    multiplier: f64,
    jitter: JitterView,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Jitter)]
enum JitterView {
    Full,
    Equal,
    Decorrelated,
    None,
}

impl From<Jitter> for JitterView {
    fn from(j: Jitter) -> Self {
        match j {
            Jitter::Full => JitterView::Full,
            Jitter::Equal => JitterView::Equal,
            Jitter::Decorrelated => JitterView::Decorrelated,
            Jitter::None => JitterView::None,
        }
    }
}

/// `batch`: up to `max_size` items a request, the first waiting at most `max_wait` for others.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Batch)]
struct BatchView {
    max_size: u32,
    max_wait: String,
}

/// `rate_limit`: attempts started, at most `per_second` on average, `burst` at once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RateLimit)]
pub(super) struct RateLimitView {
    pub(super) per_second: f64,
    pub(super) burst: u32,
}

/// `concurrency_key`: at most `limit` attempts in flight per value of `header`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConcurrencyKey)]
struct ConcurrencyKeyView {
    header: String,
    limit: u32,
}

/// A circuit breaker's state.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Breaker)]
pub(super) struct BreakerView {
    /// `closed`, `open` or `half-open`.
    #[schema(pattern = "^(closed|open|half-open)$")]
    pub(super) state: &'static str,
    /// When it entered this state.
    #[schema(format = DateTime)]
    pub(super) since: String,
    /// Failures counted toward opening (closed), or that opened it.
    pub(super) failures: u32,
}

/// A `command` function's program. Its environment is shown by name only: values may be secrets.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Command)]
struct CommandView {
    command: Vec<String>,
    /// The names of the variables set.
    env: Vec<String>,
    cwd: Option<String>,
    /// The path each call is sent to.
    path: String,
    health_path: Option<String>,
    min_instances: u32,
    max_instances: u32,
    instance_concurrency: u32,
    idle_timeout: String,
    startup_timeout: String,
}

/// One running instance of a `command` function.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Instance)]
struct InstanceView {
    id: u64,
    pid: Option<u32>,
    port: u16,
    /// `starting`, `ready` or `stopping`.
    #[schema(pattern = "^(starting|ready|stopping)$")]
    state: &'static str,
    in_flight: u32,
    #[schema(format = DateTime)]
    started_at: String,
}

/// Cold starts of a `command` function on this node.
#[derive(Debug, Serialize, ToSchema)]
struct ColdStarts {
    count: u64,
    last_ms: Option<f64>,
    p50_ms: Option<f64>,
}
