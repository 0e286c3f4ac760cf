//! `/console/schedules`: each schedule, its target, and when it fires next and fired last; pause
//! and resume (the API's own, stored and audited).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::html;

use super::layout::{self, badge, path, q, text, time_of};
use super::session::Viewer;
use crate::api::access::Actor;
use crate::api::schedules as api;
use crate::state::Shared;

pub(super) async fn page(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let list = match api::list(State(shared)).await {
        Ok(Json(list)) => serde_json::to_value(list).unwrap_or_default(),
        Err(p) => return layout::problem_page(&viewer, "Schedules", &p),
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if items.is_empty() {
            (layout::empty("No schedules are declared.", html! {
                "Add " code { "[schedules.NAME]" } " with a " code { "cron" } " or " code { "every" } " and a function or topic to keel.toml."
            }))
        } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Schedule" } th scope="col" { "When" } th scope="col" { "Target" }
                    th scope="col" { "State" } th scope="col" { "Next" } th scope="col" { "Last" } th scope="col" { "Actions" } } }
                tbody { @for s in &items { tr {
                    td { (text(&s["name"])) }
                    td { code { (s["cron"].as_str().or(s["every"].as_str().map(|_| "")).unwrap_or_default())
                        @if let Some(every) = s["every"].as_str() { "every " (every) } }
                        @if let Some(tz) = s["timezone"].as_str() { " " span.muted { (tz) } } }
                    td { @if let Some(f) = s["target"]["function"].as_str() { "function " a href={ "/console/invocations?function=" (q(f)) } { (f) } }
                         @if let Some(t) = s["target"]["topic"].as_str() { "topic " (t) } }
                    td { @if s["paused"].as_bool() == Some(true) { (badge("paused")) } @else { (badge("active")) } }
                    td { (time_of(&s["next_fire"])) }
                    td { (time_of(&s["last_fire"])) }
                    td {
                        @let name = s["name"].as_str().unwrap_or_default();
                        @if s["paused"].as_bool() == Some(true) {
                            (layout::action(&viewer, &format!("/console/schedules/{}/resume", path(name)), &format!("Resume {name}"), "primary"))
                        } @else {
                            (layout::action(&viewer, &format!("/console/schedules/{}/pause", path(name)), &format!("Pause {name}"), "danger"))
                        }
                    }
                } } }
            } }
        }
    };
    layout::page(&viewer, "Schedules", "/console/schedules", body).into_response()
}

pub(super) async fn pause(state: State<Arc<Shared>>, viewer: Viewer, actor: Actor, name: Path<String>) -> Response {
    done(api::pause(state, actor, name).await.map(drop), &viewer)
}

pub(super) async fn resume(state: State<Arc<Shared>>, viewer: Viewer, actor: Actor, name: Path<String>) -> Response {
    done(api::resume(state, actor, name).await.map(drop), &viewer)
}

fn done(result: Result<(), crate::problem::Problem>, viewer: &Viewer) -> Response {
    match result {
        Ok(()) => Redirect::to("/console/schedules").into_response(),
        Err(p) => layout::problem_page(viewer, "Schedules", &p),
    }
}
