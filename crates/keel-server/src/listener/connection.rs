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
//! Moving a stage along is one atomic store ([`StageTx`]) and wakes nobody: [`serve_http`]'s one
//! timer reads the stage when it fires and, unless its deadline has passed, sleeps again until
//! that deadline or for [`Limits::recheck`], whichever is sooner. Every stage lasts at least
//! `recheck` before its deadline, so each change is seen before its deadline is due and the
//! deadlines are kept exactly, at the cost of one timer expiry per `recheck` (the shorter of the
//! two timeouts, 10 s by default) on a busy connection: not three wake-ups of the connection's
//! task per request (BENCHMARKS.md, "Instructions per request").
//!
//! Over TLS the handshake comes first, within the same `header_timeout` as the first request's
//! head: the clock starts when the connection is accepted, so a client cannot stretch a slow
//! handshake and slow headers into twice the limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio::time::{Duration, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutBody;

use super::socket::Watched;
use super::{note_closed, Closed, Limits, HYPER_MAX_HEADERS};
use crate::metric_definitions::HTTP_CONNECTIONS_OPEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Busy,
    Idle,
}

impl Stage {
    const ALL: [Stage; 3] = [Stage::Head, Stage::Busy, Stage::Idle];
}

/// The stage a connection is in, and since when, in one word: the stage in the low two bits,
/// the nanoseconds from `origin` above them.
#[derive(Debug)]
struct Since {
    origin: Instant,
    word: AtomicU64,
}

impl Since {
    fn new(origin: Instant) -> Self {
        Since { origin, word: AtomicU64::new(Stage::Head as u64) }
    }

    fn word(&self, stage: Stage, at: Instant) -> u64 {
        let nanos = u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX >> 2);
        nanos << 2 | stage as u64
    }

    fn read(&self) -> (Stage, Instant) {
        let word = self.word.load(Ordering::Relaxed);
        (Stage::ALL[(word & 3) as usize], self.origin + Duration::from_nanos(word >> 2))
    }

    /// When the current stage runs out, and why; `None` while a request is being handled.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        match self.read() {
            (Stage::Head, at) => Some((at + limits.header_timeout, Closed::HeaderTimeout)),
            (Stage::Idle, at) => Some((at + limits.idle_timeout, Closed::IdleTimeout)),
            (Stage::Busy, _) => None,
        }
    }
}

/// Moves the connection's stage along; read by [`serve_http`]'s timer, which owns the deadline.
#[derive(Debug, Clone)]
pub(super) struct StageTx(Arc<Since>);

impl StageTx {
    /// A request's handler starts: no connection deadline until its answer (so no clock read).
    fn busy(&self) {
        self.0.word.store(Stage::Busy as u64, Ordering::Relaxed);
    }

    /// The answer is ready: the connection is idle from now.
    fn idle(&self) {
        self.0.word.store(self.0.word(Stage::Idle, Instant::now()), Ordering::Relaxed);
    }

    /// A byte arrived: an idle connection starts a request head.
    pub(super) fn byte_arrived(&self) {
        if self.0.word.load(Ordering::Relaxed) & 3 == Stage::Idle as u64 {
            self.0.word.store(self.0.word(Stage::Head, Instant::now()), Ordering::Relaxed);
        }
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
    let since = Arc::new(Since::new(opened));
    let tx = StageTx(since.clone());
    let io = TokioIo::new(Watched::new(stream, tx.clone()));
    let app = TowerToHyperService::new(app);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        tx.busy();
        // For the firewall (`api::edge`): who is on the other end.
        request.extensions_mut().insert(super::Peer(peer));
        let answer =
            hyper::service::Service::call(&app, request.map(|body| TimeoutBody::new(limits.body_timeout, body)));
        let tx = tx.clone();
        async move {
            let response = answer.await;
            tx.idle();
            response
        }
    });
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).max_buf_size(limits.max_head_bytes);
    // Unset, hyper's limit is the default's 100 lines, parsed into two arrays made in place. Set
    // to any value, even 100, hyper fills and moves the two arrays of a request head through
    // `smallvec!` (1.7k instructions of a sync call's 142k, BENCHMARKS.md): so only when it
    // differs.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let recheck = limits.recheck();
    let timer = tokio::time::sleep_until(opened + recheck);
    tokio::pin!(timer);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = timer.as_mut() => {
                let now = Instant::now();
                match since.deadline(&limits) {
                    Some((at, reason)) if at <= now => {
                        // Dropping the connection closes the socket: there is no request to answer.
                        note_closed(reason, &peer.to_string());
                        break;
                    }
                    Some((at, _)) => timer.as_mut().reset(at.min(now + recheck)),
                    None => timer.as_mut().reset(now + recheck),
                }
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
