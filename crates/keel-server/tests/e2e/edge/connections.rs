//! Slow, idle and too many connections: each is cut off or refused on time, answered where there
//! is a request to answer, and counted.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{parse_metrics, Keel};

/// Header, body and idle timeouts short enough for a test, and apart from each other.
const TIMEOUTS: &str = "[server]\nheader_timeout = \"300ms\"\nbody_timeout = \"300ms\"\nidle_timeout = \"1500ms\"\n";

async fn connect(keel: &Keel) -> TcpStream {
    TcpStream::connect(keel.url.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection; what it sent, and when it closed. Panics if
/// it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Instant) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let closed_at = tokio::time::timeout(limit, read_all).await.expect("the server did not close the connection");
    (String::from_utf8_lossy(&received).into_owned(), closed_at)
}

async fn closed_total(keel: &Keel, reason: &str) -> f64 {
    scraped_closed_total(keel, reason).await.unwrap_or_else(|| panic!("GET {}/metrics was not answered 200", keel.url))
}

/// [`closed_total`], or `None` if the scrape was not answered 200 (refused while the server is
/// at `max_connections`, say).
async fn scraped_closed_total(keel: &Keel, reason: &str) -> Option<f64> {
    let req = hyper::Request::get(format!("{}/metrics", keel.url))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, _, body) = crate::support::send(req).await.ok()?;
    let metrics = parse_metrics(&String::from_utf8_lossy(&body));
    let closed = metrics.get(&format!("keel_http_connections_closed_total{{reason=\"{reason}\"}}")).copied();
    (status == 200).then(|| closed.unwrap_or(0.0))
}

#[tokio::test]
async fn slow_headers_are_cut_off_after_the_header_timeout() {
    let keel = Keel::start(TIMEOUTS).await;
    let before = closed_total(&keel, "header_timeout").await;
    let mut silent = connect(&keel).await;
    let mut slow = connect(&keel).await;
    let opened = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    for stream in [&mut silent, &mut slow] {
        let (sent, closed_at) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert!(closed_at - opened >= Duration::from_millis(290), "closed after {:?}", closed_at - opened);
        assert_eq!(sent, "", "no request, no answer");
    }
    assert!(closed_total(&keel, "header_timeout").await >= before + 2.0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_past_the_header_timeout_then_is_closed() {
    let keel = Keel::start(TIMEOUTS).await;
    let mut stream = connect(&keel).await;
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    stream.write_all(healthz).await.unwrap();
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&chunk[..n]));
    // Idle for twice the header timeout: still open, and serves the next request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(healthz).await.unwrap();
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&chunk[..n]));
    let answered = Instant::now();
    let (_, closed_at) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed_at - answered >= Duration::from_millis(1400), "closed after {:?}", closed_at - answered);
}

/// A keep-alive connection that starts a head after an idle spell gets the header timeout from
/// that first byte, not what was left of the idle timeout (the connection's timer learns of the
/// new stage without being woken by it).
#[tokio::test]
async fn a_slow_head_after_an_idle_spell_is_cut_off_at_the_header_timeout() {
    let keel = Keel::start("[server]\nheader_timeout = \"300ms\"\nidle_timeout = \"6s\"\n").await;
    let before = closed_total(&keel, "header_timeout").await;
    let mut stream = connect(&keel).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(chunk[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&chunk[..n]));
    // Idle past the header timeout, then half a head: the idle deadline would be ~5 s away.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let (sent, closed_at) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(sent, "", "no whole request, no answer");
    let lived = closed_at - started;
    assert!(lived >= Duration::from_millis(290), "closed after {lived:?}");
    assert!(lived < Duration::from_secs(3), "closed after {lived:?}: the idle deadline, not the header timeout");
    assert!(closed_total(&keel, "header_timeout").await >= before + 1.0);
}

/// The issue's `Content-Length: 10000000000` followed by 10 bytes, and a body that stalls within
/// the limit: answered (408 or 413, as problem+json) and closed.
#[tokio::test]
async fn a_stalled_body_is_answered_and_closed() {
    let keel = Keel::start(&format!("{TIMEOUTS}[functions.f]\nurl = \"http://127.0.0.1:9/\"\n")).await;
    let before = closed_total(&keel, "body_timeout").await;
    for length in ["1000", "10000000000"] {
        let mut stream = connect(&keel).await;
        let head = format!(
            "POST /v1/functions/f/invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n{{\"a\": 1}} "
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (sent, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let status = &sent[..sent.find("\r\n").unwrap_or(sent.len())];
        assert!(status == "HTTP/1.1 408 Request Timeout" || status == "HTTP/1.1 413 Payload Too Large", "{sent}");
        assert!(sent.contains("application/problem+json"), "{sent}");
    }
    assert!(closed_total(&keel, "body_timeout").await >= before + 1.0);
}

#[tokio::test]
async fn past_max_connections_a_connection_is_answered_503_and_closed() {
    let keel = Keel::start("[server]\nmax_connections = 2\n").await;
    let before = closed_total(&keel, "over_limit").await;
    // Two keep-alive connections, each seen served (a connection `closed_total` used may still
    // be closing: one refused meanwhile is opened again).
    let mut held = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while held.len() < 2 {
        let mut stream = connect(&keel).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut chunk = [0u8; 4096];
        // A refusal may come as a reset rather than a 503 with the close.
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if chunk[..n].starts_with(b"HTTP/1.1 200") {
            held.push(stream);
        }
        assert!(Instant::now() < end, "two connections were never served at once");
    }
    let mut third = connect(&keel).await;
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let (mut refused, _) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{refused}");
    assert!(refused.contains("content-type: application/problem+json"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    let body = refused.split_off(refused.find("\r\n\r\n").unwrap() + 4);
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 503);

    // One held connection goes: the next one is served.
    held.pop();
    crate::support::eventually("a freed slot reused", Duration::from_secs(5), || async {
        let mut next = connect(&keel).await;
        next.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.ok()?;
        let (sent, _) = read_until_closed(&mut next, Duration::from_secs(5)).await;
        sent.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    drop(held);
    // The server may not have seen the dropped connections close yet: a scrape refused with a
    // 503 before its request was written is tried again.
    crate::support::eventually("the refusal counted", Duration::from_secs(5), || async {
        (scraped_closed_total(&keel, "over_limit").await? >= before + 1.0).then_some(())
    })
    .await;
}

/// hyper's own answers to what it cannot parse come as problem+json too.
#[tokio::test]
async fn requests_hyper_cannot_parse_get_problem_json() {
    let keel = Keel::start("").await;
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        (format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"), "HTTP/1.1 431 "),
        ("GET /healthz HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_string(), "HTTP/1.1 400 "),
        ("GET /\u{1}x HTTP/1.1\r\nhost: x\r\n\r\n".to_string(), "HTTP/1.1 400 "),
    ];
    for (raw, status) in cases {
        let mut stream = connect(&keel).await;
        stream.write_all(raw.as_bytes()).await.unwrap();
        let (sent, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(sent.starts_with(status), "{sent}");
        assert!(sent.contains("content-type: application/problem+json\r\n"), "{sent}");
        let body: serde_json::Value = serde_json::from_str(&sent[sent.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(body["status"].as_u64(), status[9..12].parse().ok(), "{sent}");
    }
}

/// `keel serve` raises its soft limit on open files to the hard one.
#[tokio::test]
async fn keel_serve_raises_the_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, format!("[storage]\nurl = \"sqlite://{}/keel.db\"\n", dir.path().display())).unwrap();
    let port = crate::crash::free_port();
    // Started with a low soft limit, as many systems do.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -S -n 256 && exec \"$0\" serve -c \"$1\" --listen \"127.0.0.1:$2\""])
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg(&config)
        .arg(port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::crash::wait_ready(&format!("http://127.0.0.1:{port}"), &mut child).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft limit raised to the hard one: {line}");
}
