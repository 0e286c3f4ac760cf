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

/// `GET /v1/functions`: every function, in name order (a short list: never paginated, but in
/// the list shape so clients handle it like the others).
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let items: Vec<Value> = shared.functions.iter().map(|f| function(&shared, f)).collect();
    Json(json!({ "items": items, "next_cursor": null }))
}

/// `GET /v1/functions/{name}`
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
