//! The API's edge from outside (`[server.firewall]`, `[server.throttle]`): a denied or
//! not-allowed client address is refused while 127.0.0.1 is served, a method/path rule refuses,
//! and the throttles per client address (behind a trusted proxy) and per API key answer 429 with
//! `Retry-After` to one caller while others go on.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::access::{bearer, key, start_secured};
use crate::support::{parse_metrics, request, Keel};

/// `GET path` over a connection from `source` (any 127.0.0.0/8 address binds on Linux): the
/// status and the body.
async fn get_from(source: [u8; 4], url: &str, path: &str) -> (u16, Value) {
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn refusals(url: &str, rule: &str) -> f64 {
    let (_, _, text) = request("GET", &format!("{url}/metrics"), &[], Bytes::new()).await;
    let metrics = parse_metrics(&String::from_utf8_lossy(&text));
    metrics.get(&format!("keel_edge_refusals_total{{rule=\"{rule}\"}}")).copied().unwrap_or(f64::NAN)
}

#[tokio::test]
async fn a_denied_address_is_refused_while_loopback_is_served() {
    let keel = Keel::start("[server.firewall]\ndeny = [\"127.0.0.2/32\"]\n").await;
    let before = refusals(&keel.url, "deny").await;
    let (status, problem) = get_from([127, 0, 0, 2], &keel.url, "/v1/functions").await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["type"], "urn:keel:problem:forbidden-address");
    assert_eq!(problem["detail"], "the client address 127.0.0.2 may not call this API");
    // Probes obey the firewall too.
    assert_eq!(get_from([127, 0, 0, 2], &keel.url, "/healthz").await.0, 403);
    assert_eq!(get_from([127, 0, 0, 1], &keel.url, "/v1/functions").await.0, 200);
    assert_eq!(refusals(&keel.url, "deny").await - before, 2.0);
}

#[tokio::test]
async fn only_allowed_addresses_are_served() {
    let keel = Keel::start("[server.firewall]\nallow = [\"10.0.0.0/8\", \"127.0.0.1/32\"]\n").await;
    let (status, problem) = get_from([127, 0, 0, 3], &keel.url, "/v1/functions").await;
    assert_eq!((status, problem["type"].as_str()), (403, Some("urn:keel:problem:forbidden-address")));
    assert_eq!(get_from([127, 0, 0, 1], &keel.url, "/v1/functions").await.0, 200);
    assert!(refusals(&keel.url, "not-allowed").await >= 1.0);
}

#[tokio::test]
async fn a_method_and_path_rule_refuses_its_requests_only() {
    let keel =
        Keel::start("[server.firewall]\nrules = [{ method = \"DELETE\", path = \"/v1/dlq/*\", action = \"deny\" }]\n")
            .await;
    let (status, _, body) = request("DELETE", &format!("{}/v1/dlq/inv_1", keel.url), &[], Bytes::new()).await;
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["type"], "urn:keel:problem:forbidden-request");
    assert_eq!(problem["detail"], "DELETE /v1/dlq/inv_1 is refused by server.firewall.rules[0]");
    assert_eq!(request("GET", &format!("{}/v1/dlq", keel.url), &[], Bytes::new()).await.0, 200);
    assert_eq!(refusals(&keel.url, "rule:0").await, 1.0);
}

/// `GET /v1/functions` as the client a trusted proxy names in `X-Forwarded-For`.
async fn get_as(url: &str, client: &str) -> (u16, Option<String>) {
    let (status, headers, _) =
        request("GET", &format!("{url}/v1/functions"), &[("x-forwarded-for", client)], Bytes::new()).await;
    (status, headers.get("retry-after").map(|v| v.to_str().unwrap().to_owned()))
}

#[tokio::test]
async fn the_per_address_throttle_holds_back_one_client_behind_a_proxy() {
    // Time moves only by hand: no turn comes back while the test runs, however slow the machine.
    let clock = keel_core::clock::ManualClock::new(keel_core::clock::Clock::now_ms(&keel_core::clock::SystemClock));
    let keel = Keel::start_with_clock(
        "[server.firewall]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [server.throttle]\nper_address = { per_second = 5, burst = 3 }\n",
        std::sync::Arc::new(clock.clone()),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get_as(&keel.url, "198.51.100.1").await, (200, None));
    }
    // The client's own claim, left of what the proxy appended, is not believed.
    assert_eq!(get_as(&keel.url, "198.51.100.9, 198.51.100.1").await, (429, Some("1".to_owned())));
    let (status, headers, body) =
        request("GET", &format!("{}/v1/functions", keel.url), &[("x-forwarded-for", "198.51.100.1")], Bytes::new())
            .await;
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, problem["type"].as_str()), (429, Some("urn:keel:problem:throttled")));
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(get_as(&keel.url, "198.51.100.2").await, (200, None), "another client goes on");
    let (status, _, _) =
        request("GET", &format!("{}/healthz", keel.url), &[("x-forwarded-for", "198.51.100.1")], Bytes::new()).await;
    assert_eq!(status, 200, "probes are not throttled");
    // One turn every 200 ms.
    clock.advance(199);
    assert_eq!(get_as(&keel.url, "198.51.100.1").await.0, 429, "not yet a turn");
    clock.advance(1);
    assert_eq!(get_as(&keel.url, "198.51.100.1").await, (200, None));
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_does_not_escape_its_throttle() {
    let keel = Keel::start("[server.throttle]\nper_address = { per_second = 1, burst = 2 }\n").await;
    assert_eq!(get_as(&keel.url, "198.51.100.1").await.0, 200);
    assert_eq!(get_as(&keel.url, "198.51.100.2").await.0, 200);
    assert_eq!(get_as(&keel.url, "198.51.100.3").await.0, 429, "all three are 127.0.0.1");
}

#[tokio::test]
async fn the_per_key_throttle_holds_back_one_key_and_not_another() {
    let (busy, busy_secret) = key("busy", &["read"], None, None);
    let (calm, calm_secret) = key("calm", &["read"], None, None);
    let node = start_secured("[server.throttle]\nper_key = { per_second = 1, burst = 2 }\n", &[&busy, &calm]).await;
    let get = |path: &'static str, secret: String| {
        let url = format!("{}{path}", node.url);
        async move {
            let (status, headers, _) = request("GET", &url, &[("authorization", &bearer(&secret))], Bytes::new()).await;
            (status, headers.get("retry-after").map(|v| v.to_str().unwrap().to_owned()))
        }
    };
    assert_eq!(get("/v1/functions", busy_secret.clone()).await, (200, None));
    assert_eq!(get("/v1/functions", busy_secret.clone()).await, (200, None));
    assert_eq!(get("/v1/functions", busy_secret.clone()).await, (429, Some("1".to_owned())));
    assert_eq!(get("/v1/functions", calm_secret.clone()).await, (200, None));
    assert_eq!(get("/v1/functions", calm_secret).await, (200, None));
    assert_eq!(get("/healthz", busy_secret).await.0, 200, "probes are not throttled");
}
