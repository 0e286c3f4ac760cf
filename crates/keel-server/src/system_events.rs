//! Keel's operational events: CloudEvents about itself, published to the reserved topic
//! `keel.system` like any event (stored, then delivered to its subscriptions with their retries
//! and DLQ), so that a notifier is an ordinary function.
//!
//! The rest of the server calls [`SystemEvents::emit`] (or one of the helpers named after what
//! happened); that never blocks nor fails: the notice goes down a channel to one task
//! ([`run`]) that applies the rate limit per kind (`keel_core::system_events::KindLimiter`),
//! publishes through the store, and sends each window's summary when it ends. A store error is
//! logged and counted (`keel_system_events_dropped_total{reason="store"}`).
//!
//! No alert loops: a delivery of a `keel.system` event that goes dead is counted
//! (`{reason="delivery-dead"}`) and logged, never published as another event.
//!
//! Schedules and chaos are not built yet; their kinds are reserved in `keel_core::system_events`.
//! The scheduler calls `shared.system_events.emit(SCHEDULE_MISSED, schedule, json!({"schedule",
//! "tick", "reason"}))` when a tick is skipped; the chaos engine `emit(CHAOS_FAULT_STARTED |
//! CHAOS_FAULT_ENDED, fault_id, json!({"id", "target", "kind", "expires_at"}))`. Events every
//! node would see alike (a tick missed while all were down) go through
//! [`SystemEvents::emit_shared`] with an id naming the happening, so the store keeps one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::clock::{rfc3339, Millis};
use keel_core::events::CloudEvent;
use keel_core::invocation::Invocation;
use keel_core::system_events::{self as kinds, KindLimiter, Offer, ShedWatch, SYSTEM_TOPIC};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::metric_definitions as m;
use crate::state::Shared;

/// One operational event on its way to the publishing task.
#[derive(Debug)]
struct Notice {
    kind: &'static str,
    subject: Option<String>,
    data: Value,
    /// `(source, id)` when every node that sees the same happening must publish the same event
    /// (deduplicated by the store); else `keel://<node>` and a new id.
    identity: Option<(String, String)>,
}

/// The handle the server emits through: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub(crate) struct SystemEvents {
    tx: mpsc::UnboundedSender<Notice>,
    /// Which functions are shedding now (debounced into started/stopped).
    shed: Arc<Mutex<ShedWatch>>,
}

/// The publishing task's end of the channel, taken by [`run`].
#[derive(Debug)]
pub(crate) struct Receiver(mpsc::UnboundedReceiver<Notice>);

impl SystemEvents {
    pub(crate) fn channel() -> (Self, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = Self { tx, shed: Arc::new(Mutex::new(ShedWatch::new(ShedWatch::DEFAULT_QUIET))) };
        (me, Receiver(rx))
    }

    /// A handle whose events go nowhere (unit tests of parts that emit).
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self::channel().0
    }

    /// Emits an event of `kind` about `subject` (a function, a node…) carrying `data`.
    pub(crate) fn emit(&self, kind: &'static str, subject: &str, data: Value) {
        let _ = self.tx.send(Notice { kind, subject: Some(subject.to_owned()), data, identity: None });
    }

    /// Emits an event that other nodes may emit too, the same: the store keeps one.
    pub(crate) fn emit_shared(&self, kind: &'static str, subject: &str, data: Value, source: &str, id: String) {
        let identity = Some((source.to_owned(), id));
        let _ = self.tx.send(Notice { kind, subject: Some(subject.to_owned()), data, identity });
    }

    /// An invocation was recorded dead. A delivery of `keel.system` itself is only counted and
    /// logged: a failing notifier must not feed the topic it fails on.
    pub(crate) fn invocation_dead(&self, shared: &Shared, inv: &Invocation, attempts: u32, error: &str) {
        let subscription = inv.delivery.as_ref().map(|d| d.subscription.as_str());
        if is_system_delivery(shared, inv) {
            metrics::counter!(m::SYSTEM_EVENTS_DROPPED_TOTAL, "reason" => "delivery-dead").increment(1);
            tracing::warn!(
                invocation_id = %inv.id,
                function = %inv.function,
                subscription,
                error,
                "a delivery of keel.system went dead; it is not published as another system event"
            );
            return;
        }
        let data = json!({
            "invocation_id": inv.id,
            "function": inv.function,
            "subscription": subscription,
            "event_id": inv.delivery.as_ref().map(|d| d.event_id.as_str()),
            "attempts": attempts,
            "error": error,
        });
        self.emit(kinds::INVOCATION_DEAD, &inv.function, data);
    }

    /// A call of `function` was shed (`reason`, as metrics name it) at `now`: the first of a
    /// spell makes `keel.shed.started`; [`run`] makes `keel.shed.stopped` once it is quiet.
    pub(crate) fn shed(&self, function: &str, reason: &'static str, now: Millis) {
        let started = crate::flow::lock(&self.shed).shed(function, now);
        if started {
            self.emit(kinds::SHED_STARTED, function, json!({ "function": function, "reason": reason }));
        }
    }
}

/// Whether `inv` is a delivery of a subscription to `keel.system`.
fn is_system_delivery(shared: &Shared, inv: &Invocation) -> bool {
    inv.delivery.as_ref().is_some_and(|d| {
        shared.config.subscriptions.iter().any(|s| s.name == d.subscription && s.topic == SYSTEM_TOPIC)
    })
}

/// Publishes what is emitted until `stop`, then what was emitted before it.
pub(crate) async fn run(shared: Arc<Shared>, rx: Receiver, mut stop: watch::Receiver<bool>) {
    let Receiver(mut rx) = rx;
    let mut limiter: KindLimiter<Value> = KindLimiter::new(shared.config.server.system_events);
    for kind in kinds::KINDS {
        metrics::counter!(m::SYSTEM_EVENTS_TOTAL, "kind" => kind).increment(0);
        metrics::counter!(m::SYSTEM_EVENTS_SUPPRESSED_TOTAL, "kind" => kind).increment(0);
    }
    for reason in ["store", "delivery-dead"] {
        metrics::counter!(m::SYSTEM_EVENTS_DROPPED_TOTAL, "reason" => reason).increment(0);
    }
    loop {
        let now = shared.clock.now_ms();
        tick(&shared, &mut limiter, now).await;
        let next = [limiter.next_end(), crate::flow::lock(&shared.system_events.shed).next_quiet()]
            .into_iter()
            .flatten()
            .min();
        let pause = next.map(|at| Duration::from_millis((at - now).max(1) as u64));
        tokio::select! {
            notice = rx.recv() => match notice {
                Some(notice) => offer(&shared, &mut limiter, notice).await,
                None => return,
            },
            _ = tokio::time::sleep(pause.unwrap_or(Duration::MAX)), if pause.is_some() => {}
            // Not `wait_for`: its guard would be held in the future, across the awaits below.
            changed = stop.changed() => if changed.is_err() || *stop.borrow_and_update() {
                break;
            },
        }
    }
    while let Ok(notice) = rx.try_recv() {
        offer(&shared, &mut limiter, notice).await;
    }
}

/// Ends the rate limit's windows that are over (publishing their summaries) and the shed spells
/// that have gone quiet.
async fn tick(shared: &Shared, limiter: &mut KindLimiter<Value>, now: Millis) {
    for summary in limiter.summaries(now) {
        let data = json!({
            "summary": true,
            "held": summary.held,
            "since": rfc3339(summary.since),
            "until": rfc3339(summary.until),
            "last": summary.last,
        });
        tracing::warn!(kind = summary.kind, held = summary.held, "system events held back by the rate limit");
        let notice = Notice { kind: summary.kind, subject: None, data, identity: None };
        publish(shared, notice, now).await;
    }
    let quiet = crate::flow::lock(&shared.system_events.shed).quiet(now);
    for spell in quiet {
        let data = json!({
            "function": spell.function,
            "since": rfc3339(spell.since),
            "last_shed": rfc3339(spell.last),
            "refused": spell.refused,
        });
        let notice = Notice { kind: kinds::SHED_STOPPED, subject: Some(spell.function), data, identity: None };
        offer_at(shared, limiter, notice, now).await;
    }
}

/// Publishes `notice` unless the rate limit holds it back.
async fn offer(shared: &Shared, limiter: &mut KindLimiter<Value>, notice: Notice) {
    let now = shared.clock.now_ms();
    // A window over before this notice is summed up first: the notice opens the next one.
    tick(shared, limiter, now).await;
    offer_at(shared, limiter, notice, now).await;
}

async fn offer_at(shared: &Shared, limiter: &mut KindLimiter<Value>, notice: Notice, now: Millis) {
    match limiter.offer(notice.kind, now, notice.data.clone()) {
        Offer::Send => publish(shared, notice, now).await,
        Offer::Held => {
            metrics::counter!(m::SYSTEM_EVENTS_SUPPRESSED_TOTAL, "kind" => notice.kind).increment(1);
        }
    }
}

/// Stores the event with its deliveries and wakes their functions.
async fn publish(shared: &Shared, notice: Notice, now: Millis) {
    let (source, id) =
        notice.identity.unwrap_or_else(|| (format!("keel://{}", shared.node_id), keel_core::id::new_id(now)));
    let event = CloudEvent {
        id,
        source,
        ty: notice.kind.to_owned(),
        subject: notice.subject,
        time: Some(rfc3339(now)),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        data: Bytes::from(notice.data.to_string()),
        extensions: Default::default(),
    };
    let new = crate::events::new_event(shared, SYSTEM_TOPIC, event, 0, now);
    let functions: Vec<String> = new.deliveries.iter().map(|d| d.function.clone()).collect();
    match shared.store.publish(vec![new]).await {
        Ok(published) => {
            metrics::counter!(m::SYSTEM_EVENTS_TOTAL, "kind" => notice.kind).increment(1);
            if published.first().is_some_and(|p| !p.duplicate) {
                for function in &functions {
                    shared.metrics.accepted(function, m::Admission::Delivery);
                    shared.functions.wake(function);
                }
            }
        }
        Err(e) => {
            metrics::counter!(m::SYSTEM_EVENTS_DROPPED_TOTAL, "reason" => "store").increment(1);
            tracing::warn!(kind = notice.kind, error = %e, "a system event could not be stored; it is dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keel_core::flow::BreakerConfig;

    use super::*;
    use crate::flow::{BreakerOf, ReportedBreaker};

    fn kinds_sent(rx: &mut Receiver) -> Vec<(&'static str, Value)> {
        std::iter::from_fn(|| rx.0.try_recv().ok()).map(|n| (n.kind, n.data)).collect()
    }

    #[test]
    fn a_dependency_breaker_announces_an_outage_once_and_its_end_once() {
        let (events, mut rx) = SystemEvents::channel();
        let config =
            BreakerConfig { consecutive_failures: 2, open_for: Duration::from_millis(100), ..BreakerConfig::default() };
        let breaker = ReportedBreaker::new("payments", BreakerOf::Dependency, config, 0, &events);
        for t in [1, 2] {
            breaker.with(t, |b| b.record(t, false, false));
        }
        // A probe after open_for fails: open again, nothing new to say.
        assert!(matches!(breaker.with(200, |b| b.admit(200)), keel_core::flow::breaker::Admit::Probe));
        breaker.with(201, |b| b.record(201, false, true));
        assert!(matches!(breaker.with(400, |b| b.admit(400)), keel_core::flow::breaker::Admit::Probe));
        breaker.with(401, |b| b.record(401, true, true));
        let sent = kinds_sent(&mut rx);
        assert_eq!(
            sent,
            vec![
                (kinds::BREAKER_OPENED, json!({"dependency": "payments", "state": "open"})),
                (kinds::BREAKER_CLOSED, json!({"dependency": "payments", "state": "closed"})),
            ]
        );
    }

    #[test]
    fn shedding_is_announced_when_it_starts_not_at_every_refusal() {
        let (events, mut rx) = SystemEvents::channel();
        for t in 0..100 {
            events.shed("charge", "overloaded", t);
        }
        assert_eq!(
            kinds_sent(&mut rx),
            vec![(kinds::SHED_STARTED, json!({"function": "charge", "reason": "overloaded"}))]
        );
    }
}
