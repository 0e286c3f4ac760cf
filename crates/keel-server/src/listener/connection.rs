//! One connection, served by hyper, under Keel's timeouts.
//!
//! hyper's own `header_read_timeout` is not used: its clock starts whenever hyper waits for a
//! request head, so it also runs while a keep-alive connection sits idle between requests, and
//! `server.header_timeout` (10 s) would close those long before `server.idle_timeout` (60 s).
//! Instead the connection is in one of three stages, moved along by what happens on it:
//!
//! - `Head` from its opening, and again from the first byte after an idle spell: the headers must
//!   be in within `header_timeout` of that moment;
//! - `Busy` from the handler's start until its answer: no connection timeout (the handler's own
//!   deadlines apply; a stalled body is caught by `body_timeout` on the body itself);
//! - `Idle` from the answer until the next byte: closed after `idle_timeout`.
//!
//! A stage past its deadline closes the connection, logged and counted ([`super::note_closed`]).
//!
//! Over TLS the handshake comes first, within the same `header_timeout` as the first request's
//! head: the clock starts when the connection is accepted, so a client cannot stretch a slow
//! handshake and slow headers into twice the limit.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutBody;

use super::socket::Watched;
use super::{note_closed, Closed, Limits};
use crate::metric_definitions::HTTP_CONNECTIONS_OPEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Busy,
    Idle,
}

/// The stage a connection is in, and since when.
#[derive(Debug, Clone, Copy)]
pub(super) struct Since {
    stage: Stage,
    at: Instant,
}

/// Moves the connection's stage along; read by [`serve`]'s loop, which owns the deadline.
#[derive(Debug, Clone)]
pub(super) struct StageTx(Arc<watch::Sender<Since>>);

impl StageTx {
    fn enter(&self, stage: Stage) {
        self.0.send_replace(Since { stage, at: Instant::now() });
    }

    /// A byte arrived: an idle connection starts a request head.
    pub(super) fn byte_arrived(&self) {
        self.0.send_if_modified(|since| {
            let idle = since.stage == Stage::Idle;
            if idle {
                *since = Since { stage: Stage::Head, at: Instant::now() };
            }
            idle
        });
    }
}

/// Serves one connection until it closes, the client's or Keel's doing, over TLS when `tls`
/// is given; `slot` is its place under `server.max_connections`, given back when it ends.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    let _open = OpenGauge::new();
    let opened = Instant::now();
    match tls {
        None => serve_http(stream, peer, app, limits, opened, stop).await,
        Some(acceptor) => {
            if let Some(stream) = handshake(acceptor, stream, peer, limits, opened, &mut stop).await {
                serve_http(stream, peer, app, limits, opened, stop).await;
            }
        }
    }
    drop(slot);
}

/// The TLS handshake, by `header_timeout` after `opened`; `None` when it failed (logged and
/// counted), ran out of time, or the node began to drain meanwhile.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    opened: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Option<TlsStream<TcpStream>> {
    tokio::select! {
        result = acceptor.accept(stream) => match result {
            Ok(stream) => Some(stream),
            Err(e) => {
                note_closed(Closed::TlsHandshake, &format!("{peer}: {e}"));
                None
            }
        },
        () = tokio::time::sleep_until(opened + limits.header_timeout) => {
            note_closed(Closed::HeaderTimeout, &peer.to_string());
            None
        }
        _ = stop.changed() => None,
    }
}

/// HTTP/1.1 on `stream` (a socket, or the plaintext side of TLS) under the stages' deadlines.
async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    opened: Instant,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut stage) = watch::channel(Since { stage: Stage::Head, at: opened });
    let tx = StageTx(Arc::new(tx));
    let io = TokioIo::new(Watched::new(stream, tx.clone()));
    let app = TowerToHyperService::new(app);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        tx.enter(Stage::Busy);
        // For the firewall (`api::edge`): who is on the other end.
        request.extensions_mut().insert(super::Peer(peer));
        let answer =
            hyper::service::Service::call(&app, request.map(|body| TimeoutBody::new(limits.body_timeout, body)));
        let tx = tx.clone();
        async move {
            let response = answer.await;
            tx.enter(Stage::Idle);
            response
        }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_head_bytes)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let since = *stage.borrow_and_update();
        let deadline = match since.stage {
            Stage::Head => Some((since.at + limits.header_timeout, Closed::HeaderTimeout)),
            Stage::Idle => Some((since.at + limits.idle_timeout, Closed::IdleTimeout)),
            Stage::Busy => None,
        };
        let expiry = async {
            match deadline {
                Some((at, reason)) => {
                    tokio::time::sleep_until(at).await;
                    reason
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stage.changed() => {}
            reason = expiry => {
                // Dropping the connection closes the socket: there is no request to answer.
                note_closed(reason, &peer.to_string());
                break;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// `keel_http_connections_open`, up while the connection is served.
struct OpenGauge;

impl OpenGauge {
    fn new() -> Self {
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).increment(1.0);
        OpenGauge
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).decrement(1.0);
    }
}
