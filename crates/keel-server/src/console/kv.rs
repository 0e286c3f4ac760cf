//! `/console/kv`: look a KV entry up, or browse a namespace; `/console/kv/{ns}`: the namespace's
//! keys in byte order, filtered by prefix and paged, read by the API's own `GET /v1/kv/{ns}`;
//! `/console/kv/{ns}/{*key}`: one value and its version, read by `GET /v1/kv/{ns}/{key}`. Both
//! need the `kv:NS:read` scope.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::invocations::PAGE;
use super::layout::{self, path, q};
use super::session::Viewer;
use crate::api::kv as api;
use crate::state::Shared;

/// The longest value shown in a row of a listing; the key's own page shows it whole.
const PREVIEW_CHARS: usize = 80;

#[derive(Debug, Default, Deserialize)]
pub(super) struct Lookup {
    #[serde(default)]
    ns: String,
    #[serde(default)]
    key: String,
}

fn form(ns: &str, key: &str) -> Markup {
    html! {
        form.filters method="get" action="/console/kv" role="search" aria-label="Look up a KV entry" {
            label { "Namespace" input name="ns" value=(ns) required; }
            label { "Key" input name="key" value=(key) placeholder="empty: every key"; }
            button type="submit" { "Look up" }
        }
    }
}

pub(super) async fn page(viewer: Viewer, Query(lookup): Query<Lookup>) -> Response {
    if !lookup.ns.is_empty() {
        let namespace = format!("/console/kv/{}", path(&lookup.ns));
        let to = if lookup.key.is_empty() { namespace } else { format!("{namespace}/{}", path(&lookup.key)) };
        return Redirect::to(&to).into_response();
    }
    let body = html! {
        (form(&lookup.ns, &lookup.key))
        (layout::empty("Name a namespace to browse its keys, and a key to see its value.", html! {
            "Functions write KV entries as effects of their invocations; " code { "GET /v1/kv/NS" } " lists a namespace, "
            code { "GET /v1/kv/NS/KEY" } " reads one key."
        }))
    };
    layout::page(&viewer, "KV", "/console/kv", body).into_response()
}

/// The filter and page of a namespace's listing, as its form and links send them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Browse {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    cursor: String,
}

pub(super) async fn namespace(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Path(ns): Path<String>,
    Query(browse): Query<Browse>,
) -> Response {
    let mut query = HashMap::from([("limit".to_owned(), PAGE.to_owned())]);
    for (name, value) in [("prefix", &browse.prefix), ("cursor", &browse.cursor)] {
        if !value.is_empty() {
            query.insert(name.to_owned(), value.clone());
        }
    }
    let listing = api::list(State(shared), Path(ns.clone()), Query(query)).await;
    let here = format!("/console/kv/{}", path(&ns));
    let body = html! {
        form.filters method="get" action=(here) role="search" aria-label={ "Filter the keys of " (ns) } {
            label { "Key prefix" input name="prefix" value=(browse.prefix); }
            button type="submit" { "Filter" }
            a href=(here) { "Clear" }
        }
        @match listing {
            Err(p) => (layout::problem(&p)),
            Ok(Json(page)) => {
                @if page.items.is_empty() {
                    (empty_namespace(&ns, &browse.prefix))
                } @else {
                    div.scroll { table aria-label={ "Keys of " (ns) } {
                        thead { tr { th scope="col" { "Key" } th scope="col" { "Version" } th scope="col" { "Value" } } }
                        tbody { @for item in &page.items { tr data-key=(item.key) {
                            td { a href={ (here) "/" (path(&item.key)) } { code { (item.key) } } }
                            td { (item.version) }
                            td { code.muted { (preview(&item.value)) } }
                        } } }
                    } }
                }
                @if let Some(cursor) = &page.next_cursor {
                    p.pager { a rel="next" href={ (here) "?prefix=" (q(&browse.prefix)) "&cursor=" (q(cursor)) } { "More →" } }
                }
            }
        }
    };
    layout::page(&viewer, &format!("KV: {ns}"), "/console/kv", body).into_response()
}

/// What an empty listing means, and what to do about it.
fn empty_namespace(ns: &str, prefix: &str) -> Markup {
    if prefix.is_empty() {
        layout::empty(
            &format!("The namespace {ns} holds no keys."),
            html! {
                "Functions write keys as effects of their invocations (" code { "kv" } " in an effects answer); "
                "write one by hand with " code { "keel kv put " (ns) " KEY --value JSON" } " or "
                code { "PUT /v1/kv/" (ns) "/KEY" } ". Check the namespace's spelling too."
            },
        )
    } else {
        layout::empty(
            &format!("No key of {ns} starts with {prefix:?}."),
            html! {
                "The prefix is matched literally, case and all. "
                a href={ "/console/kv/" (path(ns)) } { "Clear the filter" } " to see every key."
            },
        )
    }
}

/// A value as one line of JSON, cut at [`PREVIEW_CHARS`].
fn preview(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

pub(super) async fn entry(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Path((ns, key)): Path<(String, String)>,
) -> Response {
    let answer = api::get(State(shared), Path((ns.clone(), key.clone())), HeaderMap::new()).await;
    let body = match answer {
        Err(p) => html! {
            (form(&ns, &key))
            (layout::problem(&p))
            p { a href={ "/console/kv/" (path(&ns)) } { "Every key of " (ns) } }
        },
        Ok(response) => {
            let version = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            html! {
                (form(&ns, &key))
                dl.facts { dt { "Namespace" } dd { a href={ "/console/kv/" (path(&ns)) } { (ns) } } dt { "Key" } dd { code { (key) } } dt { "Version" } dd { (version.trim_matches('"')) } }
                (layout::json_block(&value, "value"))
            }
        }
    };
    layout::page(&viewer, "KV entry", "/console/kv", body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_character() {
        assert_eq!(preview(&serde_json::json!({"n": 1})), r#"{"n":1}"#);
        let long = Value::String("é".repeat(100));
        let shown = preview(&long);
        assert_eq!(shown.chars().count(), PREVIEW_CHARS + 1);
        assert!(shown.starts_with("\"éé") && shown.ends_with('…'));
    }
}
