//! `/console`: each function's last five minutes (rate, error ratio, p50/p99), its live state (in
//! flight, queued, DLQ size, breaker, paused) and charts of its last hour; refreshed every 10 s.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keel_core::clock::rfc3339;
use maud::html;
use serde_json::Value;

use super::layout::{self, badge, q};
use super::session::Viewer;
use super::{backlog, chart};
use crate::state::Shared;

/// The window of the figures in the table (the charts show the hour).
const WINDOW_MINUTES: usize = 5;

pub(super) async fn page(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let backlog = backlog::snapshot(&shared).await;
    let stats = backlog.as_ref().map_or(&[][..], |b| &b.stats[..]);
    let mut dead: BTreeMap<&str, u64> = BTreeMap::new();
    for row in stats {
        *dead.entry(row.function.as_str()).or_default() += row.dead;
    }
    let functions = serde_json::to_value(crate::api::functions::list_with(&shared, stats)).unwrap_or_default();
    let items = functions["items"].as_array().cloned().unwrap_or_default();
    let now = shared.clock.now_ms();
    let recent = &shared.metrics.recent;
    let body = html! {
        // Without the backlog yet (being counted), the page comes back for it in a second.
        div data-refresh=(if backlog.is_some() { "10" } else { "1" }) {
            p.muted {
                "This node's attempts over the last " (WINDOW_MINUTES) " minutes; queued and DLQ of the whole cluster "
                @match &backlog {
                    Some(b) => { "as of " (layout::time(&rfc3339(b.at))) }
                    None => "being counted",
                }
                ". Refreshed every 10 seconds. Charts: the last hour, one bar a minute."
            }
            @if items.is_empty() {
                (layout::empty("No functions are configured.", html! {
                    "Declare one in keel.toml (" code { "[functions.hello]" } " with a " code { "url" } " or a " code { "command" } ") and restart " code { "keel serve" } "."
                }))
            } @else {
                div.scroll {
                    table.figures {
                        caption.sr { "Each function's figures" }
                        thead { tr {
                            th scope="col" { "Function" }
                            th scope="col" { abbr title="attempts per second" { "Rate" } }
                            th scope="col" { "Errors" }
                            th scope="col" { "p50" }
                            th scope="col" { "p99" }
                            th scope="col" { "In flight" }
                            th scope="col" { "Queued" }
                            th scope="col" { "DLQ" }
                            th scope="col" { "Breaker" }
                        } }
                        tbody {
                            @for f in &items {
                                @let name = f["name"].as_str().unwrap_or_default();
                                @let last = recent.summary(name, now, WINDOW_MINUTES);
                                @let dlq = dead.get(name).copied().unwrap_or(0);
                                tr data-function=(name) {
                                    th scope="row" {
                                        a href={ "/console/invocations?function=" (q(name)) } { (name) }
                                        @if f["paused"] == Value::Bool(true) { " " (badge("paused")) }
                                    }
                                    td.num data-figure="rate" { (format!("{:.2}/s", f64::from(last.attempts) / (WINDOW_MINUTES as f64 * 60.0))) }
                                    td.num data-figure="errors" {
                                        @if last.attempts == 0 { span.muted { "—" } }
                                        @else { (format!("{:.1}%", 100.0 * f64::from(last.errors) / f64::from(last.attempts))) }
                                    }
                                    td.num data-figure="p50" { (quantile(last.quantile_ms(0.5))) }
                                    td.num data-figure="p99" { (quantile(last.quantile_ms(0.99))) }
                                    td.num data-figure="in-flight" { (f["in_flight"]) }
                                    @if backlog.is_none() {
                                        td.num data-figure="queued" { span title="being counted" { "…" } }
                                        td.num data-figure="dlq" { span title="being counted" { "…" } }
                                    } @else {
                                        td.num data-figure="queued" { (f["queued"]) }
                                        td.num data-figure="dlq" {
                                            @if dlq > 0 { a href={ "/console/dlq?function=" (q(name)) } { (dlq) } } @else { "0" }
                                        }
                                    }
                                    td {
                                        @match f["breaker"]["state"].as_str() {
                                            Some(state) => (badge(state)),
                                            None => span.muted { "none" },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                div.charts {
                    @for f in &items {
                        @let name = f["name"].as_str().unwrap_or_default();
                        @let hour = recent.hour(name, now);
                        figure.card {
                            figcaption { a href={ "/console/invocations?function=" (q(name)) } { (name) } }
                            div.chart-label { "Attempts a minute (failed in red)" }
                            (chart::attempts(name, &hour))
                            div.chart-label { "p99 latency a minute" }
                            (chart::p99(name, &hour))
                        }
                    }
                }
            }
        }
    };
    layout::page(&viewer, "Overview", "/console", body).into_response()
}

/// A quantile as the upper bound of its latency bucket.
fn quantile(ms: Option<i64>) -> String {
    match ms {
        None => "—".to_owned(),
        Some(i64::MAX) => "> 60 s".to_owned(),
        Some(ms) if ms >= 1_000 => format!("≤ {} s", ms as f64 / 1000.0),
        Some(ms) => format!("≤ {ms} ms"),
    }
}
