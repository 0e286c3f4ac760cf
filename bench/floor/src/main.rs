//! The floor of a sync call: `POST /v1/functions/noop/invoke` forwarded to one function URL with
//! the pooled hyper client, its answer collected and sent back — axum's router, hyper's server
//! and client, tokio and mimalloc, served on lanes as `keel serve` serves (one current-thread
//! runtime per core, each with its own client, a connection served by one lane), and nothing
//! else: no store, spans, metrics, auth or flow control. What Keel costs above this is Keel's own.
//! Connections are accepted on a multi-thread runtime and handed to the least busy lane, where
//! `keel` accepts on every lane: the same for keep-alive clients (`bench/outside.py`), not for a
//! client that opens a connection per request.
//!
//! Usage: keel-floor LISTEN_ADDR FUNCTION_URL (e.g. `127.0.0.1:8090 http://127.0.0.1:8081/`).
//! `TOKIO_WORKER_THREADS` sets the number of lanes too, as in `keel`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::sync::mpsc;

// mimalloc is `malloc` here, as in `keel` (its main.rs says why); Rust's default allocator calls it.
extern crate mimalloc as _;

struct Function {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
}

async fn invoke(State(function): State<Arc<Function>>, body: Bytes) -> Result<Response<Body>, StatusCode> {
    let request = Request::post(&function.url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let answer = function.client.request(request).await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    let (parts, body) = answer.into_parts();
    let body = body.collect().await.map_err(|_| StatusCode::BAD_GATEWAY)?.to_bytes();
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// One lane: a thread running a current-thread runtime that serves the connections sent to it.
fn lane(url: String, mut streams: mpsc::UnboundedReceiver<std::net::TcpStream>, open: Arc<AtomicUsize>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let app = axum::Router::new()
            .route("/v1/functions/noop/invoke", post(invoke))
            .with_state(Arc::new(Function { client, url }));
        while let Some(stream) = streams.recv().await {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
            let (service, open) = (TowerToHyperService::new(app.clone()), open.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(url)) = (args.next(), args.next()) else {
        eprintln!("usage: keel-floor LISTEN_ADDR FUNCTION_URL");
        std::process::exit(2);
    };
    let count = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let lanes: Vec<_> = (0..count.max(1))
        .map(|_| {
            let (send, streams) = mpsc::unbounded_channel();
            let open = Arc::new(AtomicUsize::new(0));
            let (url, counted) = (url.clone(), open.clone());
            std::thread::spawn(move || lane(url, streams, counted));
            (send, open)
        })
        .collect();
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("listen address");
    let mut next = 0;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        next += 1;
        let (send, open) = (0..lanes.len())
            .map(|i| &lanes[(next + i) % lanes.len()])
            .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
            .expect("a lane");
        if let Ok(stream) = stream.into_std() {
            open.fetch_add(1, Ordering::Relaxed);
            let _ = send.send(stream);
        }
    }
}
