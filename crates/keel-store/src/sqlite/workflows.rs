//! Workflow runs on SQLite. A run starts with its first step's invocation, and moves on with
//! each step's completion (`ops::complete`) or an operator's cancel, in the writer's transaction.

use keel_core::invocation::{CommitEffects, NewInvocation};
use keel_core::store::{Page, RunFilter, RunStarted, RunUpdate};
use keel_core::workflow::Run;
use keel_core::{Error, Result};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::rows::db_err;
use super::{events, ops};
use crate::run_json::{stale, RunJson, RunRow, RUN_COLUMNS};

fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: row.get(0)?,
        workflow: row.get(1)?,
        status: row.get(2)?,
        idempotency_key: row.get(3)?,
        input: row.get(4)?,
        definition: row.get(5)?,
        steps: row.get(6)?,
        failed_step: row.get(7)?,
        error: row.get(8)?,
        cancel_requested: row.get(9)?,
        traceparent: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        ended_at: row.get(13)?,
        version: row.get(14)?,
    })
}

pub(crate) fn start(conn: &Connection, run: Run, first: NewInvocation) -> Result<RunStarted> {
    if let Some(key) = &run.idempotency_key {
        let sql = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE workflow = ? AND idempotency_key = ?");
        let existing = conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row(params![run.workflow, key], run_row).optional())
            .map_err(db_err)?;
        if let Some(existing) = existing {
            return Ok(RunStarted::Existing(existing.into_run()?));
        }
    }
    let json = RunJson::of(&run);
    conn.prepare_cached(&format!(
        "INSERT INTO workflow_runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .and_then(|mut st| {
        st.execute(params![
            run.id,
            run.workflow,
            run.status.as_str(),
            run.idempotency_key,
            json.input,
            json.definition,
            json.steps,
            run.failed_step,
            run.error,
            run.cancel_requested,
            run.traceparent,
            run.created_at,
            run.updated_at,
            run.ended_at,
            run.version as i64,
        ])
    })
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Error::InvalidState(format!("workflow run {} already exists", run.id))
        }
        e => db_err(e),
    })?;
    ops::insert(conn, &first.into_stored())?;
    Ok(RunStarted::Started(run))
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = ?");
    let row = conn.prepare_cached(&sql).and_then(|mut st| st.query_row([id], run_row).optional()).map_err(db_err)?;
    row.map(RunRow::into_run).transpose()
}

pub(crate) fn list(conn: &Connection, filter: &RunFilter) -> Result<Page<Run>> {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(w) = &filter.workflow {
        sql.push_str(" AND workflow = ?");
        args.push(Value::Text(w.clone()));
    }
    if let Some(s) = filter.status {
        sql.push_str(" AND status = ?");
        args.push(Value::Text(s.as_str().into()));
    }
    if let Some(c) = &filter.cursor {
        sql.push_str(" AND id < ?");
        args.push(Value::Text(c.clone()));
    }
    let size = filter.page_size();
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(size as i64 + 1));
    let rows: Vec<RunRow> = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_map(params_from_iter(args), run_row)?.collect())
        .map_err(db_err)?;
    let items = rows.into_iter().map(RunRow::into_run).collect::<Result<Vec<Run>>>()?;
    Ok(Page::from_overfetched(items, size, |r| &r.id))
}

/// Applies a run's change: the invocation it cancels, the run (if still at the version the
/// change was decided on), the invocation it starts and the events it publishes.
pub(crate) fn apply(conn: &Connection, update: &RunUpdate) -> Result<()> {
    let run = &update.run;
    let now = run.updated_at;
    if let Some(id) = &update.cancel_invocation {
        ops::cancel(conn, id, now)?;
    }
    let json = RunJson::of(run);
    let changed = conn
        .prepare_cached(
            "UPDATE workflow_runs SET status = ?1, steps = ?2, failed_step = ?3, error = ?4, cancel_requested = ?5, \
             updated_at = ?6, ended_at = ?7, version = ?8 WHERE id = ?9 AND version = ?10",
        )
        .and_then(|mut st| {
            st.execute(params![
                run.status.as_str(),
                json.steps,
                run.failed_step,
                run.error,
                run.cancel_requested,
                run.updated_at,
                run.ended_at,
                run.version as i64,
                run.id,
                update.expected_version as i64,
            ])
        })
        .map_err(db_err)?;
    if changed == 0 {
        return Err(stale(&run.id, update.expected_version));
    }
    if let Some(start) = &update.start {
        ops::insert(conn, &start.clone().into_stored())?;
    }
    if !update.events.is_empty() {
        events::apply(conn, Some(&CommitEffects { kv: Vec::new(), events: update.events.clone() }), now)?;
    }
    Ok(())
}
