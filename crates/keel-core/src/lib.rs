//! Keel's domain: everything that decides, nothing that does I/O.
//!
//! # Layout
//!
//! - [`config`]: the `keel.toml` model, layered loading (defaults → file → `KEEL_` env → flags)
//!   and validation with file:line errors.
//! - [`retry`]: retry policies, backoff and jitter, with randomness passed in.
//! - [`outcome`]: how one attempt's HTTP result is classified (success, transient, permanent,
//!   timeout) and how `Retry-After` is read.
//! - [`invocation`]: invocations, attempts, their statuses and the transitions between them;
//!   [`lifecycle`]: the decision taken after each attempt; [`batch`]: a batch function's
//!   request, and each item's attempt report read from its answer.
//! - [`store`]: the `Store` trait every storage backend implements, and (feature `testkit`) the
//!   conformance suite each backend runs.
//! - [`events`]: CloudEvents (reading the HTTP forms, subscription filters); [`effects`]: the
//!   effects envelope a function answers with (KV writes with preconditions, events to emit).
//! - [`kv`]: versioned function state and write preconditions.
//! - [`idempotency`]: the `Idempotency-Key` record state machine, as a pure decision.
//! - [`flow`]: flow control as pure decisions: the circuit breaker and the GCRA rate limiter.
//! - [`auth`]: access control as pure decisions: scopes, what a route needs, the records of
//!   keys and the audit log, a function token's claims.
//! - [`edge`]: the API's firewall (client address allow/deny lists, trusted proxies and
//!   `X-Forwarded-For`, method/path rules) and its throttles per API key and per address.
//! - [`limits`]: limits on request heads, JSON nesting and idempotency-key records a minute.
//! - [`schema`]: JSON Schema checks of invoke bodies (`input_schema`) and event data (a topic's
//!   `schema`), compiled once at config load.
//! - [`system_events`]: Keel's operational events on the reserved topic `keel.system`: their
//!   kinds, the rate limit per kind and the debounce of shedding, as pure decisions.
//! - [`schedule`]: `cron` and `every` schedules: the next tick in a time zone, and which tick is
//!   due (or missed) after downtime.
//! - [`workflow`]: workflows (sagas) as pure decisions: a run's steps, and which step or
//!   compensation starts after each end.
//! - [`chaos`]: chaos faults as pure decisions: a fault request checked, and which calls a
//!   fault hits.
//! - [`clock`]: injected time; [`id`]: invocation ids (ULIDs); [`duration`]: the duration forms
//!   config and headers accept.
#![forbid(unsafe_code)]

pub mod auth;
pub mod batch;
pub mod chaos;
pub mod clock;
pub mod config;
pub mod duration;
pub mod edge;
pub mod effects;
pub mod error;
pub mod events;
pub mod flow;
pub mod id;
pub mod idempotency;
pub mod invocation;
pub mod kv;
pub mod lifecycle;
pub mod limits;
pub mod outcome;
pub mod region;
pub mod retry;
pub mod schedule;
pub mod schema;
pub mod store;
pub mod system_events;
pub mod workflow;

pub use error::{Error, Result};
