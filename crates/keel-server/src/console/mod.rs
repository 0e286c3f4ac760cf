//! The web console at `/console`: server-rendered HTML (maud) with a small script, SVG charts
//! made here, its stylesheet and script embedded in the binary. Handlers are thin: they call the
//! same API-layer functions as the JSON API (`crate::api::*`) and render what those answer.
//!
//! - `backlog.rs`: the overview's backlog and DLQ sizes, read in the background at most every 2 s.
//! - `session.rs`: sign-in with an API key (a session cookie), CSRF on every form, and the
//!   refusals; access itself is the API's own layer (`api::access::authorize`), route by route.
//! - `layout.rs`: the page shell, navigation and the small pieces every page uses; `chart.rs`:
//!   the SVG charts.
//! - one file per page group: `overview.rs`, `functions.rs`, `invocations.rs`, `dlq.rs`,
//!   `events.rs`, `workflows.rs`, `schedules.rs`, `dependencies.rs`, `chaos.rs`, `kv.rs`.

mod backlog;
mod chaos;
mod chart;
mod dependencies;
mod dlq;
mod events;
mod functions;
mod invocations;
mod kv;
mod layout;
mod overview;
mod schedules;
mod session;
mod workflows;

use std::sync::Arc;

use axum::http::{header, Method};
use axum::response::IntoResponse;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::api::access::{self, Guard};
use crate::api::edge::Edge;
use crate::state::Shared;

pub(crate) use backlog::Backlog;

type Mount = fn() -> MethodRouter<Arc<Shared>>;

macro_rules! page {
    ($method:ident $path:literal => $handler:path, $guard:ident) => {
        (Method::$method, $path, Guard::$guard, (|| on(MethodFilter::$method, $handler)) as Mount)
    };
}

/// Every route of the console with what it needs, as the API's `ROUTES`: pages need `read`, an
/// action the scope its API route needs (redrive and cancel `dlq`, pause, resume and clearing a
/// fault `admin`).
const ROUTES: [(Method, &str, Guard, Mount); 29] = [
    page!(GET "/console" => overview::page, Read),
    page!(GET "/console/assets/console.css" => stylesheet, Open),
    page!(GET "/console/assets/console.js" => script, Open),
    page!(GET "/console/sign-in" => session::sign_in_page, Open),
    page!(POST "/console/sign-in" => session::sign_in, Open),
    page!(POST "/console/sign-out" => session::sign_out, Open),
    page!(GET "/console/functions" => functions::page, Read),
    page!(POST "/console/functions/{name}/pause" => functions::pause, Admin),
    page!(POST "/console/functions/{name}/resume" => functions::resume, Admin),
    page!(GET "/console/invocations" => invocations::list, Read),
    page!(GET "/console/invocations/{id}" => invocations::detail, Read),
    page!(POST "/console/invocations/{id}/cancel" => invocations::cancel, Dlq),
    page!(GET "/console/dlq" => dlq::page, Read),
    page!(POST "/console/dlq/redrive" => dlq::redrive_matching, Dlq),
    page!(POST "/console/dlq/{id}/redrive" => dlq::redrive, Dlq),
    page!(POST "/console/dlq/{id}/discard" => dlq::discard, Dlq),
    page!(GET "/console/events/{id}" => events::page, Read),
    page!(GET "/console/kv" => kv::page, Read),
    page!(GET "/console/kv/{ns}" => kv::namespace, Kv),
    page!(GET "/console/kv/{ns}/{*key}" => kv::entry, Kv),
    page!(GET "/console/workflows" => workflows::page, Read),
    page!(GET "/console/workflow-runs/{id}" => workflows::run, Read),
    page!(POST "/console/workflow-runs/{id}/cancel" => workflows::cancel, Dlq),
    page!(GET "/console/schedules" => schedules::page, Read),
    page!(POST "/console/schedules/{name}/pause" => schedules::pause, Admin),
    page!(POST "/console/schedules/{name}/resume" => schedules::resume, Admin),
    page!(GET "/console/dependencies" => dependencies::page, Read),
    // The chaos page lists faults, which the API shows to `admin` keys only.
    page!(GET "/console/chaos" => chaos::page, Admin),
    page!(POST "/console/chaos/{id}/clear" => chaos::clear, Admin),
];

/// Every console route with the scope it needs (`None` for the sign-in page and the assets), for
/// the auth matrix test. Not part of the JSON API, so not in the OpenAPI document.
pub fn route_scopes() -> Vec<(Method, &'static str, Option<String>)> {
    ROUTES.iter().map(|(method, path, guard, _)| (method.clone(), *path, guard.scope_template(method, path))).collect()
}

/// The console's routes, each behind the API's own access layer (and its throttles), with the
/// session cookie read and the forms' CSRF token checked in front of it.
pub(crate) fn router(shared: &Arc<Shared>, edge: &Arc<Edge>) -> Router<Arc<Shared>> {
    ROUTES.iter().fold(Router::new(), |router, (_, path, guard, mount)| {
        let guarded = access::Gate::guard(mount(), shared, *guard, Some(edge))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), session::session));
        router.route(path, guarded)
    })
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], CSS)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], JS)
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
