//! The HTTP API (v1): routes → handlers. Every error is RFC 9457 problem+json ([`problem`]);
//! `GET /v1/openapi.json` (and `.yaml`) describes every route ([`openapi`] assembles the handlers'
//! annotations).

pub(crate) mod access;
pub(crate) mod body;
mod bulk;
pub(crate) mod chaos;
mod cluster;
pub(crate) mod delay;
pub(crate) mod dependencies;
pub(crate) mod dlq;
pub(crate) mod edge;
mod egress;
pub(crate) mod events;
pub(crate) mod functions;
mod health;
pub(crate) mod idempotency;
mod input;
pub(crate) mod invocations;
mod invoke;
pub(crate) mod kv;
pub(crate) mod limits;
mod metrics;
mod openapi;
mod problem;
pub(crate) mod schedules;
mod view;
pub(crate) mod workflows;

use std::sync::Arc;

use std::sync::atomic::{AtomicU32, Ordering};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

pub(crate) use crate::problem::Problem;
use crate::state::Shared;
use access::{Gate, Guard};

/// Runs an admission to its end in a task of its own, which a dropped request does not cancel:
/// once the store has the work it must be started (leased at admission) or its dispatcher woken
/// even if the client went away meanwhile — else it would sit `running` unattempted until its
/// lease expired, or `queued` with nobody told.
async fn admit_fully<T: Send + 'static>(
    admission: impl std::future::Future<Output = Result<T, Problem>> + Send + 'static,
) -> Result<T, Problem> {
    tokio::spawn(Box::pin(admission))
        .await
        .map_err(|e| Problem::from(keel_core::Error::Unavailable(format!("the admission failed: {e}"))))?
}

/// How one route's handler is mounted (the keyed ones need the state for their layer).
type Mount = fn(&Arc<Shared>) -> MethodRouter<Arc<Shared>>;

/// A row of [`ROUTES`]: the method and its filter come from one name, so the listed method is
/// the one mounted, and every row names what it needs ([`Guard`]), so no route can be added
/// without one (the auth matrix test walks this table). `keyed` puts the plain POST routes
/// behind [`idempotency::keyed`]; the invoke routes handle their own keys.
macro_rules! route {
    ($method:ident $path:literal => $handler:path, $guard:ident) => {
        (Method::$method, $path, Guard::$guard, (|_| on(MethodFilter::$method, $handler)) as Mount)
    };
    ($method:ident $path:literal => $handler:path, $guard:ident, keyed) => {
        (Method::$method, $path, Guard::$guard, (|shared| keyed(shared, on(MethodFilter::$method, $handler))) as Mount)
    };
}

/// Every route of the API: [`router`] mounts them and [`routes`] lists them, so the OpenAPI
/// test can check that each one is documented and the auth matrix that each one is guarded.
const ROUTES: [(Method, &str, Guard, Mount); 53] = [
    route!(GET "/v1/functions" => functions::list, Read),
    route!(GET "/v1/functions/{name}" => functions::get, Read),
    route!(POST "/v1/functions/{name}/pause" => functions::pause, Admin),
    route!(POST "/v1/functions/{name}/resume" => functions::resume, Admin),
    route!(POST "/v1/functions/{name}/invoke" => invoke::invoke_sync, Invoke),
    route!(POST "/v1/functions/{name}/invocations" => invoke::invoke_async, Invoke),
    route!(GET "/v1/schedules" => schedules::list, Read),
    route!(GET "/v1/schedules/{name}" => schedules::get, Read),
    route!(POST "/v1/schedules/{name}/pause" => schedules::pause, Admin),
    route!(POST "/v1/schedules/{name}/resume" => schedules::resume, Admin),
    route!(GET "/v1/workflows" => workflows::list_workflows, Read),
    route!(POST "/v1/workflows/{name}/runs" => workflows::start, Workflows),
    route!(GET "/v1/workflow-runs" => workflows::list_runs, Read),
    route!(GET "/v1/workflow-runs/{id}" => workflows::get_run, Read),
    route!(POST "/v1/workflow-runs/{id}/cancel" => workflows::cancel, Dlq),
    route!(POST "/v1/chaos/faults" => chaos::inject, Admin),
    route!(GET "/v1/chaos/faults" => chaos::list, Admin),
    route!(DELETE "/v1/chaos/faults/{id}" => chaos::clear, Admin),
    route!(GET "/v1/invocations" => invocations::list, Read),
    route!(GET "/v1/invocations/{id}" => invocations::get, Read),
    route!(GET "/v1/invocations/{id}/result" => invocations::result, Read),
    route!(POST "/v1/invocations/{id}/cancel" => invocations::cancel, Dlq, keyed),
    route!(GET "/v1/dlq" => dlq::list, Read),
    route!(POST "/v1/dlq/redrive" => dlq::redrive_matching, Dlq, keyed),
    route!(POST "/v1/dlq/{id}/redrive" => dlq::redrive, Dlq, keyed),
    route!(DELETE "/v1/dlq/{id}" => dlq::discard, Dlq),
    route!(GET "/v1/cluster" => cluster::get, Read),
    route!(GET "/v1/region" => cluster::region, Read),
    route!(POST "/v1/region/events" => cluster::receive_events, Admin),
    route!(GET "/v1/dependencies" => dependencies::list, Read),
    route!(GET "/v1/dependencies/{name}" => dependencies::get, Read),
    route!(GET "/v1/egress/{dependency}/{*path}" => egress::get, Egress),
    route!(POST "/v1/egress/{dependency}/{*path}" => egress::post, Egress),
    route!(PUT "/v1/egress/{dependency}/{*path}" => egress::put, Egress),
    route!(DELETE "/v1/egress/{dependency}/{*path}" => egress::delete, Egress),
    route!(PATCH "/v1/egress/{dependency}/{*path}" => egress::patch, Egress),
    route!(OPTIONS "/v1/egress/{dependency}/{*path}" => egress::options, Egress),
    route!(POST "/v1/topics/{topic}/events" => events::publish, Publish, keyed),
    route!(GET "/v1/events/{id}" => events::get, Read),
    route!(GET "/v1/kv/{ns}" => kv::list, Kv),
    route!(GET "/v1/kv/{ns}/{*key}" => kv::get, Kv),
    route!(PUT "/v1/kv/{ns}/{*key}" => kv::put, Kv),
    route!(DELETE "/v1/kv/{ns}/{*key}" => kv::delete, Kv),
    route!(POST "/v1/keys" => access::create_key, Admin),
    route!(GET "/v1/keys" => access::list_keys, Admin),
    route!(DELETE "/v1/keys/{id}" => access::revoke_key, Admin),
    route!(POST "/v1/signing-keys/rotate" => access::rotate_signing_key, Admin),
    route!(GET "/v1/audit" => access::audit, Admin),
    route!(GET "/v1/openapi.json" => openapi::document, Read),
    route!(GET "/v1/openapi.yaml" => openapi::document_yaml, Read),
    route!(GET "/healthz" => health::healthz, Open),
    route!(GET "/readyz" => health::readyz, Open),
    route!(GET "/metrics" => metrics::metrics, Metrics),
];

/// Every route of the JSON API: its method, its path as axum writes it (`{*key}` for a
/// rest-of-path parameter), and what it needs. The router also mounts the console's HTML pages
/// (`/console…`): they are listed by `console::route_scopes`, not here, so the OpenAPI document
/// and its test leave them out.
pub fn routes() -> Vec<(Method, &'static str)> {
    ROUTES.iter().map(|(method, path, _, _)| (method.clone(), *path)).collect()
}

/// Every route with the scope it needs (`None` for the open ones), `{param}` left as written:
/// for the OpenAPI document and the auth matrix test.
pub fn route_scopes() -> Vec<(Method, &'static str, Option<String>)> {
    ROUTES.iter().map(|(method, path, guard, _)| (method.clone(), *path, guard.scope_template(method, path))).collect()
}

/// The router of one node, without a socket: tests can drive it with `oneshot`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let body_limit = shared.config.server.body_limit as usize;
    let edge = Arc::new(edge::Edge::new(&shared.config.server, shared.clock.clone()));
    // Forwarding between regions costs nothing to a node without `[region]`: not mounted.
    let regions = shared.region.config().is_some();
    let routes = ROUTES
        .iter()
        .fold(Router::new(), |router, (_, path, guard, mount)| {
            // With `[region]`, a KV call forwarded home is throttled there: `forward_home` sits
            // between access and the per-key throttle. Elsewhere one layer does both.
            let guarded = if regions && *guard == Guard::Kv {
                let home = axum::middleware::from_fn_with_state((shared.clone(), *guard), crate::regions::forward_home);
                let throttled =
                    mount(&shared).layer(axum::middleware::from_fn_with_state(edge.clone(), edge::throttle_key));
                Gate::guard(throttled.layer(home), &shared, *guard, None)
            } else {
                Gate::guard(mount(&shared), &shared, *guard, Some(&edge))
            };
            router.route(path, guarded)
        })
        // The console's forms are read by axum's `Form`, which takes its limit from
        // `DefaultBodyLimit`; the API's routes read bodies with `body::RequestBody`, which reads
        // `server.body_limit` itself, so they do without the layer (an extension inserted, and
        // sometimes the extension map grown, on every request).
        .merge(crate::console::router(&shared, &edge).layer((
            axum::middleware::from_fn_with_state(shared.clone(), crate::regions::guard),
            DefaultBodyLimit::max(body_limit),
        )))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Before any of this node's own checks: a request naming a peer region is the peer's.
    let routes = match regions {
        true => routes.layer(axum::middleware::from_fn_with_state(shared.clone(), crate::regions::forward_named)),
        false => routes,
    };
    let front = Front {
        limits: shared.limits.clone(),
        edge,
        in_flight: InFlight::new(shared.config.server.max_inflight_requests),
        metrics: crate::telemetry::HttpMetrics::default(),
    };
    // One layer: `Router::layer` boxes every route again for each layer, and each box is a
    // service clone and a boxed future per request.
    let front = axum::middleware::from_fn_with_state(Arc::new(front), front_layer);
    routes.layer(front).with_state(shared)
}

/// What the outer layer checks every request against.
struct Front {
    limits: Arc<crate::limits::RequestLimits>,
    edge: Arc<edge::Edge>,
    in_flight: InFlight,
    metrics: crate::telemetry::HttpMetrics,
}

/// The outer layer of every request, its steps in order:
/// 1. its span and metrics (`telemetry::Observed`), around all of the rest;
/// 2. every error answer as problem+json (`problem::errors_as_problems`), after the rest;
/// 3. first of all, the head against the limits (`limits::check_head`): a head past them is not
///    worth a firewall lookup;
/// 4. the firewall and the per-address throttle (`edge::screen`), before any request slot is
///    taken: a refused client costs nothing further;
/// 5. a request slot (`InFlight::enter`).
///
/// One layer rather than five: each `from_fn` layer costs every request a clone of the boxed
/// route, a boxed future and a move of its state (BENCHMARKS.md, "Round three, continued").
async fn front_layer(State(front): State<Arc<Front>>, mut request: Request, next: Next) -> Response {
    let observed = crate::telemetry::Observed::start(&mut request);
    let response = async {
        let checked = limits::check_head(&front.limits, &request)
            .and_then(|()| edge::screen(&front.edge, &request))
            .and_then(|()| front.in_flight.enter(request.uri().path()));
        let response = match checked {
            Ok(_serving) => next.run(request).await,
            Err(refused) => refused.into_response(),
        };
        problem::errors_as_problems(response).await
    };
    let response = tracing::Instrument::instrument(response, observed.span().clone()).await;
    observed.finish(response, &front.metrics)
}

/// API requests being served, against `server.max_inflight_requests`.
#[derive(Debug)]
struct InFlight {
    now: AtomicU32,
    max: u32,
}

impl InFlight {
    fn new(max: u32) -> Self {
        Self { now: AtomicU32::new(0), max }
    }
}

/// Counts one request in [`InFlight`] until its answer is ready (also when it is dropped).
struct Serving<'a>(&'a AtomicU32);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    /// Past `server.max_inflight_requests` requests in progress, a new one is answered 503
    /// `overloaded` at once, before any work. Health, readiness and metrics are always
    /// answered (and not counted): an overloaded node must still be seen.
    fn enter(&self, path: &str) -> Result<Option<Serving<'_>>, Problem> {
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return Ok(None);
        }
        let serving = Serving(&self.now);
        if self.now.fetch_add(1, Ordering::Relaxed) >= self.max {
            drop(serving);
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                format!("this node is serving server.max_inflight_requests ({}) requests already", self.max),
            )
            .retry_after(1));
        }
        Ok(Some(serving))
    }
}

/// `method_router` behind the `Idempotency-Key` layer of the plain POST routes.
fn keyed(shared: &Arc<Shared>, method_router: MethodRouter<Arc<Shared>>) -> MethodRouter<Arc<Shared>> {
    method_router.layer(axum::middleware::from_fn_with_state(shared.clone(), idempotency::keyed))
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
