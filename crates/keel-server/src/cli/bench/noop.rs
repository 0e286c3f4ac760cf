//! The built-in no-op function: a minimal hyper HTTP/1 server that answers every request `200 {}`
//! and counts the calls, so that async completions can be counted where they happen.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running no-op function; dropping it stops accepting connections.
#[derive(Debug)]
pub(crate) struct NoopFunction {
    addr: SocketAddr,
    /// Calls answered since start. With a function that never fails, every attempt succeeds, so
    /// this is the number of completed attempts (re-runs after a crash included).
    calls: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl NoopFunction {
    /// Serves on `addr` (`127.0.0.1:0` for any free port).
    pub(crate) async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(listener, calls.clone()));
        Ok(NoopFunction { addr, calls, accept })
    }

    /// The URL a function entry in `keel.toml` points at.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/noop", self.addr)
    }

    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for NoopFunction {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, calls: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let calls = calls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, calls.clone()));
            // A connection closed by a killed server is expected during `recovery`.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(request: Request<Incoming>, calls: Arc<AtomicU64>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body in full, as a real function would, before answering.
    let _ = request.into_body().collect().await;
    calls.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::KeelClient;

    #[tokio::test]
    async fn answers_ok_and_counts_each_call() {
        let noop = NoopFunction::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let client = KeelClient::new(&noop.url().replace("/noop", "")).unwrap();
        for _ in 0..3 {
            let response = client.send(http::Method::POST, "/noop", &[], Bytes::from_static(b"{}")).await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(&response.body[..], b"{}");
        }
        assert_eq!(noop.calls(), 3);
    }
}
