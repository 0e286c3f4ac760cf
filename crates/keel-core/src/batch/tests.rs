//! The batch contract: the request body, and each item's report from every kind of answer.

use super::*;
use crate::invocation::{Attempt, Delivery, NewInvocation};
use crate::kv::Precondition;

fn invocation(id: &str, payload: &str, content_type: Option<&str>) -> Invocation {
    let mut new = NewInvocation::plain(id, "index", Bytes::from(payload.to_owned()), 0);
    new.content_type = content_type.map(str::to_owned);
    new.into_stored()
}

#[test]
fn the_request_is_an_array_of_items_with_json_payloads_inline_and_others_in_base64() {
    let json = invocation("01A", " {\"n\": 1}\n", Some("application/json"));
    let mut retried = invocation("01B", "[1,2]", None);
    retried.attempt_count = 2;
    let text = invocation("01C", "\"hi\"", Some("text/plain"));
    let broken = invocation("01D", "{not json", Some("application/json"));
    let empty = invocation("01E", "", None);
    let body = request_body(&[&json, &retried, &text, &broken, &empty]);
    let parsed: Value = serde_json::from_slice(&body).expect("the body is JSON");
    assert_eq!(
        parsed,
        serde_json::json!([
            {"id": "01A", "attempt": 1, "idempotency_key": "01A", "payload": {"n": 1}, "content_type": "application/json"},
            {"id": "01B", "attempt": 3, "idempotency_key": "01B", "payload": [1, 2]},
            {"id": "01C", "attempt": 1, "idempotency_key": "01C", "payload_base64": "ImhpIg==", "content_type": "text/plain"},
            {"id": "01D", "attempt": 1, "idempotency_key": "01D", "payload_base64": "e25vdCBqc29u",
             "content_type": "application/json"},
            {"id": "01E", "attempt": 1, "idempotency_key": "01E", "payload_base64": ""},
        ])
    );
    assert_eq!(request_body(&[]), b"[]");
}

#[test]
fn a_delivery_carries_its_subscription_and_event_attributes() {
    let mut inv = invocation("01A", "{}", Some("application/cloudevents+json"));
    inv.delivery = Some(Delivery {
        subscription: "welcome".into(),
        event_id: "01EV".into(),
        headers: vec![("ce-id".into(), "e1".into()), ("ce-type".into(), "user.registered".into())],
        ordering_key: None,
        hops: 0,
    });
    let parsed: Value = serde_json::from_slice(&request_body(&[&inv])).unwrap();
    assert_eq!(parsed[0]["subscription"], "welcome");
    assert_eq!(parsed[0]["event"], serde_json::json!({"id": "e1", "type": "user.registered"}));
    assert_eq!(parsed[0]["payload"], serde_json::json!({}), "+json media types are JSON");
}

#[test]
fn batch_content_types_are_recognised_with_parameters_and_any_case() {
    assert!(is_batch_content_type("application/vnd.keel.batch+json"));
    assert!(is_batch_content_type("Application/VND.keel.batch+JSON; charset=utf-8"));
    assert!(!is_batch_content_type("application/json"));
}

const ITEMS: [Item<'static>; 3] =
    [Item { id: "a", number: 1 }, Item { id: "b", number: 4 }, Item { id: "c", number: 2 }];

/// The runtime's report of a batch call answered `status` with `body`.
fn answered(status: u16, body: &str) -> AttemptReport {
    let outcome = crate::outcome::classify_status(status);
    AttemptReport {
        attempt: Attempt {
            number: 1,
            started_at: 100,
            ended_at: 130,
            outcome,
            http_status: Some(status),
            error: (outcome != Outcome::Success).then(|| format!("HTTP {status}")),
        },
        response: Some(StoredResponse {
            status,
            content_type: Some("application/json".into()),
            body: Bytes::from(body.to_owned()),
        }),
        retry_after: None,
        effects: None,
    }
}

fn outcomes(reports: &[AttemptReport]) -> Vec<(u32, Outcome, Option<&str>)> {
    reports.iter().map(|r| (r.attempt.number, r.attempt.outcome, r.attempt.error.as_deref())).collect()
}

#[test]
fn an_empty_answer_or_failed_list_means_every_item_succeeded() {
    for body in ["", "{}", "{\"failed\": []}", " \n"] {
        let reports = item_reports(&answered(200, body), &ITEMS, 64);
        assert_eq!(
            outcomes(&reports),
            [(1, Outcome::Success, None), (4, Outcome::Success, None), (2, Outcome::Success, None)],
            "{body:?}"
        );
        assert!(reports.iter().all(|r| r.response.as_ref().is_some_and(|x| x.status == 200 && x.body.is_empty())));
        assert!(reports.iter().all(|r| (r.attempt.started_at, r.attempt.ended_at) == (100, 130)));
    }
}

#[test]
fn each_failed_item_fails_alone_transiently_or_for_good() {
    let body = r#"{"failed": [{"id": "b", "retry_after": 7, "error": "index busy"},
                             {"id": "c", "permanent": true, "error": "no such document", "retry_after": "1s"}],
                   "results": {"a": {"indexed": true}}}"#;
    let reports = item_reports(&answered(200, body), &ITEMS, 64);
    assert_eq!(
        outcomes(&reports),
        [
            (1, Outcome::Success, None),
            (4, Outcome::Transient, Some("failed transiently in its batch: index busy")),
            (2, Outcome::Permanent, Some("failed permanently in its batch: no such document")),
        ]
    );
    let result = reports[0].response.as_ref().unwrap();
    assert_eq!((result.status, result.content_type.as_deref()), (200, Some("application/json")));
    assert_eq!(&result.body[..], br#"{"indexed":true}"#);
    assert_eq!(reports[1].retry_after, Some(Duration::from_secs(7)), "its least delay");
    assert_eq!(reports[2].retry_after, None, "a permanent failure is not retried");
    assert!(reports[1].response.is_none());
}

#[test]
fn retry_after_takes_seconds_or_durations_capped_at_a_day() {
    let delay = |value: &str| {
        let body = format!(r#"{{"failed": [{{"id": "a", "retry_after": {value}}}]}}"#);
        let reports = item_reports(&answered(200, &body), &ITEMS[..1], 64);
        (reports[0].retry_after, reports[0].attempt.error.clone())
    };
    assert_eq!(delay("1.5").0, Some(Duration::from_millis(1500)));
    assert_eq!(delay("\"30\"").0, Some(Duration::from_secs(30)));
    assert_eq!(delay("\"250ms\"").0, Some(Duration::from_millis(250)));
    assert_eq!(delay("null").0, None);
    assert_eq!(delay("1e12").0, Some(MAX_RETRY_AFTER));
    let (none, error) = delay("-1");
    assert_eq!(none, None);
    assert_eq!(
        error.as_deref(),
        Some(
            "malformed batch answer: item \"a\": retry_after must be seconds (a number of at least 0) or a duration \
             like \"5s\" (got -1)"
        )
    );
}

#[test]
fn per_item_effects_become_that_items_effects_and_result() {
    let body = r#"{"effects": {
        "a": {"status": 201, "result": {"id": 1}, "kv": [{"ns": "docs", "key": "a", "value": 1, "if_absent": true}]},
        "b": {"kv": [{"ns": "docs", "key": "b"}]}}}"#;
    let reports = item_reports(&answered(200, body), &ITEMS, 64);
    let effects = reports[0].effects.as_ref().expect("a's effects");
    assert_eq!(effects.kv.len(), 1);
    assert_eq!(effects.kv[0].precondition, Precondition::IfAbsent);
    let response = reports[0].response.as_ref().unwrap();
    assert_eq!((response.status, &response.body[..]), (201, &br#"{"id":1}"#[..]));
    assert_eq!(reports[1].attempt.outcome, Outcome::Permanent, "a malformed envelope fails its item only");
    assert_eq!(
        reports[1].attempt.error.as_deref(),
        Some("effects envelope: kv[0]: a write needs a value (or \"delete\": true)")
    );
    assert!(reports[1].effects.is_none());
    assert_eq!(reports[2].attempt.outcome, Outcome::Success);
    assert!(reports[2].effects.is_none());
}

#[test]
fn any_answer_but_a_2xx_fails_every_item_transiently() {
    for (status, outcome) in [(500, Outcome::Transient), (400, Outcome::Transient), (429, Outcome::Transient)] {
        let mut batch = answered(status, "{\"detail\": \"down\"}");
        batch.retry_after = Some(Duration::from_secs(3));
        let reports = item_reports(&batch, &ITEMS, 64);
        let error = format!("the batch failed: HTTP {status}");
        assert_eq!(
            outcomes(&reports),
            [
                (1, outcome, Some(error.as_str())),
                (4, outcome, Some(error.as_str())),
                (2, outcome, Some(error.as_str()))
            ]
        );
        assert!(reports
            .iter()
            .all(|r| r.retry_after == Some(Duration::from_secs(3)) && r.attempt.http_status == Some(status)));
    }
    let mut timeout = answered(200, "");
    timeout.attempt.outcome = Outcome::Timeout;
    timeout.attempt.error = Some("timed out after 30s".into());
    timeout.response = None;
    assert_eq!(
        outcomes(&item_reports(&timeout, &ITEMS[..1], 64)),
        [(1, Outcome::Timeout, Some("the batch failed: timed out after 30s"))]
    );
}

#[test]
fn a_malformed_answer_fails_every_item_for_good_saying_why() {
    let cases = [
        ("not json", "malformed batch answer: expected ident at line 1 column 2"),
        (r#"{"failures": []}"#, "malformed batch answer: unknown field `failures`, expected one of `failed`, `results`, `effects` at line 1 column 11"),
        (r#"{"failed": [{"id": "zz"}]}"#, "malformed batch answer: it names item \"zz\", which is not in the batch"),
        (r#"{"results": {"zz": 1}}"#, "malformed batch answer: it names item \"zz\", which is not in the batch"),
        (r#"{"failed": [{"id": "a", "permanently": true}]}"#, "malformed batch answer: unknown field `permanently`, expected one of `id`, `retry_after`, `permanent`, `error` at line 1 column 37"),
    ];
    for (body, why) in cases {
        let reports = item_reports(&answered(200, body), &ITEMS, 64);
        assert_eq!(
            outcomes(&reports),
            [
                (1, Outcome::Permanent, Some(why)),
                (4, Outcome::Permanent, Some(why)),
                (2, Outcome::Permanent, Some(why))
            ],
            "{body}"
        );
    }
    let deep = format!("{{\"results\": {{\"a\": {}1{}}}}}", "[".repeat(10), "]".repeat(10));
    let reports = item_reports(&answered(200, &deep), &ITEMS[..1], 5);
    assert!(reports[0].attempt.error.as_deref().unwrap().starts_with("batch answer: the JSON nests"), "{reports:?}");
}

#[test]
fn each_item_keeps_its_own_decision_after_the_batch() {
    use crate::invocation::Transition;
    use crate::lifecycle::after_attempt;
    use crate::retry::{Jitter, RetryPolicy};
    let policy = RetryPolicy {
        max_attempts: 4,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
        multiplier: 2.0,
        jitter: Jitter::None,
    };
    let body = r#"{"failed": [{"id": "b"}, {"id": "c"}]}"#;
    let reports = item_reports(&answered(200, body), &ITEMS, 64);
    let mut a = invocation("a", "{}", None);
    let mut b = invocation("b", "{}", None);
    b.attempt_count = 3; // its fourth attempt: the last of its budget
    let mut c = invocation("c", "{}", None);
    c.attempt_count = 1;
    a.attempt_count = 0;
    let next: Vec<Transition> = [(&a, &reports[0]), (&b, &reports[1]), (&c, &reports[2])]
        .iter()
        .map(|(inv, r)| after_attempt(&policy, inv, r, 1_000, 0.5))
        .collect();
    assert!(matches!(next[0], Transition::Succeed { .. }));
    assert!(
        matches!(&next[1], Transition::Die { error, .. } if error == "retries exhausted after 4 attempts: failed transiently in its batch: no error given"),
        "{:?}",
        next[1]
    );
    assert_eq!(
        next[2],
        Transition::Retry {
            due_at: 1_200,
            delay_ms: 200,
            error: "failed transiently in its batch: no error given".into()
        }
    );
}
