//! Active-active forwarding: a request naming a peer in `keel-region` goes there whole, with the
//! caller's own credentials (a client that failed over reaches its home region's idempotency
//! keys); a KV call for a namespace homed in a peer goes there once this node has authorized
//! it, with the `[region] key`. Every KV answer says which region served it (`keel-region`).
//!
//! Where a request goes is `keel_core::region::route`; this module only carries it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::region::Route;

use crate::api::access::Guard;
use crate::auth::Principal;
use crate::client::ClientError;
use crate::problem::Problem;
use crate::state::Shared;

/// The header a client (or a forwarding region) names the serving region with; KV answers carry
/// it too, naming the region that served them.
pub(crate) const KEEL_REGION: HeaderName = HeaderName::from_static("keel-region");
/// Set on a KV call forwarded to its namespace's home (naming the region it came from): the
/// home serves it whatever its own configuration says, so no call is forwarded twice. Heeded
/// only from callers with `admin`.
const FORWARDED_HOME: HeaderName = HeaderName::from_static("keel-forwarded-home");
/// Set on a request forwarded for its `keel-region`, naming the region it came through.
const FORWARDED_FROM: HeaderName = HeaderName::from_static("keel-forwarded-from");
/// How long a KV call forwarded to its home may take.
const HOME_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that belong to one connection, not to the request or answer carried over it.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"];

/// Outermost on the API: a request naming a peer in `keel-region` is forwarded there, with the
/// caller's headers (credentials included: the peer authorizes it, as if called directly).
pub(crate) async fn forward_named(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let named = request.headers().get(&KEEL_REGION).and_then(|v| v.to_str().ok());
    if named.is_none() || !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let route = keel_core::region::route(shared.region.config(), &shared.config.kv, named, None, false);
    let Route::Peer(peer) = route else { return next.run(request).await };
    let extra = shared.region.name().map(|me| (FORWARDED_FROM, me.to_owned()));
    relay(&shared, &peer, false, None, extra, request).await
}

/// On each route, inside its authorization: a KV call for a namespace homed in a peer is
/// forwarded there (with the `[region] key`), and every KV answer names the region that served
/// it in `keel-region`.
pub(crate) async fn forward_home(
    State((shared, guard)): State<(Arc<Shared>, Guard)>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let Some(me) = shared.region.name().map(str::to_owned) else { return next.run(request).await };
    if guard != Guard::Kv {
        return next.run(request).await;
    }
    let ns = params.iter().next().map(|(_, value)| value.to_owned());
    // Only a peer (holding an admin key, as the `[region] key` does) may say a call was forwarded
    // home already: from anyone else the header is ignored, so no caller can write a namespace
    // outside its home.
    let peer_says = request
        .extensions()
        .get::<Principal>()
        .is_some_and(|p| keel_core::auth::Scope::any_allows(p.scopes(), &keel_core::auth::Need::Admin));
    let home_forwarded = peer_says && request.headers().contains_key(&FORWARDED_HOME);
    let route =
        keel_core::region::route(shared.region.config(), &shared.config.kv, None, ns.as_deref(), home_forwarded);
    match route {
        Route::Peer(home) => relay(&shared, &home, true, Some(HOME_TIMEOUT), Some((FORWARDED_HOME, me)), request).await,
        Route::Here => {
            let mut response = next.run(request).await;
            if let Ok(value) = HeaderValue::from_str(&me) {
                response.headers_mut().insert(KEEL_REGION, value);
            }
            response
        }
    }
}

/// Sends `request` to peer region `peer` (same method, path, query, body and headers, less the
/// connection's own) and answers what it answered: its status, headers and body. A peer that
/// cannot be reached is a 503 `region-unreachable` naming it.
async fn relay(
    shared: &Shared,
    peer: &str,
    keyed: bool,
    timeout: Option<Duration>,
    extra: Option<(HeaderName, String)>,
    request: Request,
) -> Response {
    let Some(client) = shared.region.peer_client(peer, keyed) else {
        return Problem::region_unreachable(peer, "no client for its URL").into_response();
    };
    let (parts, body) = request.into_parts();
    let limit = shared.config.server.body_limit as usize;
    let body = match crate::api::body::read_limited(body, limit).await {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut headers: Vec<(HeaderName, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .filter(|(name, _)| !(keyed && *name == axum::http::header::AUTHORIZATION))
        .filter_map(|(name, value)| Some((name.clone(), value.to_str().ok()?.to_owned())))
        .collect();
    headers.extend(extra);
    let sent = client.send(parts.method, &path, &headers, body);
    let answer = match timeout {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(answer) => answer,
            Err(_) => {
                return Problem::region_unreachable(peer, &format!("no answer within {} s", limit.as_secs()))
                    .into_response()
            }
        },
        None => sent.await,
    };
    match answer {
        Ok(answer) => {
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = answer.status;
            for (name, value) in &answer.headers {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    response.headers_mut().append(name.clone(), value.clone());
                }
            }
            response
        }
        Err(
            e @ (ClientError::Unreachable { .. } | ClientError::Transport { .. } | ClientError::TlsHandshake { .. }),
        ) => {
            tracing::warn!(peer, error = %e, "region: a forwarded request found its region unreachable");
            Problem::region_unreachable(peer, &e.to_string()).into_response()
        }
        Err(e) => Problem::region_unreachable(peer, &e.to_string()).into_response(),
    }
}
