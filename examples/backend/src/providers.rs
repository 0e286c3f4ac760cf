//! Stand-in third-party providers: an email API and a payments API, each failing a share of its
//! calls with 503 and answering after a set latency. Both remember idempotency keys the way real
//! providers do, so a retried call is not sent or charged twice. The email API, like a real one,
//! refuses for good (422) mail to an address that cannot exist: any on the reserved `.invalid`
//! domain (RFC 2606), such as `bob@example.invalid`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// How a provider misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Share of calls answered 503, from 0.0 to 1.0.
    pub error_rate: f64,
    pub latency: Duration,
}

#[derive(Debug, Clone)]
struct Provider {
    name: &'static str,
    behaviour: Behaviour,
    /// Idempotency key → the answer first given.
    seen: Arc<Mutex<HashMap<String, Value>>>,
}

/// Starts a provider on `127.0.0.1:0`; returns its base URL. It answers `POST /send` (email)
/// and `POST /charges` (payments).
pub async fn start(name: &'static str, behaviour: Behaviour) -> std::io::Result<String> {
    let provider = Provider { name, behaviour, seen: Arc::default() };
    let app = Router::new().route("/send", post(call)).route("/charges", post(call)).with_state(provider);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn call(
    State(provider): State<Provider>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    tokio::time::sleep(provider.behaviour.latency).await;
    if let Some(to) = body["to"].as_str().filter(|to| to.ends_with(".invalid")) {
        let error = json!({"error": format!("{} provider: no such mailbox {to}", provider.name)});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(error));
    }
    if fastrand::f64() < provider.behaviour.error_rate {
        let error = json!({"error": format!("{} provider: temporarily unavailable", provider.name)});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(error));
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut seen = provider.seen.lock().expect("provider lock");
    if let Some(first) = key.as_ref().and_then(|k| seen.get(k)) {
        return (StatusCode::OK, Json(first.clone()));
    }
    let answer = json!({"id": format!("{}_{}", provider.name, fastrand::u64(..)), "request": body});
    if let Some(key) = key {
        seen.insert(key, answer.clone());
    }
    (StatusCode::OK, Json(answer))
}
