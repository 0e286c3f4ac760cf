//! Accepting HTTP connections: at most `server.max_connections` at once — one more is answered
//! 503 and closed — each served by hyper under Keel's header, body and idle timeouts
//! ([`connection`]). Whatever is refused or cut off is logged (at most once a second per reason,
//! with how many since) and counted in `keel_http_connections_closed_total{reason}`. With
//! `server.tls` every connection is served over TLS ([`tls`]).

mod closed;
mod connection;
pub mod lanes;
mod socket;
mod tls;

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use keel_core::config::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

pub(crate) use closed::{note_closed, Closed};
pub(crate) use tls::Tls;
pub use tls::TlsError;

/// The far end of a request's connection, put in its extensions by the listener. Requests
/// driven through the router without a socket (in-process tests) have none, and skip the
/// address checks of `api::edge`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// The connection limits of `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: u32,
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Header lines hyper parses in one request (`server.limits.max_headers`); past it → 431.
    pub(crate) max_headers: usize,
    /// hyper's read buffer: a request head that does not fit is answered 431. Room for the
    /// target and headers at their limits and some slack, so that a head just past a limit
    /// reaches `api::limits::head`, which names the limit it broke.
    pub(crate) max_head_bytes: usize,
}

impl Limits {
    pub(crate) fn of(server: &ServerConfig) -> Self {
        Self {
            max_connections: server.max_connections,
            header_timeout: server.header_timeout,
            body_timeout: server.body_timeout,
            idle_timeout: server.idle_timeout,
            max_headers: server.limits.max_headers as usize,
            max_head_bytes: (server.limits.max_url_bytes as usize + server.limits.max_header_bytes as usize)
                .saturating_mul(2)
                .max(HYPER_MIN_BUF),
        }
    }

    /// How often a connection's timer looks at its stage at least (`connection::serve_http`):
    /// the shorter timeout, so that no stage's deadline can pass unseen.
    pub(crate) fn recheck(&self) -> Duration {
        self.header_timeout.min(self.idle_timeout).max(Duration::from_millis(1))
    }
}

/// hyper's smallest read buffer (it panics below it).
const HYPER_MIN_BUF: usize = 8192;
/// The header lines hyper parses when no limit is set: Keel's default limit is the same.
const HYPER_MAX_HEADERS: usize = keel_core::limits::LimitsConfig::DEFAULT_MAX_HEADERS as usize;
/// Connections past the limit being answered at once; more are closed without an answer, so
/// that refusing cannot itself hold many sockets.
const MAX_REFUSALS: usize = 256;
/// How long a refusal may take to be written and its connection closed.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// The pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets every
/// open connection finish its request in progress (idle ones close at once) and returns once all
/// are closed. Connections are served on the process's lanes when `keel` enabled them
/// ([`lanes`]), else where they are accepted.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_on(listener, app, limits, tls, shutdown, lanes::enabled()).await
}

/// [`serve`], on `lanes` when given: each lane accepts on the listening socket (in its own
/// `epoll`) and serves what it accepts, unless another lane has fewer connections open; then it
/// hands the connection over ([`lanes`]).
pub(crate) async fn serve_on(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
    lanes: Option<&lanes::Lanes>,
) -> std::io::Result<()> {
    closed::register();
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (stop, stopped) = watch::channel(false);
    let accepting =
        Accepting { app, limits, tls, slots: slots.clone(), refusals: Arc::new(Semaphore::new(MAX_REFUSALS)), stopped };
    match lanes {
        // Dropped when `shutdown` completes, the loop drops the listener: no more connections.
        None => tokio::select! {
            () = accept(listener, &accepting, None) => {}
            () = shutdown => {}
        },
        Some(lanes) => {
            let listener = listener.into_std()?;
            let mut loops = Vec::with_capacity(lanes.len());
            for index in 0..lanes.len() {
                let (listener, accepting, refs) = (listener.try_clone()?, accepting.clone(), lanes.refs());
                let (end, ended) = tokio::sync::oneshot::channel::<()>();
                let done = lanes.run_on(index, async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => tokio::select! {
                            () = accept(listener, &accepting, Some((&refs, index))) => {}
                            _ = ended => {}
                        },
                        Err(e) => tracing::error!(error = %e, "a lane cannot accept connections"),
                    }
                });
                loops.push((end, done));
            }
            drop(listener);
            shutdown.await;
            for (end, done) in loops {
                drop(end);
                let _ = done.await;
            }
        }
    }
    stop.send_replace(true);
    // Each connection gives its slot back as it ends.
    let _ = slots.acquire_many(limits.max_connections).await;
    Ok(())
}

/// What every accept loop of one listener shares.
#[derive(Clone)]
struct Accepting {
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    /// A place under `server.max_connections` for each connection served.
    slots: Arc<Semaphore>,
    /// Refusals being written.
    refusals: Arc<Semaphore>,
    /// Turns true when the node drains: connections finish their request in progress.
    stopped: watch::Receiver<bool>,
}

/// Accepts connections on `listener` for ever: each is served (on lane `index` of `lanes`, or
/// handed to a less busy lane) or, past `server.max_connections`, refused.
async fn accept(listener: TcpListener, accepting: &Accepting, lanes: Option<(&[lanes::LaneRef], usize)>) {
    let Accepting { app, limits, tls, slots, refusals, stopped } = accepting;
    let limits = *limits;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                note_closed(Closed::AcceptFailed, &e.to_string());
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let acceptor = tls.as_deref().map(Tls::acceptor);
                let (app, stopped) = (app.clone(), stopped.clone());
                let serve = move |stream| connection::serve(stream, peer, app, limits, acceptor, stopped, slot);
                match lanes {
                    Some((lanes, index)) => lanes::place(lanes, index, stream, serve),
                    None => drop(tokio::spawn(serve(stream))),
                }
            }
            Err(_) => {
                note_closed(Closed::OverLimit, &peer.to_string());
                // A plaintext 503 means nothing to a TLS client, and a handshake to refuse it
                // would spend on overload what overload lacks: over TLS it is only closed.
                if tls.is_some() {
                    continue;
                }
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(REFUSAL_TIME, refuse(stream)).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// The answer past `server.max_connections`: the request is not read.
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = serde_json::json!({
        "type": "urn:keel:problem:overloaded",
        "title": "Too many connections",
        "status": 503,
        "detail": "this node already serves server.max_connections connections; retry shortly",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Writes [`REFUSAL`], then reads until the client closes, so that closing does not reset the
/// connection (and discard the answer) while the client's request is still unread.
async fn refuse(mut stream: TcpStream) -> std::io::Result<()> {
    stream.write_all(&REFUSAL).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}
