use bytes::Bytes;

use serde_json::{json, Value};

use super::*;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn structured_events_keep_their_attributes_and_data() {
    let e = from_structured(
        br#"{"specversion":"1.0","id":"e1","source":"/shop","type":"order.placed","subject":"o-7",
            "time":"2026-11-27T10:00:00Z","data":{"total":5},"tenant":"acme"}"#,
    )
    .unwrap();
    assert_eq!((e.id.as_str(), e.source.as_str(), e.ty.as_str()), ("e1", "/shop", "order.placed"));
    assert_eq!(e.subject.as_deref(), Some("o-7"));
    assert_eq!(&e.data[..], br#"{"total":5}"#);
    assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(e.extensions["tenant"], "acme");
    let b64 =
        from_structured(br#"{"specversion":"1.0","id":"e","source":"s","type":"t","data_base64":"aGk="}"#).unwrap();
    assert_eq!(&b64.data[..], b"hi");
}

#[test]
fn invalid_events_name_the_attribute_at_fault() {
    let cases: [(&[u8], &str); 7] = [
        (br#"{"specversion":"1.0","id":"e","type":"t"}"#, "missing required attribute `source`"),
        (br#"{"specversion":"0.3","id":"e","source":"s","type":"t"}"#, "`specversion` must be \"1.0\""),
        (br#"{"specversion":"1.0","id":"","source":"s","type":"t"}"#, "`id` must not be empty"),
        (br#"{"specversion":"1.0","id":"e","source":"s","type":"t","time":"yesterday"}"#, "`time`"),
        (br#"{"specversion":"1.0","id":"e","source":"s","type":"t","Bad-Name":"x"}"#, "`Bad-Name`"),
        (br#"{"specversion":"1.0","id":"e","source":"s","type":3}"#, "`type` must be a string"),
        (br#"[1]"#, "must be a JSON object"),
    ];
    for (body, expected) in cases {
        let e = from_structured(body).unwrap_err();
        assert!(e.0.contains(expected), "{:?}: {e}", String::from_utf8_lossy(body));
    }
    let e =
        from_structured_batch(br#"[{"specversion":"1.0","id":"a","source":"s","type":"t"},{"id":"b"}]"#).unwrap_err();
    assert!(e.to_string().starts_with("event 1: missing required attribute"), "{e}");
    assert!(from_structured_batch(b"[]").is_err());
}

/// A batch is refused whole, naming every event that breaks the spec by the JSON Pointer of
/// the attribute at fault.
#[test]
fn a_batch_names_each_invalid_event_by_its_attribute() {
    let ok = |id: &str| json!({"specversion": "1.0", "id": id, "source": "s", "type": "t"});
    let mut batch = vec![ok("a"), ok("b"), ok("c"), ok("d"), ok("e"), ok("f"), 7.into()];
    batch[1]["time"] = "yesterday".into();
    batch[3]["id"] = "".into();
    batch[4].as_object_mut().unwrap().remove("source");
    batch[5]["specversion"] = "0.3".into();
    let Err(BatchError::Events(invalid)) = from_structured_batch(Value::Array(batch).to_string().as_bytes()) else {
        panic!("the batch was not refused by event")
    };
    let named: Vec<(usize, &str)> = invalid.iter().map(|e| (e.index, e.path.as_str())).collect();
    assert_eq!(named, [(1, "/1/time"), (3, "/3/id"), (4, "/4/source"), (5, "/5/specversion"), (6, "/6")]);
    assert_eq!(invalid[1].message, "attribute `id` must not be empty");
    let many: Vec<Value> = (0..50).map(|_| json!({"id": "x"})).collect();
    let Err(BatchError::Events(invalid)) = from_structured_batch(Value::Array(many).to_string().as_bytes()) else {
        panic!("refused")
    };
    assert_eq!(invalid.len(), BatchError::MAX_EVENTS);
    assert!(matches!(from_structured_batch(b"{}"), Err(BatchError::Body(_))));
}

#[test]
fn binary_mode_reads_ce_headers() {
    let headers = h(&[
        ("ce-specversion", "1.0"),
        ("ce-id", "x"),
        ("ce-source", "s"),
        ("ce-type", "t"),
        ("ce-traceparent", "00-1-2-01"),
        ("accept", "*/*"),
    ]);
    let e = from_binary(&headers, Some("text/plain"), Bytes::from_static(b"hello")).unwrap();
    assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(e.extensions.get("traceparent").map(String::as_str), Some("00-1-2-01"));
    assert_eq!(&e.data[..], b"hello");
    let missing = from_binary(&h(&[("ce-specversion", "1.0"), ("ce-id", "x"), ("ce-type", "t")]), None, Bytes::new());
    assert!(missing.unwrap_err().0.contains("ce-source"));
}

#[test]
fn plain_json_is_wrapped_with_the_topic_as_type() {
    let e = from_plain_json("user.registered", "id1".into(), Bytes::from_static(b"{\"u\":1}")).unwrap();
    assert_eq!((e.ty.as_str(), e.source.as_str(), e.id.as_str()), ("user.registered", "keel", "id1"));
    assert!(from_plain_json("t", "i".into(), Bytes::from_static(b"not json")).is_err());
}

#[test]
fn filters_match_every_given_field() {
    let e =
        from_structured(br#"{"specversion":"1.0","id":"e","source":"/shop","type":"user.registered","subject":"u-1"}"#)
            .unwrap();
    assert!(Filter::default().matches(&e));
    assert!(Filter { type_prefix: Some("user.".into()), ..Default::default() }.matches(&e));
    assert!(!Filter { ty: Some("user".into()), ..Default::default() }.matches(&e));
    assert!(
        Filter { source: Some("/shop".into()), subject_prefix: Some("u-".into()), ..Default::default() }.matches(&e)
    );
    assert!(!Filter { subject_prefix: Some("o-".into()), ..Default::default() }.matches(&e));
    let headers = e.binary_headers();
    assert!(headers.contains(&("ce-subject".into(), "u-1".into())));
}

#[test]
fn control_characters_in_any_attribute_are_refused_by_name() {
    for attr in ["id", "source", "type", "subject", "dataschema", "datacontenttype", "tenant"] {
        for bad in ["x\nidempotency-key: attacker-key", "x\r\nkeel-attempt: 9", "x\u{0}y", "x\u{85}y", "x\u{7f}"] {
            let mut event = serde_json::json!({"specversion": "1.0", "id": "e", "source": "s", "type": "t"});
            event[attr] = bad.into();
            let e = from_structured(event.to_string().as_bytes()).unwrap_err();
            assert!(e.0.contains(&format!("attribute `{attr}` must not contain control characters")), "{attr}: {e}");
            let batch = serde_json::json!([{"specversion": "1.0", "id": "ok", "source": "s", "type": "t"}, event]);
            let e = from_structured_batch(batch.to_string().as_bytes()).unwrap_err();
            assert!(e.to_string().starts_with(&format!("event 1: attribute `{attr}`")), "{attr}: {e}");
        }
    }
    let headers = h(&[("ce-specversion", "1.0"), ("ce-id", "x"), ("ce-source", "s"), ("ce-type", "t\u{1}")]);
    let e = from_binary(&headers, None, Bytes::new()).unwrap_err();
    assert!(e.0.contains("attribute `type` must not contain control characters"), "{e}");
    assert!(from_structured(br#"{"specversion":"1.0","id":"e","source":"s","type":"t","subject":"caf\u00e9 \t"}"#)
        .is_err_and(|e| e.0.contains("`subject`")));
    from_structured(r#"{"specversion":"1.0","id":"e","source":"s","type":"t","subject":"café"}"#.as_bytes()).unwrap();
}

#[test]
fn extension_names_follow_the_spec_in_every_mode() {
    for name in ["UPPER_Bad", "under_score", "dash-ed", "abcdefghijklmnopqrstu"] {
        let body = format!(r#"{{"specversion":"1.0","id":"e","source":"s","type":"t","{name}":"v"}}"#);
        let e = from_structured(body.as_bytes()).unwrap_err();
        assert!(e.0.contains(&format!("attribute `{name}`: names are 1–20")), "{name}: {e}");
    }
    let base = [("ce-specversion", "1.0"), ("ce-id", "x"), ("ce-source", "s"), ("ce-type", "t")];
    for name in ["ce-under_score", "ce-dash-ed"] {
        let mut headers = h(&base);
        headers.push((name.to_string(), "v".to_string()));
        assert!(from_binary(&headers, None, Bytes::new()).is_err(), "{name}");
    }
    let mut twice = h(&base);
    twice.push(("ce-id".into(), "y".into()));
    assert!(from_binary(&twice, None, Bytes::new()).unwrap_err().0.contains("sent twice"));
}
