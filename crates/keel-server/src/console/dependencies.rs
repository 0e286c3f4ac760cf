//! `/console/dependencies`: each dependency functions call through egress, with its breaker,
//! bulkhead, retry budget and counters.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::html;

use super::layout::{self, badge, text, time_of};
use super::session::Viewer;
use crate::state::Shared;

pub(super) async fn page(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let Json(list) = crate::api::dependencies::list(State(shared)).await;
    let list = serde_json::to_value(list).unwrap_or_default();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if items.is_empty() {
            (layout::empty("No dependencies are declared.", html! {
                "Declare the services your functions call with " code { "[dependencies.NAME]" } " (a " code { "url" }
                ", a breaker, a bulkhead) and list them in each function's " code { "dependencies" } "."
            }))
        } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Dependency" } th scope="col" { "URL" } th scope="col" { "Breaker" }
                    th scope="col" { "In flight" } th scope="col" { "Queued" } th scope="col" { "Requests" }
                    th scope="col" { "Retries" } th scope="col" { "Failures" } th scope="col" { "Retry budget" } } }
                tbody { @for d in &items { tr {
                    td { (text(&d["name"])) }
                    td { code { (text(&d["url"])) } }
                    td { @match d["breaker"]["state"].as_str() {
                        Some(state) => { (badge(state)) " " (time_of(&d["breaker"]["since"])) },
                        None => span.muted { "none" },
                    } }
                    td.num { (d["in_flight"]) }
                    td.num { (d["queued"]) }
                    td.num { (d["counters"]["requests"]) }
                    td.num { (d["counters"]["retries"]) }
                    td.num { (d["counters"]["failures"]) }
                    td.num { (d["budget_available"]) }
                } } }
            } }
        }
    };
    layout::page(&viewer, "Dependencies", "/console/dependencies", body).into_response()
}
