//! Reading CloudEvents from HTTP requests, with errors that name the attribute at fault.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::CloudEvent;

/// Why a request does not hold valid CloudEvents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

const REQUIRED: [&str; 4] = ["id", "source", "specversion", "type"];
const KNOWN: [&str; 10] =
    ["id", "source", "specversion", "type", "subject", "time", "datacontenttype", "dataschema", "data", "data_base64"];

/// Extension attribute names: lower-case letters and digits, at most 20 characters.
fn check_extension_name(name: &str) -> Result<(), ParseError> {
    let ok = !name.is_empty() && name.len() <= 20 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(err(format!("attribute `{name}`: names are 1–20 lower-case letters or digits")))
    }
}

/// Attribute values: CloudEvents strings hold no control characters (U+0000–U+001F,
/// U+007F–U+009F). Keel delivers attributes as HTTP headers, so a CR or LF let through here would
/// become a header of its own.
pub fn check_attribute_value(name: &str, value: &str) -> Result<(), ParseError> {
    match value.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => {
            Err(err(format!("attribute `{name}` must not contain control characters (found U+{:04X})", u32::from(c))))
        }
    }
}

fn check_time(time: &str) -> Result<(), ParseError> {
    humantime::parse_rfc3339_weak(time)
        .map(|_| ())
        .map_err(|_| err(format!("attribute `time`: {time:?} is not an RFC 3339 timestamp")))
}

/// What is wrong with one structured event: the attribute at fault (none when the event is not
/// a JSON object at all), and why.
struct Fault {
    attribute: Option<String>,
    message: String,
}

fn fault(attribute: &str, message: impl Into<String>) -> Fault {
    Fault { attribute: Some(attribute.to_owned()), message: message.into() }
}

fn string_attr(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Fault> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(fault(name, format!("attribute `{name}` must not be empty"))),
        Some(Value::String(s)) => {
            check_attribute_value(name, s).map_err(|e| fault(name, e.0))?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(fault(name, format!("attribute `{name}` must be a string"))),
    }
}

fn structured_one(value: &Value) -> Result<CloudEvent, Fault> {
    let obj = value
        .as_object()
        .ok_or_else(|| Fault { attribute: None, message: "a CloudEvent must be a JSON object".into() })?;
    for name in REQUIRED {
        if string_attr(obj, name)?.is_none() {
            return Err(fault(name, format!("missing required attribute `{name}`")));
        }
    }
    let get = |name| string_attr(obj, name);
    if get("specversion")?.as_deref() != Some("1.0") {
        return Err(fault("specversion", "attribute `specversion` must be \"1.0\""));
    }
    let time = get("time")?;
    if let Some(t) = &time {
        check_time(t).map_err(|e| fault("time", e.0))?;
    }
    let mut datacontenttype = get("datacontenttype")?;
    let data = match (obj.get("data"), obj.get("data_base64")) {
        (Some(_), Some(_)) => return Err(fault("data_base64", "`data` and `data_base64` are exclusive")),
        (None | Some(Value::Null), None) => Bytes::new(),
        (Some(Value::String(s)), None) if datacontenttype.as_deref().is_some_and(|ct| !ct.contains("json")) => {
            Bytes::from(s.clone())
        }
        (Some(v), None) => {
            datacontenttype.get_or_insert_with(|| "application/json".into());
            Bytes::from(v.to_string())
        }
        (None, Some(Value::String(b64))) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Bytes::from)
            .map_err(|_| fault("data_base64", "attribute `data_base64` is not valid base64"))?,
        (None, Some(_)) => return Err(fault("data_base64", "attribute `data_base64` must be a string")),
    };
    let mut extensions = BTreeMap::new();
    for (name, v) in obj.iter().filter(|(n, _)| !KNOWN.contains(&n.as_str())) {
        check_extension_name(name).map_err(|e| fault(name, e.0))?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            _ => return Err(fault(name, format!("extension `{name}` must be a string, number or boolean"))),
        };
        check_attribute_value(name, &text).map_err(|e| fault(name, e.0))?;
        extensions.insert(name.clone(), text);
    }
    Ok(CloudEvent {
        id: get("id")?.unwrap_or_default(),
        source: get("source")?.unwrap_or_default(),
        ty: get("type")?.unwrap_or_default(),
        subject: get("subject")?,
        time,
        datacontenttype,
        dataschema: get("dataschema")?,
        data,
        extensions,
    })
}

/// `application/cloudevents+json`: one event.
pub fn from_structured(body: &[u8]) -> Result<CloudEvent, ParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| err(format!("the body is not JSON: {e}")))?;
    structured_one(&value).map_err(|f| ParseError(f.message))
}

/// One event of a batch that breaks the CloudEvents spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEvent {
    /// Its place in the batch.
    pub index: usize,
    /// The JSON Pointer of the attribute at fault in the body (`/3/id`), or of the event
    /// (`/3`) when it is not an object.
    pub path: String,
    pub message: String,
}

/// Why a batch was refused, whole: a body that is not a non-empty JSON array (`events` empty),
/// or the events that break the spec, in order, at most [`BatchError::MAX_EVENTS`] of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    Body(String),
    #[error("event {}: {}", .0[0].index, .0[0].message)]
    Events(Vec<InvalidEvent>),
}

impl BatchError {
    /// The most invalid events named in one refusal.
    pub const MAX_EVENTS: usize = 20;
}

/// `application/cloudevents-batch+json`: an array of events, all valid or none taken: every
/// invalid event is named (up to [`BatchError::MAX_EVENTS`]), not only the first.
pub fn from_structured_batch(body: &[u8]) -> Result<Vec<CloudEvent>, BatchError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BatchError::Body(format!("the body is not JSON: {e}")))?;
    let items =
        value.as_array().ok_or_else(|| BatchError::Body("a batch must be a JSON array of CloudEvents".into()))?;
    if items.is_empty() {
        return Err(BatchError::Body("a batch must hold at least one event".into()));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match structured_one(item) {
            Ok(event) => events.push(event),
            Err(Fault { attribute, message }) => {
                let path = match attribute {
                    Some(name) => format!("/{index}/{}", name.replace('~', "~0").replace('/', "~1")),
                    None => format!("/{index}"),
                };
                invalid.push(InvalidEvent { index, path, message });
                if invalid.len() == BatchError::MAX_EVENTS {
                    break;
                }
            }
        }
    }
    if invalid.is_empty() {
        Ok(events)
    } else {
        Err(BatchError::Events(invalid))
    }
}

/// HTTP binary mode: attributes in `ce-*` headers (given lower-cased), data in the body.
pub fn from_binary(
    headers: &[(String, String)],
    content_type: Option<&str>,
    body: Bytes,
) -> Result<CloudEvent, ParseError> {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(attr) = name.strip_prefix("ce-") {
            check_attribute_value(attr, value).map_err(|e| err(format!("{} (header {name})", e.0)))?;
            if attrs.insert(attr.to_string(), value.clone()).is_some() {
                return Err(err(format!("attribute `{attr}` is sent twice (header {name})")));
            }
        }
    }
    for name in REQUIRED {
        if attrs.get(name).is_none_or(|v| v.is_empty()) {
            return Err(err(format!("missing required attribute `{name}` (header ce-{name})")));
        }
    }
    if attrs["specversion"] != "1.0" {
        return Err(err("attribute `specversion` (header ce-specversion) must be \"1.0\""));
    }
    if let Some(t) = attrs.get("time") {
        check_time(t)?;
    }
    let mut take = |n: &str| attrs.remove(n);
    let (id, source, ty) = (take("id"), take("source"), take("type"));
    let (subject, time, dataschema) = (take("subject"), take("time"), take("dataschema"));
    take("specversion");
    for name in attrs.keys() {
        check_extension_name(name)?;
    }
    Ok(CloudEvent {
        id: id.unwrap_or_default(),
        source: source.unwrap_or_default(),
        ty: ty.unwrap_or_default(),
        subject,
        time,
        datacontenttype: content_type.map(str::to_string),
        dataschema,
        data: body,
        extensions: attrs,
    })
}

/// Any JSON body, wrapped: `type` = the topic, a generated `id`, `source` = `keel`.
pub fn from_plain_json(topic: &str, id: String, body: Bytes) -> Result<CloudEvent, ParseError> {
    serde_json::from_slice::<Value>(&body).map_err(|e| err(format!("the body is not JSON: {e}")))?;
    Ok(CloudEvent {
        id,
        source: "keel".into(),
        ty: topic.to_string(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        data: body,
        extensions: BTreeMap::new(),
    })
}
