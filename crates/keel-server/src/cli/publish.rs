//! `keel publish`: one event to a topic. Plain JSON data is sent as it is and the server wraps
//! it; with any CloudEvent attribute given (or no data at all) the CLI sends a structured
//! CloudEvent, so the attributes arrive as typed.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::Method;
use serde_json::{json, Value};

use super::client::{encode, idempotency_header, print_json, KeelClient};
use super::{payload, PublishArgs};

/// The `source` of the events the CLI builds, unless --source says otherwise.
const DEFAULT_SOURCE: &str = "keel-cli";

pub(crate) async fn run(client: &KeelClient, json: bool, args: PublishArgs) -> anyhow::Result<()> {
    let data = args.data.as_deref().map(|arg| payload::read(Some(arg))).transpose()?;
    let (content_type, body) = request_body(&args, data, || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        keel_core::id::new_id(now)
    })?;
    let mut headers = vec![(CONTENT_TYPE, content_type.to_owned())];
    headers.extend(args.idempotency_key.as_deref().map(idempotency_header));
    headers.extend(args.delay.as_ref().map(|delay| (super::invoke::DELAY, delay.header_value())));
    let path = format!("/v1/topics/{}/events", encode(&args.topic));
    let answer = client.send(Method::POST, &path, &headers, body).await?.into_json()?;
    if json {
        print_json(&answer);
    } else {
        for id in answer.get("ids").and_then(Value::as_array).into_iter().flatten() {
            println!("{}", id.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// The content type and body to publish: the data as it is when no attribute was given, else a
/// structured CloudEvent whose `id` is --id, `TOPIC/KEY` with an idempotency key (so a retry
/// sends the same body), or `fresh_id()`.
fn request_body(
    args: &PublishArgs,
    data: Option<Bytes>,
    fresh_id: impl FnOnce() -> String,
) -> anyhow::Result<(&'static str, Bytes)> {
    let attributes_given = args.ty.is_some() || args.source.is_some() || args.subject.is_some() || args.id.is_some();
    if let (Some(data), false) = (&data, attributes_given) {
        return Ok(("application/json", data.clone()));
    }
    let id = match (&args.id, &args.idempotency_key) {
        (Some(id), _) => id.clone(),
        (None, Some(key)) => format!("{}/{key}", args.topic),
        (None, None) => fresh_id(),
    };
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": args.source.as_deref().unwrap_or(DEFAULT_SOURCE),
        "type": args.ty.as_deref().unwrap_or(&args.topic),
    });
    if let Some(subject) = &args.subject {
        event["subject"] = json!(subject);
    }
    if let Some(data) = data {
        let value: Value = serde_json::from_slice(&data).map_err(|e| anyhow::anyhow!("--data must be JSON: {e}"))?;
        event["data"] = value;
    }
    Ok(("application/cloudevents+json", Bytes::from(event.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(topic: &str) -> PublishArgs {
        PublishArgs {
            topic: topic.into(),
            data: None,
            ty: None,
            source: None,
            subject: None,
            id: None,
            idempotency_key: None,
            delay: None,
        }
    }

    fn event(body: &Bytes) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn data_alone_is_sent_as_plain_json() {
        let (content_type, body) = request_body(&args("orders"), Some(Bytes::from(r#"{"n":1}"#)), || panic!()).unwrap();
        assert_eq!((content_type, body), ("application/json", Bytes::from(r#"{"n":1}"#)));
    }

    #[test]
    fn an_attribute_makes_a_structured_event_with_defaults() {
        let mut a = args("orders");
        a.subject = Some("o-1".into());
        let (content_type, body) = request_body(&a, Some(Bytes::from("[1, 2]")), || "01JNEW".into()).unwrap();
        assert_eq!(content_type, "application/cloudevents+json");
        assert_eq!(
            event(&body),
            json!({"specversion": "1.0", "id": "01JNEW", "source": "keel-cli", "type": "orders",
                   "subject": "o-1", "data": [1, 2]})
        );
    }

    #[test]
    fn given_attributes_win_and_no_data_means_no_data_field() {
        let mut a = args("orders");
        (a.ty, a.source, a.id) = (Some("order.placed".into()), Some("shop".into()), Some("e-9".into()));
        let (_, body) = request_body(&a, None, || panic!("an id was given")).unwrap();
        assert_eq!(event(&body), json!({"specversion": "1.0", "id": "e-9", "source": "shop", "type": "order.placed"}));
        let (content_type, _) = request_body(&args("orders"), None, || "01JNEW".into()).unwrap();
        assert_eq!(content_type, "application/cloudevents+json");
    }

    #[test]
    fn a_keyed_event_gets_the_same_id_every_time() {
        let mut a = args("orders");
        (a.ty, a.idempotency_key) = (Some("order.placed".into()), Some("k1".into()));
        let (_, first) = request_body(&a, None, || "01JA".into()).unwrap();
        let (_, again) = request_body(&a, None, || "01JB".into()).unwrap();
        assert_eq!(first, again);
        assert_eq!(event(&first)["id"], "orders/k1");
    }

    #[test]
    fn structured_data_must_be_json() {
        let mut a = args("orders");
        a.ty = Some("t".into());
        let error = request_body(&a, Some(Bytes::from("not json")), || "01J".into()).unwrap_err();
        assert!(error.to_string().starts_with("--data must be JSON"), "{error}");
    }
}
