//! `/console/kv`: look a KV entry up by namespace and key, and `/console/kv/{ns}/{*key}`: its
//! value and version, read by the API's own `GET /v1/kv/…` (a `kv:NS:read` scope is needed).

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, path};
use super::session::Viewer;
use crate::state::Shared;

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
            label { "Key" input name="key" value=(key) required; }
            button type="submit" { "Look up" }
        }
    }
}

pub(super) async fn page(viewer: Viewer, Query(lookup): Query<Lookup>) -> Response {
    if !lookup.ns.is_empty() && !lookup.key.is_empty() {
        return Redirect::to(&format!("/console/kv/{}/{}", path(&lookup.ns), path(&lookup.key))).into_response();
    }
    let body = html! {
        (form(&lookup.ns, &lookup.key))
        (layout::empty("Name a namespace and a key to see its value.", html! {
            "Functions write KV entries as effects of their invocations; " code { "GET /v1/kv/NS/KEY" } " reads one too."
        }))
    };
    layout::page(&viewer, "KV", "/console/kv", body).into_response()
}

pub(super) async fn entry(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Path((ns, key)): Path<(String, String)>,
) -> Response {
    let answer = crate::api::kv::get(State(shared), Path((ns.clone(), key.clone())), HeaderMap::new()).await;
    let body = match answer {
        Err(p) => html! { (form(&ns, &key)) (layout::problem(&p)) },
        Ok(response) => {
            let version = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            html! {
                (form(&ns, &key))
                dl.facts { dt { "Namespace" } dd { (ns) } dt { "Key" } dd { code { (key) } } dt { "Version" } dd { (version.trim_matches('"')) } }
                (layout::json_block(&value, "value"))
            }
        }
    };
    layout::page(&viewer, "KV entry", "/console/kv", body).into_response()
}
