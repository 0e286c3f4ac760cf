//! The schedules table on PostgreSQL. Every node runs a scheduler: taking a tick is one upsert
//! that moves the schedule's last tick forward only if no node has moved it there yet (the row
//! lock makes a second node wait, then find it taken), in the transaction that stores the
//! tick's work.

use keel_core::clock::Millis;
use keel_core::store::{ScheduleState, Tick, TickTaken, TickWork};
use keel_core::Result;

use super::notify::notify;
use super::rows::{db_err, execute, query, Tx};
use super::{events, ops};

pub(crate) async fn arm(tx: &Tx<'_>, names: &[String], now: Millis) -> Result<()> {
    execute(
        tx,
        "INSERT INTO schedules (name, armed_at) SELECT n, $2 FROM unnest($1::TEXT[]) AS n \
         ON CONFLICT (name) DO NOTHING",
        &[&names, &now],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn list(tx: &Tx<'_>) -> Result<Vec<ScheduleState>> {
    let rows = query(tx, "SELECT name, last_tick, last_fired, armed_at, paused_at FROM schedules ORDER BY name", &[])
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(ScheduleState {
                name: r.try_get(0).map_err(db_err)?,
                last_tick: r.try_get(1).map_err(db_err)?,
                last_fired: r.try_get(2).map_err(db_err)?,
                armed_at: r.try_get(3).map_err(db_err)?,
                paused_at: r.try_get(4).map_err(db_err)?,
            })
        })
        .collect()
}

pub(crate) async fn take(tx: &Tx<'_>, tick: &Tick) -> Result<TickTaken> {
    let fired = tick.work.as_ref().map(|_| tick.at);
    let moved = query(
        tx,
        "INSERT INTO schedules (name, armed_at, last_tick, last_fired) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick, \
         last_fired = COALESCE(excluded.last_fired, schedules.last_fired) \
         WHERE schedules.paused_at IS NULL AND (schedules.last_tick IS NULL OR schedules.last_tick < excluded.last_tick) \
         RETURNING name",
        &[&tick.schedule, &tick.now, &tick.at, &fired],
    )
    .await
    .map_err(db_err)?;
    if moved.is_empty() {
        let paused =
            query(tx, "SELECT paused_at FROM schedules WHERE name = $1", &[&tick.schedule]).await.map_err(db_err)?;
        let paused_at: Option<Millis> = paused.first().map(|r| r.try_get(0)).transpose().map_err(db_err)?.flatten();
        return Ok(match paused_at {
            Some(_) => TickTaken::Paused,
            None => TickTaken::AlreadyTaken,
        });
    }
    match &tick.work {
        Some(TickWork::Invocation(new)) => {
            ops::insert(tx, &new.clone().into_stored()).await?;
            notify(tx, std::slice::from_ref(&new.function)).await?;
        }
        Some(TickWork::Event(event)) => drop(events::publish(tx, std::slice::from_ref(event)).await?),
        None => {}
    }
    Ok(TickTaken::Taken)
}

pub(crate) async fn set_paused(tx: &Tx<'_>, name: &str, paused: bool, now: Millis) -> Result<()> {
    let sql = match paused {
        true => {
            "INSERT INTO schedules (name, armed_at, paused_at) VALUES ($1, $2, $2) \
             ON CONFLICT (name) DO UPDATE SET paused_at = COALESCE(schedules.paused_at, excluded.paused_at)"
        }
        false => "UPDATE schedules SET paused_at = NULL, armed_at = $2 WHERE name = $1 AND paused_at IS NOT NULL",
    };
    execute(tx, sql, &[&name, &now]).await.map_err(db_err)?;
    Ok(())
}
