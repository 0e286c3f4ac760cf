//! The page shell (head, navigation, sign-out) and the small pieces every page uses: times in
//! the viewer's zone, status badges, empty states, forms that carry the CSRF token, refusals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::Viewer;
use crate::auth::Principal;
use crate::problem::Problem;

/// The navigation: (path, label); a page passes the path of its entry as `active`.
const NAV: [(&str, &str); 9] = [
    ("/console", "Overview"),
    ("/console/functions", "Functions"),
    ("/console/invocations", "Invocations"),
    ("/console/dlq", "DLQ"),
    ("/console/workflows", "Workflows"),
    ("/console/schedules", "Schedules"),
    ("/console/dependencies", "Dependencies"),
    ("/console/kv", "KV"),
    ("/console/chaos", "Chaos"),
];

/// A whole page: `active` is the path of the navigation entry to mark.
pub(super) fn page(viewer: &Viewer, title: &str, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Keel" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Keel" }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label) in NAV {
                                li { a href=(path) aria-current=[(path == active).then_some("page")] { (label) } }
                            }
                        }
                    }
                    div.who {
                        @match &viewer.principal {
                            Principal::Key(key) => {
                                span title=(scopes(viewer)) { "Key " (key.name) }
                                form method="post" action="/console/sign-out" {
                                    (csrf(viewer))
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                            _ if viewer.auth_on => { a href="/console/sign-in" { "Sign in" } }
                            _ => { span.muted { "Open (auth off, loopback)" } }
                        }
                    }
                }
                main #main {
                    @if let Some(notice) = &viewer.region_notice {
                        p.notice role="status" { "Read only: " (notice) "." }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn scopes(viewer: &Viewer) -> String {
    viewer.principal.scopes().iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// The hidden CSRF field of every form.
pub(super) fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A one-button POST form (an action on a page).
pub(super) fn action(viewer: &Viewer, path: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(path) {
            (csrf(viewer))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// [`action`] whose button says more to a screen reader than its visible word (which row).
pub(super) fn labelled_action(viewer: &Viewer, path: &str, label: &str, aria_label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(path) {
            (csrf(viewer))
            button type="submit" class=(class) aria-label=(aria_label) { (label) }
        }
    }
}

/// What an action just did, named by the `done` code of the page it redirected to (only known
/// codes: a link cannot make the console say anything else).
pub(super) fn done_note(code: &str) -> Markup {
    let text = match code {
        "redriven" => "Redriven.",
        "discarded" => "Discarded.",
        "cancelled" => "Cancelled.",
        "cancelling" => "Cancelling: the steps it completed are being compensated.",
        _ => return html! {},
    };
    html! { p.note role="status" { (text) } }
}

/// An RFC 3339 time, shown in the viewer's zone by the script (UTC until it runs).
pub(super) fn time(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) { (rfc3339.replace('T', " ")) } }
}

/// [`time`] of a JSON field, or a dash.
pub(super) fn time_of(value: &Value) -> Markup {
    match value.as_str() {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// A status or outcome as a coloured badge (the word is always there: colour is not the only cue).
pub(super) fn badge(word: &str) -> Markup {
    let tone = match word {
        "succeeded" | "success" | "closed" | "completed" | "active" => "ok",
        "dead" | "failed" | "permanent" | "open" | "timeout" | "compensation_failed" => "bad",
        "retrying" | "transient" | "half-open" | "half_open" | "paused" | "compensating" | "conflict" => "warn",
        _ => "plain",
    };
    html! { span class={ "badge " (tone) } { (word) } }
}

/// A JSON string field as text, or a dash.
pub(super) fn text(value: &Value) -> Markup {
    match value {
        Value::Null => html! { span.muted { "—" } },
        Value::String(s) => html! { (s) },
        other => html! { (other.to_string()) },
    }
}

/// What to show where a list is empty: what it would hold and what to do.
pub(super) fn empty(what: &str, todo: Markup) -> Markup {
    html! { div.empty { p { strong { (what) } } p { (todo) } } }
}

/// A problem the API answered, inline on the page.
pub(super) fn problem(problem: &Problem) -> Markup {
    html! { p.error role="alert" { (problem.detail()) } }
}

/// A whole page for a problem of the API (an unknown id, a bad filter).
pub(super) fn problem_page(viewer: &Viewer, title: &str, p: &Problem) -> Response {
    let mut response = page(
        viewer,
        title,
        "",
        html! {
            (problem(p))
            p { a href="/console" { "Back to the overview" } }
        },
    )
    .into_response();
    *response.status_mut() = p.status();
    response
}

/// A refusal: the action was not done, and why (which scope was missing, when that is why).
/// Without a viewer: the session layer answers it before any page.
pub(super) fn refusal(status: StatusCode, detail: &str, scope: Option<&str>) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Not done · Keel" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                main #main {
                    h1 { "Not done" }
                    div.refusal role="alert" {
                        p { (detail) }
                        @if let Some(scope) = scope {
                            p { "Your key lacks the scope " code.scope { (scope) } ". Sign in with a key that has it, or ask an admin for one." }
                        }
                    }
                    p { a href="/console" { "Back to the overview" } " · " a href="/console/sign-in" { "Sign in with another key" } }
                }
            }
        }
    };
    let mut response = (status, body).into_response();
    if let Some(scope) = scope.and_then(|s| axum::http::HeaderValue::from_str(s).ok()) {
        response.headers_mut().insert("keel-scope-needed", scope);
    }
    response
}

/// A JSON value, pretty, in a scrollable block.
pub(super) fn json_block(value: &Value, label: &str) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json aria-label=(label) tabindex="0" { (text) } }
}

/// Query-string escaping for links.
pub(super) fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Path escaping for links to ids and names.
pub(super) fn path(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}
