//! Egress (`/v1/egress/{dependency}/{path}`): functions under test call their dependencies
//! through Keel with their own `keel-invocation-id` (the support server's `/egress` path); the
//! dependencies are real HTTP servers on 127.0.0.1:0 that count what reaches them.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use bytes::Bytes;
use keel_core::config::{load_str, Overrides};
use keel_server::Node;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::{eventually, get_json, post_json, request, Functions, Keel};

/// One request a dependency received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

/// A dependency: answers `status` (200 at first) after `delay_ms`, with `x-dep: yes` and the
/// body `made`, and records every request.
#[derive(Debug, Clone)]
struct Dependency {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    /// Requests still to answer 503 with `Retry-After: 1` before `status` applies again.
    fail_next: Arc<AtomicU64>,
}

impl Dependency {
    async fn start() -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let fail_next = Arc::new(AtomicU64::new(0));
        let (sink, answer, delay, fail) = (received.clone(), status.clone(), delay_ms.clone(), fail_next.clone());
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (sink, answer, delay, fail) = (sink.clone(), answer.clone(), delay.clone(), fail.clone());
            async move {
                sink.lock().unwrap().push(Received { method, uri, headers, body, at: Instant::now() });
                tokio::time::sleep(Duration::from_millis(delay.load(Ordering::SeqCst))).await;
                let failing = fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                let status = if failing { 503 } else { answer.load(Ordering::SeqCst) };
                let status = StatusCode::from_u16(status).unwrap();
                let retry_after = if failing { "1" } else { "0" };
                (status, [("x-dep", "yes"), ("content-type", "text/plain"), ("retry-after", retry_after)], "made")
                    .into_response()
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received, status, delay_ms, fail_next }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// A Keel node with `toml` (functions and dependencies) and `vars` for `env:` values, and the
/// function server told where it is.
async fn start(toml: &str, vars: &[(&str, &str)], functions: &Functions) -> Keel {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n[storage]\nurl = \"sqlite://{}/keel.db\"\n{toml}",
        dir.path().display()
    );
    let vars = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let config = load_str("test.toml", &text, &Overrides { vars, ..Overrides::default() })
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let node = Node::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await.unwrap();
    let url = format!("http://{}", node.addr());
    functions.set_keel(&url);
    Keel { node: Some(node), url, dir }
}

/// Invokes `function` at once with its `/egress` query; returns the invocation id and the calls
/// it reported (each `{status, body, headers}`).
async fn invoke(keel: &Keel, function: &str) -> (String, u16, Vec<Value>) {
    let (status, headers, body) = post_json(&format!("{}/v1/functions/{function}/invoke", keel.url), "{}").await;
    let id = headers.get("keel-invocation-id").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (id, status, body["calls"].as_array().cloned().unwrap_or_default())
}

fn function(name: &str, fx: std::net::SocketAddr, query: &str, extra: &str) -> String {
    format!("[functions.{name}]\nurl = \"http://{fx}/egress?{query}\"\nretry = {{ max_attempts = 1 }}\n{extra}\n")
}

#[tokio::test]
async fn a_call_is_forwarded_whole_with_the_configured_headers_and_a_key_and_answered_as_is() {
    let dep = Dependency::start().await;
    dep.answer(201);
    let (fx, fx_addr) = Functions::start().await;
    let toml = format!(
        "[dependencies.payments]\nurl = \"{}/api\"\nheaders = {{ authorization = \"env:PAYMENTS_TOKEN\", x-client = \"keel\" }}\n{}{}",
        dep.url,
        function("buyer", fx_addr, "dep=payments&path=%2Fcharges%2Fc%2520d%3Fcurrency%3Deur&method=PUT&calls=2", "dependencies = [\"payments\"]"),
        function("keyed", fx_addr, "dep=payments&path=%2Fx&method=POST&header=idempotency-key:mine", "dependencies = [\"payments\"]"),
    );
    let keel = start(&toml, &[("PAYMENTS_TOKEN", "Bearer s3cret")], &fx).await;

    let (id, status, calls) = invoke(&keel, "buyer").await;
    assert_eq!(status, 200);
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call["status"], 201, "{call}");
        assert_eq!(call["body"], "made");
        assert_eq!(call["headers"]["x-dep"], "yes");
    }
    let received = dep.received();
    assert_eq!(received.len(), 2);
    for (n, r) in received.iter().enumerate() {
        assert_eq!(r.method, Method::PUT);
        assert_eq!(r.uri.path(), "/api/charges/c%20d", "the path as sent, under the url's");
        assert_eq!(r.uri.query(), Some("currency=eur"));
        assert_eq!(r.headers["authorization"], "Bearer s3cret", "the env: secret resolved");
        assert_eq!(r.headers["x-client"], "keel");
        assert_eq!(r.headers["idempotency-key"], format!("{id}/payments/{}", n + 1).as_str());
        assert!(r.headers.get("keel-invocation-id").is_none(), "Keel's own headers stay home");
    }

    // The function's own key is kept; a dependency's 5xx comes back as it is, not as a problem.
    dep.answer(500);
    let (_, _, calls) = invoke(&keel, "keyed").await;
    assert_eq!(dep.received()[2].headers["idempotency-key"], "mine");
    assert_eq!(calls[0]["status"], 500);
    assert_eq!(calls[0]["body"], "made");
    assert_eq!(calls[0]["headers"]["content-type"], "text/plain");

    // Secrets are never shown.
    let (_, _, view) = get_json(&format!("{}/v1/dependencies/payments", keel.url)).await;
    assert_eq!(view["headers"], serde_json::json!(["authorization", "x-client"]));
    assert!(!view.to_string().contains("s3cret"));
    assert_eq!(view["counters"]["requests"], 3);
}

#[tokio::test]
async fn only_running_attempts_of_functions_that_declare_the_dependency_may_call_it() {
    let dep = Dependency::start().await;
    let (fx, fx_addr) = Functions::start().await;
    let toml = format!(
        "[dependencies.payments]\nurl = \"{}\"\nbreaker = {{ consecutive_failures = 1 }}\n{}{}",
        dep.url,
        // It sends an `authorization` of its own, as the SDK sends the attempt's token.
        function(
            "buyer",
            fx_addr,
            "dep=payments&path=%2Fok&header=authorization:Bearer%20fn-token",
            "dependencies = [\"payments\"]"
        ),
        function("other", fx_addr, "dep=payments&path=%2Fok", ""),
    );
    let keel = start(&toml, &[], &fx).await;
    let (_, _, calls) = invoke(&keel, "other").await;
    assert_eq!(calls[0]["status"], 403, "{}", calls[0]);
    assert!(calls[0]["body"].as_str().unwrap().contains("urn:keel:problem:forbidden"));

    let url = format!("{}/v1/egress/payments/ok", keel.url);
    for headers in [vec![], vec![("keel-invocation-id", "01JNOTRUNNINGHERE")]] {
        let (status, reply_headers, _) = request("GET", &url, &headers, Bytes::new()).await;
        assert_eq!(status, 403);
        assert!(reply_headers.get("keel-breaker").is_none());
    }
    let (status, _, _) = request("GET", &format!("{}/v1/egress/nope/ok", keel.url), &[], Bytes::new()).await;
    assert_eq!(status, 403, "an unknown dependency is no different");
    assert_eq!(dep.count(), 0, "nothing reached the dependency");

    let (_, _, calls) = invoke(&keel, "buyer").await;
    assert_eq!(calls[0]["status"], 200);
    assert_eq!(dep.count(), 1);
    assert!(dep.received()[0].headers.get("authorization").is_none(), "the function's token stays with Keel");
}

#[tokio::test]
async fn the_breaker_opens_after_exactly_n_failures_then_closes_after_a_successful_probe() {
    let dep = Dependency::start().await;
    dep.answer(500);
    let (fx, fx_addr) = Functions::start().await;
    let toml = format!(
        "[dependencies.cards]\nurl = \"{}\"\nbreaker = {{ consecutive_failures = 3, open_for = \"300ms\" }}\n{}",
        dep.url,
        function("buyer", fx_addr, "dep=cards&path=%2Fc&method=POST&calls=5", "dependencies = [\"cards\"]"),
    );
    let keel = start(&toml, &[], &fx).await;
    let (_, _, calls) = invoke(&keel, "buyer").await;
    let statuses: Vec<u64> = calls.iter().map(|c| c["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [500, 500, 500, 503, 503]);
    assert_eq!(dep.count(), 3, "an open breaker answers without calling the dependency");
    let refused = &calls[3];
    assert_eq!(refused["headers"]["keel-breaker"], "open");
    assert_eq!(refused["headers"]["retry-after"], "1");
    assert!(refused["body"].as_str().unwrap().contains("urn:keel:problem:breaker-open"));
    let (_, _, view) = get_json(&format!("{}/v1/dependencies/cards", keel.url)).await;
    assert_eq!(view["breaker"]["state"], "open");
    assert_eq!(view["breaker"]["failures"], 3);
    assert_eq!(view["counters"]["shed"]["breaker-open"], 2);
    let (_, _, text) = request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await;
    let metrics = crate::support::parse_metrics(&String::from_utf8_lossy(&text));
    assert_eq!(metrics["keel_egress_requests_total{dependency=\"cards\",outcome=\"breaker-open\"}"], 2.0);
    assert_eq!(metrics["keel_egress_requests_total{dependency=\"cards\",outcome=\"failure\"}"], 3.0);
    assert_eq!(metrics["keel_breaker_state{target=\"cards\"}"], 1.0);

    dep.answer(200);
    eventually("a probe closes the breaker", Duration::from_secs(5), || async {
        let (_, _, calls) = invoke(&keel, "buyer").await;
        (calls.iter().all(|c| c["status"] == 200)).then_some(())
    })
    .await;
    let (_, _, view) = get_json(&format!("{}/v1/dependencies/cards", keel.url)).await;
    assert_eq!(view["breaker"]["state"], "closed");
    let (_, _, text) = request("GET", &format!("{}/metrics", keel.url), &[], Bytes::new()).await;
    let metrics = crate::support::parse_metrics(&String::from_utf8_lossy(&text));
    assert_eq!(metrics["keel_breaker_transitions_total{target=\"cards\",to=\"open\"}"], 1.0);
    assert_eq!(metrics["keel_breaker_transitions_total{target=\"cards\",to=\"closed\"}"], 1.0);
    assert_eq!(metrics["keel_breaker_state{target=\"cards\"}"], 0.0);
}

#[tokio::test]
async fn the_retry_budget_bounds_what_an_outage_receives() {
    let started = Instant::now();
    let dep = Dependency::start().await;
    dep.answer(503);
    let (fx, fx_addr) = Functions::start().await;
    let (ratio, min_per_second, offered) = (0.2, 10.0, 90usize);
    let toml = format!(
        "[dependencies.payments]\nurl = \"{}\"\nretry = {{ max_attempts = 5, initial = \"1ms\", max = \"2ms\" }}\n\
         retry_budget = {{ ratio = {ratio}, min_per_second = {min_per_second} }}\n{}",
        dep.url,
        function("buyer", fx_addr, "dep=payments&path=%2Fc&calls=30", "dependencies = [\"payments\"]"),
    );
    let keel = start(&toml, &[], &fx).await;
    // Three functions' calls in flight at once, 30 calls each.
    let (a, b, c) = tokio::join!(invoke(&keel, "buyer"), invoke(&keel, "buyer"), invoke(&keel, "buyer"));
    let results = [a, b, c];
    let seconds = started.elapsed().as_secs_f64();
    assert!(results.iter().flat_map(|(_, _, calls)| calls).all(|c| c["status"] == 503));
    let received = dep.count() as f64;
    let bound = (1.0 + ratio) * offered as f64 + min_per_second * seconds;
    assert!(received <= bound, "{received} requests > {bound} over {seconds:.2} s");
    assert!(received > offered as f64, "some retries were made: {received}");
    assert!(received < offered as f64 * 5.0 / 2.0, "without the budget it would have been {}", offered * 5);
    let (_, _, view) = get_json(&format!("{}/v1/dependencies/payments", keel.url)).await;
    assert_eq!(view["counters"]["requests"], offered);
    assert_eq!(view["counters"]["retries"].as_u64().unwrap() as f64, received - offered as f64);
}

#[tokio::test]
async fn a_hung_dependency_does_not_slow_calls_to_another() {
    let hung = Dependency::start().await;
    hung.delay_ms.store(3_000, Ordering::SeqCst);
    let fast = Dependency::start().await;
    let (fx, fx_addr) = Functions::start().await;
    let toml = format!(
        "[dependencies.hung]\nurl = \"{}\"\ntimeout = \"2s\"\nbulkhead = {{ max_concurrent = 2, max_queued = 0 }}\n\
         [dependencies.fast]\nurl = \"{}\"\n{}{}",
        hung.url,
        fast.url,
        function("stuck", fx_addr, "dep=hung&path=%2Fh", "dependencies = [\"hung\"]"),
        function("quick", fx_addr, "dep=fast&path=%2Ff", "dependencies = [\"fast\"]"),
    );
    let keel = start(&toml, &[], &fx).await;
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let url = keel.url.clone();
            tokio::spawn(async move { post_json(&format!("{url}/v1/functions/stuck/invoke"), "{}").await })
        })
        .collect();
    eventually("both places of the hung dependency are taken", Duration::from_secs(5), || async {
        let (_, _, view) = get_json(&format!("{}/v1/dependencies/hung", keel.url)).await;
        (view["in_flight"] == 2).then_some(())
    })
    .await;
    let before = Instant::now();
    let (_, _, calls) = invoke(&keel, "stuck").await;
    assert_eq!(calls[0]["status"], 503, "{}", calls[0]);
    assert!(calls[0]["body"].as_str().unwrap().contains("urn:keel:problem:bulkhead-full"));
    for _ in 0..5 {
        let (_, _, calls) = invoke(&keel, "quick").await;
        assert_eq!(calls[0]["status"], 200);
    }
    assert!(before.elapsed() < Duration::from_millis(1_000), "took {:?}", before.elapsed());
    for handle in stuck {
        let (status, _, body) = handle.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["calls"][0]["status"], 504, "{body}");
    }
    assert_eq!(hung.count(), 2);
}

#[tokio::test]
async fn a_retried_attempt_sends_the_same_idempotency_keys() {
    let dep = Dependency::start().await;
    let (fx, fx_addr) = Functions::start().await;
    let toml = format!(
        "[dependencies.payments]\nurl = \"{}\"\n[functions.buyer]\nurl = \"http://{fx_addr}/egress?dep=payments&path=%2Fc&method=POST&calls=2&fail_first=1\"\n\
         retry = {{ max_attempts = 2, initial = \"10ms\", max = \"10ms\" }}\ndependencies = [\"payments\"]\n",
        dep.url,
    );
    let keel = start(&toml, &[], &fx).await;
    let (id, status, _) = invoke(&keel, "buyer").await;
    assert_eq!(status, 200);
    let keys: Vec<String> =
        dep.received().iter().map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string()).collect();
    let (k1, k2) = (format!("{id}/payments/1"), format!("{id}/payments/2"));
    assert_eq!(keys, [k1.clone(), k2.clone(), k1, k2]);
    assert!(dep.received().iter().all(|r| r.body.is_empty()));

    // An async invocation's attempts are known callers too, and number their calls the same way.
    let (status, _, accepted) = post_json(&format!("{}/v1/functions/buyer/invocations", keel.url), "{}").await;
    assert_eq!(status, 202);
    let id = accepted["id"].as_str().unwrap().to_string();
    let done = keel.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let keys: Vec<String> =
        dep.received()[4..].iter().map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string()).collect();
    let (k1, k2) = (format!("{id}/payments/1"), format!("{id}/payments/2"));
    assert_eq!(keys, [k1.clone(), k2.clone(), k1, k2]);
}

#[tokio::test]
async fn keel_answers_for_a_dependency_that_is_down_slow_or_over_its_rate() {
    let limited = Dependency::start().await;
    let slow = Dependency::start().await;
    slow.delay_ms.store(1_000, Ordering::SeqCst);
    let (fx, fx_addr) = Functions::start().await;
    let toml = format!(
        "[dependencies.down]\nurl = \"http://127.0.0.1:1/\"\nretry = {{ max_attempts = 1 }}\n\
         [dependencies.limited]\nurl = \"{}\"\nrate_limit = {{ per_second = 0.5 }}\n\
         [dependencies.slow]\nurl = \"{}\"\ntimeout = \"200ms\"\n{}{}{}",
        limited.url,
        slow.url,
        function("to-down", fx_addr, "dep=down&path=%2Fx", "dependencies = [\"down\"]"),
        function("to-limited", fx_addr, "dep=limited&path=%2Fx&method=HEAD&calls=2", "dependencies = [\"limited\"]"),
        function("to-slow", fx_addr, "dep=slow&path=%2Fx", "dependencies = [\"slow\"]"),
    );
    let keel = start(&toml, &[], &fx).await;
    let problem_type = |call: &Value| -> String {
        let body: Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap_or(Value::Null);
        body["type"].as_str().unwrap_or("").to_string()
    };

    let (_, _, calls) = invoke(&keel, "to-down").await;
    assert_eq!(
        (calls[0]["status"].as_u64(), problem_type(&calls[0]).as_str()),
        (Some(502), "urn:keel:problem:dependency-unreachable")
    );

    let (_, _, calls) = invoke(&keel, "to-limited").await;
    assert_eq!(calls[0]["status"], 200, "HEAD is forwarded as HEAD");
    assert_eq!(limited.received()[0].method, Method::HEAD);
    assert_eq!(calls[1]["status"], 429);
    assert_eq!(calls[1]["headers"]["retry-after"], "2");
    assert_eq!(calls[1]["headers"]["content-type"], "application/problem+json", "a HEAD answer has no body");
    assert_eq!(limited.count(), 1);

    let started = Instant::now();
    let (_, _, calls) = invoke(&keel, "to-slow").await;
    assert_eq!(
        (calls[0]["status"].as_u64(), problem_type(&calls[0]).as_str()),
        (Some(504), "urn:keel:problem:dependency-timeout")
    );
    assert!(started.elapsed() < Duration::from_millis(900), "cut off at the timeout: {:?}", started.elapsed());
    assert_eq!(slow.count(), 1, "a timeout is not retried past the deadline");

    let (_, _, list) = get_json(&format!("{}/v1/dependencies", keel.url)).await;
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["down", "limited", "slow"]);
    assert_eq!(list["items"][1]["counters"]["shed"]["rate-limited"], 1);
    assert_eq!(list["items"][0]["counters"]["failures"], 1);
    let (status, _, _) = get_json(&format!("{}/v1/dependencies/nope", keel.url)).await;
    assert_eq!(status, 404);
}

/// The real binary, with traces exported: the breaker opens and closes, `keel deps ls` shows it,
/// and each egress call is one span under its request's, retries counted on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_shows_the_breaker_in_keel_deps_ls_and_traces_each_call() {
    use crate::crash::{free_port, spawn_keel_with_env, wait_ready};
    let dep = Dependency::start().await;
    dep.answer(503);
    let (fx, fx_addr) = Functions::start().await;
    let (otlp, spans) = crate::support::otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"sqlite://{}\"\n\
             [dependencies.payments]\nurl = \"{}\"\nbreaker = {{ consecutive_failures = 2, open_for = \"300ms\" }}\n\
             retry = {{ max_attempts = 3, initial = \"1ms\", max = \"2ms\" }}\n{}{}",
            dir.path().join("keel.db").display(),
            dep.url,
            function("buyer", fx_addr, "dep=payments&path=%2Fc&method=POST&calls=3", "dependencies = [\"payments\"]"),
            function("reader", fx_addr, "dep=payments&path=%2Fr", "dependencies = [\"payments\"]"),
        ),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("keel.log");
    let env = [
        ("RUST_LOG", "info"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("NO_PROXY", "127.0.0.1"),
    ];
    let mut child = spawn_keel_with_env(&config, port, &log, &env);
    wait_ready(&base, &mut child).await;
    fx.set_keel(&base);
    let invoke = |function: &'static str| {
        let url = format!("{base}/v1/functions/{function}/invoke");
        async move { post_json(&url, "{}").await.2["calls"].as_array().cloned().unwrap_or_default() }
    };

    let statuses: Vec<u64> = invoke("buyer").await.iter().map(|c| c["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 503]);
    assert_eq!(dep.count(), 2, "open after exactly 2 failures; the third call never reached it");
    let deps_ls = |url: String| async move {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["deps", "ls", "--url", &url])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let table = deps_ls(base.clone()).await;
    let row = table.lines().find(|l| l.starts_with("payments")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" open "), "{table}");

    dep.answer(200);
    eventually("a probe closes the breaker", Duration::from_secs(5), || async {
        invoke("buyer").await.iter().all(|c| c["status"] == 200).then_some(())
    })
    .await;
    assert!(deps_ls(base.clone()).await.lines().any(|l| l.starts_with("payments") && l.contains(" closed ")));

    // A GET that fails once is retried: one span, two tries.
    dep.fail_next.store(1, Ordering::SeqCst);
    let calls = invoke("reader").await;
    assert_eq!(calls[0]["status"], 200, "{}", calls[0]);

    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM);
    crate::serve::exit_within(&mut child, Duration::from_secs(15)).await;
    let spans = spans.lock().unwrap().clone();
    let egress: Vec<_> = spans.iter().filter(|s| s.name == "egress payments").collect();
    let retried: Vec<_> =
        egress.iter().filter(|s| s.attributes.get("tries").map(String::as_str) == Some("2")).collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(retried.len(), 1, "{egress:?} in {names:?}; log: {}", &logged[logged.len().saturating_sub(3000)..]);
    let parent = spans.iter().find(|s| s.span_id == retried[0].parent_span_id).expect("the egress span's parent");
    assert_eq!(parent.name, "GET /v1/egress/{dependency}/{*path}");
    assert_eq!(retried[0].attributes["outcome"], "success");
    let attempt = spans.iter().find(|s| s.name == "attempt reader").expect("the attempt's span");
    assert_eq!(parent.trace_id, attempt.trace_id, "the call is in its attempt's trace");
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_timeout() {
    let dep = Dependency::start().await;
    let (fx, fx_addr) = Functions::start().await;
    let toml = format!(
        "[dependencies.patient]\nurl = \"{0}\"\nretry = {{ initial = \"1ms\", max = \"2ms\" }}\n\
         [dependencies.hasty]\nurl = \"{0}\"\ntimeout = \"500ms\"\n{1}{2}",
        dep.url,
        function("patient", fx_addr, "dep=patient&path=%2Fp", "dependencies = [\"patient\"]"),
        function("hasty", fx_addr, "dep=hasty&path=%2Fh", "dependencies = [\"hasty\"]"),
    );
    let keel = start(&toml, &[], &fx).await;
    // The budget's floor fills from empty: wait until it can pay for a retry.
    let state = format!("{}/v1/dependencies/patient", keel.url);
    crate::support::eventually("the retry budget to afford a retry", Duration::from_secs(5), || async {
        let (_, _, view) = crate::support::get_json(&state).await;
        (view["budget_available"].as_f64().unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;

    dep.fail_next.store(1, Ordering::SeqCst);
    let (_, _, calls) = invoke(&keel, "patient").await;
    assert_eq!(calls[0]["status"], 200);
    let received = dep.received();
    assert_eq!(received.len(), 2);
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}, not after Retry-After: 1");

    // A Retry-After past the deadline means no retry: the 503 comes back as it was.
    dep.fail_next.store(1, Ordering::SeqCst);
    let (_, _, calls) = invoke(&keel, "hasty").await;
    assert_eq!(calls[0]["status"], 503);
    assert_eq!(calls[0]["headers"]["retry-after"], "1");
    assert_eq!(dep.count(), 3);
}
