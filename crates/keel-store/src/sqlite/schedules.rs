//! The schedules table on SQLite. Writes run on the writer thread, each in the writer's
//! transaction: a tick is taken and its work stored together, or neither.

use keel_core::clock::Millis;
use keel_core::store::{ScheduleState, Tick, TickTaken, TickWork};
use keel_core::Result;
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::db_err;
use super::{events, ops};

pub(crate) fn arm(conn: &Connection, names: &[String], now: Millis) -> Result<()> {
    let mut st = conn
        .prepare_cached("INSERT INTO schedules (name, armed_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
        .map_err(db_err)?;
    for name in names {
        st.execute(params![name, now]).map_err(db_err)?;
    }
    Ok(())
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<ScheduleState>> {
    conn.prepare_cached("SELECT name, last_tick, last_fired, armed_at, paused_at FROM schedules ORDER BY name")
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok(ScheduleState {
                    name: r.get(0)?,
                    last_tick: r.get(1)?,
                    last_fired: r.get(2)?,
                    armed_at: r.get(3)?,
                    paused_at: r.get(4)?,
                })
            })?
            .collect()
        })
        .map_err(db_err)
}

/// Moves the schedule's last tick to `tick.at` unless it is paused or there already (or past),
/// then stores the tick's work.
pub(crate) fn take(conn: &Connection, tick: Tick) -> Result<TickTaken> {
    let fired = tick.work.as_ref().map(|_| tick.at);
    let moved = conn
        .prepare_cached(
            "INSERT INTO schedules (name, armed_at, last_tick, last_fired) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick, \
             last_fired = COALESCE(excluded.last_fired, schedules.last_fired) \
             WHERE schedules.paused_at IS NULL AND (schedules.last_tick IS NULL OR schedules.last_tick < excluded.last_tick)",
        )
        .and_then(|mut st| st.execute(params![tick.schedule, tick.now, tick.at, fired]))
        .map_err(db_err)?;
    if moved == 0 {
        let paused: Option<Option<Millis>> = conn
            .prepare_cached("SELECT paused_at FROM schedules WHERE name = ?")
            .and_then(|mut st| st.query_row([&tick.schedule], |r| r.get(0)).optional())
            .map_err(db_err)?;
        return Ok(match paused.flatten() {
            Some(_) => TickTaken::Paused,
            None => TickTaken::AlreadyTaken,
        });
    }
    match tick.work {
        Some(TickWork::Invocation(new)) => drop(ops::enqueue(conn, new)?),
        Some(TickWork::Event(event)) => drop(events::publish(conn, vec![event])?),
        None => {}
    }
    Ok(TickTaken::Taken)
}

pub(crate) fn set_paused(conn: &Connection, name: &str, paused: bool, now: Millis) -> Result<()> {
    match paused {
        true => conn
            .prepare_cached(
                "INSERT INTO schedules (name, armed_at, paused_at) VALUES (?1, ?2, ?2) \
                 ON CONFLICT (name) DO UPDATE SET paused_at = COALESCE(schedules.paused_at, excluded.paused_at)",
            )
            .and_then(|mut st| st.execute(params![name, now])),
        false => conn
            .prepare_cached(
                "UPDATE schedules SET paused_at = NULL, armed_at = ?1 WHERE name = ?2 AND paused_at IS NOT NULL",
            )
            .and_then(|mut st| st.execute(params![now, name])),
    }
    .map_err(db_err)?;
    Ok(())
}
