//! Write [Keel](https://github.com/keel) functions in Rust.
//!
//! A function is a small HTTP server that Keel starts (a `command` function) or calls at a URL.
//! This crate speaks Keel's function contract for you: [`serve`] binds `PORT` and hands each
//! invocation to your handler as a [`Request`] with its [`Ctx`] (invocation id, attempt,
//! idempotency key, deadline, trace context, and for events the CloudEvent attributes). The
//! handler answers with a [`Reply`] — a plain result, or [`Effects`]: KV writes and events that
//! Keel commits atomically with the invocation's completion — or with an [`Error`] that tells
//! Keel whether to retry.
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
//! # Layout
//!
//! - [`serve`] (`server.rs`): the HTTP server and the contract's request → [`Request`].
//! - [`Ctx`] (`ctx.rs`): what Keel says about the invocation; [`Ctx::kv_get`] reads KV (`kv.rs`).
//! - [`Effects`] (`effects.rs`): the `application/vnd.keel.effects+json` envelope.
//! - [`Reply`] (`reply.rs`) and [`Error`] (`error.rs`): the answer and its status code.
#![forbid(unsafe_code)]

mod ctx;
mod effects;
mod egress;
mod error;
mod kv;
mod reply;
mod server;

pub use ctx::{Ctx, EventAttributes};
pub use effects::{Effects, Event, EFFECTS_CONTENT_TYPE};
pub use egress::{Dependency, DependencyRequest, DependencyResponse, EgressError, EgressErrorKind};
pub use error::Error;
pub use kv::Versioned;
pub use reply::Reply;
pub use server::{serve, serve_on, Request};
