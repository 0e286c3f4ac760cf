//! Active-active replication of events: one task per peer takes the outbox rows written with the
//! events (in order, in batches), sends them to the peer's `POST /v1/region/events`, and removes
//! the rows it acknowledged. A peer that fails is tried again, ever later up to about 5 s
//! (`keel_core::region::replication_backoff`), from the first row not acknowledged: nothing is
//! lost, and an event may arrive twice, which the peer's store deduplicates by source + id.
//!
//! The receiving side stores each event as published there, delivered only to its global
//! subscriptions and written to no outbox, so events never travel back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use base64::Engine;
use bytes::Bytes;
use keel_core::events::{CloudEvent, Outgoing};
use metrics::counter;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::metric_definitions as m;
use crate::problem::Problem;
use crate::state::Shared;

/// Outbox rows sent in one request.
const BATCH: usize = 100;
/// How often an idle replicator looks at the outbox again.
const IDLE_LOOK: Duration = Duration::from_millis(200);
/// How long a peer has to acknowledge one batch.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The route peers send to.
pub(crate) const PATH: &str = "/v1/region/events";

/// The body of `POST /v1/region/events`: events stored in region `origin`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ReplicatedEvents {
    /// The region the events were published in.
    #[schema(example = "eu")]
    pub(crate) origin: String,
    pub(crate) events: Vec<ReplicatedEvent>,
}

/// One replicated event: its topic and every CloudEvents attribute, its data in base64.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ReplicatedEvent {
    #[schema(example = "order.placed")]
    pub(crate) topic: String,
    #[schema(example = "/shop")]
    pub(crate) source: String,
    #[schema(example = "o-1")]
    pub(crate) id: String,
    #[serde(rename = "type")]
    #[schema(example = "order.placed")]
    pub(crate) ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dataschema: Option<String>,
    /// The data, base64 (standard alphabet, padded).
    pub(crate) data_base64: String,
    #[serde(default)]
    pub(crate) extensions: BTreeMap<String, String>,
    /// Deliveries that led to it (so `server.max_event_hops` holds across regions).
    #[serde(default, deserialize_with = "whole_number")]
    pub(crate) hops: u32,
}

/// A count written as any JSON number with no fraction (`3` or `3.0`: both integers to JSON
/// Schema).
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let n = f64::deserialize(deserializer)?;
    match n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
        true => Ok(n as u32),
        false => Err(serde::de::Error::custom(format!("expected a whole number from 0 to {}, got {n}", u32::MAX))),
    }
}

/// What `POST /v1/region/events` answers: each event in the order sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ReplicationAnswer {
    /// Events stored now.
    pub(crate) new: usize,
    /// Events this region had already (the same source + id).
    pub(crate) duplicates: usize,
    pub(crate) items: Vec<ReplicatedItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ReplicatedItem {
    pub(crate) source: String,
    pub(crate) id: String,
    /// Keel's id of the event in this region (the earlier one for a duplicate).
    pub(crate) event_id: String,
    pub(crate) duplicate: bool,
}

impl ReplicatedEvent {
    fn from_outgoing(out: &Outgoing) -> Self {
        let e = &out.event;
        ReplicatedEvent {
            topic: out.topic.clone(),
            source: e.source.clone(),
            id: e.id.clone(),
            ty: e.ty.clone(),
            subject: e.subject.clone(),
            time: e.time.clone(),
            datacontenttype: e.datacontenttype.clone(),
            dataschema: e.dataschema.clone(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(&e.data),
            extensions: e.extensions.clone(),
            hops: out.hops,
        }
    }

    fn into_cloud_event(self) -> Result<(String, u32, CloudEvent), String> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(&self.data_base64)
            .map_err(|e| format!("event {:?} of {:?}: data_base64 is not base64: {e}", self.id, self.source))?;
        if self.topic.is_empty() || self.source.is_empty() || self.id.is_empty() || self.ty.is_empty() {
            return Err(format!("event {:?} of {:?}: topic, source, id and type are required", self.id, self.source));
        }
        let event = CloudEvent {
            id: self.id,
            source: self.source,
            ty: self.ty,
            subject: self.subject,
            time: self.time,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            data: Bytes::from(data),
            extensions: self.extensions,
        };
        Ok((self.topic, self.hops, event))
    }
}

/// A node whose region is not active-active takes no replicated events: 409 `not-active-active`.
pub(crate) fn check_active(shared: &Shared) -> Result<(), Problem> {
    let active = shared.region.config().is_some_and(|c| c.role == keel_core::region::Role::Active);
    if !active {
        return Err(Problem::new(
            axum::http::StatusCode::CONFLICT,
            "not-active-active",
            "Not active-active",
            "this node's region is not active-active ([region] role = \"active\"): it takes no replicated events",
        ));
    }
    Ok(())
}

/// Stores events a peer replicated here: deduplicated by source + id, delivered to the global
/// subscriptions only, replicated no further. The caller has made sure this node is
/// active-active ([`check_active`], before reading the body).
pub(crate) async fn receive(shared: &Shared, batch: ReplicatedEvents) -> Result<ReplicationAnswer, Problem> {
    let now = shared.clock.now_ms();
    let mut news = Vec::with_capacity(batch.events.len());
    let mut keys = Vec::with_capacity(batch.events.len());
    for event in batch.events {
        let (topic, hops, event) = event.into_cloud_event().map_err(Problem::bad_request)?;
        keys.push((event.source.clone(), event.id.clone()));
        news.push(crate::events::replicated_event(shared, &topic, event, hops, now));
    }
    let published = shared.store.publish(news.clone()).await?;
    for new in news.iter().zip(&published).filter(|(_, p)| !p.duplicate).map(|(n, _)| n) {
        for delivery in &new.deliveries {
            shared.functions.wake(&delivery.function);
        }
    }
    let duplicates = published.iter().filter(|p| p.duplicate).count();
    let origin = batch.origin;
    counter!(m::REGION_EVENTS_RECEIVED_TOTAL, "origin" => origin.clone(), "outcome" => "new")
        .increment((published.len() - duplicates) as u64);
    counter!(m::REGION_EVENTS_RECEIVED_TOTAL, "origin" => origin, "outcome" => "duplicate")
        .increment(duplicates as u64);
    let items = keys
        .into_iter()
        .zip(published)
        .map(|((source, id), p)| ReplicatedItem { source, id, event_id: p.id, duplicate: p.duplicate })
        .collect::<Vec<_>>();
    Ok(ReplicationAnswer { new: items.len() - duplicates, duplicates, items })
}

/// Starts one replicator per peer when this region is active-active.
pub(crate) fn start(shared: &Arc<Shared>, stop: &watch::Receiver<bool>) {
    let Some(config) = shared.region.config() else { return };
    if config.role != keel_core::region::Role::Active {
        return;
    }
    for peer in shared.region.peer_names() {
        tokio::spawn(run(shared.clone(), peer.to_owned(), stop.clone()));
    }
}

/// Sends `peer` its outbox rows until `stop`.
async fn run(shared: Arc<Shared>, peer: String, mut stop: watch::Receiver<bool>) {
    let origin = shared.region.name().unwrap_or_default().to_owned();
    let mut failures = 0u32;
    loop {
        let wait = match send_once(&shared, &peer, &origin).await {
            Ok(0) => {
                failures = 0;
                IDLE_LOOK
            }
            Ok(_) => {
                failures = 0;
                continue;
            }
            Err(why) => {
                failures += 1;
                let wait = keel_core::region::replication_backoff(failures, shared.sample());
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(peer = %peer, failures, error = %why, retry_in = ?wait, "region: replication to a peer failed; the events wait in the outbox");
                }
                wait
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends one batch of `peer`'s outbox and removes what it acknowledged: how many rows went.
async fn send_once(shared: &Shared, peer: &str, origin: &str) -> Result<usize, String> {
    let rows = shared.store.outbox_next(peer, BATCH).await.map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let client = shared.region.peer_client(peer, true).ok_or("no client for the peer's URL")?;
    let body = ReplicatedEvents {
        origin: origin.to_owned(),
        events: rows.iter().map(ReplicatedEvent::from_outgoing).collect(),
    };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let headers = [(CONTENT_TYPE, "application/json".to_owned())];
    let sent = client.send(Method::POST, PATH, &headers, Bytes::from(body));
    let answer = tokio::time::timeout(SEND_TIMEOUT, sent)
        .await
        .map_err(|_| format!("no answer within {} s", SEND_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(answer.problem().to_string());
    }
    let answer: ReplicationAnswer =
        serde_json::from_slice(&answer.body).map_err(|e| format!("not a replication answer: {e}"))?;
    // The answer lists the events in the order sent; only those it lists are acknowledged.
    let acknowledged: Vec<i64> = rows
        .iter()
        .zip(&answer.items)
        .filter(|(row, item)| row.event.source == item.source && row.event.id == item.id)
        .map(|(row, _)| row.seq)
        .collect();
    shared.store.outbox_ack(peer, &acknowledged).await.map_err(|e| e.to_string())?;
    counter!(m::REGION_EVENTS_REPLICATED_TOTAL, "peer" => peer.to_owned()).increment(acknowledged.len() as u64);
    Ok(acknowledged.len())
}
