//! Test fixtures: a programmable function server, a Keel node on a temp database, and a small
//! HTTP client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keel_core::config::{load_str, Config, Overrides};
use keel_server::Node;
use serde_json::Value;
use tokio::net::TcpListener;

/// One call the function server received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) invocation_id: String,
    pub(crate) attempt: u32,
    pub(crate) at: Instant,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// What the server answered.
    pub(crate) status: u16,
}

/// A function server whose behaviour each test picks by path:
/// `/ok`, `/status?code=400`, `/flaky?fail=2` (503 for the first N attempts of each invocation),
/// `/slow?ms=300`, `/random?p=0.3` (503 with probability p), `/saga?ms=0` (422 when the body's
/// `input.fail` is true: a workflow step failing on its run's input), `/retry-after?secs=1` (first
/// attempt 503 with `Retry-After`), `/switch` (503 while [`Functions::set_down`] says so),
/// `/egress?dep=payments&path=/charges` (calls Keel's egress: see [`egress_function`]),
/// `/hold` (answers 200 only once [`Functions::release`] is called: in flight for as long as
/// the test needs, however busy the machine).
#[derive(Debug, Clone, Default)]
pub(crate) struct Functions {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Where the effectful paths (`/fx/...`) read KV from.
    keel: Arc<Mutex<Option<String>>>,
    /// `/switch` answers 503 while set.
    down: Arc<std::sync::atomic::AtomicBool>,
    /// `/hold` answers once set.
    released: Arc<std::sync::atomic::AtomicBool>,
    release: Arc<tokio::sync::Notify>,
}

impl Functions {
    pub(crate) async fn start() -> (Self, SocketAddr) {
        let me = Self::default();
        let app = axum::Router::new().fallback(handle).with_state(me.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (me, addr)
    }

    /// Tells the effectful paths where Keel's API is.
    pub(crate) fn set_keel(&self, url: &str) {
        *self.keel.lock().unwrap() = Some(url.to_string());
    }

    /// Takes `/switch` down (503) or brings it back up (200).
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets every `/hold` call, waiting or still to come, answer.
    pub(crate) fn release(&self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
        self.release.notify_waiters();
    }

    async fn held(&self) {
        loop {
            let released = self.release.notified();
            if self.released.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            released.await;
        }
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub(crate) fn calls_for(&self, invocation_id: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.invocation_id == invocation_id).collect()
    }

    /// Successful calls per invocation id.
    pub(crate) fn successes(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for c in self.calls().into_iter().filter(|c| c.status < 300) {
            *counts.entry(c.invocation_id).or_insert(0) += 1;
        }
        counts
    }
}

async fn handle(
    State(me): State<Functions>,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arg = |k: &str| q.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let attempt: u32 =
        headers.get("keel-attempt").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let effectful = uri.path().strip_prefix("/fx/").or((uri.path() == "/egress").then_some("egress"));
    if let Some(kind) = effectful {
        let keel = me.keel.lock().unwrap().clone().unwrap_or_default();
        let response = match kind {
            "egress" => egress_function(&keel, &q, &headers, attempt).await,
            _ => crate::events::effects_function(kind, &keel, &q, &headers, &body).await,
        };
        me.calls.lock().unwrap().push(Call {
            invocation_id: headers.get("keel-invocation-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            attempt,
            at: Instant::now(),
            headers: headers.clone(),
            body: body.clone(),
            status: response.status().as_u16(),
        });
        return response;
    }
    let (status, extra, sleep): (u16, Option<(&str, String)>, u64) = match uri.path() {
        "/ok" | "/empty" => (200, None, 0),
        "/status" => (arg("code") as u16, None, 0),
        "/flaky" => (if f64::from(attempt) <= arg("fail") { 503 } else { 200 }, None, 0),
        "/slow" => (200, None, arg("ms") as u64),
        "/hold" => (200, None, 0),
        "/switch" if me.down.load(std::sync::atomic::Ordering::SeqCst) => (503, None, 0),
        "/switch" => (200, None, 0),
        "/random" => (if fastrand::f64() < arg("p") { 503 } else { 200 }, None, 0),
        "/retry-after" if attempt == 1 => (503, Some(("retry-after", format!("{}", arg("secs") as u64))), 0),
        "/retry-after" => (200, None, 0),
        // A workflow step that fails for good when its run's input says `"fail": true`.
        "/saga" => {
            let input: Value = serde_json::from_slice(&body).unwrap_or_default();
            (if input.pointer("/input/fail") == Some(&Value::Bool(true)) { 422 } else { 200 }, None, arg("ms") as u64)
        }
        _ => (404, None, 0),
    };
    // Recorded on arrival: a caller that gives up early (a timeout) still shows as a call.
    me.calls.lock().unwrap().push(Call {
        invocation_id: headers.get("keel-invocation-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
        attempt,
        at: Instant::now(),
        headers: headers.clone(),
        body: body.clone(),
        status,
    });
    if uri.path() == "/hold" {
        me.held().await;
    }
    tokio::time::sleep(Duration::from_millis(sleep)).await;
    if uri.path() == "/empty" {
        // An empty 200: also a batch function's answer that every item succeeded.
        return StatusCode::OK.into_response();
    }
    let reply = serde_json::json!({"attempt": attempt, "echo": String::from_utf8_lossy(&body)});
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(reply)).into_response();
    if let Some((k, v)) = extra {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

/// `/egress?dep=D&path=/p&method=GET&calls=N&fail_first=K&header=name:value`: makes N calls
/// (default one) to `{keel}/v1/egress/D/p` with its own `keel-invocation-id` (and the header, if
/// given), then answers 200 with what each got — `{"calls": [{"status", "body", "headers"}]}` —
/// or 503 when its attempt number is at most K (after making the calls all the same).
async fn egress_function(keel: &str, q: &HashMap<String, String>, headers: &HeaderMap, attempt: u32) -> Response {
    let arg = |k: &str, default: &str| q.get(k).cloned().unwrap_or_else(|| default.to_string());
    let invocation_id = headers.get("keel-invocation-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let url = format!("{keel}/v1/egress/{}{}", arg("dep", "payments"), arg("path", "/"));
    let method = arg("method", "GET");
    let extra = q.get("header").and_then(|h| h.split_once(':'));
    let mut calls = Vec::new();
    for _ in 0..arg("calls", "1").parse::<u32>().unwrap() {
        let mut sent = vec![("keel-invocation-id", invocation_id.as_str())];
        sent.extend(extra);
        // The attempt's trace goes on into the call, as an instrumented function's would.
        sent.extend(headers.get("traceparent").and_then(|v| v.to_str().ok()).map(|t| ("traceparent", t)));
        let (status, reply_headers, body) = request(&method, &url, &sent, Bytes::new()).await;
        let reply_headers: serde_json::Map<String, Value> =
            reply_headers.iter().map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or("")))).collect();
        calls.push(serde_json::json!({
            "status": status,
            "body": String::from_utf8_lossy(&body),
            "headers": reply_headers,
        }));
    }
    let fail = attempt <= arg("fail_first", "0").parse::<u32>().unwrap();
    let status = if fail { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, axum::Json(serde_json::json!({ "calls": calls }))).into_response()
}

/// A Keel node over a SQLite file in a temp dir.
pub(crate) struct Keel {
    pub(crate) node: Option<Node>,
    pub(crate) url: String,
    pub(crate) dir: tempfile::TempDir,
}

/// A config with `[functions.NAME]` tables given as TOML fragments; the database in `dir`. A
/// fragment may start with `[server]` keys of its own.
pub(crate) fn config(dir: &std::path::Path, functions: &str) -> Config {
    // Served as `keel` serves: connections on lanes (two, shared by the nodes of this binary).
    keel_server::lanes::enable(Some(2));
    let (server, rest) = match functions.strip_prefix("[server]\n") {
        Some(tail) => tail.split_at(tail.find('[').unwrap_or(tail.len())),
        None => ("", functions),
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n{server}[storage]\nurl = \"sqlite://{}/keel.db\"\n{rest}",
        dir.display()
    );
    load_str("test.toml", &text, &Overrides::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

impl Keel {
    pub(crate) async fn start(functions: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node =
            Node::start(config(dir.path(), functions), TcpListener::bind("127.0.0.1:0").await.unwrap()).await.unwrap();
        let url = format!("http://{}", node.addr());
        Self { node: Some(node), url, dir }
    }

    /// A node whose every decision reads `clock` (TTLs, leases, backoff): a test moves time by
    /// hand instead of waiting for it.
    pub(crate) async fn start_with_clock(functions: &str, clock: Arc<dyn keel_core::clock::Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), functions);
        let store = keel_store::open(&keel_store::StoreOptions {
            url: config.storage.url.clone(),
            fsync: config.storage.fsync,
        })
        .unwrap();
        let options = keel_server::NodeOptions { clock, ..Default::default() };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = Node::start_with(config, listener, store, options).await.unwrap();
        let url = format!("http://{}", node.addr());
        Self { node: Some(node), url, dir }
    }

    /// Polls an invocation until it reaches a final status (succeeded, dead, …) or `limit` passes.
    pub(crate) async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        settled(&self.url, id, limit).await
    }
}

/// A response: status, headers, body.
pub(crate) type Reply = (u16, HeaderMap, Bytes);

/// The longest any one request of these tests may take, answer and body included: far beyond
/// any legitimate wait here (the longest is a sync invoke retrying for a few seconds), so that a
/// request that can never finish fails its test with the request named instead of hanging CI.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// Why [`send`] got no reply.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The connection failed or closed before the whole answer arrived (the server died, say).
    Transport(String),
    /// Nothing final within [`REQUEST_DEADLINE`]: the test cannot finish, and must say so.
    Deadline(&'static str),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transport(e) => write!(f, "{e}"),
            SendError::Deadline(stage) => write!(f, "no {stage} within {REQUEST_DEADLINE:?}"),
        }
    }
}

/// Sends `req` on a connection of its own and reads the whole answer within [`REQUEST_DEADLINE`].
///
/// A connection of its own, never a pooled one: the tests SIGKILL servers mid-request, and a
/// request must then fail at once with the connection it was written on, not be handed a
/// connection that another request left idle (see `load::submit_many`).
pub(crate) async fn send(req: hyper::Request<Full<Bytes>>) -> Result<Reply, SendError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
    let deadline = tokio::time::Instant::now() + REQUEST_DEADLINE;
    let resp = tokio::time::timeout_at(deadline, client.request(req))
        .await
        .map_err(|_| SendError::Deadline("answer"))?
        .map_err(|e| SendError::Transport(describe(&e)))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout_at(deadline, resp.into_body().collect())
        .await
        .map_err(|_| SendError::Deadline("whole body"))?
        .map_err(|e| SendError::Transport(describe(&e)))?
        .to_bytes();
    Ok((status, headers, body))
}

/// An error with its chain of causes.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// One request that must be answered: panics naming it on a transport error or the deadline.
pub(crate) async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::new(body.into())).unwrap()).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub(crate) async fn post_json(url: &str, body: &str) -> (u16, HeaderMap, Value) {
    let (s, h, b) = request("POST", url, &[("content-type", "application/json")], body.to_string()).await;
    (s, h, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

pub(crate) async fn get_json(url: &str) -> (u16, HeaderMap, Value) {
    let (s, h, b) = request("GET", url, &[], Bytes::new()).await;
    (s, h, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A fast retry policy for tests: `max_attempts` attempts, 10–50 ms apart.
pub(crate) fn fast_retry(max_attempts: u32) -> String {
    format!("retry = {{ max_attempts = {max_attempts}, initial = \"10ms\", max = \"50ms\", jitter = \"full\" }}")
}

/// A span an OTLP receiver got: ids in hex, name, string forms of its attributes.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedSpan {
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: String,
    pub(crate) name: String,
    pub(crate) attributes: HashMap<String, String>,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1:0 (`POST /v1/traces`, protobuf); returns its base
/// url and what it received.
pub(crate) async fn otlp_receiver() -> (String, Arc<Mutex<Vec<ReceivedSpan>>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;
    let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
    let sink = spans.clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| async move {
            let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace export");
            let all = request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
            let mut sink = sink.lock().unwrap();
            for span in all {
                let attributes = span
                    .attributes
                    .into_iter()
                    .map(|kv| {
                        let value = match kv.value.and_then(|v| v.value) {
                            Some(Any::StringValue(s)) => s,
                            Some(Any::IntValue(i)) => i.to_string(),
                            Some(Any::BoolValue(b)) => b.to_string(),
                            Some(Any::DoubleValue(d)) => d.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key, value)
                    })
                    .collect();
                sink.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    attributes,
                });
            }
            ([("content-type", "application/x-protobuf")], Bytes::new())
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// Prometheus text as `name{k="v",...}` (labels sorted) → value.
pub(crate) fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        out.insert(key, value.parse().unwrap_or(f64::NAN));
    }
    out
}

/// Polls `check` every 20 ms until it gives `Some`, and returns that; panics naming `what` once
/// `limit` has passed. The one way these tests wait for something to happen.
pub(crate) async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for a check that says why it is not there yet (`Err(why)`): the panic names
/// the last reason.
pub(crate) async fn eventually_or_why<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let end = Instant::now() + limit;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(why) => assert!(Instant::now() < end, "{what}: not within {limit:?}: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls invocation `id` on the node at `base` until it is no longer queued, running or
/// retrying, and returns it.
pub(crate) async fn settled(base: &str, id: &str, limit: Duration) -> Value {
    let url = format!("{base}/v1/invocations/{id}");
    eventually(&format!("invocation {id} to end"), limit, || async {
        let (_, _, inv) = get_json(&url).await;
        let status = inv["status"].as_str().unwrap_or("queued");
        (!["queued", "running", "retrying"].contains(&status)).then_some(inv)
    })
    .await
}

/// Invokes `function` (one attempt) sync on the node at `base` and checks that the attempt failed
/// at the transport: `502`, and the invocation's first attempt `transient` with an error that
/// says something (its words are hyper's, and may depend on timing).
pub(crate) async fn fails_at_the_transport(base: &str, function: &str) {
    let (status, _, body) = post_json(&format!("{base}/v1/functions/{function}/invoke"), "{}").await;
    assert_eq!(status, 502, "{body}");
    let id = body["invocation_id"].as_str().unwrap();
    let (_, _, inv) = get_json(&format!("{base}/v1/invocations/{id}")).await;
    assert_eq!(inv["attempts"][0]["outcome"], "transient", "{inv}");
    assert!(inv["attempts"][0]["error"].as_str().is_some_and(|e| !e.is_empty()), "{inv}");
}

/// A free port on loopback (bound, read, released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the real `keel serve -c config` on `port`, logging at `warn` into `log` (appended).
pub(crate) fn spawn_keel(config: &std::path::Path, port: u16, log: &std::path::Path) -> std::process::Child {
    spawn_keel_with(config, port, log, &[], &[])
}

/// [`spawn_keel`] with more arguments and environment (`RUST_LOG` among them overrides `warn`).
/// `KEEL_BIN` names another binary than the one cargo built (a long kill loop runs a copy that
/// rebuilds leave alone).
pub(crate) fn spawn_keel_with(
    config: &std::path::Path,
    port: u16,
    log: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let binary = std::env::var("KEEL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keel").to_string());
    std::process::Command::new(binary)
        .args(["serve", "-c", config.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting keel")
}

/// Starts the real `keel serve -c config` on a free port, logging into `log`, and waits until it
/// is ready: its base URL and process.
pub(crate) async fn start_keel(config: &std::path::Path, log: &std::path::Path) -> (String, std::process::Child) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = spawn_keel(config, port, log);
    wait_ready(&url, &mut child).await;
    (url, child)
}

/// Waits until the node at `base` answers `/readyz` with 200; panics if `child` exits first.
pub(crate) async fn wait_ready(base: &str, child: &mut std::process::Child) {
    let address = base.trim_start_matches("http://").to_string();
    let readyz = format!("{base}/readyz");
    eventually(&format!("keel ready at {base}"), Duration::from_secs(20), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("keel exited early: {status}");
        }
        let (address, readyz) = (address.clone(), readyz.clone());
        async move {
            std::net::TcpStream::connect(&address).ok()?;
            let ready = tokio::time::timeout(Duration::from_secs(1), get_json(&readyz)).await;
            matches!(ready, Ok((200, _, _))).then_some(())
        }
    })
    .await
}

/// Waits until nothing on the node at `base` is queued, running or retrying: every invocation
/// admitted so far (event deliveries included) has ended, so counting what happened is final.
pub(crate) async fn wait_quiet(base: &str, limit: Duration) {
    eventually("nothing queued, running or retrying", limit, || async {
        let open = first_open(base, None, |url| async move { Some(get_json(&url).await.2) }).await?;
        open.is_none().then_some(())
    })
    .await
}

/// The first invocation on the node at `base` (of `function`, when one is named) still queued,
/// running or retrying, as "ID is STATUS"; `Some(None)` when there is none; `None` when a page
/// did not come (`get` fetches one by its URL) or was not a page.
///
/// One walk over every invocation, newest first, page by page: one read in a final status stays
/// in it (nothing redrives meanwhile), so a walk that meets none open means none is open at its
/// end. Three lists by status one after another could miss an invocation that moved from
/// retrying to running between the second and the third.
pub(crate) async fn first_open<F, Fut>(base: &str, function: Option<&str>, mut get: F) -> Option<Option<String>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let of_function = function.map(|f| format!("function={f}&")).unwrap_or_default();
    let mut cursor = String::new();
    loop {
        let page = get(format!("{base}/v1/invocations?{of_function}limit=1000{cursor}")).await?;
        for item in page["items"].as_array()? {
            let status = item["status"].as_str()?;
            if matches!(status, "queued" | "running" | "retrying") {
                return Some(Some(format!("{} is {status}", item["id"])));
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return Some(None),
        }
    }
}
