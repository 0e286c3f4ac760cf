//! `/console/invocations` (filtered by function, status and subscription, paged by cursor) and
//! `/console/invocations/{id}`: payload, result, every attempt on a timeline, the next retry,
//! the trace id, and cancel (or redrive and discard, when dead).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::invocation::{Invocation, Status};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, badge, path, q, text, time, time_of};
use super::session::Viewer;
use crate::api::invocations as api;
use crate::state::Shared;

/// Rows on a page of the console's lists.
pub(super) const PAGE: &str = "50";

/// The filters of a list page, as its form sends them (an empty field is no filter).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    #[serde(default)]
    pub(super) function: String,
    #[serde(default)]
    pub(super) status: String,
    #[serde(default)]
    pub(super) subscription: String,
    #[serde(default)]
    pub(super) cursor: String,
}

impl Filters {
    /// The API's query: the non-empty fields, one page.
    pub(super) fn query(&self, with_status: bool) -> HashMap<String, String> {
        let mut query = HashMap::from([("limit".to_owned(), PAGE.to_owned())]);
        let fields = [("function", &self.function), ("subscription", &self.subscription), ("cursor", &self.cursor)];
        for (name, value) in fields.into_iter().chain(with_status.then_some(("status", &self.status))) {
            if !value.trim().is_empty() {
                query.insert(name.to_owned(), value.trim().to_owned());
            }
        }
        query
    }

    /// The link to the next page: these filters and `cursor`.
    pub(super) fn next(&self, base: &str, cursor: &str) -> String {
        format!(
            "{base}?function={}&status={}&subscription={}&cursor={}",
            q(&self.function),
            q(&self.status),
            q(&self.subscription),
            q(cursor)
        )
    }
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Query(filters): Query<Filters>,
) -> Response {
    let page = api::list(State(shared.clone()), Query(filters.query(true))).await;
    let body = html! {
        form.filters method="get" action="/console/invocations" role="search" aria-label="Filter invocations" {
            (function_field(&shared, &filters.function))
            label { "Status"
                select name="status" {
                    option value="" selected[filters.status.is_empty()] { "any" }
                    @for s in Status::ALL { option value=(s.as_str()) selected[filters.status == s.as_str()] { (s.as_str()) } }
                }
            }
            (subscription_field(&shared, &filters.subscription))
            button type="submit" { "Filter" }
            a href="/console/invocations" { "Clear" }
        }
        @match page {
            Err(p) => (layout::problem(&p)),
            Ok(Json(page)) => {
                @let page = serde_json::to_value(page).unwrap_or_default();
                (table(&page, "No invocations match.", html! {
                    "Invoke a function (" code { "keel invoke NAME" } " or " code { "POST /v1/functions/NAME/invocations" } "), or clear the filters."
                }, None))
                @if let Some(cursor) = page["next_cursor"].as_str() {
                    p.pager { a rel="next" href=(filters.next("/console/invocations", cursor)) { "Older →" } }
                }
            }
        }
    };
    layout::page(&viewer, "Invocations", "/console/invocations", body).into_response()
}

/// The function filter: a choice of the configured functions.
pub(super) fn function_field(shared: &Shared, current: &str) -> Markup {
    html! {
        label { "Function"
            select name="function" {
                option value="" selected[current.is_empty()] { "any" }
                @for f in shared.functions.iter() {
                    @let name = f.config.name.as_str();
                    option value=(name) selected[current == name] { (name) }
                }
            }
        }
    }
}

/// The subscription filter: a choice of the configured subscriptions.
pub(super) fn subscription_field(shared: &Shared, current: &str) -> Markup {
    html! {
        label { "Subscription"
            select name="subscription" {
                option value="" selected[current.is_empty()] { "any" }
                @for s in &shared.config.subscriptions {
                    option value=(s.name) selected[current == s.name] { (s.name) }
                }
            }
        }
    }
}

/// A page of invocations as the API lists them; with a viewer, each row has the DLQ's actions.
pub(super) fn table(page: &Value, empty: &str, todo: Markup, dlq_actions: Option<&Viewer>) -> Markup {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    html! {
        @if items.is_empty() {
            (layout::empty(empty, todo))
        } @else {
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Invocation" } th scope="col" { "Function" } th scope="col" { "Status" }
                        th scope="col" { "Attempts" } th scope="col" { "Subscription" } th scope="col" { "Created" } th scope="col" { "Error" }
                        @if dlq_actions.is_some() { th scope="col" { "Actions" } }
                    } }
                    tbody {
                        @for inv in &items {
                            @let id = inv["id"].as_str().unwrap_or_default();
                            tr {
                                td { a.id href={ "/console/invocations/" (path(id)) } { (id) } }
                                td { a href={ "/console/invocations?function=" (q(inv["function"].as_str().unwrap_or_default())) } { (text(&inv["function"])) } }
                                td { (badge(inv["status"].as_str().unwrap_or_default())) }
                                td.num { (inv["attempt_count"]) }
                                td {
                                    @if let Some(event) = inv["event_id"].as_str() {
                                        a href={ "/console/events/" (path(event)) } { (text(&inv["subscription"])) }
                                    } @else { span.muted { "—" } }
                                }
                                td { (time_of(&inv["created_at"])) }
                                td.error-text { (inv["error"].as_str().unwrap_or_default()) }
                                @if let Some(viewer) = dlq_actions {
                                    td.actions {
                                        (layout::labelled_action(viewer, &format!("/console/dlq/{}/redrive", path(id)), "Redrive", &format!("Redrive {id}"), ""))
                                        (layout::labelled_action(viewer, &format!("/console/dlq/{}/discard", path(id)), "Discard", &format!("Discard {id}"), "danger"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Done {
    #[serde(default)]
    done: String,
}

pub(super) async fn detail(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let inv = match api::find(&shared, &id).await {
        Ok(inv) => inv,
        Err(p) => return layout::problem_page(&viewer, "Invocation", &p),
    };
    let body = html! {
        (layout::done_note(&done.done))
        div.card-head {
            p { (badge(inv.status.as_str())) " " code.id { (inv.id) } }
            div.actions {
                @match inv.status {
                    Status::Queued | Status::Retrying => {
                        (layout::action(&viewer, &format!("/console/invocations/{}/cancel", path(&inv.id)), "Cancel", "danger"))
                    }
                    Status::Dead => {
                        (layout::action(&viewer, &format!("/console/dlq/{}/redrive", path(&inv.id)), "Redrive", "primary"))
                        (layout::action(&viewer, &format!("/console/dlq/{}/discard", path(&inv.id)), "Discard", "danger"))
                    }
                    _ => {}
                }
            }
        }
        dl.facts {
            dt { "Function" } dd { a href={ "/console/invocations?function=" (q(&inv.function)) } { (inv.function) } }
            dt { "Created" } dd { (time(&rfc3339(inv.created_at))) }
            dt { "Updated" } dd { (time(&rfc3339(inv.updated_at))) }
            @if let (Some(due), Status::Queued | Status::Retrying) = (inv.due_at, inv.status) {
                dt { "Next attempt" } dd { (time(&rfc3339(due))) }
            }
            dt { "Attempts" } dd { (inv.attempt_count) @if inv.redrives > 0 { " (redriven " (inv.redrives) "×)" } }
            @if let Some(d) = &inv.delivery {
                dt { "Event" } dd { a href={ "/console/events/" (path(&d.event_id)) } { (d.event_id) } " via subscription " (d.subscription) }
            }
            @if let Some(step) = &inv.workflow {
                dt { "Workflow run" } dd { a href={ "/console/workflow-runs/" (path(&step.run)) } { (step.run) } ", step " (step.step)
                    @if step.compensate { " (compensation)" } }
            }
            @if let Some(trace) = inv.traceparent.as_deref().and_then(|t| t.split('-').nth(1)) {
                dt { "Trace id" } dd { code { (trace) } }
            }
            @if let Some(key) = &inv.idempotency_key { dt { "Idempotency key" } dd { code { (key) } } }
            @if let Some(error) = &inv.error { dt { "Error" } dd.error { (error) } }
        }
        h2 { "Attempts" }
        (timeline(&inv))
        div.two {
            section {
                h2 { "Payload" }
                (body_block(&inv.payload, inv.content_type.as_deref(), "payload"))
            }
            section {
                h2 { "Result" }
                @match &inv.response {
                    Some(r) => { p { "HTTP " (r.status) } (body_block(&r.body, r.content_type.as_deref(), "result")) }
                    None => p.muted { "No result yet." },
                }
            }
        }
    };
    layout::page(&viewer, "Invocation", "/console/invocations", body).into_response()
}

/// Every attempt as a row on a time axis from the first start to the last end.
fn timeline(inv: &Invocation) -> Markup {
    let start = inv.attempts.iter().map(|a| a.started_at).min().unwrap_or(inv.created_at);
    let end = inv.attempts.iter().map(|a| a.ended_at).max().unwrap_or(start).max(inv.due_at.unwrap_or(0));
    let span = (end - start).max(1) as f64;
    let pct = |t: i64| format!("{:.2}%", 100.0 * (t - start) as f64 / span);
    html! {
        @if inv.attempts.is_empty() {
            p.muted { "No attempt yet." }
        } @else {
            ol.timeline aria-label="Attempts, oldest first" {
                @for a in &inv.attempts {
                    @let outcome = a.outcome.as_str();
                    li {
                        div.bar-track aria-hidden="true" {
                            span class={ "bar " (outcome) } style={ "left:" (pct(a.started_at)) ";width:max(3px," (pct(a.ended_at + start - a.started_at)) ")" } {}
                        }
                        div.attempt {
                            strong { "#" (a.number) } " " (badge(outcome))
                            @if let Some(status) = a.http_status { " HTTP " (status) }
                            " · " (time(&rfc3339(a.started_at))) " · " ((a.ended_at - a.started_at).max(0)) " ms"
                            @if let Some(error) = &a.error { div.error-text { (error) } }
                        }
                    }
                }
                @if let (Some(due), Status::Retrying) = (inv.due_at, inv.status) {
                    li.next { div.attempt { "Next retry " (time(&rfc3339(due))) } }
                }
            }
        }
    }
}

/// A payload or result: JSON pretty, text as is, anything else by its size.
fn body_block(body: &[u8], content_type: Option<&str>, label: &str) -> Markup {
    if body.is_empty() {
        return html! { p.muted { "Empty." } };
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return layout::json_block(&value, label);
    }
    match std::str::from_utf8(body) {
        Ok(text) => html! { pre.json aria-label=(label) tabindex="0" { (text) } },
        Err(_) => html! { p.muted { (body.len()) " bytes of " (content_type.unwrap_or("binary")) } },
    }
}

pub(super) async fn cancel(State(shared): State<Arc<Shared>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    match api::cancel(State(shared), Path(id.clone())).await {
        Ok(_) => Redirect::to(&format!("/console/invocations/{}?done=cancelled", path(&id))).into_response(),
        Err(p) => layout::problem_page(&viewer, "Invocation", &p),
    }
}
