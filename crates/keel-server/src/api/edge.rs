//! The API's edge (`[server.firewall]`, `[server.throttle]`): the client address (the peer, or
//! behind a trusted proxy the address its `X-Forwarded-For` names), refused with 403
//! `forbidden-address` when denied or not allowed; method/path rules (403 `forbidden-request`);
//! and the throttles, 429 `throttled` with `Retry-After`: per client address in [`screen`],
//! the outermost layer after telemetry, and per API key in [`check_key`], run by each route's
//! `authorize` layer once the caller is known. The decisions are `keel_core::edge`'s.
//!
//! A refused address is answered rather than closed at accept: behind a trusted proxy the client
//! is only known from a request's headers, and a 403 problem tells an HTTP client (and whoever
//! reads its logs) why, where a closed connection looks like a fault. Nothing past the headers
//! is read, and the answer comes before any request slot or body is taken.
//!
//! Every refusal is counted in `keel_edge_refusals_total{rule}` and logged at most once a
//! second per rule, with how many there were since.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::clock::{Clock, Millis};
use keel_core::config::ServerConfig;
use keel_core::edge::{client_address, AddressRefusal, Buckets, FirewallConfig};
use metrics::Counter;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::listener::Peer;
use crate::metric_definitions::EDGE_REFUSALS_TOTAL;
use crate::problem::Problem;

/// The firewall, the throttles' limiters, and each rule's counter and log gate.
#[derive(Debug)]
pub(crate) struct Edge {
    firewall: FirewallConfig,
    /// std Mutexes, not tokio ones: nothing awaits while one is held (one map lookup).
    per_address: Option<Mutex<Buckets<IpAddr>>>,
    per_key: Option<Mutex<Buckets<String>>>,
    clock: Arc<dyn Clock>,
    /// Indexed by [`Refusal::index`].
    reported: Vec<Reported>,
}

/// Why a request was refused: the `rule` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Denied,
    NotAllowed,
    ThrottleKey,
    ThrottleAddress,
    /// `server.firewall.rules[i]`.
    Rule(usize),
}

impl Refusal {
    const FIXED: [Refusal; 4] = [Refusal::Denied, Refusal::NotAllowed, Refusal::ThrottleKey, Refusal::ThrottleAddress];

    fn index(self) -> usize {
        match self {
            Refusal::Denied => 0,
            Refusal::NotAllowed => 1,
            Refusal::ThrottleKey => 2,
            Refusal::ThrottleAddress => 3,
            Refusal::Rule(i) => 4 + i,
        }
    }

    fn label(self) -> String {
        match self {
            Refusal::Denied => "deny".to_owned(),
            Refusal::NotAllowed => "not-allowed".to_owned(),
            Refusal::ThrottleKey => "throttle-key".to_owned(),
            Refusal::ThrottleAddress => "throttle-address".to_owned(),
            Refusal::Rule(i) => format!("rule:{i}"),
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::Denied => "refused requests from addresses in server.firewall.deny",
            Refusal::NotAllowed => "refused requests from addresses outside server.firewall.allow",
            Refusal::ThrottleKey => "throttled requests past server.throttle.per_key",
            Refusal::ThrottleAddress => "throttled requests past server.throttle.per_address",
            Refusal::Rule(_) => "refused requests by a server.firewall.rules entry",
        }
    }
}

/// One rule's counter, and when it was last logged (ms since [`EPOCH`], 0 = never) with how
/// many refusals since.
#[derive(Debug)]
struct Reported {
    label: String,
    counter: Counter,
    last_logged_ms: AtomicU64,
    unlogged: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
const LOG_EVERY_MS: u64 = 1_000;

impl Edge {
    /// The edge of `server`, its counters registered at 0.
    pub(crate) fn new(server: &ServerConfig, clock: Arc<dyn Clock>) -> Self {
        let rules = (0..server.firewall.rules.len()).map(Refusal::Rule);
        let reported = Refusal::FIXED
            .into_iter()
            .chain(rules)
            .map(|refusal| {
                let label = refusal.label();
                let counter = metrics::counter!(EDGE_REFUSALS_TOTAL, "rule" => label.clone());
                counter.increment(0);
                Reported { label, counter, last_logged_ms: AtomicU64::new(0), unlogged: AtomicU64::new(0) }
            })
            .collect();
        Self {
            firewall: server.firewall.clone(),
            per_address: server.throttle.per_address.map(|c| Mutex::new(Buckets::new(c))),
            per_key: server.throttle.per_key.map(|c| Mutex::new(Buckets::new(c))),
            clock,
            reported,
        }
    }

    /// Counts one refusal, and logs it unless this rule was logged less than a second ago.
    fn note(&self, refusal: Refusal, client: IpAddr, detail: &str) {
        let reported = &self.reported[refusal.index()];
        reported.counter.increment(1);
        reported.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = EPOCH.elapsed().as_millis() as u64 + 1;
        let last = reported.last_logged_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY_MS;
        if due && reported.last_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let count = reported.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(rule = %reported.label, count, last = %client, detail, "{}", refusal.message());
        }
    }

    /// A turn from `buckets` for `key`, or the 429 to answer.
    fn take<K: std::hash::Hash + Eq + Clone>(&self, buckets: &Mutex<Buckets<K>>, key: &K) -> Result<(), Problem> {
        let now = self.clock.now_ms();
        let taken = buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).try_take(key, now);
        taken.map_err(|at| throttled(retry_after_secs(now, at)))
    }
}

/// Whole seconds until `at`, rounded up; at least 1.
fn retry_after_secs(now: Millis, at: Millis) -> u64 {
    let ms = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
    ms.div_ceil(1_000).max(1)
}

fn throttled(retry_after: u64) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
        "Throttled",
        format!("too many requests from this caller; retry in {retry_after} s"),
    )
    .retry_after(retry_after)
}

/// Probes are never throttled: a busy client must not make a node look down.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Before any request slot is taken: the client address, checked against `deny` and `allow`;
/// the method/path rules; the per-address throttle. Requests without a [`Peer`] skip the
/// address checks.
pub(crate) fn screen(edge: &Edge, request: &Request) -> Result<(), Problem> {
    let path = request.uri().path();
    let client = request.extensions().get::<Peer>().map(|Peer(peer)| {
        let forwarded = request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        client_address(peer.ip(), forwarded, &edge.firewall.trusted_proxies)
    });
    if let Some(client) = client {
        if let Err(why) = edge.firewall.check_address(client) {
            let refusal = match why {
                AddressRefusal::Denied => Refusal::Denied,
                AddressRefusal::NotAllowed => Refusal::NotAllowed,
            };
            edge.note(refusal, client, path);
            let detail = format!("the client address {client} may not call this API");
            return Err(Problem::new(StatusCode::FORBIDDEN, "forbidden-address", "Forbidden address", detail));
        }
    }
    if let Some(index) = edge.firewall.denying_rule(request.method().as_str(), path) {
        let client = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        edge.note(Refusal::Rule(index), client, &format!("{} {path}", request.method()));
        let detail = format!("{} {path} is refused by server.firewall.rules[{index}]", request.method());
        return Err(Problem::new(StatusCode::FORBIDDEN, "forbidden-request", "Forbidden request", detail));
    }
    if let (Some(client), Some(buckets)) = (client, &edge.per_address) {
        if !is_probe(path) {
            if let Err(problem) = edge.take(buckets, &client) {
                edge.note(Refusal::ThrottleAddress, client, path);
                return Err(problem);
            }
        }
    }
    Ok(())
}

/// The per-key throttle, for callers with an API key (open routes, auth off and function tokens
/// are not throttled here): run by the `authorize` layer of `api::access` once the caller is
/// known, or by [`throttle_key`] where a layer must sit between the two.
pub(crate) fn check_key(edge: &Edge, request: &Request) -> Result<(), Problem> {
    if let (Some(buckets), Some(Principal::Key(key))) = (&edge.per_key, request.extensions().get::<Principal>()) {
        if !is_probe(request.uri().path()) {
            if let Err(problem) = edge.take(buckets, &key.id) {
                let client = request.extensions().get::<Peer>().map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
                edge.note(Refusal::ThrottleKey, client, &key.id);
                return Err(problem);
            }
        }
    }
    Ok(())
}

/// [`check_key`] as a layer of its own, inside a route's `authorize` layer (which then does not
/// throttle): for the KV routes of a node with `[region]`, whose calls forwarded home are
/// throttled by the home region, not here.
pub(crate) async fn throttle_key(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    match check_key(&edge, &request) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_secs(1_000, 1_001), 1);
        assert_eq!(retry_after_secs(1_000, 2_000), 1);
        assert_eq!(retry_after_secs(1_000, 2_001), 2);
        assert_eq!(retry_after_secs(1_000, 1_000), 1, "never 0: the client is told to wait");
    }

    #[test]
    fn labels_name_each_rule() {
        let labels: Vec<String> =
            Refusal::FIXED.into_iter().chain([Refusal::Rule(0), Refusal::Rule(12)]).map(Refusal::label).collect();
        assert_eq!(labels, ["deny", "not-allowed", "throttle-key", "throttle-address", "rule:0", "rule:12"]);
        for (i, refusal) in Refusal::FIXED.into_iter().enumerate() {
            assert_eq!(refusal.index(), i);
        }
    }
}
