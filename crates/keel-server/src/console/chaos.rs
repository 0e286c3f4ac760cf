//! `/console/chaos`: the chaos faults in force (the API shows them to `admin` keys only).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::html;

use super::layout::{self, text, time_of};
use super::session::Viewer;
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
                            th scope="col" { "Rate" } th scope="col" { "Created" } th scope="col" { "Expires" } } }
                        tbody { @for f in &items { tr {
                            td { code.id { (text(&f["id"])) } }
                            td { code { (f["target"].to_string()) } }
                            td { (text(&f["kind"])) @if let Some(s) = f["status"].as_u64() { " " (s) } }
                            td.num { (f["rate"]) }
                            td { (time_of(&f["created_at"])) }
                            td { (time_of(&f["expires_at"])) }
                        } } }
                    } }
                }
            }
        }
    };
    layout::page(&viewer, "Chaos faults", "/console/chaos", body).into_response()
}
