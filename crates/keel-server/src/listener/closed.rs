//! Why a connection was refused or cut off: logged at most once a second per reason (with how
//! many were since), and counted in `keel_http_connections_closed_total{reason}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use tokio::time::Instant;

use crate::metric_definitions::HTTP_CONNECTIONS_CLOSED_TOTAL;

/// Why Keel closed (or refused) a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The request's headers did not arrive within `server.header_timeout`.
    HeaderTimeout,
    /// The request's body went `server.body_timeout` without a byte (answered 408).
    BodyTimeout,
    /// A keep-alive connection sat idle for `server.idle_timeout`.
    IdleTimeout,
    /// `server.max_connections` were open already (answered 503).
    OverLimit,
    /// Accepting failed, e.g. with no file descriptor left.
    AcceptFailed,
    /// The TLS handshake failed (`server.tls`): a client that does not trust the certificate, or
    /// one speaking plain HTTP. The client's doing, so logged at debug only.
    TlsHandshake,
}

const ALL: [Closed; 6] = [
    Closed::HeaderTimeout,
    Closed::BodyTimeout,
    Closed::IdleTimeout,
    Closed::OverLimit,
    Closed::AcceptFailed,
    Closed::TlsHandshake,
];

impl Closed {
    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::BodyTimeout => "body_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::OverLimit => "over_limit",
            Closed::AcceptFailed => "accept_failed",
            Closed::TlsHandshake => "tls_handshake",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => {
                "closed connections whose request headers did not arrive within server.header_timeout"
            }
            Closed::BodyTimeout => "answered 408 to requests whose body stalled for server.body_timeout",
            Closed::IdleTimeout => "closed keep-alive connections idle for server.idle_timeout",
            Closed::OverLimit => "refused connections past server.max_connections (answered 503)",
            Closed::AcceptFailed => "failed to accept connections",
            Closed::TlsHandshake => "closed connections whose TLS handshake failed",
        }
    }
}

/// Per reason: when it was last logged (ms since [`EPOCH`], 0 = never) and how many since.
struct Throttle {
    last_logged_ms: AtomicU64,
    unlogged: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static THROTTLES: [Throttle; ALL.len()] =
    [const { Throttle { last_logged_ms: AtomicU64::new(0), unlogged: AtomicU64::new(0) } }; ALL.len()];
const LOG_EVERY_MS: u64 = 1_000;

/// Every series at 0 from the first scrape.
pub(super) fn register() {
    for reason in ALL {
        metrics::counter!(HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => reason.label()).increment(0);
    }
}

/// Counts one connection closed for `reason`, and logs it unless one was logged less than a
/// second ago (a flood of slow clients must not flood the log as well). A failed TLS handshake
/// is logged at debug, each one: scanners and misconfigured clients are not the server's trouble.
pub(crate) fn note_closed(reason: Closed, detail: &str) {
    metrics::counter!(HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => reason.label()).increment(1);
    if reason == Closed::TlsHandshake {
        tracing::debug!(reason = reason.label(), error = detail, "{}", reason.message());
        return;
    }
    let throttle = &THROTTLES[ALL.iter().position(|r| *r == reason).expect("listed")];
    throttle.unlogged.fetch_add(1, Ordering::Relaxed);
    let now = EPOCH.elapsed().as_millis() as u64 + 1;
    let last = throttle.last_logged_ms.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY_MS;
    if due && throttle.last_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        let count = throttle.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(reason = reason.label(), count, last = detail, "{}", reason.message());
    }
}
