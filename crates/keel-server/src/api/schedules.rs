//! `GET /v1/schedules` and `GET /v1/schedules/{name}`: each schedule's configuration with its
//! next and last fire; `POST …/pause` and `…/resume`, stored for every node and audited.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keel_core::clock::rfc3339;
use keel_core::config::{ScheduleConfig, ScheduleTarget};
use keel_core::schedule::Cadence;
use keel_core::store::ScheduleState;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::state::Shared;

/// Every schedule, with its next and last fire.
///
/// In name order. A short list: never paginated, but in the list shape so clients handle it
/// like the others.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "listSchedules",
    responses(
        (status = 200, description = "Every configured schedule.", body = ScheduleList),
        (status = 503, description = super::openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<ScheduleList>, Problem> {
    let states = shared.store.schedules().await?;
    let now = shared.clock.now_ms();
    let items = shared.config.schedules.values().map(|s| view(s, state_of(&states, &s.name), now)).collect();
    Ok(Json(ScheduleList { items, next_cursor: None }))
}

/// One schedule, with its next and last fire.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    operation_id = "getSchedule",
    params(("name" = String, Path, description = "The schedule.")),
    responses(
        (status = 200, description = "The schedule.", body = ScheduleView),
        (status = 404, description = "No schedule of that name is configured (`unknown-schedule`)."),
        (status = 503, description = super::openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    let schedule = shared.config.schedules.get(&name).ok_or_else(|| unknown_schedule(&name))?;
    let states = shared.store.schedules().await?;
    Ok(Json(view(schedule, state_of(&states, &name), shared.clock.now_ms())))
}

/// Pause a schedule: its ticks make nothing until resumed.
///
/// Stored, so it holds across restarts and on every node. The ticks that pass while paused are
/// neither fired nor counted as missed, nor caught up on resume. Invocations a tick already
/// made are not touched. Pausing a paused schedule changes nothing.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    tag = "schedules",
    operation_id = "pauseSchedule",
    params(("name" = String, Path, description = "The schedule.")),
    responses(
        (status = 200, description = "Paused: the schedule as it is now.", body = ScheduleView),
        (status = 404, description = "No schedule of that name is configured (`unknown-schedule`)."),
        (status = 503, description = super::openapi::UNAVAILABLE_OR_DRAINING, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn pause(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    set_paused(shared, actor, name, true).await
}

/// Resume a paused schedule: it fires from its next tick on.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    tag = "schedules",
    operation_id = "resumeSchedule",
    params(("name" = String, Path, description = "The schedule.")),
    responses(
        (status = 200, description = "Resumed: the schedule as it is now.", body = ScheduleView),
        (status = 404, description = "No schedule of that name is configured (`unknown-schedule`)."),
        (status = 503, description = super::openapi::UNAVAILABLE_OR_DRAINING, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn resume(
    State(shared): State<Arc<Shared>>,
    actor: super::access::Actor,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    set_paused(shared, actor, name, false).await
}

async fn set_paused(
    shared: Arc<Shared>,
    actor: super::access::Actor,
    name: String,
    paused: bool,
) -> Result<Json<ScheduleView>, Problem> {
    if !shared.config.schedules.contains_key(&name) {
        return Err(unknown_schedule(&name));
    }
    let now = shared.clock.now_ms();
    // In a task of its own: once stored, the audit line must follow even if the client left.
    let (shared2, name2) = (shared.clone(), name.clone());
    super::admit_fully(async move {
        shared2.store.set_schedule_paused(&name2, paused, now).await?;
        tracing::info!(schedule = %name2, paused, "schedule {}", if paused { "paused" } else { "resumed" });
        let action = if paused { "schedule.pause" } else { "schedule.resume" };
        actor.record(&shared2, action, &name2, serde_json::json!({ "paused": paused })).await;
        Ok(())
    })
    .await?;
    let states = shared.store.schedules().await?;
    Ok(Json(view(&shared.config.schedules[&name], state_of(&states, &name), shared.clock.now_ms())))
}

fn unknown_schedule(name: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-schedule",
        "Unknown schedule",
        format!("no schedule named {name:?} is configured"),
    )
}

fn state_of<'a>(states: &'a [ScheduleState], name: &str) -> Option<&'a ScheduleState> {
    states.iter().find(|s| s.name == name)
}

fn view(schedule: &ScheduleConfig, state: Option<&ScheduleState>, now: i64) -> ScheduleView {
    let (cron, timezone, every) = match &schedule.cadence {
        Cadence::Cron { pattern, zone_name, .. } => (Some(pattern.clone()), Some(zone_name.clone()), None),
        Cadence::Every { period_ms } => {
            let period = std::time::Duration::from_millis(*period_ms as u64);
            (None, None, Some(humantime::format_duration(period).to_string()))
        }
    };
    let target = match &schedule.target {
        ScheduleTarget::Function(f) => TargetView { function: Some(f.clone()), topic: None },
        ScheduleTarget::Topic(t) => TargetView { function: None, topic: Some(t.clone()) },
    };
    let paused_at = state.and_then(|s| s.paused_at);
    ScheduleView {
        name: schedule.name.clone(),
        cron,
        every,
        timezone,
        target,
        missed: schedule.missed.as_str(),
        paused: paused_at.is_some(),
        paused_at: paused_at.map(rfc3339),
        next_fire: if paused_at.is_some() { None } else { schedule.cadence.next_after(now).map(rfc3339) },
        last_fire: state.and_then(|s| s.last_fired).map(rfc3339),
    }
}

/// Every schedule, in name order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleList {
    items: Vec<ScheduleView>,
    /// Always null: the list is never paginated.
    next_cursor: Option<String>,
}

/// A schedule: when it ticks, what each tick makes, and its state (every node's). Times are
/// RFC 3339 UTC.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleView {
    name: String,
    /// The cron pattern (5 fields, or 6 with seconds first); null for an `every` schedule.
    cron: Option<String>,
    /// The period (humantime, counted from the Unix epoch); null for a `cron` schedule.
    every: Option<String>,
    /// The IANA time zone the cron pattern is read in; null for an `every` schedule.
    timezone: Option<String>,
    target: TargetView,
    /// `skip` or `run_once`: what happens to ticks missed while no node ran.
    #[schema(example = "skip")]
    missed: &'static str,
    paused: bool,
    paused_at: Option<String>,
    /// The next tick; null while paused (or when the pattern never matches again).
    next_fire: Option<String>,
    /// The latest tick that made its invocation or event; null before the first.
    last_fire: Option<String>,
}

/// What each tick makes: an async invocation of `function`, or an event on `topic`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TargetView {
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
}
