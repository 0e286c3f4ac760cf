//! Moves asked for by people rather than attempts: cancel, redrive (one or many), discard.

use keel_core::clock::Millis;
use keel_core::invocation::{Invocation, Status};
use keel_core::store::ListFilter;
use keel_core::{Error, Result};

use super::notify::notify;
use super::ops::get;
use super::rows::{db_err, execute, query, Tx};

/// Moves one invocation from one of `from` to `to`, or explains why it cannot. The row is locked
/// first, so two nodes acting on the same invocation at once take turns.
async fn transition(
    tx: &Tx<'_>,
    id: &str,
    from: &[Status],
    to: Status,
    now: Millis,
    action: &str,
) -> Result<Invocation> {
    let found =
        query(tx, "SELECT status, function FROM invocations WHERE id = $1 FOR UPDATE", &[&id]).await.map_err(db_err)?;
    let Some(row) = found.first() else { return Err(Error::NotFound { what: "invocation", id: id.into() }) };
    let (status, function): (String, String) = (row.get(0), row.get(1));
    if !from.iter().any(|s| s.as_str() == status) {
        let allowed: Vec<_> = from.iter().map(|s| s.as_str()).collect();
        return Err(Error::InvalidState(format!(
            "cannot {action} invocation {id}: it is {status}, and only {} invocations can be",
            allowed.join(" or ")
        )));
    }
    let redrive = to == Status::Queued;
    execute(
        tx,
        "UPDATE invocations SET status = $1, updated_at = $2, \
         due_at = CASE WHEN $3 THEN $2::BIGINT ELSE NULL END, \
         redrives = redrives + CASE WHEN $3 THEN 1 ELSE 0 END, \
         budget_start = CASE WHEN $3 THEN attempt_count ELSE budget_start END, \
         error = CASE WHEN $3 THEN NULL ELSE error END, \
         last_delay_ms = CASE WHEN $3 THEN NULL ELSE last_delay_ms END \
         WHERE id = $4",
        &[&to.as_str(), &now, &redrive, &id],
    )
    .await
    .map_err(db_err)?;
    if redrive {
        notify(tx, std::slice::from_ref(&function)).await?;
    }
    get(tx, id).await?.ok_or_else(|| Error::NotFound { what: "invocation", id: id.into() })
}

pub(crate) async fn cancel(tx: &Tx<'_>, id: &str, now: Millis) -> Result<Invocation> {
    transition(tx, id, &[Status::Queued, Status::Retrying], Status::Cancelled, now, "cancel").await
}

pub(crate) async fn redrive(tx: &Tx<'_>, id: &str, now: Millis) -> Result<Invocation> {
    let step = query(tx, "SELECT workflow_step FROM invocations WHERE id = $1", &[&id]).await.map_err(db_err)?;
    let step = step.first().and_then(|r| r.get::<_, Option<String>>(0));
    if let Some(step) = step.as_deref().and_then(keel_core::workflow::StepRef::parse).filter(|w| !w.compensate) {
        return Err(crate::run_json::step_not_redriven(id, &step));
    }
    transition(tx, id, &[Status::Dead], Status::Queued, now, "redrive").await
}

pub(crate) async fn discard(tx: &Tx<'_>, id: &str, now: Millis) -> Result<Invocation> {
    transition(tx, id, &[Status::Dead], Status::Discarded, now, "discard").await
}

/// Redrives the newest dead invocations matching `filter`. Rows another node is redriving at
/// this moment are skipped, not waited for: each bulk redrive takes its own.
pub(crate) async fn redrive_matching(tx: &Tx<'_>, filter: &ListFilter, now: Millis) -> Result<Vec<Invocation>> {
    let limit = filter.page_size() as i64;
    let ids = query(
        tx,
        "SELECT id FROM invocations WHERE status = 'dead' AND ($1::TEXT IS NULL OR function = $1) \
         AND ($2::TEXT IS NULL OR subscription = $2) AND ($4::TEXT IS NULL OR id < $4) \
         AND (workflow_step IS NULL OR workflow_step LIKE '%/compensate') \
         ORDER BY id DESC LIMIT $3 FOR UPDATE SKIP LOCKED",
        &[&filter.function, &filter.subscription, &limit, &filter.cursor],
    )
    .await
    .map_err(db_err)?;
    let mut redriven = Vec::with_capacity(ids.len());
    for row in ids {
        let id: String = row.get(0);
        redriven.push(redrive(tx, &id, now).await?);
    }
    Ok(redriven)
}
