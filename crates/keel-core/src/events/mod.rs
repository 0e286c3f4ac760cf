//! CloudEvents 1.0: the event model, reading the HTTP forms a publisher may send (structured,
//! batch, binary, or any JSON body), and matching events to subscriptions.

mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::clock::Millis;
use crate::invocation::{Invocation, NewInvocation};

pub use parse::{
    check_attribute_value, from_binary, from_plain_json, from_structured, from_structured_batch, BatchError,
    InvalidEvent, ParseError,
};

/// A CloudEvent as Keel stores and delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub subject: Option<String>,
    /// RFC 3339, as the publisher sent it.
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub data: Bytes,
    /// Extension attributes (`traceparent` among them), by lower-case name.
    pub extensions: BTreeMap<String, String>,
}

impl CloudEvent {
    /// The CloudEvents HTTP binary-mode headers of this event (`ce-*`; `content-type` apart).
    pub fn binary_headers(&self) -> Vec<(String, String)> {
        let mut h = vec![
            ("ce-specversion".to_string(), "1.0".to_string()),
            ("ce-id".to_string(), self.id.clone()),
            ("ce-source".to_string(), self.source.clone()),
            ("ce-type".to_string(), self.ty.clone()),
        ];
        let optional = [("ce-subject", &self.subject), ("ce-time", &self.time), ("ce-dataschema", &self.dataschema)];
        for (name, value) in optional {
            if let Some(v) = value {
                h.push((name.to_string(), v.clone()));
            }
        }
        for (name, value) in &self.extensions {
            // W3C trace context travels in its own header, not as ce-traceparent.
            if name != "traceparent" && name != "tracestate" {
                h.push((format!("ce-{name}"), value.clone()));
            }
        }
        h
    }
}

/// An event ready to store, with the deliveries (one per matching subscription) it makes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Keel's id (a ULID).
    pub id: String,
    pub topic: String,
    pub event: CloudEvent,
    /// 0 for a published event; the emitting delivery's hops + 1 for an emitted one.
    pub hops: u32,
    pub created_at: Millis,
    pub deliveries: Vec<NewInvocation>,
    /// Active-active regions: the peer regions this event is replicated to, through an outbox
    /// row per peer written with it (none for a duplicate, nor for an event from a peer).
    pub replicate_to: Vec<String>,
}

/// An event waiting in the outbox to reach a peer region.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The outbox row: acknowledged rows are removed by it, and rows go out in its order.
    pub seq: i64,
    pub topic: String,
    pub event: CloudEvent,
    /// Deliveries that led to it.
    pub hops: u32,
    pub created_at: Millis,
}

/// What publishing one event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Keel's id of the event: the original one when it was a duplicate.
    pub id: String,
    /// The same `source` + `id` had been published before: nothing new was stored.
    pub duplicate: bool,
}

/// A stored event with its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: String,
    pub topic: String,
    pub event: CloudEvent,
    pub hops: u32,
    pub created_at: Millis,
    /// Without attempt histories.
    pub deliveries: Vec<Invocation>,
}

/// Which events of a topic a subscription receives. Every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub type_prefix: Option<String>,
    pub source: Option<String>,
    pub subject_prefix: Option<String>,
}

impl Filter {
    pub fn matches(&self, event: &CloudEvent) -> bool {
        let subject = event.subject.as_deref().unwrap_or("");
        self.ty.as_ref().is_none_or(|t| *t == event.ty)
            && self.type_prefix.as_ref().is_none_or(|p| event.ty.starts_with(p.as_str()))
            && self.source.as_ref().is_none_or(|s| *s == event.source)
            && self.subject_prefix.as_ref().is_none_or(|p| event.subject.is_some() && subject.starts_with(p.as_str()))
    }
}
