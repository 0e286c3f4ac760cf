//! The built-in no-op function: a minimal hyper HTTP/1 server that answers every request `200 {}`
//! and counts the calls, so that async completions can be counted where they happen. A batch
//! (`application/vnd.keel.batch+json`) counts one call per item, all of them succeeded by `{}`.

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
    /// Calls answered since start, each item of a batch a call. With a function that never
    /// fails, every attempt succeeds, so this is the number of completed attempts (re-runs after a
    /// crash included).
    calls: Arc<AtomicU64>,
    /// Batch requests answered since start (their items are in `calls`).
    batches: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl NoopFunction {
    /// Serves on `addr` (`127.0.0.1:0` for any free port).
    pub(crate) async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (calls, batches) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let accept = tokio::spawn(accept_loop(listener, calls.clone(), batches.clone()));
        Ok(NoopFunction { addr, calls, batches, accept })
    }

    /// The URL a function entry in `keel.toml` points at.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/noop", self.addr)
    }

    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl Drop for NoopFunction {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, calls: Arc<AtomicU64>, batches: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (calls, batches) = (calls.clone(), batches.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, calls.clone(), batches.clone()));
            // A connection closed by a killed server is expected during `recovery`.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    calls: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let batch = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(keel_core::batch::is_batch_content_type);
    // Read the body in full, as a real function would, before answering.
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if batch {
        let items = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body).map_or(0, |items| items.len());
        batches.fetch_add(1, Ordering::Relaxed);
        calls.fetch_add(items as u64, Ordering::Relaxed);
    } else {
        calls.fetch_add(1, Ordering::Relaxed);
    }
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
        let batch = [(http::header::CONTENT_TYPE, keel_core::batch::CONTENT_TYPE.to_owned())];
        let response = client.send(http::Method::POST, "/noop", &batch, Bytes::from_static(b"[{},{}]")).await.unwrap();
        assert_eq!((response.status.as_u16(), &response.body[..]), (200, &b"{}"[..]), "every item succeeded");
        assert_eq!((noop.calls(), noop.batches()), (5, 1), "each item of a batch is a call");
    }
}
