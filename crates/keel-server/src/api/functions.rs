//! `GET /v1/functions` and `GET /v1/functions/{name}`: each function's configuration and live
//! state — in-flight attempts, and for `command` functions their instances and cold starts.
//! A command's `env` is shown by name only: its values may be secrets.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::config::{CommandConfig, FunctionTarget};
use keel_core::retry::Jitter;
use serde_json::{json, Value};

use super::problem::Problem;
use crate::functions::Function;
use crate::runtime::process::PoolView;
use crate::state::Shared;

/// Every function, with its configuration and live state.
///
/// In name order. A short list: never paginated, but in the list shape so clients handle it
/// like the others.
#[utoipa::path(
    get,
    path = "/v1/functions",
    tag = "functions",
    responses((status = 200, description = "Every configured function.", body = schema::FunctionList))
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let items: Vec<Value> = shared.functions.iter().map(|f| function(&shared, f)).collect();
    Json(json!({ "items": items, "next_cursor": null }))
}

/// One function, with its configuration and live state.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    tag = "functions",
    params(("name" = String, Path, description = "The function.")),
    responses(
        (status = 200, description = "The function.", body = schema::Function),
        (status = 404, description = "No function of that name is configured (`unknown-function`)."),
    )
)]
pub(crate) async fn get(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Result<Json<Value>, Problem> {
    let f = shared.functions.get(&name).ok_or_else(|| Problem::unknown_function(&name))?;
    Ok(Json(function(&shared, f)))
}

fn function(shared: &Shared, f: &Function) -> Value {
    let config = &f.config;
    let retry = &config.retry;
    let mut v = json!({
        "name": config.name,
        "timeout": human(config.timeout),
        "sync_timeout": human(config.sync_timeout),
        "concurrency": config.concurrency,
        "retry": {
            "max_attempts": retry.max_attempts,
            "initial": human(retry.initial),
            "max": human(retry.max),
            "multiplier": retry.multiplier,
            "jitter": jitter(retry.jitter),
        },
        "in_flight": f.in_flight(),
    });
    match &config.target {
        FunctionTarget::Url(url) => {
            v["kind"] = json!("url");
            v["url"] = json!(url.as_str());
        }
        FunctionTarget::Command(command) => {
            v["kind"] = json!("command");
            v["command"] = command_config(command);
            if let Some(pool) = shared.runtime.pool(&config.name) {
                let view = pool.view();
                v["instances"] = instances(&view);
                v["cold_starts"] = cold_starts(&view);
                v["waiting"] = json!(view.waiting);
                v["last_error"] = json!(view.last_error);
            }
        }
    }
    v
}

fn command_config(c: &CommandConfig) -> Value {
    json!({
        "command": c.command,
        "env": c.env.keys().collect::<Vec<_>>(),
        "cwd": c.cwd.as_ref().map(|p| p.display().to_string()),
        "path": c.path,
        "health_path": c.health_path,
        "min_instances": c.min_instances,
        "max_instances": c.max_instances,
        "instance_concurrency": c.instance_concurrency,
        "idle_timeout": human(c.idle_timeout),
        "startup_timeout": human(c.startup_timeout),
    })
}

fn instances(view: &PoolView) -> Value {
    view.instances
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "pid": i.pid,
                "port": i.port,
                "state": i.state,
                "in_flight": i.in_flight,
                "started_at": rfc3339(i.started_at),
            })
        })
        .collect()
}

fn cold_starts(view: &PoolView) -> Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    json!({
        "count": view.cold_starts,
        "last_ms": ms(view.last_cold_start),
        "p50_ms": ms(view.p50_cold_start),
    })
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn jitter(j: Jitter) -> &'static str {
    match j {
        Jitter::Full => "full",
        Jitter::Equal => "equal",
        Jitter::Decorrelated => "decorrelated",
        Jitter::None => "none",
    }
}

/// The JSON built above, written down for the OpenAPI document.
pub(super) mod schema {
    #![allow(dead_code, reason = "schemas for the OpenAPI document; the JSON is built with `json!`")]

    use utoipa::ToSchema;

    /// Every function, in name order.
    #[derive(ToSchema)]
    pub(crate) struct FunctionList {
        items: Vec<Function>,
        /// Always null: the list is never paginated.
        next_cursor: Option<String>,
    }

    /// A function's configuration and live state. Durations are humantime (`30s`, `1m 30s`).
    #[derive(ToSchema)]
    pub(crate) struct Function {
        name: String,
        kind: Kind,
        /// The limit of one attempt.
        timeout: String,
        /// A sync invoke's whole deadline, retries included.
        sync_timeout: String,
        /// Attempts in flight at once, at most.
        concurrency: u32,
        retry: Retry,
        /// Attempts in flight now, on this node.
        in_flight: u32,
        /// Where a `url` function is called.
        #[schema(nullable = false)]
        url: Option<String>,
        /// How a `command` function is run.
        #[schema(nullable = false)]
        command: Option<Command>,
        /// The instances of a `command` function on this node.
        #[schema(nullable = false)]
        instances: Option<Vec<Instance>>,
        #[schema(nullable = false)]
        cold_starts: Option<ColdStarts>,
        /// `command` functions: attempts waiting for an instance.
        #[schema(nullable = false)]
        waiting: Option<u64>,
        /// `command` functions: the latest failed start or crash, with what the program printed.
        last_error: Option<String>,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub(crate) enum Kind {
        Url,
        Command,
    }

    /// The retry policy.
    #[derive(ToSchema)]
    pub(crate) struct Retry {
        max_attempts: u32,
        initial: String,
        max: String,
        multiplier: f64,
        jitter: Jitter,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub(crate) enum Jitter {
        Full,
        Equal,
        Decorrelated,
        None,
    }

    /// A `command` function's program. Its environment is shown by name only: values may be secrets.
    #[derive(ToSchema)]
    pub(crate) struct Command {
        command: Vec<String>,
        /// The names of the variables set.
        env: Vec<String>,
        cwd: Option<String>,
        /// The path each call is sent to.
        path: String,
        health_path: Option<String>,
        min_instances: u32,
        max_instances: u32,
        instance_concurrency: u32,
        idle_timeout: String,
        startup_timeout: String,
    }

    /// One running instance of a `command` function.
    #[derive(ToSchema)]
    pub(crate) struct Instance {
        id: u64,
        pid: Option<u32>,
        port: u16,
        state: InstanceState,
        in_flight: u32,
        #[schema(format = DateTime)]
        started_at: String,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub(crate) enum InstanceState {
        Starting,
        Ready,
        Stopping,
    }

    /// Cold starts of a `command` function on this node.
    #[derive(ToSchema)]
    pub(crate) struct ColdStarts {
        count: u64,
        last_ms: Option<f64>,
        p50_ms: Option<f64>,
    }
}
