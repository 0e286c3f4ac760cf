//! The task that turns due schedule ticks into invocations (or events). Every node runs it; the
//! store makes each tick unique ([`keel_core::store::ScheduleStore::take_tick`]), so of the
//! nodes that try a tick one stores its work and the others find it taken. Which tick is due,
//! and how many were missed, is decided by [`keel_core::schedule::due`] on the node's clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::{rfc3339, Millis};
use keel_core::config::{ScheduleConfig, ScheduleTarget};
use keel_core::events::CloudEvent;
use keel_core::id::new_id;
use keel_core::invocation::NewInvocation;
use keel_core::schedule::{due, tick_key, Due};
use keel_core::store::{ScheduleState, Tick, TickTaken, TickWork};
use tokio::sync::watch;

use crate::metric_definitions::{Admission, ScheduleCounters};
use crate::state::Shared;

/// The longest the task sleeps between two looks at the store, even with no tick due sooner: a
/// pause or resume made on another node is seen within it.
const LOOK_AT_LEAST_EVERY: Duration = Duration::from_secs(1);
/// After a failed store call, the pause before trying again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Runs until `stop`, when the config has schedules.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    if shared.config.schedules.is_empty() {
        return;
    }
    let counters: BTreeMap<&str, ScheduleCounters> =
        shared.config.schedules.keys().map(|name| (name.as_str(), ScheduleCounters::register(name))).collect();
    let names: Vec<String> = shared.config.schedules.keys().cloned().collect();
    // Ticks count from when a schedule is first seen, not from the epoch.
    while let Err(e) = shared.store.arm_schedules(names.clone(), shared.clock.now_ms()).await {
        tracing::warn!(error = %e, "recording the schedules failed; trying again");
        tokio::select! {
            _ = tokio::time::sleep(RETRY_AFTER_ERROR) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    loop {
        let wait = match take_due_ticks(&shared, &counters).await {
            Ok(Some(next)) => Duration::from_millis((next - shared.clock.now_ms()).max(1) as u64),
            Ok(None) => LOOK_AT_LEAST_EVERY,
            Err(e) => {
                tracing::warn!(error = %e, "reading the schedules failed; trying again");
                RETRY_AFTER_ERROR
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.min(LOOK_AT_LEAST_EVERY)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Takes the due tick of every running schedule; returns when the next tick of any comes.
async fn take_due_ticks(
    shared: &Arc<Shared>,
    counters: &BTreeMap<&str, ScheduleCounters>,
) -> keel_core::Result<Option<Millis>> {
    let states = shared.store.schedules().await?;
    let now = shared.clock.now_ms();
    let mut next: Option<Millis> = None;
    for schedule in shared.config.schedules.values() {
        let state = states.iter().find(|s| s.name == schedule.name);
        if state.is_some_and(|s| s.paused_at.is_some()) {
            continue;
        }
        let decided = due(&schedule.cadence, schedule.missed, state.map_or(now, ScheduleState::since), now);
        next = match (next, decided.next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if decided.through.is_some() {
            if let Err(e) = take(shared, schedule, decided, now, &counters[schedule.name.as_str()]).await {
                tracing::warn!(schedule = %schedule.name, error = %e, "taking a schedule tick failed");
            }
        }
    }
    Ok(next)
}

/// Takes the tick [`due`] decided about, with its work when it fires; counts and logs what this
/// node took (a tick another node took is its to count).
async fn take(
    shared: &Arc<Shared>,
    schedule: &ScheduleConfig,
    decided: Due,
    now: Millis,
    counters: &ScheduleCounters,
) -> keel_core::Result<()> {
    let Some(through) = decided.through else { return Ok(()) };
    let work = decided.fire.map(|at| work_of(shared, schedule, at, now));
    let woken: Vec<String> = match &work {
        Some(TickWork::Invocation(new)) => vec![new.function.clone()],
        Some(TickWork::Event(event)) => event.deliveries.iter().map(|d| d.function.clone()).collect(),
        None => Vec::new(),
    };
    let tick = Tick { schedule: schedule.name.clone(), at: through, work, now };
    if shared.store.take_tick(tick).await? != TickTaken::Taken {
        return Ok(());
    }
    ticks_missed(shared, schedule, &decided, through, counters);
    if let Some(at) = decided.fire {
        counters.fired.increment(1);
        tracing::info!(schedule = %schedule.name, tick = %rfc3339(at), "schedule fired");
        let how = match schedule.target {
            ScheduleTarget::Function(_) => Admission::Async,
            ScheduleTarget::Topic(_) => Admission::Delivery,
        };
        for function in &woken {
            shared.metrics.accepted(function, how);
            shared.functions.wake(function);
        }
    }
    Ok(())
}

/// The one place missed ticks are reported (counted, logged, and announced on `keel.system` as
/// `keel.schedule.missed`), once per tick cluster-wide: only the node that took the tick through
/// them gets here.
fn ticks_missed(
    shared: &Shared,
    schedule: &ScheduleConfig,
    decided: &Due,
    through: Millis,
    counters: &ScheduleCounters,
) {
    let missed = decided.missed;
    if missed == 0 {
        return;
    }
    counters.missed.increment(missed);
    tracing::warn!(
        schedule = %schedule.name,
        missed,
        through = %rfc3339(through),
        policy = schedule.missed.as_str(),
        "schedule ticks missed (no node could fire them in time)"
    );
    let data = serde_json::json!({
        "schedule": schedule.name,
        "missed": missed,
        "through": rfc3339(through),
        "policy": schedule.missed.as_str(),
        "caught_up": decided.fire.map(rfc3339),
    });
    // One happening, one event: named by the schedule and the tick it was taken through.
    let id = format!("{}/{}/{}", keel_core::system_events::SCHEDULE_MISSED, schedule.name, rfc3339(through));
    shared.system_events.emit_shared(
        keel_core::system_events::SCHEDULE_MISSED,
        &schedule.name,
        data,
        "keel://cluster",
        id,
    );
}

/// What tick `at` of `schedule` makes: an async invocation, or an event with its deliveries.
/// Either carries the tick's key, `{schedule}/{tick}`: the invocation as its idempotency key,
/// the event as its id.
fn work_of(shared: &Shared, schedule: &ScheduleConfig, at: Millis, now: Millis) -> TickWork {
    let key = tick_key(&schedule.name, at);
    match &schedule.target {
        ScheduleTarget::Function(function) => TickWork::Invocation(NewInvocation {
            id: new_id(now),
            function: function.clone(),
            payload: schedule.payload.clone(),
            content_type: Some("application/json".into()),
            created_at: now,
            due_at: now,
            idempotency_key: Some(key),
            traceparent: Some(crate::trace::new_traceparent()),
            delivery: None,
            concurrency_key: None,
            lease: None,
            workflow: None,
        }),
        ScheduleTarget::Topic(topic) => {
            let event = CloudEvent {
                id: key,
                source: format!("/keel/schedules/{}", schedule.name),
                ty: topic.clone(),
                subject: Some(schedule.name.clone()),
                time: Some(rfc3339(at)),
                datacontenttype: Some("application/json".into()),
                dataschema: None,
                data: schedule.payload.clone(),
                extensions: Default::default(),
            };
            TickWork::Event(crate::events::new_event(shared, topic, event, 0, now))
        }
    }
}
