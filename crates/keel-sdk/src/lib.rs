//! Write [Keel](https://github.com/keel) functions in Rust.
//!
//! A function is a small HTTP server that Keel starts (a `command` function) or calls at a URL.
//! This crate speaks Keel's function contract for you: [`serve`] binds `PORT` and hands each
//! invocation to your handler as a [`Request`] with its [`Ctx`] (invocation id, attempt,
//! idempotency key, deadline, trace context, and for events the CloudEvent attributes). The
//! handler answers with a [`Reply`] — a plain result, or [`Effects`]: KV writes and events that
//! Keel commits atomically with the invocation's completion — or with an [`Error`] that tells
//! Keel whether to retry. [`Ctx::dependency`] calls the services the function depends on through
//! Keel's egress (breaker, bulkhead, rate limit, retries).
//!
//! ```no_run
//! use keel_sdk::{Effects, Error, Event, Reply, Request};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Signup {
//!     email: String,
//! }
//!
//! async fn register(req: Request) -> Result<Reply, Error> {
//!     let signup: Signup = req.json()?; // a 400 (permanent: not retried) if the body is wrong
//!     if !signup.email.contains('@') {
//!         return Err(Error::bad_request("email must contain @"));
//!     }
//!     if req.ctx.kv_get::<serde_json::Value>("users", &signup.email).await?.is_some() {
//!         return Err(Error::permanent("already registered").with_status(409));
//!     }
//!     Ok(Effects::new()
//!         .status(201)
//!         .result(json!({ "email": signup.email }))
//!         .put_if_absent("users", &signup.email, json!({ "email": signup.email }))
//!         .emit(Event::new("user.registered").subject(&signup.email).data(json!({ "email": signup.email })))
//!         .into())
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     keel_sdk::serve(register).await
//! }
//! ```
//!
//! # Batch functions
//!
//! A function configured with `batch = { max_size = 100, max_wait = "5ms" }` gets its async
//! invocations and event deliveries in batches. [`serve_batch`] hands its handler one [`Request`]
//! per item (each with its own [`Ctx`]: id, attempt, idempotency key, event) and sends Keel the
//! [`BatchReply`]: each item failed there is retried (or dead-lettered) alone, the others
//! succeeded, with their results or [`Effects`]. Sync calls arrive as a batch of one.
//!
//! ```no_run
//! use keel_sdk::{BatchReply, Effects, Error, Request};
//! use serde_json::{json, Value};
//!
//! async fn index(items: Vec<Request>) -> Result<BatchReply, Error> {
//!     let mut reply = BatchReply::new();
//!     for item in &items {
//!         let id = item.ctx.invocation_id();
//!         reply = match item.json::<Value>() {
//!             Ok(doc) => reply.effects(id, Effects::new().put("docs", id, doc)),
//!             Err(e) => reply.fail(id, e), // this item only: dead-lettered (a 400 is permanent)
//!         };
//!     }
//!     Ok(reply)
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     keel_sdk::serve_batch(index).await
//! }
//! ```
//!
//! # Calling dependencies through Keel
//!
//! [`Ctx::dependency`] calls a service the function declares (`dependencies = ["payments"]`)
//! through Keel's egress, `{KEEL_URL}/v1/egress/payments{path}` with the attempt's
//! `keel-invocation-id`, so that Keel's breaker, bulkhead, rate limit, timeout and retry budget
//! protect it. [`DependencyRequest::send`] returns the dependency's answer as it gave it — a 500
//! of its own is a [`DependencyResponse`], not an error — or an [`EgressError`] when Keel answered
//! in its stead. With `?` that error becomes the function's answer:
//!
//! | Keel's answer | [`EgressErrorKind`] | the function answers (with `?`) |
//! |---|---|---|
//! | `503 breaker-open` + `Retry-After` | `BreakerOpen` | 503 + the same `Retry-After`: retried no sooner |
//! | `429 rate-limited` + `Retry-After` | `RateLimited` | 503 + the same `Retry-After` |
//! | `503 bulkhead-full` (+ `Retry-After`) | `BulkheadFull` | 503 (+ the same `Retry-After`) |
//! | `504 dependency-timeout`, `502 dependency-unreachable` | `Timeout`, `Unreachable` | 503, retried after Keel's backoff |
//! | `403 forbidden` (the function does not declare it) | `Forbidden` | 422, permanent: not retried |
//!
//! ```no_run
//! use keel_sdk::{EgressErrorKind, Error, Reply, Request};
//! use serde_json::{json, Value};
//!
//! async fn purchase(req: Request) -> Result<Reply, Error> {
//!     let order: Value = req.json()?;
//!     let charge = req.ctx.dependency("payments")
//!         .post("/charges")
//!         .json(&json!({ "cents": order["cents"] }))
//!         .send()
//!         .await?; // breaker open → 503 + Retry-After: Keel retries this attempt after the delay
//!     if charge.status() == 402 {
//!         return Err(Error::permanent("card declined").with_status(402));
//!     }
//!     let charge = charge.error_for_status()?; // its 5xx: retryable; its other 4xx: permanent
//!     // Or handle Keel's refusal yourself instead of `?`:
//!     let receipt = match req.ctx.dependency("email").post("/send").json(&json!({})).send().await {
//!         Err(e) if e.kind() == EgressErrorKind::BreakerOpen => None, // send it later
//!         other => Some(other?.status()),
//!     };
//!     Ok(Reply::json(json!({ "charge": charge.json::<Value>()?, "receipt": receipt })))
//! }
//! ```
//!
//! # Access control
//!
//! When Keel's auth is on, each attempt arrives with its function token (`authorization: Bearer
//! keel_ft_…`: the function's `grants` and dependencies, expiring at the attempt's deadline).
//! Every call the SDK makes to Keel — [`Ctx::kv_get`], [`Ctx::dependency`] — sends it, with no
//! code of yours; Keel's egress never forwards it to a dependency. [`Ctx::token`] gives it for
//! calls to Keel's API the SDK does not make for you.
//!
//! # Layout
//!
//! - [`serve`] (`server.rs`): the HTTP server and the contract's request → [`Request`].
//! - [`serve_batch`] (`batch.rs`): a batch function's server: a batch → one [`Request`] per item,
//!   and its [`BatchReply`] → per-item failures, results and effects.
//! - [`Ctx`] (`ctx.rs`): what Keel says about the invocation; [`Ctx::kv_get`] reads KV (`kv.rs`).
//! - [`Dependency`] (`egress.rs`): calls through Keel's egress and [`EgressError`].
//! - [`Effects`] (`effects.rs`): the `application/vnd.keel.effects+json` envelope.
//! - [`Reply`] (`reply.rs`) and [`Error`] (`error.rs`): the answer and its status code.
#![forbid(unsafe_code)]

mod batch;
#[cfg(test)]
mod contract;
mod ctx;
mod effects;
mod egress;
mod error;
mod kv;
mod reply;
mod server;

pub use batch::{serve_batch, serve_batch_on, BatchReply, BATCH_CONTENT_TYPE};
pub use ctx::{Ctx, EventAttributes};
pub use effects::{Effects, Event, EFFECTS_CONTENT_TYPE};
pub use egress::{Dependency, DependencyRequest, DependencyResponse, EgressError, EgressErrorKind};
pub use error::Error;
pub use kv::Versioned;
pub use reply::Reply;
pub use server::{serve, serve_on, Request};
