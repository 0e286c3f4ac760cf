//! `/console/dlq`: dead invocations by function and subscription; redrive one, redrive every
//! match of a filter, discard one. Each action asks for a confirmation first (a page with the
//! same form and `confirmed=yes`), then calls the API's own handler, audited as the signed-in key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::invocations::{function_field, subscription_field, table, Filters};
use super::layout::{self, path};
use super::session::Viewer;
use crate::api::access::Actor;
use crate::api::dlq as api;
use crate::state::Shared;

pub(super) async fn page(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Query(filters): Query<Filters>,
) -> Response {
    let page = api::list(State(shared.clone()), Query(filters.query(false))).await;
    let body = html! {
        form.filters method="get" action="/console/dlq" role="search" aria-label="Filter dead invocations" {
            (function_field(&shared, &filters.function))
            (subscription_field(&shared, &filters.subscription))
            button type="submit" { "Filter" }
            a href="/console/dlq" { "Clear" }
        }
        @match page {
            Err(p) => (layout::problem(&p)),
            Ok(Json(page)) => {
                @let page = serde_json::to_value(page).unwrap_or_default();
                @let any = page["items"].as_array().is_some_and(|i| !i.is_empty());
                @if any {
                    form.card.inline-form method="post" action="/console/dlq/redrive" {
                        (layout::csrf(&viewer))
                        input type="hidden" name="function" value=(filters.function);
                        input type="hidden" name="subscription" value=(filters.subscription);
                        button.primary type="submit" {
                            "Redrive every dead invocation"
                            @if !filters.function.is_empty() { " of " (filters.function) }
                            @if !filters.subscription.is_empty() { " via " (filters.subscription) }
                        }
                    }
                }
                (table(&page, "The dead-letter queue is empty.", html! {
                    "Invocations land here when their retries run out or a function answers a permanent failure. Nothing to do."
                }, Some(&viewer)))
                @if let Some(cursor) = page["next_cursor"].as_str() {
                    p.pager { a rel="next" href=(filters.next("/console/dlq", cursor)) { "Older →" } }
                }
            }
        }
    };
    layout::page(&viewer, "Dead-letter queue", "/console/dlq", body).into_response()
}

/// An action's form: its confirmation, and for a bulk redrive its filter.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    confirmed: String,
    #[serde(default)]
    function: String,
    #[serde(default)]
    subscription: String,
}

impl ActionForm {
    fn confirmed(&self) -> bool {
        self.confirmed == "yes"
    }
}

/// The page that asks before an action: the same form again, with `confirmed=yes`.
fn confirm(viewer: &Viewer, title: &str, question: Markup, action: &str, form: &ActionForm, label: &str) -> Response {
    let body = html! {
        form.card.narrow method="post" action=(action) {
            (layout::csrf(viewer))
            input type="hidden" name="confirmed" value="yes";
            input type="hidden" name="function" value=(form.function);
            input type="hidden" name="subscription" value=(form.subscription);
            p { (question) }
            div.actions {
                button.primary #confirm type="submit" autofocus { (label) }
                a href="/console/dlq" { "Cancel" }
            }
        }
    };
    layout::page(viewer, title, "/console/dlq", body).into_response()
}

pub(super) async fn redrive(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    actor: Actor,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !form.confirmed() {
        let question = html! { "Redrive invocation " code { (id) } "? It goes back to the queue with the same id and its history kept." };
        return confirm(
            &viewer,
            "Redrive?",
            question,
            &format!("/console/dlq/{}/redrive", path(&id)),
            &form,
            "Redrive",
        );
    }
    match api::redrive(State(shared), actor, Path(id.clone())).await {
        Ok(_) => Redirect::to(&format!("/console/invocations/{}?done=redriven", path(&id))).into_response(),
        Err(p) => layout::problem_page(&viewer, "Redrive", &p),
    }
}

pub(super) async fn discard(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    actor: Actor,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !form.confirmed() {
        let question =
            html! { "Discard invocation " code { (id) } "? It will not run again; its record is kept as discarded." };
        return confirm(
            &viewer,
            "Discard?",
            question,
            &format!("/console/dlq/{}/discard", path(&id)),
            &form,
            "Discard",
        );
    }
    match api::discard(State(shared), actor, Path(id.clone())).await {
        Ok(_) => Redirect::to(&format!("/console/invocations/{}?done=discarded", path(&id))).into_response(),
        Err(p) => layout::problem_page(&viewer, "Discard", &p),
    }
}

pub(super) async fn redrive_matching(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    actor: Actor,
    Form(form): Form<ActionForm>,
) -> Response {
    let function = Some(form.function.trim()).filter(|f| !f.is_empty());
    let subscription = Some(form.subscription.trim()).filter(|s| !s.is_empty());
    if !form.confirmed() {
        let question = html! {
            "Redrive every dead invocation"
            @if let Some(f) = function { " of function " code { (f) } }
            @if let Some(s) = subscription { " delivered via " code { (s) } }
            "? Dead workflow steps stay dead."
        };
        return confirm(&viewer, "Redrive all?", question, "/console/dlq/redrive", &form, "Redrive them all");
    }
    let filter = Bytes::from(json!({ "function": function, "subscription": subscription }).to_string());
    match api::redrive_matching(State(shared), actor, filter.into()).await {
        Ok(Json(done)) => {
            let n = serde_json::to_value(done).unwrap_or_default()["redriven"].as_u64().unwrap_or(0);
            let body = html! {
                p.note role="status" { "Redriven: " (n) "." }
                p { a href="/console/dlq" { "Back to the dead-letter queue" } " · " a href="/console/invocations?status=queued" { "Queued invocations" } }
            };
            layout::page(&viewer, "Redriven", "/console/dlq", body).into_response()
        }
        Err(p) => layout::problem_page(&viewer, "Redrive", &p),
    }
}
