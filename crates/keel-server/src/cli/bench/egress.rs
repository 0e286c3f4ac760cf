//! `egress`: a dependency called through Keel (`POST /v1/egress/noopdep/x`, forwarded to the
//! no-op function) against the same no-op function called straight (`direct`).
//!
//! Keel lets only a running attempt of a function that declares the dependency call it, so the
//! bench holds one open: the server's `holder` function (declaring `noopdep`) points at the
//! [`Holder`] here, which reports the `keel-invocation-id` of the attempt it receives and answers
//! only when the bench releases it. The load sends that id as its caller identity.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::load::PAYLOAD;
use super::report::Scenario;
use super::server::BenchServer;
use super::throughput::{self, Direct};
use super::{BenchError, Settings};

/// The dependency the server is configured with (its url is the no-op function's).
pub(crate) const DEPENDENCY: &str = "noopdep";
/// The function whose running attempt the egress calls are made on behalf of.
pub(crate) const HOLDER: &str = "holder";
/// Longest wait for the holder's attempt to reach the bench.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `holder` function: each call reports its `keel-invocation-id`, then waits for the release.
#[derive(Debug)]
pub(crate) struct Holder {
    addr: SocketAddr,
    ids: mpsc::UnboundedReceiver<String>,
    release: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Holder {
    pub(crate) async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (ids_tx, ids) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, ids_tx, released));
        Ok(Holder { addr, ids, release, accept })
    }

    /// The URL the `holder` function entry in `keel.toml` points at.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/hold", self.addr)
    }

    /// Lets every held call (and any later one) answer `200 {}`.
    fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.release();
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, ids: mpsc::UnboundedSender<String>, released: watch::Receiver<bool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (ids, released) = (ids.clone(), released.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| hold(request, ids.clone(), released.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn hold(
    request: Request<Incoming>,
    ids: mpsc::UnboundedSender<String>,
    mut released: watch::Receiver<bool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = request.headers().get("keel-invocation-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let _ = request.into_body().collect().await;
    if let Some(id) = id {
        let _ = ids.send(id);
    }
    // A closed channel (the holder dropped) also ends the wait.
    let _ = released.wait_for(|r| *r).await;
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `egress`: starts one `holder` invocation, waits for its attempt to reach the [`Holder`], then
/// measures `POST {base}/v1/egress/noopdep/x` with that attempt's `keel-invocation-id` at
/// concurrency 1 and C, exactly as `sync` is measured; releases the attempt at the end.
pub(crate) async fn run(
    settings: &Settings,
    direct: &Direct,
    holder: &mut Holder,
    base: &str,
    server: Option<&BenchServer>,
) -> Result<Scenario, BenchError> {
    let keel = settings.client(base)?;
    let submitted = keel
        .send(
            http::Method::POST,
            &format!("/v1/functions/{HOLDER}/invocations"),
            &[(http::header::CONTENT_TYPE, "application/json".to_owned())],
            Bytes::from_static(PAYLOAD),
        )
        .await?;
    if submitted.status != StatusCode::ACCEPTED {
        return Err(submitted.problem().into());
    }
    let id = match tokio::time::timeout(ATTEMPT_TIMEOUT, holder.ids.recv()).await {
        Ok(Some(id)) => id,
        _ => return Err(BenchError::Server(format!("no {HOLDER} attempt reached the bench in {ATTEMPT_TIMEOUT:?}"))),
    };
    let target = settings
        .target(&format!("{base}/v1/egress/{DEPENDENCY}/x"), StatusCode::OK)?
        .with_header("keel-invocation-id", &id)?;
    let cases = throughput::through_keel(settings, direct, &target, "egress", server).await;
    holder.release();
    Ok(Scenario { name: "egress", cases: cases?, skipped: None })
}
