//! Publishing events to topics, and reading an event with the state of its deliveries.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::events::{self as ce, CloudEvent};
use keel_core::id::new_id;
use serde_json::{json, Map, Value};

use super::problem::Problem;
use super::{body, idempotency};
use crate::state::Shared;
use crate::{events, trace};

/// `POST /v1/topics/{topic}/events`: structured, batch, binary mode, or any JSON body.
pub(crate) async fn publish(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    if shared.is_draining() {
        return Err(Problem::draining());
    }
    if !shared.config.topics.contains(&topic) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-topic",
            "Unknown topic",
            format!("no topic named {topic:?} is declared"),
        ));
    }
    let body = body::read(body)?;
    let now = shared.clock.now_ms();
    let parsed = read_events(&headers, &topic, body, now)?;
    let request_trace = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(trace::parse_traceparent);
    let mut wake = BTreeSet::new();
    let new_events: Vec<_> = parsed
        .into_iter()
        .map(|mut event| {
            if let (Some(tp), false) = (&request_trace, event.extensions.contains_key("traceparent")) {
                event.extensions.insert("traceparent".into(), tp.clone());
            }
            let new = events::new_event(&shared, &topic, event, 0, now);
            wake.extend(new.deliveries.iter().map(|d| d.function.clone()));
            new
        })
        .collect();
    let delivered: Vec<Vec<String>> =
        new_events.iter().map(|e| e.deliveries.iter().map(|d| d.function.clone()).collect()).collect();
    let published = shared.store.publish(new_events).await?;
    for (functions, _) in delivered.iter().zip(&published).filter(|(_, p)| !p.duplicate) {
        functions.iter().for_each(|f| shared.metrics.accepted(f, crate::metric_definitions::Admission::Delivery));
    }
    for function in wake {
        shared.functions.wake(&function);
    }
    let ids: Vec<_> = published.into_iter().map(|p| p.id).collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "ids": ids }))))
}

fn read_events(headers: &HeaderMap, topic: &str, body: Bytes, now: i64) -> Result<Vec<CloudEvent>, Problem> {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let media = content_type.as_deref().and_then(|c| c.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
    let invalid = |e: ce::ParseError| Problem::bad_request(format!("invalid CloudEvent: {e}"));
    match media.as_deref() {
        Some("application/cloudevents+json") => Ok(vec![ce::from_structured(&body).map_err(invalid)?]),
        Some("application/cloudevents-batch+json") => ce::from_structured_batch(&body).map_err(invalid),
        _ if headers.contains_key("ce-specversion") => {
            let ce_headers: Vec<(String, String)> = headers
                .iter()
                .filter(|(n, _)| n.as_str().starts_with("ce-"))
                .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            Ok(vec![ce::from_binary(&ce_headers, content_type.as_deref(), body).map_err(invalid)?])
        }
        _ => {
            // A keyed retry of a plain publish makes the same event id, so it is deduplicated.
            let id = match idempotency::key_from(headers)? {
                Some(key) => format!("{topic}/{key}"),
                None => new_id(now),
            };
            Ok(vec![ce::from_plain_json(topic, id, body).map_err(invalid)?])
        }
    }
}

/// `GET /v1/events/{id}`
pub(crate) async fn get(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    let stored =
        shared.store.get_event(&id).await?.ok_or_else(|| Problem::not_found(format!("event {id} not found")))?;
    let e = &stored.event;
    let mut v = Map::new();
    v.insert("id".into(), json!(stored.id));
    v.insert("topic".into(), json!(stored.topic));
    v.insert("specversion".into(), json!("1.0"));
    v.insert("ce_id".into(), json!(e.id));
    v.insert("source".into(), json!(e.source));
    v.insert("type".into(), json!(e.ty));
    for (name, value) in [
        ("subject", &e.subject),
        ("time", &e.time),
        ("datacontenttype", &e.datacontenttype),
        ("dataschema", &e.dataschema),
    ] {
        if let Some(value) = value {
            v.insert(name.into(), json!(value));
        }
    }
    let is_json = e.datacontenttype.as_deref().is_none_or(|ct| ct.contains("json"));
    let data = match serde_json::from_slice::<Value>(&e.data) {
        Ok(value) if is_json => value,
        _ => Value::String(String::from_utf8_lossy(&e.data).into_owned()),
    };
    v.insert("data".into(), data);
    v.insert("extensions".into(), json!(e.extensions));
    v.insert("hops".into(), json!(stored.hops));
    v.insert("created_at".into(), json!(rfc3339(stored.created_at)));
    let deliveries: Vec<Value> = stored
        .deliveries
        .iter()
        .map(|d| {
            let mut item = json!({
                "subscription": d.delivery.as_ref().map(|x| x.subscription.clone()),
                "function": d.function,
                "invocation_id": d.id,
                "status": d.status.as_str(),
                "attempt_count": d.attempt_count,
            });
            if let Some(error) = &d.error {
                item["error"] = json!(error);
            }
            item
        })
        .collect();
    v.insert("deliveries".into(), Value::Array(deliveries));
    Ok(Json(Value::Object(v)))
}
