//! `/console/chaos`: the chaos faults in force (the API shows them to `admin` keys only), and
//! clearing one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::html;

use super::layout::{self, path, text, time_of};
use super::session::Viewer;
use crate::api::access::Actor;
use crate::state::Shared;

pub(super) async fn page(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let body = match crate::api::chaos::list(State(shared)).await {
        Err(p) => html! {
            (layout::empty(p.detail(), html! { "Then inject faults with " code { "keel chaos inject" } " or " code { "POST /v1/chaos/faults" } "." }))
        },
        Ok(Json(list)) => {
            let list = serde_json::to_value(list).unwrap_or_default();
            let items = list["items"].as_array().cloned().unwrap_or_default();
            html! {
                @if items.is_empty() {
                    (layout::empty("No faults are in force.", html! { "Inject one with " code { "keel chaos inject" } " or " code { "POST /v1/chaos/faults" } "." }))
                } @else {
                    div.scroll { table {
                        thead { tr { th scope="col" { "Fault" } th scope="col" { "Target" } th scope="col" { "Kind" }
                            th scope="col" { "Rate" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Actions" } } }
                        tbody { @for f in &items { tr {
                            td { code.id { (text(&f["id"])) } }
                            td { code { (f["target"].to_string()) } }
                            td { (text(&f["kind"])) @if let Some(s) = f["status"].as_u64() { " " (s) } }
                            td.num { (f["rate"]) }
                            td { (time_of(&f["created_at"])) }
                            td { (time_of(&f["expires_at"])) }
                            td {
                                @let id = f["id"].as_str().unwrap_or_default();
                                (layout::labelled_action(&viewer, &format!("/console/chaos/{}/clear", path(id)), "Clear", &format!("Clear fault {id}"), "danger"))
                            }
                        } } }
                    } }
                }
            }
        }
    };
    layout::page(&viewer, "Chaos faults", "/console/chaos", body).into_response()
}

pub(super) async fn clear(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    actor: Actor,
    Path(id): Path<String>,
) -> Response {
    match crate::api::chaos::clear(State(shared), actor, Path(id)).await {
        Ok(_) => Redirect::to("/console/chaos").into_response(),
        Err(p) => layout::problem_page(&viewer, "Chaos faults", &p),
    }
}
