//! The function's HTTP server: binds `PORT`, turns each `POST` into a [`Request`] for the
//! handler and its answer into the contract's response; `GET` on any path answers 200 so that
//! `health_path` may point anywhere. SIGTERM (Keel stopping an instance) stops accepting and
//! lets requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::ctx::Ctx;
use crate::error::Error;
use crate::reply::Reply;

/// Port used when `PORT` is not set (running the function by hand).
const DEFAULT_PORT: u16 = 8080;

/// One invocation: its context and the payload as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub ctx: Ctx,
    pub body: Bytes,
    content_type: Option<String>,
}

impl Request {
    pub(crate) fn new(ctx: Ctx, body: Bytes, content_type: Option<String>) -> Self {
        Self { ctx, body, content_type }
    }

    /// The payload as JSON; a body that does not parse is a 400 (permanent: not retried).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
}

/// Serves `handler` on `127.0.0.1:$PORT` until SIGTERM or Ctrl-C.
///
/// ```no_run
/// use keel_sdk::{Error, Reply, Request};
///
/// async fn hello(req: Request) -> Result<Reply, Error> {
///     Ok(Reply::json(serde_json::json!({ "attempt": req.ctx.attempt() })))
/// }
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     keel_sdk::serve(hello).await
/// }
/// ```
pub async fn serve<H, F>(handler: H) -> std::io::Result<()>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    let listener = bind_port().await?;
    serve_on(listener, handler, stop_signal()).await
}

/// Binds `127.0.0.1:$PORT` (8080 when `PORT` is not set).
pub(crate) async fn bind_port() -> std::io::Result<TcpListener> {
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse().map_err(|_| std::io::Error::other(format!("PORT={port:?} is not a port number")))?,
        Err(_) => DEFAULT_PORT,
    };
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// [`serve`] on a listener of your own, until `shutdown` completes (tests bind `127.0.0.1:0`).
pub async fn serve_on<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    let respond = move |headers: http::HeaderMap, body: Bytes| {
        let request = Request { ctx: Ctx::from_headers(&headers), content_type: content_type(&headers), body };
        // Run apart, so that a panicking handler becomes a 500 (retried) instead of a reset.
        let outcome = tokio::spawn(handler(request));
        async move { outcome.await.unwrap_or_else(|_| Err(Error::retryable("the handler panicked").with_status(500))) }
    };
    serve_with(listener, respond, shutdown).await
}

/// The request's `content-type`, if it has a readable one.
pub(crate) fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Accepts connections until `shutdown`, answering each `POST` with what `respond` makes of its
/// headers and body (a single handler's or a batch handler's answer). Each connection speaks
/// HTTP/1.1 or, when it opens with the HTTP/2 preface, HTTP/2 (h2c): what Keel sends to a
/// function with `http2 = true`.
pub(crate) async fn serve_with<R, A>(
    listener: TcpListener,
    respond: R,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    R: Fn(http::HeaderMap, Bytes) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: the next accept may work.
                Err(_) => continue,
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let respond = respond.clone();
        let service = service_fn(move |request| answer(request, respond.clone()));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn answer<R, A>(request: http::Request<Incoming>, respond: R) -> Result<Response<Full<Bytes>>, Infallible>
where
    R: Fn(http::HeaderMap, Bytes) -> A,
    A: Future<Output = Result<Reply, Error>> + Send + 'static,
{
    if request.method() == Method::GET {
        return Ok(response(200, Some("text/plain"), Bytes::from_static(b"ok")));
    }
    if request.method() != Method::POST {
        return Ok(problem(&Error::permanent("only POST invokes a function").with_status(405)));
    }
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(problem(&Error::retryable(format!("reading the request: {e}")))),
    };
    Ok(match respond(parts.headers, body).await {
        Ok(reply) => response(reply.status(), reply.content_type(), reply.into_body()),
        Err(error) => problem(&error),
    })
}

fn response(status: u16, content_type: Option<&str>, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(value) = content_type.and_then(|ct| ct.parse().ok()) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// An RFC 9457 problem for `error`, with `Retry-After` when it has one.
fn problem(error: &Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": error.message(),
    });
    let mut response = response(status.as_u16(), Some("application/problem+json"), body.to_string().into());
    if let Some(secs) = error.retry_after_secs() {
        response.headers_mut().insert(RETRY_AFTER, secs.into());
    }
    response
}

pub(crate) async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    use super::*;

    async fn handler(req: Request) -> Result<Reply, Error> {
        match req.body.as_ref() {
            b"later" => Err(Error::retry_after(Duration::from_secs(2))),
            b"no" => Err(Error::permanent("no")),
            b"panic" => panic!("handler bug"),
            _ => Ok(Reply::json(serde_json::json!({
                "id": req.ctx.invocation_id(),
                "attempt": req.ctx.attempt(),
                "key": req.ctx.idempotency_key(),
                "left": req.ctx.remaining().is_some(),
            }))),
        }
    }

    /// POSTs `body` as Keel would, over HTTP/2 with prior knowledge (h2c) when `http2`.
    async fn post(addr: SocketAddr, body: &'static str, http2: bool) -> (u16, http::HeaderMap, serde_json::Value) {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(http2).build_http();
        let deadline = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(30));
        let request = http::Request::post(format!("http://{addr}/"))
            .header("keel-invocation-id", "inv1")
            .header("keel-attempt", "3")
            .header("idempotency-key", "inv1")
            .header("keel-deadline", deadline.to_string())
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let version = if http2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        assert_eq!(response.version(), version);
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn the_contract_comes_in_as_ctx_and_errors_go_out_as_statuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, handler, async move {
            let _ = stopped.await;
        }));

        // HTTP/1.1, and HTTP/2 as Keel speaks it to a function with `http2 = true`: the same answers.
        for http2 in [false, true] {
            let (status, _, body) = post(addr, "{}", http2).await;
            assert_eq!(status, 200);
            assert_eq!(body, serde_json::json!({"id": "inv1", "attempt": 3, "key": "inv1", "left": true}));
            let (status, headers, body) = post(addr, "later", http2).await;
            assert_eq!((status, &headers[RETRY_AFTER]), (503, &http::HeaderValue::from(2)));
            assert_eq!(body["detail"], "retry after 2s");
            let (status, headers, _) = post(addr, "no", http2).await;
            assert_eq!(
                (status, &headers[CONTENT_TYPE]),
                (422, &http::HeaderValue::from_static("application/problem+json"))
            );
            assert_eq!(post(addr, "panic", http2).await.0, 500, "a panic is a retryable 500, not a reset");
        }

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "stopped listening");
    }
}
