//! `http2 = true`: a function that speaks only HTTP/2 (h2c, prior knowledge) is called over it —
//! sync and async, one at a time and in batches — its concurrent calls sharing one connection as
//! streams; the same function without `http2` cannot be reached, and its attempts say why.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::{eventually_or_why, fails_at_the_transport, get_json, post_json, request, Keel};

/// A request an [`H2Function`] received: its HTTP version, and `keel-batch-size` if it was a batch.
type Seen = (String, Option<usize>);

/// An h2c-only function on `127.0.0.1:0`: it counts the connections it accepted and notes the
/// HTTP version and `keel-batch-size` of each request. A single call is answered with
/// `{"version": "HTTP/2.0", "function": NAME}`, a batch call with `{"failed": []}`.
#[derive(Debug, Clone, Default)]
struct H2Function {
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Seen>>>,
}

impl H2Function {
    async fn start() -> (Self, SocketAddr) {
        let me = Self::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = me.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let version = format!("{:?}", req.version());
                            let header =
                                |name| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                            let function = header("keel-function").unwrap_or_default();
                            let batch = header("keel-batch-size").and_then(|n| n.parse().ok());
                            // Read the whole body before answering, as a function does.
                            let _ = req.into_body().collect().await;
                            state.requests.lock().unwrap().push((version.clone(), batch));
                            let body = match batch {
                                Some(_) => json!({ "failed": [] }),
                                None => json!({ "version": version, "function": function }),
                            };
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body.to_string())))
                        }
                    });
                    // HTTP/2 only: an HTTP/1.1 request is not the connection preface, and the
                    // connection ends there.
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (me, addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_function_is_called_over_h2c_its_calls_sharing_one_connection() {
    let (function, addr) = H2Function::start().await;
    let keel = Keel::start(&format!(
        "[functions.h2]\nurl = \"http://{addr}/run\"\nhttp2 = true\n\
         [functions.indexer]\nurl = \"http://{addr}/index\"\nhttp2 = true\n\
         batch = {{ max_size = 10, max_wait = \"50ms\" }}\n\
         [functions.h1]\nurl = \"http://{addr}/run\"\nretry = {{ max_attempts = 1 }}\n"
    ))
    .await;
    let invoke = format!("{}/v1/functions/h2/invoke", keel.url);
    for (name, http2) in [("h2", true), ("indexer", true), ("h1", false)] {
        let (_, _, view) = get_json(&format!("{}/v1/functions/{name}", keel.url)).await;
        assert_eq!(view["http2"], http2, "{view}");
    }

    let (status, headers, body) = post_json(&invoke, r#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "version": "HTTP/2.0", "function": "h2" }));
    assert_eq!(headers["keel-attempts"], "1");
    assert_eq!(function.connections(), 1);

    // Twenty calls at once: twenty streams on the connection already open, not new connections.
    let calls = (0..20).map(|n| {
        let invoke = invoke.clone();
        tokio::spawn(async move { post_json(&invoke, &format!(r#"{{"n": {n}}}"#)).await })
    });
    for call in calls {
        let (status, _, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], "HTTP/2.0", "{body}");
    }
    assert_eq!(function.connections(), 1, "concurrent HTTP/2 calls opened connections of their own");

    // Async, in batches: a bulk admission of five, delivered in batch requests over HTTP/2.
    let (status, _, admitted) = request(
        "POST",
        &format!("{}/v1/functions/indexer/invocations", keel.url),
        &[("content-type", "application/vnd.keel.batch+json")],
        r#"[{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}]"#,
    )
    .await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&admitted));
    let admitted: Value = serde_json::from_slice(&admitted).unwrap();
    let ids: Vec<String> =
        admitted["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 5, "{admitted}");
    for id in &ids {
        eventually_or_why(&format!("batch item {id} to succeed"), Duration::from_secs(10), || async {
            let (_, _, inv) = get_json(&format!("{}/v1/invocations/{id}", keel.url)).await;
            (inv["status"] == "succeeded").then_some(()).ok_or_else(|| inv.to_string())
        })
        .await;
    }
    let requests = function.requests.lock().unwrap().clone();
    let batches: Vec<usize> = requests.iter().filter_map(|(_, batch)| *batch).collect();
    assert_eq!(batches.iter().sum::<usize>(), 5, "{requests:?}");
    assert!(requests.iter().all(|(version, _)| version == "HTTP/2.0"), "{requests:?}");
    assert_eq!(function.connections(), 1, "the batch calls opened a connection of their own");

    // Without `http2`, Keel speaks HTTP/1.1, which this function does not: the attempt fails
    // at the transport and says so.
    fails_at_the_transport(&keel.url, "h1").await;
}
