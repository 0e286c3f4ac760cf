//! CloudEvent attributes never become headers of their own.

use serde_json::{json, Value};

use crate::support::{get_json, request, Functions, Keel};

async fn subscribed_keel() -> (Functions, Keel) {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.ok]\nurl = \"http://{addr}/ok\"\n[topics.t]\n\
         [[subscriptions]]\nname = \"s\"\ntopic = \"t\"\nfunction = \"ok\"\n"
    ))
    .await;
    (fns, keel)
}

/// The repro: a batch of 301 events whose last one hides a header in its subject.
#[tokio::test]
async fn a_line_break_in_any_attribute_refuses_the_whole_batch() {
    let (fns, keel) = subscribed_keel().await;
    let url = format!("{}/v1/topics/t/events", keel.url);
    let batch_ct = [("content-type", "application/cloudevents-batch+json")];
    let attacks = [
        ("subject", "x\nidempotency-key: attacker-key"),
        ("type", "t\r\nauthorization: Bearer forged"),
        ("source", "s\u{0}"),
        ("id", "e\nkeel-attempt: 9"),
        ("tenant", "a\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ];
    for (attr, value) in attacks {
        let mut events: Vec<Value> = (0..301)
            .map(|i| json!({"specversion": "1.0", "id": format!("{attr}-{i}"), "source": "s", "type": "t"}))
            .collect();
        events[300][attr] = value.into();
        let (status, headers, body) = request("POST", &url, &batch_ct, Value::Array(events).to_string()).await;
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 400, "{attr}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("event 300: attribute `{attr}` must not contain control")), "{detail}");
    }
    let one = json!({"specversion": "1.0", "id": "x", "source": "s", "type": "t", "UPPER_Bad": "v"});
    let structured = [("content-type", "application/cloudevents+json")];
    let (status, _, body) = request("POST", &url, &structured, one.to_string()).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    let (_, _, page) = get_json(&format!("{}/v1/invocations?function=ok", keel.url)).await;
    assert_eq!(page["items"], json!([]), "no event of a refused batch was stored");
    assert!(fns.calls().is_empty());
}

/// Binary mode: a `ce-*` header that is not visible ASCII is refused, not silently dropped.
#[tokio::test]
async fn binary_mode_refuses_what_it_cannot_read() {
    let (_fns, keel) = subscribed_keel().await;
    let url = format!("{}/v1/topics/t/events", keel.url);
    let base = [("ce-specversion", "1.0"), ("ce-id", "b1"), ("ce-source", "s"), ("ce-type", "t")];
    let mut headers = base.to_vec();
    headers.push(("ce-under_score", "v"));
    let (status, _, body) = request("POST", &url, &headers, "{}").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("under_score"));
}
