//! The floor of a sync call: `POST /v1/functions/noop/invoke` forwarded to one function URL with
//! the pooled hyper client Keel uses, its answer collected and sent back — axum's router, hyper's
//! server and client, tokio's multi-thread runtime and mimalloc, as in `keel serve`, and nothing
//! else: no store, spans, metrics, auth or flow control. What Keel costs above this is Keel's own.
//!
//! Usage: keel-floor LISTEN_ADDR FUNCTION_URL (e.g. `127.0.0.1:8090 http://127.0.0.1:8081/`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(url)) = (args.next(), args.next()) else {
        eprintln!("usage: keel-floor LISTEN_ADDR FUNCTION_URL");
        std::process::exit(2);
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let app = axum::Router::new()
        .route("/v1/functions/noop/invoke", post(invoke))
        .with_state(Arc::new(Function { client, url }));
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("listen address");
    axum::serve(listener, app).await.expect("serve");
}
