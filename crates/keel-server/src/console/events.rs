//! `/console/events/{id}`: an event (its CloudEvents attributes and data) and its deliveries, one
//! per matching subscription, each linked to its invocation.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::html;

use super::layout::{self, badge, path, text, time_of};
use super::session::Viewer;
use crate::state::Shared;

pub(super) async fn page(State(shared): State<Arc<Shared>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let event = match crate::api::events::get(State(shared), Path(id)).await {
        Ok(Json(event)) => serde_json::to_value(event).unwrap_or_default(),
        Err(p) => return layout::problem_page(&viewer, "Event", &p),
    };
    let deliveries = event["deliveries"].as_array().cloned().unwrap_or_default();
    let body = html! {
        dl.facts {
            dt { "Id" } dd { code.id { (text(&event["id"])) } }
            dt { "Topic" } dd { (text(&event["topic"])) }
            dt { "Type" } dd { (text(&event["type"])) }
            dt { "Source" } dd { (text(&event["source"])) " (CloudEvents id " (text(&event["ce_id"])) ")" }
            @if !event["subject"].is_null() { dt { "Subject" } dd { (text(&event["subject"])) } }
            dt { "Published" } dd { (time_of(&event["created_at"])) }
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() {
            (layout::empty("No subscription matched this event.", html! {
                "Add a " code { "[[subscriptions]]" } " on topic " code { (text(&event["topic"])) } " in keel.toml; later events will be delivered."
            }))
        } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Subscription" } th scope="col" { "Function" } th scope="col" { "Invocation" }
                    th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Error" } } }
                tbody { @for d in &deliveries {
                    @let inv = d["invocation_id"].as_str().unwrap_or_default();
                    tr {
                        td { (text(&d["subscription"])) }
                        td { (text(&d["function"])) }
                        td { a.id href={ "/console/invocations/" (path(inv)) } { (inv) } }
                        td { (badge(d["status"].as_str().unwrap_or_default())) }
                        td.num { (d["attempt_count"]) }
                        td.error-text { (d["error"].as_str().unwrap_or_default()) }
                    }
                } }
            } }
        }
        h2 { "Data" }
        (layout::json_block(&event["data"], "event data"))
    };
    layout::page(&viewer, "Event", "", body).into_response()
}
