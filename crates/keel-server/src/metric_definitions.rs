//! Every metric the server exports, named once (units in the names), and the cheap calls the
//! gateway and the dispatcher make to record them. The store's own metrics are in
//! `keel_store::metric_definitions`; the recorder and the scrape are in `telemetry`.
//!
//! Each function's counters are registered at start (so every series is there, at 0, from the
//! first scrape) and kept as handles: recording is an atomic add, with no label set to build.

use std::collections::BTreeMap;

use keel_core::config::Config;
use keel_core::invocation::{CommitEffects, Transition};
use keel_core::lifecycle::AttemptReport;
use keel_core::outcome::Outcome;
use metrics::{counter, gauge, histogram, Counter, Histogram};

/// Invocations admitted, by `function` and `kind` (`sync`, `async`, `delivery`).
pub(crate) const INVOCATIONS_ACCEPTED_TOTAL: &str = "keel_invocations_accepted_total";
/// Invocations that reached an end, by `function` and `outcome` (`succeeded`, `failed`, `dead`).
pub(crate) const INVOCATIONS_COMPLETED_TOTAL: &str = "keel_invocations_completed_total";
/// Attempts made, by `function` and `outcome` (`success`, `transient`, `permanent`, `timeout`, `conflict`).
pub(crate) const ATTEMPTS_TOTAL: &str = "keel_attempts_total";
/// Attempt duration, by `function` and `outcome`.
pub(crate) const ATTEMPT_DURATION_SECONDS: &str = "keel_attempt_duration_seconds";
/// Retries scheduled after a failed async attempt, by `function`.
pub(crate) const RETRIES_SCHEDULED_TOTAL: &str = "keel_retries_scheduled_total";
/// Attempts running now, by `function` (sampled at scrape).
pub(crate) const ATTEMPTS_IN_FLIGHT: &str = "keel_attempts_in_flight";
/// Invocations waiting for an attempt (queued or retrying), by `function` (sampled at scrape).
pub(crate) const QUEUE_DEPTH_INVOCATIONS: &str = "keel_queue_depth_invocations";
/// Age of the oldest invocation already due and still waiting, by `function` (0 when none).
pub(crate) const QUEUE_OLDEST_DUE_AGE_SECONDS: &str = "keel_queue_oldest_due_age_seconds";
/// Invocations in the DLQ, by `function` and `subscription` (empty for direct invocations).
pub(crate) const DLQ_INVOCATIONS: &str = "keel_dlq_invocations";
/// HTTP requests answered, by `method`, `route` (the matched template) and `status`.
pub(crate) const HTTP_REQUESTS_TOTAL: &str = "keel_http_requests_total";
/// HTTP request latency, by `method` and `route`.
pub(crate) const HTTP_REQUEST_DURATION_SECONDS: &str = "keel_http_request_duration_seconds";
/// Log lines dropped because stdout's reader fell too far behind (`telemetry/lines.rs`).
pub(crate) const LOG_LINES_DROPPED_TOTAL: &str = "keel_log_lines_dropped_total";
/// Records of sync calls on their way to the store, written behind their answers (sampled at
/// scrape).
pub(crate) const SYNC_RECORDS_BEHIND: &str = "keel_sync_records_behind";
/// Sync calls whose answer waited for its record: the records on their way were past their bound.
pub(crate) const SYNC_ANSWERS_HELD_TOTAL: &str = "keel_sync_answers_held_total";
/// HTTP connections open now.
pub(crate) const HTTP_CONNECTIONS_OPEN: &str = "keel_http_connections_open";
/// HTTP connections Keel closed or refused, by `reason` (`header_timeout`, `body_timeout`,
/// `idle_timeout`, `over_limit`, `accept_failed`, `tls_handshake`).
pub(crate) const HTTP_CONNECTIONS_CLOSED_TOTAL: &str = "keel_http_connections_closed_total";
/// Requests refused at the API's edge, by `rule` (`deny`, `not-allowed`, `rule:<index>` of
/// `server.firewall.rules`, `throttle-key`, `throttle-address`).
pub(crate) const EDGE_REFUSALS_TOTAL: &str = "keel_edge_refusals_total";
/// Running instances of a `command` function, by `function` (sampled at scrape).
pub(crate) const FUNCTION_INSTANCES: &str = "keel_function_instances";
/// Cold starts of a `command` function's instances, by `function` (sampled at scrape).
pub(crate) const FUNCTION_COLD_STARTS_TOTAL: &str = "keel_function_cold_starts_total";
/// Calls and admissions refused by flow control, by `function` and `reason` (`function-paused`,
/// `breaker-open`, `overloaded`, `rate-limited`, `queue-full`).
pub(crate) const SHED_TOTAL: &str = "keel_shed_total";
/// Egress calls, by `dependency` and `outcome` (`success`, `failure`, `timeout`, `unreachable`,
/// `breaker-open`, `rate-limited`, `bulkhead-full`).
pub(crate) const EGRESS_REQUESTS_TOTAL: &str = "keel_egress_requests_total";
/// Egress call duration, retries included, by `dependency` (calls that reached it).
pub(crate) const EGRESS_DURATION_SECONDS: &str = "keel_egress_duration_seconds";
/// Retries a dependency's retry budget could pay for now, by `dependency` (sampled at scrape).
pub(crate) const RETRY_BUDGET_AVAILABLE: &str = "keel_retry_budget_available";
/// 1 for this node's region, by `region`, `role` (`primary`, `standby`, `active`) and
/// `standing` (`active`, `standby`, `fenced`); absent without `[region]` (sampled at scrape).
pub(crate) const REGION_INFO: &str = "keel_region_info";
/// The epoch this node's region database holds: promotions it has seen (sampled at scrape).
pub(crate) const REGION_EPOCH: &str = "keel_region_epoch";
/// Active-active: events waiting in the outbox for a peer region, by `peer` (sampled at scrape).
pub(crate) const REGION_OUTBOX_PENDING: &str = "keel_region_outbox_pending";
/// Active-active: events a peer region acknowledged, by `peer`.
pub(crate) const REGION_EVENTS_REPLICATED_TOTAL: &str = "keel_region_events_replicated_total";
/// Active-active: events received from peer regions, by `origin` and `outcome` (`new`,
/// `duplicate`).
pub(crate) const REGION_EVENTS_RECEIVED_TOTAL: &str = "keel_region_events_received_total";
/// A breaker's state, by `target` (the function or dependency): 0 closed, 1 open, 2 half-open.
pub(crate) const BREAKER_STATE: &str = "keel_breaker_state";
/// A breaker's changes of state, by `target` and `to` (`closed`, `open`, `half-open`).
pub(crate) const BREAKER_TRANSITIONS_TOTAL: &str = "keel_breaker_transitions_total";
/// Bodies and events refused by a JSON Schema (`input_schema`, a topic's `schema`), by `target`
/// (the function or topic) and `kind` (`function`, `topic`: a function and a topic may share a
/// name).
pub(crate) const INVALID_INPUT_TOTAL: &str = "keel_invalid_input_total";
/// Ticks of a schedule that made their invocation or event, by `schedule`.
pub(crate) const SCHEDULE_FIRED_TOTAL: &str = "keel_schedule_fired_total";
/// Ticks of a schedule passed over without firing (no node could fire them in time: downtime,
/// or a tick later than its tolerance under `missed = "skip"`), by `schedule`.
pub(crate) const SCHEDULE_TICKS_MISSED_TOTAL: &str = "keel_schedule_ticks_missed_total";
/// Chaos faults injected, by `target` (`function:NAME`, `dependency:NAME`, `store`) and `kind`.
pub(crate) const CHAOS_INJECTED_TOTAL: &str = "keel_chaos_injected_total";
/// Workflow runs started, by `workflow`.
pub(crate) const WORKFLOW_RUNS_STARTED_TOTAL: &str = "keel_workflow_runs_started_total";
/// Workflow runs ended, by `workflow` and `status` (`succeeded`, `compensated`, `failed`; a
/// failed run whose compensation is redriven counts again when it ends).
pub(crate) const WORKFLOW_RUNS_TOTAL: &str = "keel_workflow_runs_total";
/// Time from a run's start to its end, by `workflow` and `status`.
pub(crate) const WORKFLOW_RUN_DURATION_SECONDS: &str = "keel_workflow_run_duration_seconds";

/// One schedule's counters, registered when its scheduler starts (every series is there, at 0,
/// from the first scrape: an alert on `increase` sees the first missed tick).
#[derive(Debug)]
pub(crate) struct ScheduleCounters {
    pub(crate) fired: Counter,
    pub(crate) missed: Counter,
}

impl ScheduleCounters {
    pub(crate) fn register(schedule: &str) -> Self {
        Self {
            fired: counter!(SCHEDULE_FIRED_TOTAL, "schedule" => schedule.to_owned()),
            missed: counter!(SCHEDULE_TICKS_MISSED_TOTAL, "schedule" => schedule.to_owned()),
        }
    }
}

/// Keel's own events published to `keel.system`, by `kind` (summaries included).
pub(crate) const SYSTEM_EVENTS_TOTAL: &str = "keel_system_events_total";
/// Keel's own events held back by the rate limit per kind (each window's summary counts them),
/// by `kind`.
pub(crate) const SYSTEM_EVENTS_SUPPRESSED_TOTAL: &str = "keel_system_events_suppressed_total";
/// Keel's own events lost, by `reason`: `store` (it could not be stored), `delivery-dead` (a
/// delivery of `keel.system` went dead: counted and logged, never published again).
pub(crate) const SYSTEM_EVENTS_DROPPED_TOTAL: &str = "keel_system_events_dropped_total";

const OUTCOMES: [Outcome; 5] =
    [Outcome::Success, Outcome::Transient, Outcome::Permanent, Outcome::Timeout, Outcome::Conflict];

/// One function's metric handles.
#[derive(Debug)]
struct FunctionMetrics {
    accepted: [Counter; 3],
    attempts: [Counter; 5],
    durations: [Histogram; 5],
    completed: [Counter; 3],
    retries: Counter,
    shed: [Counter; 5],
}

/// How an invocation came in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admission {
    Sync = 0,
    Async = 1,
    Delivery = 2,
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    Succeeded = 0,
    Failed = 1,
    Dead = 2,
}

/// The metric handles of every configured function.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    functions: BTreeMap<String, FunctionMetrics>,
    /// `keel_invalid_input_total` of each function and topic with a schema.
    invalid_input: BTreeMap<(SchemaTarget, String), Counter>,
    /// The last hour of attempts by the minute, for the console's overview.
    pub(crate) recent: crate::telemetry::recent::Recent,
}

/// What a schema belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SchemaTarget {
    Function,
    Topic,
}

impl SchemaTarget {
    fn as_str(self) -> &'static str {
        match self {
            SchemaTarget::Function => "function",
            SchemaTarget::Topic => "topic",
        }
    }
}

impl Metrics {
    /// Registers every function's series; call after the recorder is installed.
    pub(crate) fn register(config: &Config) -> Self {
        let functions = config.functions.keys().map(|name| (name.clone(), FunctionMetrics::new(name))).collect();
        for f in config.functions.values().filter(|f| f.flow.breaker.is_some()) {
            gauge!(BREAKER_STATE, "target" => f.name.clone()).set(0.0);
        }
        let with_schema = config
            .functions
            .iter()
            .filter(|(_, f)| f.input_schema.is_some())
            .map(|(name, _)| (SchemaTarget::Function, name))
            .chain(
                config.topics.iter().filter(|(_, t)| t.schema.is_some()).map(|(name, _)| (SchemaTarget::Topic, name)),
            );
        let invalid_input = with_schema
            .map(|(kind, name)| {
                let counter = counter!(INVALID_INPUT_TOTAL, "target" => name.clone(), "kind" => kind.as_str());
                ((kind, name.clone()), counter)
            })
            .collect();
        Self { functions, invalid_input, recent: crate::telemetry::recent::Recent::new(config.functions.keys()) }
    }

    /// A body or event refused by the schema of `target`.
    pub(crate) fn invalid_input(&self, kind: SchemaTarget, target: &str) {
        if let Some(counter) = self.invalid_input.get(&(kind, target.to_owned())) {
            counter.increment(1);
        }
    }

    /// A call or admission refused by flow control (logged at debug: under overload there are many).
    pub(crate) fn shed(&self, function: &str, shed: &crate::flow::Shed) {
        tracing::debug!(function, reason = shed.reason(), "shed");
        if let Some(m) = self.functions.get(function) {
            let i = crate::flow::SHED_REASONS.iter().position(|r| *r == shed.reason()).unwrap_or(0);
            m.shed[i].increment(1);
        }
    }

    pub(crate) fn accepted(&self, function: &str, how: Admission) {
        if let Some(m) = self.functions.get(function) {
            m.accepted[how as usize].increment(1);
        }
    }

    pub(crate) fn ended(&self, function: &str, end: End) {
        if let Some(m) = self.functions.get(function) {
            m.completed[end as usize].increment(1);
        }
    }

    /// One attempt's outcome and duration. Retries and ends are counted by [`Self::transitioned`]
    /// once the store has taken them (a failed effects precondition changes the decision).
    pub(crate) fn attempt_finished(&self, function: &str, report: &AttemptReport) {
        let attempt = &report.attempt;
        let duration_ms = (attempt.ended_at - attempt.started_at).max(0);
        self.recent.record(function, attempt.ended_at, duration_ms, attempt.outcome == Outcome::Success);
        let Some(m) = self.functions.get(function) else { return };
        let i = OUTCOMES.iter().position(|o| *o == attempt.outcome).unwrap_or(0);
        m.attempts[i].increment(1);
        m.durations[i].record(duration_ms as f64 / 1000.0);
    }

    /// An async invocation's recorded transition: a retry scheduled, or the end it reached.
    pub(crate) fn transitioned(&self, function: &str, next: &Transition) {
        let Some(m) = self.functions.get(function) else { return };
        match next {
            Transition::Retry { .. } => m.retries.increment(1),
            Transition::Succeed { .. } => m.completed[End::Succeeded as usize].increment(1),
            Transition::Die { .. } => m.completed[End::Dead as usize].increment(1),
            Transition::Requeue => {}
        }
    }

    /// The deliveries of events committed (published, or effects of a recorded completion).
    pub(crate) fn deliveries_admitted(&self, effects: Option<&CommitEffects>) {
        for delivery in effects.iter().flat_map(|e| &e.events).flat_map(|e| &e.deliveries) {
            self.accepted(&delivery.function, Admission::Delivery);
        }
    }
}

/// A breaker (of a function or a dependency: its `target`) changed state: logged, gauged and
/// counted.
pub(crate) fn breaker_moved(target: &str, to: keel_core::flow::breaker::BreakerState) {
    match to {
        keel_core::flow::breaker::BreakerState::Closed => {
            tracing::info!(breaker = target, to = to.as_str(), "breaker moved")
        }
        _ => tracing::warn!(breaker = target, to = to.as_str(), "breaker moved"),
    }
    gauge!(BREAKER_STATE, "target" => target.to_owned()).set(f64::from(to.gauge()));
    counter!(BREAKER_TRANSITIONS_TOTAL, "target" => target.to_owned(), "to" => to.as_str()).increment(1);
}

impl FunctionMetrics {
    fn new(function: &str) -> Self {
        let f = function.to_owned();
        let by_kind =
            |kind: &'static str| counter!(INVOCATIONS_ACCEPTED_TOTAL, "function" => f.clone(), "kind" => kind);
        let ended = |outcome: &'static str| counter!(INVOCATIONS_COMPLETED_TOTAL, "function" => f.clone(), "outcome" => outcome);
        Self {
            accepted: [by_kind("sync"), by_kind("async"), by_kind("delivery")],
            attempts: OUTCOMES.map(|o| counter!(ATTEMPTS_TOTAL, "function" => f.clone(), "outcome" => o.as_str())),
            durations: OUTCOMES
                .map(|o| histogram!(ATTEMPT_DURATION_SECONDS, "function" => f.clone(), "outcome" => o.as_str())),
            completed: [ended("succeeded"), ended("failed"), ended("dead")],
            retries: counter!(RETRIES_SCHEDULED_TOTAL, "function" => f.clone()),
            shed: crate::flow::SHED_REASONS.map(|r| counter!(SHED_TOTAL, "function" => f.clone(), "reason" => r)),
        }
    }
}
