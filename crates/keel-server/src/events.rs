//! Events on the server side: fanning an event out into one delivery per matching subscription,
//! and turning a function's effects envelope into what the store commits with its completion.

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_core::clock::Millis;
use keel_core::config::{OrderedBy, SubscriptionConfig, SubscriptionScope};
use keel_core::effects::Effects;
use keel_core::events::{CloudEvent, NewEvent};
use keel_core::id::new_id;
use keel_core::invocation::{CommitEffects, Delivery, Invocation, NewInvocation};

use crate::state::Shared;
use crate::trace;

/// Builds a stored event of `topic` with its deliveries. `hops` counts the deliveries that led to
/// it (0 when published from outside). In an active region, an event of a topic with a global
/// subscription is replicated to every peer.
pub(crate) fn new_event(shared: &Shared, topic: &str, event: CloudEvent, hops: u32, now: Millis) -> NewEvent {
    let mut new = build(shared, topic, event, hops, now, |_| true);
    new.replicate_to =
        keel_core::region::replicates_to(shared.config.region.as_ref(), &shared.config.subscriptions, topic);
    new
}

/// Builds an event a peer region replicated here: delivered to the global subscriptions only, and
/// replicated no further.
pub(crate) fn replicated_event(shared: &Shared, topic: &str, event: CloudEvent, hops: u32, now: Millis) -> NewEvent {
    build(shared, topic, event, hops, now, |s| s.scope == SubscriptionScope::Global)
}

fn build(
    shared: &Shared,
    topic: &str,
    mut event: CloudEvent,
    hops: u32,
    now: Millis,
    receives: impl Fn(&SubscriptionConfig) -> bool,
) -> NewEvent {
    let id = new_id(now);
    // The event carries its trace: every delivery continues it.
    let traceparent = event
        .extensions
        .get("traceparent")
        .and_then(|t| trace::parse_traceparent(t))
        .or_else(crate::telemetry::current_traceparent)
        .unwrap_or_else(trace::new_traceparent);
    event.extensions.insert("traceparent".into(), traceparent.clone());
    let deliveries = shared
        .config
        .subscriptions
        .iter()
        .filter(|s| s.topic == topic && receives(s) && s.filter.matches(&event))
        .map(|s| delivery(s, &event, &id, hops, &traceparent, now))
        .collect();
    NewEvent { id, topic: topic.to_string(), event, hops, created_at: now, deliveries, replicate_to: Vec::new() }
}

fn delivery(
    sub: &SubscriptionConfig,
    event: &CloudEvent,
    event_id: &str,
    hops: u32,
    traceparent: &str,
    now: Millis,
) -> NewInvocation {
    // `keel-subscription` is not stored with them: the attempt sets it from the delivery.
    let headers = event.binary_headers();
    let ordering_key = match (sub.ordered_by, &event.subject) {
        (Some(OrderedBy::Subject), Some(subject)) => Some(format!("{}/{subject}", sub.name)),
        _ => None,
    };
    NewInvocation {
        concurrency_key: None,
        id: new_id(now),
        function: sub.function.clone(),
        payload: event.data.clone(),
        content_type: event.datacontenttype.clone(),
        created_at: now,
        due_at: now,
        idempotency_key: None,
        traceparent: Some(traceparent.to_string()),
        delivery: Some(Delivery {
            subscription: sub.name.clone(),
            event_id: event_id.to_string(),
            headers,
            ordering_key,
            hops,
        }),
        lease: None,
        workflow: None,
    }
}

/// Turns an effects envelope into what the store commits. An effect outside the function's
/// grants (see `FunctionConfig::effect_scopes`), an event for an undeclared topic, one whose
/// data fails its topic's `schema`, or one that would extend an event chain past
/// `server.max_event_hops`, is a permanent failure whose text says so; nothing of the envelope
/// is committed.
pub(crate) fn commit_effects(
    shared: &Shared,
    inv: &Invocation,
    effects: &Effects,
    now: Millis,
) -> Result<CommitEffects, String> {
    let held_to = shared.config.functions.get(&inv.function).and_then(|f| f.effect_scopes(shared.config.auth.mode));
    if let Some(scopes) = held_to {
        keel_core::effects::check_grants(effects, scopes).map_err(|e| e.to_string())?;
    }
    for (i, write) in effects.kv.iter().enumerate() {
        if let Some(home) = crate::regions::home_elsewhere(shared, &write.ns) {
            return Err(format!(
                "effects envelope: kv[{i}]: namespace {:?} lives in region {home} ([kv.{}] home), not in this one; \
                 write it through the KV API, which forwards it there",
                write.ns, write.ns
            ));
        }
    }
    let hops = inv.delivery.as_ref().map_or(1, |d| d.hops + 1);
    let max = shared.config.server.max_event_hops;
    let mut events = Vec::with_capacity(effects.events.len());
    for (i, emitted) in effects.events.iter().enumerate() {
        if emitted.topic == keel_core::system_events::SYSTEM_TOPIC {
            return Err(format!(
                "effects envelope: events[{i}]: topic {:?} is reserved for Keel's own events",
                emitted.topic
            ));
        }
        let Some(topic) = shared.config.topics.get(&emitted.topic) else {
            return Err(format!(
                "effects envelope: events[{i}]: topic {:?} is not declared in keel.toml",
                emitted.topic
            ));
        };
        if let Some(Err(errors)) = topic.schema.as_ref().map(|schema| schema.check(&emitted.data)) {
            shared.metrics.invalid_input(crate::metric_definitions::SchemaTarget::Topic, &emitted.topic);
            let listed: Vec<String> = errors.iter().map(|e| format!("at {:?}: {}", e.path, e.message)).collect();
            return Err(format!(
                "effects envelope: events[{i}]: data does not match the schema of topic {:?}: {}",
                emitted.topic,
                listed.join("; ")
            ));
        }
        if hops > max {
            return Err(format!(
                "event loop stopped: events[{i}] to topic {:?} would be hop {hops}, above server.max_event_hops ({max})",
                emitted.topic
            ));
        }
        let mut extensions = BTreeMap::new();
        // Deliveries continue the trace from this event's span (inside the attempt's), when
        // traces are exported.
        let emitted_in = crate::telemetry::emit_span(&emitted.topic).in_scope(crate::telemetry::current_traceparent);
        if let Some(tp) = emitted_in.or_else(|| inv.traceparent.as_deref().map(trace::child_of)) {
            extensions.insert("traceparent".to_string(), tp);
        }
        let event = CloudEvent {
            id: emitted.id.clone().unwrap_or_else(|| format!("{}-{i}", inv.id)),
            source: emitted.source.clone().unwrap_or_else(|| format!("keel/{}", inv.function)),
            ty: emitted.ty.clone().unwrap_or_else(|| emitted.topic.clone()),
            subject: emitted.subject.clone(),
            time: Some(keel_core::clock::rfc3339(now)),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Bytes::from(emitted.data.to_string()),
            extensions,
        };
        events.push(new_event(shared, &emitted.topic, event, hops, now));
    }
    Ok(CommitEffects { kv: effects.kv.clone(), events })
}

/// Wakes the dispatchers of the deliveries that committed effects created: they are new work.
pub(crate) fn wake_subscribers(shared: &Shared, effects: &CommitEffects) {
    for delivery in effects.events.iter().flat_map(|e| &e.deliveries) {
        shared.functions.wake(&delivery.function);
    }
}
