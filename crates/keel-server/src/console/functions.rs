//! `/console/functions`: each function's configuration and live state, with pause and resume
//! (the API's own `pause`/`resume`, so they are stored, audited and told to every node).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::html;
use serde_json::Value;

use super::layout::{self, badge, path, q, text};
use super::session::Viewer;
use crate::api::access::Actor;
use crate::api::functions as api;
use crate::state::Shared;

pub(super) async fn page(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let list = match api::list(State(shared)).await {
        Ok(Json(list)) => serde_json::to_value(list).unwrap_or_default(),
        Err(p) => return layout::problem_page(&viewer, "Functions", &p),
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if items.is_empty() {
            (layout::empty("No functions are configured.", html! { "Add a " code { "[functions.NAME]" } " table to keel.toml and restart." }))
        }
        @for f in &items {
            @let name = f["name"].as_str().unwrap_or_default();
            section.card id={ "fn-" (name) } aria-labelledby={ "fn-h-" (name) } {
                div.card-head {
                    h2 id={ "fn-h-" (name) } { (name) " " @if f["paused"] == Value::Bool(true) { (badge("paused")) } }
                    @if f["paused"] == Value::Bool(true) {
                        (layout::action(&viewer, &format!("/console/functions/{}/resume", path(name)), &format!("Resume {name}"), "primary"))
                    } @else {
                        (layout::action(&viewer, &format!("/console/functions/{}/pause", path(name)), &format!("Pause {name}"), "danger"))
                    }
                }
                dl.facts {
                    dt { "Kind" } dd { (text(&f["kind"])) }
                    @if let Some(url) = f["url"].as_str() { dt { "URL" } dd { code { (url) } } }
                    @if let Some(cmd) = f["command"]["command"].as_array() {
                        dt { "Command" } dd { code { (cmd.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")) } }
                        dt { "Instances" } dd { (f["instances"].as_array().map_or(0, Vec::len)) " of " (f["command"]["max_instances"]) }
                    }
                    dt { "Timeout" } dd { (text(&f["timeout"])) " (sync " (text(&f["sync_timeout"])) ")" }
                    dt { "Concurrency" } dd { (f["concurrency"]) }
                    dt { "Retry" } dd {
                        (f["retry"]["max_attempts"]) " attempts, " (text(&f["retry"]["initial"])) " → " (text(&f["retry"]["max"]))
                        " ×" (f["retry"]["multiplier"]) ", jitter " (text(&f["retry"]["jitter"]))
                    }
                    @if !f["rate_limit"].is_null() {
                        dt { "Rate limit" } dd { (f["rate_limit"]["per_second"]) "/s, burst " (f["rate_limit"]["burst"]) }
                    }
                    dt { "In flight" } dd { (f["in_flight"]) }
                    dt { "Queued" } dd { a href={ "/console/invocations?function=" (q(name)) "&status=queued" } { (f["queued"]) }
                        @if let Some(max) = f["max_queued"].as_u64() { " of at most " (max) } }
                    dt { "Waiting callers" } dd { (f["waiting"]) " of at most " (f["max_waiting"]) }
                    dt { "Breaker" } dd {
                        @match f["breaker"]["state"].as_str() {
                            Some(state) => { (badge(state)) " since " (layout::time_of(&f["breaker"]["since"])) ", " (f["breaker"]["failures"]) " failures" }
                            None => span.muted { "none configured" },
                        }
                    }
                    @if let Some(error) = f["last_error"].as_str() { dt { "Last error" } dd.error { (error) } }
                }
                p { a href={ "/console/invocations?function=" (q(name)) } { "Invocations" } " · "
                    a href={ "/console/dlq?function=" (q(name)) } { "Dead letters" } }
            }
        }
    };
    layout::page(&viewer, "Functions", "/console/functions", body).into_response()
}

pub(super) async fn pause(state: State<Arc<Shared>>, viewer: Viewer, actor: Actor, name: Path<String>) -> Response {
    done(api::pause(state, actor, name).await.map(drop), &viewer)
}

pub(super) async fn resume(state: State<Arc<Shared>>, viewer: Viewer, actor: Actor, name: Path<String>) -> Response {
    done(api::resume(state, actor, name).await.map(drop), &viewer)
}

fn done(result: Result<(), crate::problem::Problem>, viewer: &Viewer) -> Response {
    match result {
        Ok(()) => Redirect::to("/console/functions").into_response(),
        Err(p) => layout::problem_page(viewer, "Functions", &p),
    }
}
