//! Publishing events to topics, and reading an event with the state of its deliveries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::events::{self as ce, CloudEvent, NewEvent};
use keel_core::id::new_id;
use keel_core::schema::SchemaError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::idempotency::IdempotencyKeyHeader;
use super::input::EventsForm;
use super::view::InvocationStatus;
use super::{body, delay, idempotency, input, openapi};
use crate::problem::Problem;
use crate::state::Shared;
use crate::{dispatch, events, trace};

/// Publish events to a topic: structured, batch, binary mode, or any JSON body.
///
/// Each event is delivered to every subscription of the topic whose filter it matches. The same
/// `source` + `id` again is accepted (202, the original id) and not delivered again. A plain
/// JSON body is wrapped in an event: `type` = the topic, a generated `id` (derived from the
/// Idempotency-Key when one is sent). With `keel-delay`, the deliveries are due that much later.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/events",
    tag = "events",
    operation_id = "publishEvents",
    params(
        ("topic" = String, Path, description = "A declared topic."),
        IdempotencyKeyHeader,
        // The same pattern as the async invoke's `keel-delay` (invoke.rs): `parse_delay` exactly.
        ("keel-delay" = Option<String>, Header, nullable = false,
            pattern = "^0*(?:(?:[0-9]{1,10}|[12][0-9]{10}|30[0-9]{9}|31[0-4][0-9]{8}|315[0-2][0-9]{7}|3153[0-5][0-9]{6}|31536000000)ms|(?:[0-9]{1,7}|[12][0-9]{7}|30[0-9]{6}|31[0-4][0-9]{5}|315[0-2][0-9]{4}|3153[0-5][0-9]{3}|31536000)s|(?:[0-9]{1,5}|[1-4][0-9]{5}|5[01][0-9]{4}|52[0-4][0-9]{3}|525[0-5][0-9]{2}|525600)m|(?:[0-9]{1,3}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-5][0-9]|8760)h|(?:[0-9]{1,2}|[12][0-9]{2}|3[0-5][0-9]|36[0-5])d)$",
            description = "Deliver later: each delivery's first attempt is due this much after the \
            publish. One whole number and one unit (`ms`, `s`, `m`, `h`, `d`), e.g. `250ms`, `30s`, `5m`; at most 365 \
            days. Sent once. The events are stored (and deduplicated) at once."),
        ("traceparent" = Option<String>, Header, nullable = false,
            description = "W3C trace context, carried to the deliveries."),
        ("ce-specversion" = Option<String>, Header, nullable = false,
            description = "Binary mode: `1.0`. Its presence selects \
            binary mode; the body is then the event's data, and its content-type the data's."),
        ("ce-id" = Option<String>, Header, nullable = false, description = "Binary mode: the event id (required)."),
        ("ce-source" = Option<String>, Header, nullable = false,
            description = "Binary mode: the event source (required)."),
        ("ce-type" = Option<String>, Header, nullable = false, description = "Binary mode: the event type (required)."),
        ("ce-subject" = Option<String>, Header, nullable = false,
            description = "Binary mode: the subject. Any other `ce-*` header \
            is an attribute or extension of the event."),
    ),
    request_body(
        description = "One structured CloudEvent, a batch of them, the data of a binary-mode event (`ce-*` \
            headers), or any JSON value to wrap in an event.",
        content(
            (schema::CloudEvent = "application/cloudevents+json"),
            (Vec<schema::CloudEvent> = "application/cloudevents-batch+json"),
            (serde_json::Value = "application/json"),
            ("*/*"),
        )
    ),
    responses(
        (status = 202, description = "Stored, with their deliveries: the ids of the events, in order.",
            body = Published,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = "An event's data is not JSON or fails the topic's `schema` \
            (`invalid-input`, with `errors`: each failure's JSON Pointer `path` into the body as sent — `/email` for a \
            plain body, `/data/email` for a structured event, `/2/data/email` for event 2 of a batch — and, for a batch, \
            `index`: the first invalid event; no event of the request was stored); in a batch, events whose CloudEvents \
            attributes break the spec (`invalid-input`, each named in `errors` by its attribute's pointer, `/3/id`, and \
            `index`: the first; no event of the batch was stored); an invalid CloudEvent (what is wrong is named), a body \
            that is not JSON or nests deeper than `server.limits.max_json_depth` (`json-too-deep`, naming `limit`), a \
            malformed Idempotency-Key, or a keel-delay that is malformed or sent twice."),
        (status = 403, description = "The topic is `keel.system`, where only Keel publishes (`reserved-topic`); or \
            the key or token does not hold the scope `publish:{topic}` (`forbidden`, naming `scope_needed`)."),
        (status = 404, description = "No topic of that name is declared (`unknown-topic`)."),
        (status = 409, description = openapi::KEY_IN_USE, headers(("Retry-After" = u64))),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 422, description = openapi::KEY_REUSED),
        (status = 503, description = openapi::UNAVAILABLE_OR_DRAINING, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn publish(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: body::RequestBody,
) -> Result<(StatusCode, Json<Published>), Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    if topic == keel_core::system_events::SYSTEM_TOPIC {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "reserved-topic",
            "Reserved topic",
            format!(
                "topic {topic:?} is reserved for Keel's own events: subscribe to it, but only Keel publishes to it"
            ),
        ));
    }
    if !shared.config.topics.contains_key(&topic) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-topic",
            "Unknown topic",
            format!("no topic named {topic:?} is declared"),
        ));
    }
    let body = body.read()?;
    let now = shared.clock.now_ms();
    let delay_ms = delay::delay_from(&headers)?.as_millis() as i64;
    let (parsed, form) = read_events(&shared, &headers, &topic, body, now)?;
    input::check_publish(&shared, &topic, &parsed, form)?;
    let request_trace = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(trace::parse_traceparent);
    let mut wake = BTreeSet::new();
    // Per event, its deliveries leased at admission: they start once the event is on disk.
    let mut leased: Vec<Vec<dispatch::LeasedDelivery>> = Vec::new();
    let new_events: Vec<_> = parsed
        .into_iter()
        .map(|mut event| {
            if let (Some(tp), false) = (&request_trace, event.extensions.contains_key("traceparent")) {
                event.extensions.insert("traceparent".into(), tp.clone());
            }
            let mut new = events::new_event(&shared, &topic, event, 0, now);
            match delay_ms {
                0 => leased.push(dispatch::lease_deliveries(&shared, &mut new, now)),
                // Delayed deliveries wait for their dispatcher, which their wake-up tells when.
                _ => {
                    new.deliveries.iter_mut().for_each(|d| d.due_at = now + delay_ms);
                    leased.push(Vec::new());
                }
            }
            wake.extend(new.deliveries.iter().filter(|d| d.lease.is_none()).map(|d| d.function.clone()));
            new
        })
        .collect();
    let ids = super::admit_fully(admit_events(shared, new_events, leased, wake)).await?;
    Ok((StatusCode::ACCEPTED, Json(Published { ids })))
}

/// Stores the events with their deliveries, starts the deliveries leased at admission (those of
/// events that were not duplicates) and wakes the dispatchers of the rest; returns the events' ids.
async fn admit_events(
    shared: Arc<Shared>,
    new_events: Vec<NewEvent>,
    leased: Vec<Vec<dispatch::LeasedDelivery>>,
    wake: BTreeSet<String>,
) -> Result<Vec<String>, Problem> {
    let delivered: Vec<Vec<String>> =
        new_events.iter().map(|e| e.deliveries.iter().map(|d| d.function.clone()).collect()).collect();
    let published = match shared.store.publish(new_events).await {
        Ok(published) => published,
        Err(e @ keel_core::Error::OutcomeUnknown(_)) => {
            // The events may have been stored: their deliveries must not wait unnoticed.
            leased.into_iter().flatten().for_each(|d| d.start_if_stored(&shared));
            wake.iter().for_each(|function| shared.functions.wake(function));
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    for ((functions, leased), published) in delivered.iter().zip(leased).zip(&published) {
        // A duplicate stored nothing: its leased deliveries give their room back unstarted.
        if !published.duplicate {
            functions.iter().for_each(|f| shared.metrics.accepted(f, crate::metric_definitions::Admission::Delivery));
            leased.into_iter().for_each(|d| d.start(&shared));
        }
    }
    for function in wake {
        shared.functions.wake(&function);
    }
    Ok(published.into_iter().map(|p| p.id).collect())
}

/// The events of a publish body, and the form they came in.
fn read_events(
    shared: &Shared,
    headers: &HeaderMap,
    topic: &str,
    body: Bytes,
    now: i64,
) -> Result<(Vec<CloudEvent>, EventsForm), Problem> {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let media = content_type.as_deref().and_then(|c| c.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
    let invalid = |e: ce::ParseError| Problem::bad_request(format!("invalid CloudEvent: {e}"));
    // Binary-mode data is parsed (by a topic's schema) only when it says it is JSON.
    let parsed_as_json = !headers.contains_key("ce-specversion") || media.as_deref().is_none_or(|m| m.contains("json"));
    if parsed_as_json {
        shared.limits.check_json("the body", &body)?;
    }
    match media.as_deref() {
        Some("application/cloudevents+json") => {
            Ok((vec![ce::from_structured(&body).map_err(invalid)?], EventsForm::Structured))
        }
        Some("application/cloudevents-batch+json") => {
            Ok((ce::from_structured_batch(&body).map_err(invalid_batch)?, EventsForm::Batch))
        }
        _ if headers.contains_key("ce-specversion") => {
            let ce_headers = headers
                .iter()
                .filter(|(n, _)| n.as_str().starts_with("ce-"))
                .map(|(n, v)| match v.to_str() {
                    Ok(v) => Ok((n.as_str().to_string(), v.to_string())),
                    Err(_) => Err(Problem::bad_request(format!(
                        "invalid CloudEvent: header {n} must be visible ASCII (percent-encode other characters)"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((vec![ce::from_binary(&ce_headers, content_type.as_deref(), body).map_err(invalid)?], EventsForm::Data))
        }
        _ => {
            // A keyed retry of a plain publish makes the same event id, so it is deduplicated.
            let id = match idempotency::key_from(headers)? {
                Some(key) => format!("{topic}/{key}"),
                None => new_id(now),
            };
            Ok((vec![ce::from_plain_json(topic, id, body).map_err(invalid)?], EventsForm::Data))
        }
    }
}

/// A batch refused whole: 400 `invalid-input` naming each event that breaks the CloudEvents spec
/// by the JSON Pointer of its attribute (`/3/id`), and `index`, the first; or 400 for a body
/// that is not a batch at all.
fn invalid_batch(error: ce::BatchError) -> Problem {
    let ce::BatchError::Events(invalid) = &error else {
        return Problem::bad_request(format!("invalid CloudEvent: {error}"));
    };
    let errors: Vec<SchemaError> =
        invalid.iter().map(|e| SchemaError { path: e.path.clone(), message: e.message.clone() }).collect();
    let detail = format!("invalid CloudEvent: {error}; no event of the batch was stored");
    Problem::invalid_input(detail, &errors).index(invalid[0].index)
}

/// An event and its deliveries, one per subscription.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    operation_id = "getEvent",
    params(("id" = String, Path, description = "The event (as answered by publish).")),
    responses(
        (status = 200, description = "The event.", body = Event),
        (status = 404, description = "No event with that id."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn get(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Event>, Problem> {
    let stored =
        shared.store.get_event(&id).await?.ok_or_else(|| Problem::not_found(format!("event {id} not found")))?;
    let e = &stored.event;
    let is_json = e.datacontenttype.as_deref().is_none_or(|ct| ct.contains("json"));
    let data = match serde_json::from_slice::<Value>(&e.data) {
        Ok(value) if is_json => value,
        _ => Value::String(String::from_utf8_lossy(&e.data).into_owned()),
    };
    let deliveries = stored
        .deliveries
        .iter()
        .map(|d| Delivery {
            subscription: d.delivery.as_ref().map(|x| x.subscription.clone()),
            function: d.function.clone(),
            invocation_id: d.id.clone(),
            status: d.status.into(),
            attempt_count: d.attempt_count,
            error: d.error.clone(),
        })
        .collect();
    Ok(Json(Event {
        id: stored.id.clone(),
        topic: stored.topic.clone(),
        specversion: "1.0",
        ce_id: e.id.clone(),
        source: e.source.clone(),
        kind: e.ty.clone(),
        subject: e.subject.clone(),
        time: e.time.clone(),
        datacontenttype: e.datacontenttype.clone(),
        dataschema: e.dataschema.clone(),
        data,
        extensions: e.extensions.clone(),
        hops: stored.hops,
        created_at: rfc3339(stored.created_at),
        deliveries,
    }))
}

/// The answer of a publish.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Published {
    /// The event ids, in the order sent; a duplicate gets the original's.
    ids: Vec<String>,
}

/// A stored event, with its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Event {
    /// Keel's id of the event.
    id: String,
    topic: String,
    /// `1.0`.
    specversion: &'static str,
    /// The CloudEvent's own `id`.
    ce_id: String,
    source: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    datacontenttype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    dataschema: Option<String>,
    /// JSON data inline; any other data as text.
    data: Value,
    extensions: BTreeMap<String, String>,
    /// How many effect-emitted events led to this one.
    hops: u32,
    #[schema(format = DateTime)]
    created_at: String,
    deliveries: Vec<Delivery>,
}

/// The delivery of an event to one subscription: an invocation of its function.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Delivery {
    subscription: Option<String>,
    function: String,
    invocation_id: String,
    status: InvocationStatus,
    attempt_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
}

/// The CloudEvents accepted, written down for the OpenAPI document: a request body, parsed by
/// `keel_core::events` (`from_structured`, `from_structured_batch`), never built here.
pub(super) mod schema {
    #![allow(
        dead_code,
        reason = "a request schema for the OpenAPI document; the body is parsed by `keel_core::events`"
    )]

    use utoipa::ToSchema;

    /// A CloudEvent 1.0 in structured mode. Other members are extension attributes (strings).
    #[derive(ToSchema)]
    pub(crate) struct CloudEvent {
        /// `1.0`.
        specversion: String,
        /// Unique for its `source`.
        id: String,
        source: String,
        #[schema(rename = "type")]
        kind: String,
        #[schema(nullable = false)]
        subject: Option<String>,
        /// RFC 3339.
        #[schema(format = DateTime, nullable = false)]
        time: Option<String>,
        #[schema(nullable = false)]
        datacontenttype: Option<String>,
        #[schema(nullable = false)]
        dataschema: Option<String>,
        /// The data, as JSON (not with `data_base64`).
        #[schema(nullable = false)]
        data: Option<serde_json::Value>,
        /// The data, base64-encoded (not with `data`).
        #[schema(nullable = false)]
        data_base64: Option<String>,
    }
}
