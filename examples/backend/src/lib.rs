//! An example app backend on Keel: sign-up with a welcome email, analytics and a profile, and an
//! in-app purchase, and a checkout workflow (a saga) compensated in reverse when shipping fails —
//! written with `keel-sdk`, run by Keel as managed `command` functions.
//!
//! # Layout
//!
//! - [`app`]: starts Keel in-process with `keel.toml`, the functions being this very binary.
//! - [`functions`]: the functions (`register-user`, `purchase`, the subscribers
//!   `send-welcome-email`, `count-signups`, `init-profile`, `notify-ops`, and the `checkout`
//!   workflow's steps and compensations).
//! - [`providers`]: stand-in third-party services (email; payments, with charges and refunds)
//!   with a configurable error rate and latency, so that retries and the dead-letter queue can be
//!   seen at work.
//! - [`demo`]: `keel-example demo`, the chaos experiments of `experiments/` run against it.
#![forbid(unsafe_code)]

pub mod app;
pub mod demo;
pub mod functions;
pub mod providers;
