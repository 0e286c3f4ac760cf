//! Egress: the calls functions make to their dependencies (`[dependencies.NAME]`) through
//! `ANY /v1/egress/{dependency}/{path}`, with Keel's protection around each — the caller check,
//! breaker, rate limit, bulkhead, timeout, retries paid for by a retry budget, the idempotency
//! keys forwarded and the configured headers added.
//!
//! # Layout
//! - this file: each dependency's live state ([`Dependency`]) and its counters.
//! - `bulkhead`: calls in flight and callers queued for a place.
//! - `call`: one call, from the caller check to the dependency's answer.
//!
//! Everything here is per node, like functions' flow control.

mod bulkhead;
pub(crate) mod call;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use keel_core::clock::Millis;
use keel_core::config::{Config, DependencyConfig};
use keel_core::flow::breaker::{Breaker, BreakerView};
use keel_core::flow::budget::RetryBudget;
use keel_core::flow::rate::Gcra;
use metrics::{counter, histogram, Counter, Histogram};

pub(crate) use bulkhead::Bulkhead;
pub(crate) use call::{forward, EgressRequest, PassedThrough};

/// Why a call was answered by Keel without (or instead of) the dependency's answer.
pub(crate) const SHED_REASONS: [&str; 3] = ["breaker-open", "rate-limited", "bulkhead-full"];

/// Outcomes of `keel_egress_requests_total`: the dependency answered (`success`, or `failure` for
/// a 5xx), gave no answer in time or at all, or Keel refused the call.
pub(crate) const OUTCOMES: [&str; 7] =
    ["success", "failure", "timeout", "unreachable", "breaker-open", "rate-limited", "bulkhead-full"];

/// The outbound client of every dependency, http:// or https:// (the system's roots), built once.
pub(crate) type HttpClient = crate::runtime::client::HttpClient<Full<Bytes>>;

/// Every dependency's live state.
#[derive(Debug)]
pub(crate) struct Egress {
    dependencies: BTreeMap<String, Arc<Dependency>>,
    /// The shared client (the system's roots), for dependencies without a `ca_file`.
    client: HttpClient,
    /// A client per dependency with a `ca_file` (its CA trusted for it alone); dependencies
    /// naming the same file share one.
    private_ca: BTreeMap<String, HttpClient>,
}

impl Egress {
    /// Registers each dependency's metrics; call after the recorder is installed.
    pub(crate) fn new(
        config: &Config,
        now: Millis,
        events: &crate::system_events::SystemEvents,
    ) -> Result<Self, crate::runtime::client::ClientError> {
        let client = crate::runtime::client::build_client(&[])?;
        let mut by_file: BTreeMap<&std::path::Path, HttpClient> = BTreeMap::new();
        let mut private_ca = BTreeMap::new();
        for dependency in config.dependencies.values() {
            let Some(ca_file) = dependency.ca_file.as_deref() else { continue };
            let client = match by_file.get(ca_file) {
                Some(client) => client.clone(),
                None => {
                    let client = crate::runtime::client::build_client(&[ca_file.to_path_buf()])?;
                    by_file.insert(ca_file, client.clone());
                    client
                }
            };
            private_ca.insert(dependency.name.clone(), client);
        }
        let dependencies = config
            .dependencies
            .values()
            .map(|d| (d.name.clone(), Arc::new(Dependency::new(d.clone(), now, events))))
            .collect();
        Ok(Self { dependencies, client, private_ca })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Dependency>> {
        self.dependencies.get(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Dependency>> {
        self.dependencies.values()
    }

    /// The client that calls `dependency`: its own when it has a `ca_file`, else the shared one.
    pub(crate) fn client(&self, dependency: &str) -> &HttpClient {
        self.private_ca.get(dependency).unwrap_or(&self.client)
    }
}

/// One dependency: its configuration, breaker, limiter, bulkhead, retry budget and counters.
#[derive(Debug)]
pub(crate) struct Dependency {
    pub(crate) config: DependencyConfig,
    breaker: Option<crate::flow::ReportedBreaker>,
    rate: Option<Mutex<Gcra>>,
    pub(crate) bulkhead: Bulkhead,
    budget: Mutex<RetryBudget>,
    pub(crate) counters: Counters,
    metrics: DependencyMetrics,
}

/// What `GET /v1/dependencies` counts, since this node started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Calls let in (past the caller check).
    pub(crate) requests: AtomicU64,
    /// Retries sent to the dependency.
    pub(crate) retries: AtomicU64,
    /// Calls whose last answer was a failure: a 5xx, a timeout, no connection.
    pub(crate) failures: AtomicU64,
    /// Calls answered by Keel, by reason of [`SHED_REASONS`].
    pub(crate) shed: [AtomicU64; 3],
}

#[derive(Debug)]
struct DependencyMetrics {
    outcomes: [Counter; 7],
    duration: Histogram,
}

impl Dependency {
    fn new(config: DependencyConfig, now: Millis, events: &crate::system_events::SystemEvents) -> Self {
        let name = config.name.clone();
        if config.breaker.is_some() {
            metrics::gauge!(crate::metric_definitions::BREAKER_STATE, "target" => name.clone()).set(0.0);
        }
        Self {
            breaker: config.breaker.map(|b| {
                crate::flow::ReportedBreaker::new(&name, crate::flow::BreakerOf::Dependency, b, now, events)
            }),
            rate: config.rate_limit.map(|r| Mutex::new(Gcra::new(r))),
            bulkhead: Bulkhead::new(config.bulkhead),
            budget: Mutex::new(RetryBudget::new(config.retry_budget, now)),
            counters: Counters::default(),
            metrics: DependencyMetrics {
                outcomes: OUTCOMES.map(|o| {
                    counter!(crate::metric_definitions::EGRESS_REQUESTS_TOTAL, "dependency" => name.clone(), "outcome" => o)
                }),
                duration: histogram!(crate::metric_definitions::EGRESS_DURATION_SECONDS, "dependency" => name.clone()),
            },
            config,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs `op` on the breaker, if there is one, and reports the move it made, if any.
    fn with_breaker<T>(&self, now: Millis, op: impl FnOnce(&mut Breaker) -> T) -> Option<T> {
        self.breaker.as_ref().map(|b| b.with(now, op))
    }

    pub(crate) fn breaker_view(&self, now: Millis) -> Option<BreakerView> {
        self.with_breaker(now, |b| b.view(now))
    }

    /// Retries the budget could pay for now.
    pub(crate) fn budget_available(&self, now: Millis) -> u64 {
        lock(&self.budget).available(now)
    }

    /// A call refused by Keel, counted by reason.
    fn shed(&self, reason: &'static str) {
        if let Some(i) = SHED_REASONS.iter().position(|r| *r == reason) {
            self.counters.shed[i].fetch_add(1, Ordering::Relaxed);
        }
        self.outcome(reason, None);
    }

    /// Counts a call's outcome (and its duration when the dependency was called).
    fn outcome(&self, outcome: &'static str, took: Option<Duration>) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.metrics.outcomes[i].increment(1);
        }
        if let Some(took) = took {
            self.metrics.duration.record(took.as_secs_f64());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
