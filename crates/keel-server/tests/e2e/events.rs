//! Events, fan-out, KV and effects end to end.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::access::{bearer, key, start_secured};
use crate::crash::{free_port, spawn_keel, wait_ready};
use crate::load::submit_many;
use crate::support::{eventually, get_json, post_json, request, wait_quiet, Functions, Keel};

/// The effectful test functions, behind `/fx/KIND`:
/// - `incr`: reads `counters/n` from Keel and writes n+1 with `if_version` (or `if_absent`);
/// - `record`: writes `done/<invocation id>` if absent and emits `done` with that subject;
/// - `loop`: emits an event to the topic `loop` (an event loop);
/// - `emit`: emits an event to the topic named by `?topic=`.
pub(crate) async fn effects_function(
    kind: &str,
    keel: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    _body: &[u8],
) -> Response {
    let id = headers.get("keel-invocation-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    // `?ms=N`: answer only after N ms (a slow function, for what happens meanwhile).
    if let Some(ms) = q.get("ms").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let envelope = match kind {
        "incr" => {
            let (status, h, body) = request("GET", &format!("{keel}/v1/kv/counters/n"), &[], "").await;
            let write = if status == 404 {
                json!({"ns": "counters", "key": "n", "value": 1, "if_absent": true})
            } else {
                let version: i64 = h["etag"].to_str().unwrap().trim_matches('"').parse().unwrap();
                let n: i64 = serde_json::from_slice(&body).unwrap();
                json!({"ns": "counters", "key": "n", "value": n + 1, "if_version": version})
            };
            json!({"result": {"ok": true}, "kv": [write]})
        }
        "record" => json!({
            "result": {"recorded": id},
            "kv": [{"ns": "done", "key": id, "value": {"by": id}, "if_absent": true}],
            "events": [{"topic": "done", "subject": id, "data": {"id": id}}],
        }),
        "loop" => json!({"events": [{"topic": "loop", "data": {}}]}),
        // Adds one to `counts/{k}` (k from the body): applied twice, it would read 2.
        "count" => {
            let k = serde_json::from_slice::<Value>(_body).ok().and_then(|b| b["k"].as_str().map(str::to_string));
            let Some(k) = k else { return (axum::http::StatusCode::BAD_REQUEST, "no k").into_response() };
            let url = format!("{keel}/v1/kv/counts/{k}");
            let Some((status, h, body)) =
                crate::killloop::try_request("GET", &url, &[], "", Duration::from_secs(2)).await
            else {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "keel unreachable").into_response();
            };
            let write = match status {
                404 => json!({"ns": "counts", "key": k, "value": 1, "if_absent": true}),
                200 => {
                    let version: i64 = h["etag"].to_str().unwrap().trim_matches('"').parse().unwrap();
                    let n: i64 = serde_json::from_slice(&body).unwrap();
                    json!({"ns": "counts", "key": k, "value": n + 1, "if_version": version})
                }
                _ => return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "kv read failed").into_response(),
            };
            json!({"result": {"counted": k}, "kv": [write]})
        }
        "emit" => json!({"events": [{"topic": q.get("topic").cloned().unwrap_or_default(), "data": {}}]}),
        _ => return (axum::http::StatusCode::NOT_FOUND, "unknown fx").into_response(),
    };
    ([("content-type", "application/vnd.keel.effects+json")], envelope.to_string()).into_response()
}

fn delivery_pairs(fns: &Functions) -> Vec<(String, String, u16)> {
    fns.calls()
        .iter()
        .filter(|c| c.headers.contains_key("keel-subscription"))
        .map(|c| {
            let h = |n: &str| c.headers.get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            (h("keel-subscription"), h("ce-id"), c.status)
        })
        .collect()
}

async fn wait_event_settled(keel: &Keel, id: &str) -> Value {
    let url = format!("{}/v1/events/{id}", keel.url);
    eventually(&format!("every delivery of event {id} ended"), Duration::from_secs(10), || async {
        let (_, _, event) = get_json(&url).await;
        let pending = event["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| ["queued", "running", "retrying"].contains(&d["status"].as_str().unwrap()));
        (!pending).then_some(event)
    })
    .await
}

#[tokio::test]
async fn one_event_fans_out_to_three_subscribers_each_failing_on_its_own() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.ok]\nurl = \"http://{addr}/ok\"\n[functions.bad]\nurl = \"http://{addr}/status?code=400\"\n\
         [topics.\"user.registered\"]\n\
         [[subscriptions]]\nname = \"welcome\"\ntopic = \"user.registered\"\nfunction = \"ok\"\n\
         [[subscriptions]]\nname = \"analytics\"\ntopic = \"user.registered\"\nfunction = \"ok\"\n\
         [[subscriptions]]\nname = \"crm\"\ntopic = \"user.registered\"\nfunction = \"bad\"\n"
    ))
    .await;
    let event = r#"{"specversion":"1.0","id":"u-1","source":"/signup","type":"user.registered","subject":"u1","data":{"user_id":"u1"}}"#;
    let url = format!("{}/v1/topics/user.registered/events", keel.url);
    let (status, _, body) = request("POST", &url, &[("content-type", "application/cloudevents+json")], event).await;
    assert_eq!(status, 202);
    let id = serde_json::from_slice::<Value>(&body).unwrap()["ids"][0].as_str().unwrap().to_string();
    let settled = wait_event_settled(&keel, &id).await;
    let states: HashMap<_, _> = settled["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["subscription"].as_str().unwrap().to_string(), d["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states["welcome"], "succeeded");
    assert_eq!(states["analytics"], "succeeded");
    assert_eq!(states["crm"], "dead");
    assert_eq!(settled["data"]["user_id"], "u1");

    // Delivered in CloudEvents binary mode with the subscription named.
    let calls = fns.calls();
    let welcome = calls.iter().find(|c| c.headers.get("keel-subscription").is_some_and(|v| v == "welcome")).unwrap();
    assert_eq!(welcome.headers["ce-id"], "u-1");
    assert_eq!(welcome.headers["ce-source"], "/signup");
    assert_eq!(welcome.headers["ce-type"], "user.registered");
    assert_eq!(welcome.headers["ce-subject"], "u1");
    assert_eq!(welcome.headers["content-type"], "application/json");
    assert_eq!(&welcome.body[..], br#"{"user_id":"u1"}"#);

    // The same source + id again is accepted once: the original id, no new deliveries.
    let (status, _, again) = request("POST", &url, &[("content-type", "application/cloudevents+json")], event).await;
    assert_eq!(status, 202);
    assert_eq!(serde_json::from_slice::<Value>(&again).unwrap()["ids"][0], id.as_str());

    let (_, _, dlq) = get_json(&format!("{}/v1/dlq?subscription=crm", keel.url)).await;
    assert_eq!(dlq["items"].as_array().unwrap().len(), 1);
    assert_eq!(dlq["items"][0]["event_id"], id.as_str());
    let (status, _, redriven) = post_json(&format!("{}/v1/dlq/redrive", keel.url), r#"{"subscription":"crm"}"#).await;
    assert_eq!((status, redriven["redriven"].as_u64()), (200, Some(1)));
    wait_event_settled(&keel, &id).await;
    let crm_calls = delivery_pairs(&fns).iter().filter(|(s, _, _)| s == "crm").count();
    assert_eq!(crm_calls, 2, "the crm delivery ran again, the others did not");
    assert_eq!(delivery_pairs(&fns).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_a_thousand_events_makes_exactly_two_thousand_deliveries() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.ok]\nurl = \"http://{addr}/ok\"\nconcurrency = 32\n[topics.orders]\n\
         [[subscriptions]]\nname = \"billing\"\ntopic = \"orders\"\nfunction = \"ok\"\n\
         [[subscriptions]]\nname = \"shipping\"\ntopic = \"orders\"\nfunction = \"ok\"\n"
    ))
    .await;
    let batch: Vec<Value> = (0..1000).map(|i| json!({"specversion": "1.0", "id": format!("o-{i}"), "source": "/shop", "type": "order.placed", "data": {"i": i}})).collect();
    let url = format!("{}/v1/topics/orders/events", keel.url);
    let (status, _, body) = request(
        "POST",
        &url,
        &[("content-type", "application/cloudevents-batch+json")],
        Value::Array(batch).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["ids"].as_array().unwrap().len(), 1000);
    wait_quiet(&keel.url, Duration::from_secs(60)).await;
    let pairs = delivery_pairs(&fns);
    assert_eq!(pairs.len(), 2000, "no more than one delivery per event and subscription");
    let unique: HashSet<_> = pairs.iter().map(|(s, id, _)| (s.clone(), id.clone())).collect();
    assert_eq!(unique.len(), 2000, "each event id seen once per subscription");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_conditional_increments_make_twenty() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.incr]\nurl = \"http://{addr}/fx/incr\"\nconcurrency = 20\n\
         retry = {{ max_attempts = 100, initial = \"5ms\", max = \"50ms\" }}\n"
    ))
    .await;
    fns.set_keel(&keel.url);
    let accepted = submit_many(&keel.url, "incr", 20).await;
    assert_eq!(accepted.len(), 20);
    for id in &accepted {
        let inv = keel.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(inv["status"], "succeeded", "{inv}");
    }
    let (status, headers, value) = get_json(&format!("{}/v1/kv/counters/n", keel.url)).await;
    assert_eq!(status, 200);
    assert_eq!(value, 20, "no lost update");
    assert_eq!(headers["etag"], "\"20\"");
    let conflicts = accepted.iter().map(|id| fns.calls_for(id).len() - 1).sum::<usize>();
    let (_, _, any) = get_json(&format!("{}/v1/invocations/{}", keel.url, accepted[0])).await;
    assert!(any["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["outcome"] == "success" || a["outcome"] == "conflict"));
    println!("{conflicts} conflicts retried");
}

#[tokio::test]
async fn kv_over_http_uses_etags_and_preconditions() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.ok]\nurl = \"http://{addr}/ok\"\n")).await;
    let url = format!("{}/v1/kv/carts/u1/items", keel.url);
    let (s, h, _) = request("PUT", &url, &[("if-none-match", "*")], r#"{"n":1}"#).await;
    assert_eq!((s, h["etag"].to_str().unwrap()), (201, "\"1\""));
    let (s, _, _) = request("PUT", &url, &[("if-none-match", "*")], r#"{"n":2}"#).await;
    assert_eq!(s, 412);
    let (s, _, _) = request("PUT", &url, &[("if-match", "\"7\"")], r#"{"n":2}"#).await;
    assert_eq!(s, 412);
    let (s, h, _) = request("PUT", &url, &[("if-match", "\"1\"")], r#"{"n":2}"#).await;
    assert_eq!((s, h["etag"].to_str().unwrap()), (200, "\"2\""));
    let (s, h, v) = get_json(&url).await;
    assert_eq!((s, v, h["etag"].to_str().unwrap()), (200, json!({"n": 2}), "\"2\""));
    assert_eq!(request("PUT", &url, &[], "not json").await.0, 400);
    assert_eq!(request("DELETE", &url, &[("if-match", "\"1\"")], "").await.0, 412);
    assert_eq!(request("DELETE", &url, &[("if-match", "\"2\"")], "").await.0, 204);
    assert_eq!(get_json(&url).await.0, 404);
    assert_eq!(request("DELETE", &url, &[], "").await.0, 404);
}

/// Every key of `GET {url}?prefix=…&limit=…`, page by page until `next_cursor` is null; and how
/// many pages that took.
async fn list_all(url: &str, prefix: &str, limit: usize) -> (Vec<(String, Value)>, usize) {
    let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut page_url = format!("{url}?prefix={}&limit={limit}", keel_server::client::encode(prefix));
        if let Some(cursor) = &cursor {
            page_url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, _, page) = get_json(&page_url).await;
        assert_eq!(status, 200, "{page_url}: {page}");
        pages += 1;
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit, "{page}");
        items.extend(got.iter().map(|i| (i["key"].as_str().unwrap().to_owned(), i.clone())));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, pages),
        }
    }
}

/// `keel kv ls ARGS…` against `base`: its stdout and stderr.
async fn keel_kv_ls(base: &str, args: &[&str]) -> (String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--url", base, "kv", "ls"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "keel kv ls {args:?}: {output:?}");
    (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

#[tokio::test]
async fn kv_lists_a_namespace_by_prefix_page_by_page() {
    let (_fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!("[functions.ok]\nurl = \"http://{addr}/ok\"\n")).await;
    let url = format!("{}/v1/kv/shop", keel.url);
    // Two prefixes, and keys a `LIKE '50%_off%'` would mix up with the literal prefix `50%_off`.
    let keys = ["eu/3", "us/1", "eu/1", "50%_off/b", "eu/10", "50x_off", "us/2", "eu/2", "50%_off/a", "50%Xoff"];
    for (i, key) in keys.iter().enumerate() {
        let put = format!("{url}/{}", keel_server::client::encode(key));
        assert_eq!(request("PUT", &put, &[], format!("{{\"n\":{i}}}")).await.0, 201, "{key}");
    }
    assert_eq!(request("PUT", &format!("{url}/eu%2F1"), &[], r#"{"n":"again"}"#).await.0, 200);
    assert_eq!(request("PUT", &format!("{}/v1/kv/other/eu%2F9", keel.url), &[], "1").await.0, 201);

    let (eu, pages) = list_all(&url, "eu/", 2).await;
    let eu_keys: Vec<&str> = eu.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!((eu_keys, pages), (vec!["eu/1", "eu/10", "eu/2", "eu/3"], 2), "each key once, in byte order");
    assert_eq!(eu[0].1, json!({"key": "eu/1", "value": {"n": "again"}, "version": 2}));
    let (all, pages) = list_all(&url, "", 2).await;
    let mut sorted = keys.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!((all.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), pages), (sorted, 5));
    let (literal, _) = list_all(&url, "50%_off", 100).await;
    let literal: Vec<&str> = literal.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(literal, ["50%_off/a", "50%_off/b"], "% and _ are taken literally");
    let (_, _, none) = get_json(&format!("{url}?prefix=zz")).await;
    assert_eq!(none, json!({"items": [], "next_cursor": null}));
    assert_eq!(get_json(&format!("{}/v1/kv/empty", keel.url)).await.2, json!({"items": [], "next_cursor": null}));
    assert_eq!(get_json(&format!("{url}?limit=5000")).await.2["items"].as_array().unwrap().len(), keys.len());

    let (_, _, after) = get_json(&format!("{url}?prefix=eu%2F&cursor=eu%2F10")).await;
    assert_eq!(after["items"].as_array().unwrap().iter().map(|i| &i["key"]).collect::<Vec<_>>(), ["eu/2", "eu/3"]);
    for bad in ["limit=0", "limit=ten", "limit=-1", "cursor=", "cursor=a%0Ab", "prefix=%07", "sort=key"] {
        let (status, headers, body) = request("GET", &format!("{url}?{bad}"), &[], "").await;
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
        assert_eq!(headers["content-type"], "application/problem+json", "{bad}");
    }
    assert_eq!(get_json(&format!("{}/v1/kv/a%2Fb", keel.url)).await.0, 400, "a namespace holds no /");

    // `keel kv ls`: a table of keys and versions, one page, and the cursor of the next.
    let (table, hint) = keel_kv_ls(&keel.url, &["shop", "--prefix", "eu/", "--limit", "3"]).await;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows[0], "KEY    VERSION  VALUE");
    assert_eq!(rows[1], r#"eu/1   2        {"n":"again"}"#);
    assert_eq!(
        rows.iter().skip(1).map(|r| r.split(' ').next().unwrap()).collect::<Vec<_>>(),
        ["eu/1", "eu/10", "eu/2"]
    );
    let cursor = hint.trim().strip_prefix("next page: --cursor ").unwrap_or_else(|| panic!("{hint:?}"));
    let (rest, hint) = keel_kv_ls(&keel.url, &["shop", "--prefix", "eu/", "--limit", "3", "--cursor", cursor]).await;
    assert_eq!(rest.lines().skip(1).map(|r| r.split(' ').next().unwrap()).collect::<Vec<_>>(), ["eu/3"]);
    assert_eq!(hint, "", "the last page");
    let (json_page, _) = keel_kv_ls(&keel.url, &["--json", "shop", "--prefix", "us/"]).await;
    let json_page: Value = serde_json::from_str(&json_page).unwrap();
    assert_eq!(json_page["items"].as_array().unwrap().len(), 2);
    assert_eq!(json_page["next_cursor"], Value::Null);
    let (nothing, said) = keel_kv_ls(&keel.url, &["shop", "--prefix", "zz"]).await;
    assert_eq!((nothing.as_str(), said.trim()), ("", r#"no keys of shop start with "zz""#));
}

#[tokio::test]
async fn kv_listing_needs_the_namespaces_read_scope() {
    let (_fns, addr) = Functions::start().await;
    let (admin, admin_secret) = key("admin", &["admin"], None, None);
    let (reader, reader_secret) = key("reader", &["kv:shop:read"], None, None);
    let (writer, writer_secret) = key("writer", &["kv:shop:write"], None, None);
    let (elsewhere, elsewhere_secret) = key("elsewhere", &["kv:other:read", "read"], None, None);
    let keel = start_secured(
        &format!("[functions.ok]\nurl = \"http://{addr}/ok\"\n"),
        &[&admin, &reader, &writer, &elsewhere],
    )
    .await;
    let url = format!("{}/v1/kv/shop", keel.url);
    let as_key = |secret: &str| bearer(secret);
    let admin_auth = as_key(&admin_secret);
    assert_eq!(request("PUT", &format!("{url}/u1"), &[("authorization", &admin_auth)], "1").await.0, 201);

    let (status, _, body) = request("GET", &url, &[("authorization", &as_key(&reader_secret))], "").await;
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, page), (200, json!({"items": [{"key": "u1", "value": 1, "version": 1}], "next_cursor": null})));
    for secret in [&writer_secret, &elsewhere_secret] {
        let (status, _, body) = request("GET", &url, &[("authorization", &as_key(secret))], "").await;
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, &problem["scope_needed"]), (403, &json!("kv:shop:read")), "{problem}");
    }
    assert_eq!(request("GET", &url, &[], "").await.0, 401);
}

#[tokio::test]
async fn filters_pick_events_by_type_source_and_subject() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.ok]\nurl = \"http://{addr}/ok\"\n[topics.t]\n\
         [[subscriptions]]\nname = \"users\"\ntopic = \"t\"\nfunction = \"ok\"\nfilter = {{ type_prefix = \"user.\" }}\n\
         [[subscriptions]]\nname = \"vip\"\ntopic = \"t\"\nfunction = \"ok\"\nfilter = {{ subject_prefix = \"vip-\", source = \"/crm\" }}\n"
    ))
    .await;
    let url = format!("{}/v1/topics/t/events", keel.url);
    for (id, ty, source, subject) in [
        ("1", "user.created", "/app", "u1"),
        ("2", "order.placed", "/crm", "vip-7"),
        ("3", "user.deleted", "/crm", "vip-8"),
        ("4", "order.placed", "/app", "vip-9"),
    ] {
        let e = json!({"specversion": "1.0", "id": id, "type": ty, "source": source, "subject": subject});
        assert_eq!(
            request("POST", &url, &[("content-type", "application/cloudevents+json")], e.to_string()).await.0,
            202
        );
    }
    // Binary mode and a plain JSON body too.
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "5"),
        ("ce-source", "/app"),
        ("ce-type", "user.binary"),
        ("content-type", "text/plain"),
    ];
    assert_eq!(request("POST", &url, &binary, "hello").await.0, 202);
    assert_eq!(post_json(&url, r#"{"plain":true}"#).await.0, 202);
    let bad = request(
        "POST",
        &url,
        &[("content-type", "application/cloudevents+json")],
        r#"{"specversion":"1.0","id":"x","type":"t"}"#,
    )
    .await;
    assert_eq!(bad.0, 400);
    assert!(String::from_utf8_lossy(&bad.2).contains("source"), "the problem names the attribute");
    assert_eq!(post_json(&format!("{}/v1/topics/nope/events", keel.url), "{}").await.0, 404);

    wait_quiet(&keel.url, Duration::from_secs(5)).await;
    let mut got: Vec<_> = delivery_pairs(&fns).into_iter().map(|(s, id, _)| format!("{s}:{id}")).collect();
    got.sort();
    assert_eq!(got, ["users:1", "users:3", "users:5", "vip:2", "vip:3"]);
    let binary_call = fns.calls().into_iter().find(|c| c.headers.get("ce-id").is_some_and(|v| v == "5")).unwrap();
    assert_eq!(&binary_call.body[..], b"hello");
    assert_eq!(binary_call.headers["content-type"], "text/plain");
}

#[tokio::test]
async fn ordered_deliveries_wait_for_earlier_events_of_the_same_subject() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.flaky]\nurl = \"http://{addr}/flaky?fail=2\"\nretry = {{ max_attempts = 5, initial = \"10ms\", max = \"20ms\" }}\n\
         [topics.accounts]\n\
         [[subscriptions]]\nname = \"ledger\"\ntopic = \"accounts\"\nfunction = \"flaky\"\nordered_by = \"subject\"\n"
    ))
    .await;
    let batch: Vec<Value> = (0..5).map(|i| json!({"specversion": "1.0", "id": format!("e{i}"), "source": "/bank", "type": "posted", "subject": "acct-1"})).collect();
    let url = format!("{}/v1/topics/accounts/events", keel.url);
    let (status, _, _) = request(
        "POST",
        &url,
        &[("content-type", "application/cloudevents-batch+json")],
        Value::Array(batch).to_string(),
    )
    .await;
    assert_eq!(status, 202);
    eventually("five deliveries answered 200", Duration::from_secs(10), || async {
        (delivery_pairs(&fns).iter().filter(|(_, _, s)| *s == 200).count() >= 5).then_some(())
    })
    .await;
    let order: Vec<_> = delivery_pairs(&fns).into_iter().map(|(_, id, _)| id).collect();
    let expected: Vec<String> = (0..5).flat_map(|i| std::iter::repeat_n(format!("e{i}"), 3)).collect();
    assert_eq!(order, expected, "each event's three attempts before the next event starts");
}

#[tokio::test]
async fn the_hop_limit_stops_an_event_loop() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[server]\nmax_event_hops = 3\n[functions.looper]\nurl = \"http://{addr}/fx/loop\"\n[topics.loop]\n\
         [[subscriptions]]\nname = \"again\"\ntopic = \"loop\"\nfunction = \"looper\"\n"
    ))
    .await;
    assert_eq!(post_json(&format!("{}/v1/topics/loop/events", keel.url), "{}").await.0, 202);
    let dlq = format!("{}/v1/dlq?subscription=again", keel.url);
    let dead = eventually("the loop stopped (a delivery dead)", Duration::from_secs(10), || async {
        get_json(&dlq).await.2["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert!(dead["error"].as_str().unwrap().contains("max_event_hops"), "{dead}");
    // The dead delivery is hop 3's, whose emission was refused: nothing comes after it.
    assert_eq!(delivery_pairs(&fns).len(), 4, "hops 0, 1, 2 and 3 ran; the 4th emission was refused");
    let traces: HashSet<_> =
        fns.calls().iter().map(|c| c.headers["traceparent"].to_str().unwrap()[3..35].to_string()).collect();
    assert_eq!(traces.len(), 1, "one trace across the whole chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_effectful_invocations_keeps_writes_and_events_with_their_completions() {
    let (fns, addr) = Functions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"sqlite://{}/keel.db\"\n[functions.record]\nurl = \"http://{addr}/fx/record\"\nconcurrency = 8\n\
             [functions.ok]\nurl = \"http://{addr}/ok\"\n[topics.done]\n\
             [[subscriptions]]\nname = \"audit\"\ntopic = \"done\"\nfunction = \"ok\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (port, log) = (free_port(), dir.path().join("keel.log"));
    let base = format!("http://127.0.0.1:{port}");
    fns.set_keel(&base);
    let mut keel = spawn_keel(&config, port, &log);
    wait_ready(&base, &mut keel).await;
    let submitting = tokio::spawn({
        let base = base.clone();
        async move { submit_many(&base, "record", 400).await }
    });
    eventually("60 calls", Duration::from_secs(30), || async { (fns.calls().len() >= 60).then_some(()) }).await;
    keel.kill().unwrap();
    keel.wait().unwrap();
    let accepted = submitting.await.unwrap();
    let mut keel = spawn_keel(&config, port, &log);
    wait_ready(&base, &mut keel).await;
    crate::load::wait_all_succeeded(&base, "record", &accepted, Duration::from_secs(60)).await;
    crate::load::wait_succeeded(&base, "ok", accepted.len(), Duration::from_secs(60)).await;
    for id in &accepted {
        let (s, h, v) = get_json(&format!("{base}/v1/kv/done/{id}")).await;
        assert_eq!(s, 200, "the write of succeeded invocation {id}");
        assert_eq!(h["etag"], "\"1\"", "written once: effects applied at most once");
        assert_eq!(v["by"], id.as_str());
    }
    let audited: Vec<_> = fns
        .calls()
        .iter()
        .filter_map(|c| c.headers.get("ce-subject").map(|v| v.to_str().unwrap().to_string()))
        .collect();
    let unique: HashSet<_> = audited.iter().cloned().collect();
    let accepted_set: HashSet<_> = accepted.iter().cloned().collect();
    assert!(accepted_set.is_subset(&unique), "every completion's event was delivered");
    let (_, _, all) = get_json(&format!("{base}/v1/invocations?function=ok&limit=1000")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), unique.len(), "one event per completed invocation, never two");
    keel.kill().unwrap();
    keel.wait().unwrap();
}

#[tokio::test]
async fn an_event_emitted_as_an_effect_wakes_its_subscriber_at_once() {
    let (fns, addr) = Functions::start().await;
    let keel = Keel::start(&format!(
        "[functions.emitter]\nurl = \"http://{addr}/fx/emit?topic=signups\"\n[functions.ok]\nurl = \"http://{addr}/ok\"\n\
         [topics.signups]\n[[subscriptions]]\nname = \"welcome\"\ntopic = \"signups\"\nfunction = \"ok\"\n"
    ))
    .await;
    let (status, _, _) = post_json(&format!("{}/v1/functions/emitter/invoke", keel.url), "{}").await;
    assert_eq!(status, 200);
    eventually("the delivery of the emitted event", Duration::from_secs(5), || async {
        (!delivery_pairs(&fns).is_empty()).then_some(())
    })
    .await;
    let (_, _, accepted) = post_json(&format!("{}/v1/functions/emitter/invocations", keel.url), "{}").await;
    keel.wait_final(accepted["id"].as_str().unwrap(), Duration::from_secs(5)).await;
    eventually("the async emitter's delivery", Duration::from_secs(5), || async {
        (delivery_pairs(&fns).len() >= 2).then_some(())
    })
    .await;
}
