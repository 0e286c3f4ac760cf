//! The Prometheus recorder (installed once per process, no HTTP listener of its own) and the
//! `/metrics` scrape: gauges of the backlog, the DLQ, attempts in flight and instances are
//! sampled here, once per scrape — never on the request path.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metric_definitions as m;
use crate::state::Shared;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const SECONDS_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const GROUP_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide recorder on first call. `None` when another recorder was
/// installed first (an embedding program's): metrics then go there and `/metrics` is empty.
pub(crate) fn install_recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(keel_store::metric_definitions::STORE_COMMIT_GROUP_SIZE.into()),
                        &GROUP_SIZE_BUCKETS,
                    )
                })
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            // There at 0 from the first scrape, for an alert on its rate.
            counter!(m::LOG_LINES_DROPPED_TOTAL).absolute(0);
            counter!(m::SYNC_ANSWERS_HELD_TOTAL).absolute(0);
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use keel_store::metric_definitions as store;
    describe_counter!(m::INVOCATIONS_ACCEPTED_TOTAL, "Invocations admitted, by function and kind");
    describe_counter!(m::INVOCATIONS_COMPLETED_TOTAL, "Invocations that ended, by function and outcome");
    describe_counter!(m::ATTEMPTS_TOTAL, "Attempts, by function and outcome");
    describe_histogram!(m::ATTEMPT_DURATION_SECONDS, Unit::Seconds, "Attempt duration");
    describe_counter!(m::RETRIES_SCHEDULED_TOTAL, "Retries scheduled after failed async attempts");
    describe_gauge!(m::ATTEMPTS_IN_FLIGHT, "Attempts running now");
    describe_gauge!(m::QUEUE_DEPTH_INVOCATIONS, "Invocations waiting for an attempt");
    describe_gauge!(m::QUEUE_OLDEST_DUE_AGE_SECONDS, Unit::Seconds, "Age of the oldest due invocation");
    describe_gauge!(m::DLQ_INVOCATIONS, "Invocations in the DLQ, by function and subscription");
    describe_counter!(m::HTTP_REQUESTS_TOTAL, "HTTP requests, by method, route and status");
    describe_histogram!(m::HTTP_REQUEST_DURATION_SECONDS, Unit::Seconds, "HTTP request latency");
    describe_counter!(m::LOG_LINES_DROPPED_TOTAL, "Log lines dropped because stdout's reader fell behind");
    describe_gauge!(m::SYNC_RECORDS_BEHIND, "Records of sync calls on their way to the store");
    describe_counter!(
        m::SYNC_ANSWERS_HELD_TOTAL,
        "Sync calls whose answer waited for its record: records past their bound"
    );
    describe_gauge!(m::HTTP_CONNECTIONS_OPEN, "HTTP connections open now");
    describe_counter!(m::HTTP_CONNECTIONS_CLOSED_TOTAL, "HTTP connections closed or refused by Keel, by reason");
    describe_counter!(m::EDGE_REFUSALS_TOTAL, "Requests refused at the API's edge (firewall, throttles), by rule");
    describe_counter!(m::INVALID_INPUT_TOTAL, "Bodies and events refused by a JSON Schema, by target and kind");
    describe_counter!(m::SYSTEM_EVENTS_TOTAL, "Keel's own events published to keel.system, by kind");
    describe_counter!(m::SYSTEM_EVENTS_SUPPRESSED_TOTAL, "Keel's own events held back by the rate limit per kind");
    describe_counter!(m::SYSTEM_EVENTS_DROPPED_TOTAL, "Keel's own events lost, by reason");
    describe_gauge!(m::FUNCTION_INSTANCES, "Running instances of a command function");
    describe_counter!(m::FUNCTION_COLD_STARTS_TOTAL, "Cold starts of a command function's instances");
    describe_counter!(m::SHED_TOTAL, "Calls and admissions refused by flow control, by function and reason");
    describe_gauge!(m::BREAKER_STATE, "Breaker state by target: 0 closed, 1 open, 2 half-open");
    describe_counter!(m::BREAKER_TRANSITIONS_TOTAL, "Breaker changes of state, by target and new state");
    describe_counter!(m::SCHEDULE_FIRED_TOTAL, "Schedule ticks that made their invocation or event, by schedule");
    describe_counter!(m::SCHEDULE_TICKS_MISSED_TOTAL, "Schedule ticks passed over without firing, by schedule");
    describe_counter!(m::WORKFLOW_RUNS_STARTED_TOTAL, "Workflow runs started, by workflow");
    describe_counter!(m::CHAOS_INJECTED_TOTAL, "Chaos faults injected, by target and kind");
    describe_counter!(m::WORKFLOW_RUNS_TOTAL, "Workflow runs ended, by workflow and status");
    describe_histogram!(m::WORKFLOW_RUN_DURATION_SECONDS, Unit::Seconds, "Workflow run duration, start to end");
    describe_counter!(m::EGRESS_REQUESTS_TOTAL, "Egress calls to dependencies, by dependency and outcome");
    describe_histogram!(m::EGRESS_DURATION_SECONDS, Unit::Seconds, "Egress call duration, retries included");
    describe_gauge!(m::RETRY_BUDGET_AVAILABLE, "Retries a dependency's retry budget could pay for now");
    describe_gauge!(m::REGION_INFO, "1 for this node's region, by region, role and standing");
    describe_gauge!(m::REGION_EPOCH, "The epoch of this node's region database (promotions seen)");
    describe_gauge!(m::REGION_OUTBOX_PENDING, "Events waiting in the outbox for a peer region, by peer");
    describe_counter!(m::REGION_EVENTS_REPLICATED_TOTAL, "Events a peer region acknowledged, by peer");
    describe_counter!(m::REGION_EVENTS_RECEIVED_TOTAL, "Events received from peer regions, by origin and outcome");
    describe_histogram!(store::STORE_COMMIT_DURATION_SECONDS, Unit::Seconds, "Store group-commit latency");
    describe_histogram!(store::STORE_COMMIT_GROUP_SIZE, "Jobs committed together in one group");
}

/// The Prometheus text of this process, after sampling the gauges of `shared`.
pub(crate) async fn render(shared: &Shared) -> String {
    let Some(handle) = install_recorder() else { return String::new() };
    sample(shared).await;
    handle.run_upkeep();
    handle.render()
}

async fn sample(shared: &Shared) {
    let now = shared.clock.now_ms();
    gauge!(m::SYNC_RECORDS_BEHIND).set(shared.behind.on_their_way() as f64);
    // Every configured (function, subscription) gets a value, 0 unless the store says more.
    let mut depth: BTreeMap<&str, (u64, Option<i64>)> = BTreeMap::new();
    let mut dlq: BTreeMap<(String, String), u64> = BTreeMap::new();
    for function in shared.functions.iter() {
        let name = function.config.name.as_str();
        depth.insert(name, (0, None));
        dlq.insert((name.to_owned(), String::new()), 0);
        gauge!(m::ATTEMPTS_IN_FLIGHT, "function" => name.to_owned()).set(shared.runtime.running(name) as f64);
        if let Some(pool) = shared.runtime.pool(name) {
            let view = pool.view();
            gauge!(m::FUNCTION_INSTANCES, "function" => name.to_owned()).set(view.instances.len() as f64);
            counter!(m::FUNCTION_COLD_STARTS_TOTAL, "function" => name.to_owned()).absolute(view.cold_starts);
        }
    }
    for dependency in shared.egress.iter() {
        let available = dependency.budget_available(now) as f64;
        gauge!(m::RETRY_BUDGET_AVAILABLE, "dependency" => dependency.name().to_owned()).set(available);
    }
    if let Some(config) = shared.region.config() {
        let view = shared.region.view();
        for standing in ["active", "standby", "fenced"] {
            let labels = [
                ("region", config.name.clone()),
                ("role", config.role.as_str().to_owned()),
                ("standing", standing.to_owned()),
            ];
            gauge!(m::REGION_INFO, &labels).set(if view.standing == standing { 1.0 } else { 0.0 });
        }
        if let Some(epoch) = view.epoch {
            gauge!(m::REGION_EPOCH, "region" => config.name.clone()).set(epoch as f64);
        }
        if config.role == keel_core::region::Role::Active {
            match shared.store.outbox_depth().await {
                Ok(depths) => {
                    for peer in config.peers.keys() {
                        let pending = depths.iter().find(|(p, _)| p == peer).map_or(0, |(_, n)| *n);
                        gauge!(m::REGION_OUTBOX_PENDING, "peer" => peer.clone()).set(pending as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sampling the region outbox for /metrics failed"),
            }
        }
    }
    for sub in &shared.config.subscriptions {
        dlq.insert((sub.function.clone(), sub.name.clone()), 0);
    }
    match shared.store.queue_stats(now).await {
        Ok(rows) => {
            for row in &rows {
                if let Some((waiting, oldest)) = depth.get_mut(row.function.as_str()) {
                    *waiting += row.waiting;
                    *oldest = match (*oldest, row.oldest_due_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                *dlq.entry((row.function.clone(), row.subscription.clone().unwrap_or_default())).or_default() +=
                    row.dead;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "sampling the queue for /metrics failed");
            return;
        }
    }
    for (function, (waiting, oldest)) in depth {
        let age = oldest.map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
        gauge!(m::QUEUE_DEPTH_INVOCATIONS, "function" => function.to_owned()).set(waiting as f64);
        gauge!(m::QUEUE_OLDEST_DUE_AGE_SECONDS, "function" => function.to_owned()).set(age);
    }
    for ((function, subscription), dead) in dlq {
        gauge!(m::DLQ_INVOCATIONS, "function" => function, "subscription" => subscription).set(dead as f64);
    }
}
