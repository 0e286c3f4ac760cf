//! `GET /v1/dependencies` and `GET /v1/dependencies/{name}`: each dependency's configuration
//! and live state on this node — breaker, calls in flight and queued, the retry budget, counters.
//! Configured headers are shown by name only: their values may be secrets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keel_core::clock::rfc3339;
use serde::Serialize;
use utoipa::ToSchema;

use super::functions::{BreakerView, RateLimitView};
use crate::egress::Dependency;
use crate::problem::Problem;
use crate::state::Shared;

/// Every dependency, with its configuration and live state.
///
/// In name order; never paginated, but in the list shape.
#[utoipa::path(
    get,
    path = "/v1/dependencies",
    tag = "functions",
    operation_id = "listDependencies",
    responses((status = 200, description = "Every configured dependency.", body = DependencyList))
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Json<DependencyList> {
    let items = shared.egress.iter().map(|d| view(&shared, d)).collect();
    Json(DependencyList { items, next_cursor: None })
}

/// One dependency, with its configuration and live state.
#[utoipa::path(
    get,
    path = "/v1/dependencies/{name}",
    tag = "functions",
    operation_id = "getDependency",
    params(("name" = String, Path, description = "The dependency.")),
    responses(
        (status = 200, description = "The dependency.", body = DependencyView),
        (status = 404, description = "No dependency of that name is configured (`unknown-dependency`)."),
    )
)]
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<DependencyView>, Problem> {
    let dependency = shared.egress.get(&name).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-dependency",
            "Unknown dependency",
            format!("no dependency named {name:?} is configured"),
        )
    })?;
    Ok(Json(view(&shared, dependency)))
}

fn view(shared: &Shared, d: &Dependency) -> DependencyView {
    let now = shared.clock.now_ms();
    let config = &d.config;
    let counters = &d.counters;
    let shed = |i: usize| counters.shed[i].load(Ordering::Relaxed);
    DependencyView {
        name: config.name.clone(),
        url: config.url.to_string(),
        timeout: human(config.timeout),
        retry: DependencyRetryView {
            max_attempts: config.retry.max_attempts,
            initial: human(config.retry.initial),
            max: human(config.retry.max),
        },
        retry_budget: RetryBudgetView {
            ratio: config.retry_budget.ratio,
            min_per_second: config.retry_budget.min_per_second,
        },
        bulkhead: BulkheadView {
            max_concurrent: config.bulkhead.max_concurrent,
            max_queued: config.bulkhead.max_queued,
            queue_timeout: human(config.bulkhead.queue_timeout),
        },
        rate_limit: config.rate_limit.map(|r| RateLimitView { per_second: r.per_second, burst: r.burst }),
        headers: config.headers.iter().map(|h| h.name.clone()).collect(),
        breaker: d.breaker_view(now).map(|b| BreakerView {
            state: b.state.as_str(),
            since: rfc3339(b.since),
            failures: b.failures,
        }),
        in_flight: d.bulkhead.in_flight(),
        queued: d.bulkhead.queued(),
        budget_available: d.budget_available(now),
        counters: CountersView {
            requests: counters.requests.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            failures: counters.failures.load(Ordering::Relaxed),
            shed: ShedView { breaker_open: shed(0), rate_limited: shed(1), bulkhead_full: shed(2) },
        },
    }
}

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Every dependency, in name order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DependencyList {
    items: Vec<DependencyView>,
    /// Always null: the list is never paginated.
    next_cursor: Option<String>,
}

/// A dependency's configuration and live state on this node. Durations are humantime.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Dependency)]
pub(crate) struct DependencyView {
    name: String,
    /// Where calls go: `/v1/egress/{name}/x` is sent to this URL + `/x`.
    url: String,
    /// A call's whole deadline, retries included.
    timeout: String,
    retry: DependencyRetryView,
    retry_budget: RetryBudgetView,
    bulkhead: BulkheadView,
    /// Calls a second, at most; null: no limit.
    rate_limit: Option<RateLimitView>,
    /// The names of the headers Keel adds (values are not shown).
    headers: Vec<String>,
    /// The dependency's circuit breaker on this node; null when none is configured.
    breaker: Option<BreakerView>,
    /// Calls to it in flight now.
    in_flight: u32,
    /// Calls waiting for a place in its bulkhead now.
    queued: u32,
    /// Retries the retry budget could pay for now.
    budget_available: u64,
    counters: CountersView,
}

/// `retry`: tries of one call, the first included, with a doubling, fully jittered backoff.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DependencyRetry)]
struct DependencyRetryView {
    max_attempts: u32,
    initial: String,
    max: String,
}

/// `retry_budget`: retries within `ratio` × calls plus `min_per_second` a second.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RetryBudget)]
struct RetryBudgetView {
    ratio: f64,
    min_per_second: u32,
}

/// `bulkhead`: calls in flight at once, callers that may wait, and for how long.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Bulkhead)]
struct BulkheadView {
    max_concurrent: u32,
    max_queued: u32,
    queue_timeout: String,
}

/// Counts since this node started.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DependencyCounters)]
struct CountersView {
    /// Calls from functions allowed to make them.
    requests: u64,
    /// Retries sent.
    retries: u64,
    /// Calls whose last answer was a failure: a 5xx, a timeout, no connection.
    failures: u64,
    shed: ShedView,
}

/// Calls answered by Keel itself, by reason.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DependencyShed)]
struct ShedView {
    #[serde(rename = "breaker-open")]
    breaker_open: u64,
    #[serde(rename = "rate-limited")]
    rate_limited: u64,
    #[serde(rename = "bulkhead-full")]
    bulkhead_full: u64,
}
