//! Workflow runs on PostgreSQL. A run starts with its first step's invocation, and moves on with
//! each step's completion (`ops::complete`) or an operator's cancel, in one transaction; the
//! version check makes a change decided on an older run a [`keel_core::Error::Stale`].

use keel_core::invocation::{CommitEffects, NewInvocation};
use keel_core::store::{Page, RunFilter, RunStarted, RunUpdate};
use keel_core::workflow::Run;
use keel_core::{Error, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::notify::notify;
use super::rows::{db_err, execute, is_unique_violation, query, Tx};
use super::{events, ops, transitions};
use crate::run_json::{stale, RunJson, RunRow, RUN_COLUMNS};

fn run_row(row: &Row) -> Result<RunRow> {
    let get = |e: tokio_postgres::Error| db_err(e);
    Ok(RunRow {
        id: row.try_get(0).map_err(get)?,
        workflow: row.try_get(1).map_err(get)?,
        status: row.try_get(2).map_err(get)?,
        idempotency_key: row.try_get(3).map_err(get)?,
        input: row.try_get(4).map_err(get)?,
        definition: row.try_get(5).map_err(get)?,
        steps: row.try_get(6).map_err(get)?,
        failed_step: row.try_get(7).map_err(get)?,
        error: row.try_get(8).map_err(get)?,
        cancel_requested: row.try_get(9).map_err(get)?,
        traceparent: row.try_get(10).map_err(get)?,
        created_at: row.try_get(11).map_err(get)?,
        updated_at: row.try_get(12).map_err(get)?,
        ended_at: row.try_get(13).map_err(get)?,
        version: row.try_get(14).map_err(get)?,
    })
}

async fn by_key(tx: &Tx<'_>, workflow: &str, key: &str) -> Result<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE workflow = $1 AND idempotency_key = $2");
    let rows = query(tx, &sql, &[&workflow, &key]).await.map_err(db_err)?;
    rows.first().map(|r| run_row(r)?.into_run()).transpose()
}

pub(crate) async fn start(tx: &Tx<'_>, run: Run, first: NewInvocation) -> Result<RunStarted> {
    if let Some(key) = &run.idempotency_key {
        if let Some(existing) = by_key(tx, &run.workflow, key).await? {
            return Ok(RunStarted::Existing(existing));
        }
    }
    let json = RunJson::of(&run);
    let inserted = execute(
        tx,
        &format!(
            "INSERT INTO workflow_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15) ON CONFLICT (workflow, idempotency_key) DO NOTHING"
        ),
        &[
            &run.id,
            &run.workflow,
            &run.status.as_str(),
            &run.idempotency_key,
            &json.input,
            &json.definition,
            &json.steps,
            &run.failed_step,
            &run.error,
            &run.cancel_requested,
            &run.traceparent,
            &run.created_at,
            &run.updated_at,
            &run.ended_at,
            &(run.version as i64),
        ],
    )
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => Error::InvalidState(format!("workflow run {} already exists", run.id)),
        false => db_err(e),
    })?;
    if inserted == 0 {
        // Another node started a run with the same key since the look above.
        let key = run.idempotency_key.as_deref().unwrap_or_default();
        let existing = by_key(tx, &run.workflow, key).await?;
        return existing.map(RunStarted::Existing).ok_or_else(|| Error::Unavailable("workflow run key raced".into()));
    }
    let function = first.function.clone();
    ops::insert(tx, &first.into_stored()).await?;
    notify(tx, std::slice::from_ref(&function)).await?;
    Ok(RunStarted::Started(run))
}

pub(crate) async fn get(tx: &Tx<'_>, id: &str) -> Result<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1");
    let rows = query(tx, &sql, &[&id]).await.map_err(db_err)?;
    rows.first().map(|r| run_row(r)?.into_run()).transpose()
}

pub(crate) async fn list(tx: &Tx<'_>, filter: &RunFilter) -> Result<Page<Run>> {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE TRUE");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(w) = &filter.workflow {
        args.push(Box::new(w.clone()));
        sql.push_str(&format!(" AND workflow = ${}", args.len()));
    }
    if let Some(s) = filter.status {
        args.push(Box::new(s.as_str().to_owned()));
        sql.push_str(&format!(" AND status = ${}", args.len()));
    }
    if let Some(c) = &filter.cursor {
        args.push(Box::new(c.clone()));
        sql.push_str(&format!(" AND id < ${}", args.len()));
    }
    let size = filter.page_size();
    args.push(Box::new(size as i64 + 1));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows = query(tx, &sql, &params).await.map_err(db_err)?;
    let items = rows.iter().map(|r| run_row(r)?.into_run()).collect::<Result<Vec<Run>>>()?;
    Ok(Page::from_overfetched(items, size, |r| &r.id))
}

/// Applies a run's change: the invocation it cancels, the run (if still at the version the
/// change was decided on), the invocation it starts and the events it publishes.
pub(crate) async fn apply(tx: &Tx<'_>, update: &RunUpdate) -> Result<()> {
    let run = &update.run;
    let now = run.updated_at;
    if let Some(id) = &update.cancel_invocation {
        transitions::cancel(tx, id, now).await?;
    }
    let json = RunJson::of(run);
    let changed = execute(
        tx,
        "UPDATE workflow_runs SET status = $1, steps = $2, failed_step = $3, error = $4, cancel_requested = $5, \
         updated_at = $6, ended_at = $7, version = $8 WHERE id = $9 AND version = $10",
        &[
            &run.status.as_str(),
            &json.steps,
            &run.failed_step,
            &run.error,
            &run.cancel_requested,
            &run.updated_at,
            &run.ended_at,
            &(run.version as i64),
            &run.id,
            &(update.expected_version as i64),
        ],
    )
    .await
    .map_err(db_err)?;
    if changed == 0 {
        return Err(stale(&run.id, update.expected_version));
    }
    if let Some(start) = &update.start {
        ops::insert(tx, &start.clone().into_stored()).await?;
        notify(tx, std::slice::from_ref(&start.function)).await?;
    }
    if !update.events.is_empty() {
        events::apply(tx, Some(&CommitEffects { kv: Vec::new(), events: update.events.clone() }), now).await?;
    }
    Ok(())
}
