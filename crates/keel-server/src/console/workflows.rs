//! `/console/workflows`: the declared workflows and their runs (filtered by workflow and status,
//! paged), and `/console/workflow-runs/{id}`: one run's steps on a timeline, and cancel (what the
//! run did is compensated).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::html;
use serde::Deserialize;

use super::layout::{self, badge, path, q, text, time_of};
use super::session::Viewer;
use crate::api::access::Actor;
use crate::api::workflows as api;
use crate::state::Shared;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RunFilters {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
}

const RUN_STATUSES: [&str; 5] = ["running", "succeeded", "compensating", "compensated", "failed"];

pub(super) async fn page(State(shared): State<Arc<Shared>>, viewer: Viewer, Query(f): Query<RunFilters>) -> Response {
    let Json(workflows) = api::list_workflows(State(shared.clone())).await;
    let workflows = serde_json::to_value(workflows).unwrap_or_default();
    let workflows = workflows["items"].as_array().cloned().unwrap_or_default();
    let mut query = HashMap::from([("limit".to_owned(), super::invocations::PAGE.to_owned())]);
    for (name, value) in [("workflow", &f.workflow), ("status", &f.status), ("cursor", &f.cursor)] {
        if !value.is_empty() {
            query.insert(name.to_owned(), value.clone());
        }
    }
    let runs = api::list_runs(State(shared), Query(query)).await;
    let body = html! {
        @if workflows.is_empty() {
            (layout::empty("No workflows are declared.", html! {
                "Declare one with " code { "[workflows.NAME]" } " and its " code { "steps" } " in keel.toml, then start runs with "
                code { "POST /v1/workflows/NAME/runs" } "."
            }))
        } @else {
            form.filters method="get" action="/console/workflows" role="search" aria-label="Filter runs" {
                label { "Workflow" select name="workflow" {
                    option value="" selected[f.workflow.is_empty()] { "any" }
                    @for w in &workflows { @let n = w["name"].as_str().unwrap_or_default(); option value=(n) selected[f.workflow == n] { (n) } }
                } }
                label { "Status" select name="status" {
                    option value="" selected[f.status.is_empty()] { "any" }
                    @for s in RUN_STATUSES { option value=(s) selected[f.status == s] { (s) } }
                } }
                button type="submit" { "Filter" }
            }
            @match runs {
                Err(p) => (layout::problem(&p)),
                Ok(Json(runs)) => {
                    @let runs = serde_json::to_value(runs).unwrap_or_default();
                    @let items = runs["items"].as_array().cloned().unwrap_or_default();
                    @if items.is_empty() {
                        (layout::empty("No runs match.", html! { "Start one with " code { "POST /v1/workflows/NAME/runs" } " or " code { "keel workflows start NAME" } "." }))
                    } @else {
                        div.scroll { table {
                            thead { tr { th scope="col" { "Run" } th scope="col" { "Workflow" } th scope="col" { "Status" }
                                th scope="col" { "Steps" } th scope="col" { "Created" } th scope="col" { "Error" } } }
                            tbody { @for r in &items {
                                @let id = r["id"].as_str().unwrap_or_default();
                                tr {
                                    td { a.id href={ "/console/workflow-runs/" (path(id)) } { (id) } }
                                    td { (text(&r["workflow"])) }
                                    td { (badge(r["status"].as_str().unwrap_or_default())) }
                                    td { @for s in r["steps"].as_array().into_iter().flatten() {
                                        span title=(s["name"].as_str().unwrap_or_default()) { (badge(s["status"].as_str().unwrap_or_default())) } " "
                                    } }
                                    td { (time_of(&r["created_at"])) }
                                    td.error-text { (r["error"].as_str().unwrap_or_default()) }
                                }
                            } }
                        } }
                        @if let Some(cursor) = runs["next_cursor"].as_str() {
                            p.pager { a rel="next" href={ "/console/workflows?workflow=" (q(&f.workflow)) "&status=" (q(&f.status)) "&cursor=" (q(cursor)) } { "Older →" } }
                        }
                    }
                }
            }
        }
    };
    layout::page(&viewer, "Workflows", "/console/workflows", body).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Done {
    #[serde(default)]
    done: String,
}

pub(super) async fn run(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let run = match api::get_run(State(shared), Path(id)).await {
        Ok(Json(run)) => serde_json::to_value(run).unwrap_or_default(),
        Err(p) => return layout::problem_page(&viewer, "Workflow run", &p),
    };
    let body = html! {
        (layout::done_note(&done.done))
        div.card-head {
            p { (badge(run["status"].as_str().unwrap_or_default())) " " code.id { (text(&run["id"])) } }
            @if run["status"] == "running" && run["cancel_requested"] != true {
                (layout::action(&viewer, &format!("/console/workflow-runs/{}/cancel", path(run["id"].as_str().unwrap_or_default())), "Cancel run", "danger"))
            }
        }
        dl.facts {
            dt { "Workflow" } dd { a href={ "/console/workflows?workflow=" (q(run["workflow"].as_str().unwrap_or_default())) } { (text(&run["workflow"])) } }
            dt { "Created" } dd { (time_of(&run["created_at"])) }
            dt { "Ended" } dd { (time_of(&run["ended_at"])) }
            @if let Some(e) = run["error"].as_str() { dt { "Error" } dd.error { (e) } }
        }
        h2 { "Steps" }
        ol.timeline aria-label="Steps in order" {
            @for s in run["steps"].as_array().into_iter().flatten() {
                li { div.attempt {
                    strong { (text(&s["name"])) } " " (badge(s["status"].as_str().unwrap_or_default())) " · function " (text(&s["function"]))
                    " · " (time_of(&s["started_at"])) " → " (time_of(&s["ended_at"]))
                    @if let Some(inv) = s["invocation_id"].as_str() { " · " a.id href={ "/console/invocations/" (path(inv)) } { (inv) } }
                    @if let Some(c) = s["compensation_id"].as_str() { " · compensation " a.id href={ "/console/invocations/" (path(c)) } { (c) } }
                    @if let Some(e) = s["error"].as_str() { div.error-text { (e) } }
                } }
            }
        }
        h2 { "Input" }
        (layout::json_block(&run["input"], "run input"))
    };
    layout::page(&viewer, "Workflow run", "/console/workflows", body).into_response()
}

pub(super) async fn cancel(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    actor: Actor,
    Path(id): Path<String>,
) -> Response {
    match api::cancel(State(shared), actor, Path(id.clone())).await {
        Ok(_) => Redirect::to(&format!("/console/workflow-runs/{}?done=cancelling", path(&id))).into_response(),
        Err(p) => layout::problem_page(&viewer, "Workflow run", &p),
    }
}
