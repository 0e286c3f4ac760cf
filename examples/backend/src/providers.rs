//! Stand-in third-party providers: an email API and a payments API, each failing a share of its
//! calls with 503 and answering after a set latency. The functions reach them through Keel's
//! egress (`[dependencies.email]`, `[dependencies.payments]`), which forwards each call with
//! `idempotency-key: {invocation_id}/{dependency}/{n}` — the same key for the same call of every
//! attempt of an invocation. Both providers deduplicate on that key the way real providers do,
//! so a retried attempt is not sent or charged twice. The email API, like a real one, refuses
//! for good (422) mail to an address that cannot exist: any on the reserved `.invalid` domain
//! (RFC 2606), such as `bob@example.invalid`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
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

/// A provider started by [`start`]: where it listens, and what it was asked.
#[derive(Debug, Clone)]
pub struct Provider {
    pub url: String,
    state: Arc<Mutex<Seen>>,
}

impl Provider {
    /// The `idempotency-key` of every call received so far, in order (`None` for a call
    /// without one), failed calls included: what a test checks the provider was spared.
    pub fn calls(&self) -> Vec<Option<String>> {
        lock(&self.state).calls.clone()
    }
}

#[derive(Debug, Default)]
struct Seen {
    calls: Vec<Option<String>>,
    /// Idempotency key → the answer first given.
    answers: HashMap<String, Value>,
}

#[derive(Debug, Clone)]
struct Handler {
    name: &'static str,
    behaviour: Behaviour,
    state: Arc<Mutex<Seen>>,
}

/// Starts a provider on `127.0.0.1:0`. It answers `POST /send` (email), `POST /charges` and
/// `POST /refunds` (payments), and `GET /stats`: `{"calls", "done"}`, where `done` counts the
/// distinct idempotency keys it acted on (mails sent, cards charged) — what a chaos experiment
/// compares with the requests that succeeded, to prove each was charged exactly once.
pub async fn start(name: &'static str, behaviour: Behaviour) -> std::io::Result<Provider> {
    let state = Arc::<Mutex<Seen>>::default();
    let handler = Handler { name, behaviour, state: state.clone() };
    let app = Router::new()
        .route("/send", post(call))
        .route("/charges", post(call))
        .route("/refunds", post(call))
        .route("/stats", get(stats))
        .with_state(handler);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Provider { url, state })
}

async fn call(
    State(provider): State<Handler>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    lock(&provider.state).calls.push(key.clone());
    tokio::time::sleep(provider.behaviour.latency).await;
    if let Some(to) = body["to"].as_str().filter(|to| to.ends_with(".invalid")) {
        let error = json!({"error": format!("{} provider: no such mailbox {to}", provider.name)});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(error));
    }
    if fastrand::f64() < provider.behaviour.error_rate {
        let error = json!({"error": format!("{} provider: temporarily unavailable", provider.name)});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(error));
    }
    let mut seen = lock(&provider.state);
    if let Some(first) = key.as_ref().and_then(|k| seen.answers.get(k)) {
        return (StatusCode::OK, Json(first.clone()));
    }
    let answer = json!({"id": format!("{}_{}", provider.name, fastrand::u64(..)), "request": body});
    if let Some(key) = key {
        seen.answers.insert(key, answer.clone());
    }
    (StatusCode::OK, Json(answer))
}

async fn stats(State(provider): State<Handler>) -> Json<Value> {
    let seen = lock(&provider.state);
    Json(json!({"calls": seen.calls.len(), "done": seen.answers.len()}))
}

fn lock(state: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}
