//! The statements behind each store operation; each runs on one connection, inside the writer's
//! transaction for writes.

use keel_core::clock::Millis;
use keel_core::invocation::{Attempt, CommitEffects, Completion, Invocation, NewInvocation, Status, Transition};
use keel_core::store::{KeyLimit, LeaseRequest, Leased, ListFilter, Page, Reclaim};
use keel_core::{Error, Result};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::events;
use super::rows::{self, db_err, encode_headers, MultiInsert, INVOCATION_COLUMNS};
use crate::first_attempt;
use crate::key_budget::KeyBudget;

pub(crate) fn enqueue(conn: &Connection, new: NewInvocation) -> Result<Invocation> {
    let inv = new.into_stored();
    insert(conn, &inv)?;
    Ok(inv)
}

/// A bulk admission: every invocation or (on the first that cannot be stored) an error, which
/// rolls the job back whole. The rows go in multi-row statements ([`MultiInsert`]).
pub(crate) fn enqueue_all(conn: &Connection, news: Vec<NewInvocation>) -> Result<Vec<Invocation>> {
    let invs: Vec<Invocation> = news.into_iter().map(NewInvocation::into_stored).collect();
    insert_all(conn, &invs)?;
    Ok(invs)
}

/// Stores the rows of `invs`, many a statement, and the payloads kept apart from them.
fn insert_all(conn: &Connection, invs: &[Invocation]) -> Result<()> {
    INVOCATIONS.run(conn, invs, bind_invocation, |e, chunk| insert_refused(conn, e, chunk))?;
    // Collected without allocating when none is kept apart (the common case).
    let apart: Vec<&Invocation> = invs.iter().filter(kept_apart).collect();
    if !apart.is_empty() {
        PAYLOADS.run(
            conn,
            &apart,
            |st, at, inv| rows::bind_values(st, at, params![inv.id, &inv.payload[..]]),
            |e, _| db_err(e),
        )?;
    }
    Ok(())
}

/// Invocation rows, many a statement.
pub(super) static INVOCATIONS: MultiInsert = MultiInsert::new(INSERT_INTO, INVOCATION_PARAMS);

/// Payloads kept apart from their rows ([`kept_apart`]), many a statement.
static PAYLOADS: MultiInsert = MultiInsert::new("INSERT INTO invocation_payloads (id, payload)", 2);

/// Payloads longer than this are kept apart from their invocation's row, if it will change.
const PAYLOAD_INLINE_MAX: usize = 512;

/// Whether `inv`'s payload goes to `invocation_payloads`, its row holding an empty one. SQLite
/// writes a row whole whenever its length changes, and every step of an invocation (leased,
/// completed, retried) changes it: a payload in the row was written again each time, 18 KiB of
/// WAL for a 16 KB payload's completion against 1 KiB without it (BENCHMARKS.md, "Payloads
/// apart from their rows"). A row already final (a finished sync call's record) never changes,
/// and a small payload costs less in the row than a second B-tree's entry.
fn kept_apart(inv: &&Invocation) -> bool {
    inv.payload.len() > PAYLOAD_INLINE_MAX && !inv.status.is_final()
}

/// What refused an insert of `chunk`: an id already stored (or twice in it) is named.
fn insert_refused(conn: &Connection, e: rusqlite::Error, chunk: &[Invocation]) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            // The statement wrote none of its rows: the id is one stored before, or one twice in it.
            let stored = |id: &str| {
                conn.prepare_cached("SELECT 1 FROM invocations WHERE id = ?")
                    .and_then(|mut st| st.exists([id]))
                    .unwrap_or(false)
            };
            let twice = |i: usize| chunk[..i].iter().any(|earlier| earlier.id == chunk[i].id);
            let culprit = (0..chunk.len()).find(|&i| twice(i) || stored(&chunk[i].id)).unwrap_or(0);
            Error::InvalidState(format!("invocation {} already exists", chunk[culprit].id))
        }
        e => db_err(e),
    }
}

pub(crate) fn record_finished(conn: &Connection, inv: &Invocation, effects: Option<&CommitEffects>) -> Result<()> {
    events::apply(conn, effects, inv.updated_at)?;
    record_finished_all(conn, std::slice::from_ref(inv))
}

/// Finished sync invocations without effects, and their attempts: many rows a statement. A
/// refused row refuses them all (the writer rolls the job back). A first success is kept in its
/// invocation's row ([`first_attempt::kept_in_row`]); only other attempts go to `attempts`.
pub(crate) fn record_finished_all(conn: &Connection, invs: &[Invocation]) -> Result<()> {
    insert_all(conn, invs)?;
    rows::insert_attempts(conn, &first_attempt::kept_apart(invs))
}

/// The columns of an invocation row, in the order [`bind_invocation`] binds them.
const INSERT_INTO: &str =
    "INSERT INTO invocations (id, function, status, payload, content_type, created_at, updated_at, \
         due_at, attempt_count, budget_start, redrives, last_delay_ms, result_status, result_content_type, \
         result, error, idempotency_key, traceparent, sync, lease_owner, leased_at, lease_expires_at, \
         subscription, event_id, headers, ordering_key, hops, concurrency_key, workflow_step, first_started_at, \
         first_ended_at)";

/// The values of one row of [`INSERT_INTO`].
const INVOCATION_PARAMS: usize = 31;

pub(crate) fn insert(conn: &Connection, inv: &Invocation) -> Result<()> {
    insert_all(conn, std::slice::from_ref(inv))
}

/// Binds the row of `inv` to parameters `at + 1 ..= at + INVOCATION_PARAMS` of `st`.
fn bind_invocation(st: &mut rusqlite::Statement<'_>, at: usize, inv: &Invocation) -> rusqlite::Result<()> {
    let response = inv.response.as_ref();
    let delivery = inv.delivery.as_ref();
    let in_row = first_attempt::in_row(inv);
    let values: &[&dyn rusqlite::ToSql] = params![
        inv.id,
        inv.function,
        inv.status.as_str(),
        if kept_apart(&inv) { &[][..] } else { &inv.payload[..] },
        inv.content_type,
        inv.created_at,
        inv.updated_at,
        inv.due_at,
        inv.attempt_count,
        inv.budget_start,
        inv.redrives,
        inv.last_delay_ms,
        response.map(|r| r.status),
        response.and_then(|r| r.content_type.as_deref()),
        response.map(|r| &r.body[..]),
        inv.error,
        inv.idempotency_key,
        inv.traceparent,
        inv.sync,
        inv.lease.as_ref().map(|l| &l.owner),
        inv.lease.as_ref().map(|l| l.leased_at),
        inv.lease.as_ref().map(|l| l.expires_at),
        delivery.map(|d| &d.subscription),
        delivery.map(|d| &d.event_id),
        delivery.map(|d| encode_headers(&d.headers)),
        delivery.and_then(|d| d.ordering_key.as_ref()),
        delivery.map_or(0, |d| d.hops),
        inv.concurrency_key,
        inv.workflow.as_ref().map(|w| w.key()),
        in_row.map(|a| a.started_at),
        in_row.map(|a| a.ended_at),
    ];
    debug_assert_eq!(values.len(), INVOCATION_PARAMS);
    rows::bind_values(st, at, values)
}

/// The condition on a candidate `c` that it does not wait behind another delivery of its ordering
/// key: one published earlier and not finished, or any that is running (an earlier one redriven
/// from the DLQ while a later one runs waits for it, never runs beside it).
/// Its statuses are written as the partial index `invocations_ordering` states them, which the
/// subquery reads: as ORs, not an `IN` list (schema.rs, the last migration).
pub(super) const NOT_WAITING: &str = "(c.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM invocations AS o \
     WHERE o.ordering_key = c.ordering_key AND o.rowid <> c.rowid \
     AND (o.status = 'queued' OR o.status = 'running' OR o.status = 'retrying') \
     AND (o.rowid < c.rowid OR o.status = 'running')))";

pub(crate) fn lease(conn: &Connection, req: &LeaseRequest) -> Result<Leased> {
    if let Some(keys) = &req.keys {
        return lease_keyed(conn, req, keys);
    }
    let mut invocations = Vec::new();
    if req.limit > 0 {
        let sql = format!(
            "UPDATE invocations SET status = 'running', lease_owner = ?1, leased_at = ?2, \
             lease_expires_at = ?3, updated_at = ?2 \
             WHERE id IN (SELECT id FROM invocations AS c WHERE function = ?4 \
               AND status IN ('queued', 'retrying') AND due_at <= ?2 AND {NOT_WAITING} \
               ORDER BY due_at LIMIT ?5) \
             RETURNING {INVOCATION_COLUMNS}"
        );
        let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
        let found = st
            .query_map(params![req.owner, req.now, req.expires_at, req.function, req.limit as i64], rows::invocation)
            .map_err(db_err)?;
        for inv in found {
            invocations.push(inv.map_err(db_err)?);
        }
        // RETURNING gives no order guarantee: restore due order (ids break ties).
        invocations.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
    }
    // Due work the dispatcher could lease: an ordered delivery waiting behind an earlier one is
    // not (its predecessor's end wakes the dispatcher), else it would be woken at once, forever.
    let next_due_at = conn
        .prepare_cached(&format!(
            "SELECT due_at FROM invocations AS c WHERE function = ? AND status IN ('queued', 'retrying') \
             AND {NOT_WAITING} ORDER BY due_at LIMIT 1"
        ))
        .and_then(|mut st| st.query_row([&req.function], |r| r.get::<_, Millis>(0)).optional())
        .map_err(db_err)?;
    Ok(Leased { invocations, next_due_at })
}

/// The condition on a candidate `c` that its `concurrency_key` value is not at its limit: `?L`
/// is the limit, `?S` a JSON array of the values at it (with limit 0, every value is).
fn key_has_room(limit: &str, saturated: &str) -> String {
    format!(
        "(c.concurrency_key IS NULL OR ({limit} > 0 AND c.concurrency_key NOT IN (SELECT value FROM json_each({saturated}))))"
    )
}

/// A lease under a `concurrency_key` limit, in rounds (see `key_budget.rs`): values at their
/// limit are left out in SQL, so their backlog never hides other values' due work.
fn lease_keyed(conn: &Connection, req: &LeaseRequest, keys: &KeyLimit) -> Result<Leased> {
    let mut budget = KeyBudget::new(keys);
    let mut picked: Vec<String> = Vec::new();
    let round_sql = format!(
        "SELECT id, concurrency_key FROM invocations AS c WHERE function = ?1 \
         AND status IN ('queued', 'retrying') AND due_at <= ?2 AND {} AND {NOT_WAITING} \
         AND c.id NOT IN (SELECT value FROM json_each(?5)) ORDER BY due_at LIMIT ?6",
        key_has_room("?3", "?4")
    );
    while picked.len() < req.limit {
        let wanted = req.limit - picked.len();
        let saturated = json(&budget.saturated());
        let round: Vec<(String, Option<String>)> = conn
            .prepare_cached(&round_sql)
            .and_then(|mut st| {
                st.query_map(
                    params![req.function, req.now, budget.limit(), saturated, json(&picked), wanted as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect()
            })
            .map_err(db_err)?;
        let full = round.len() == wanted;
        let mut skipped = false;
        for (id, value) in round {
            match budget.take(value.as_deref()) {
                true => picked.push(id),
                false => skipped = true,
            }
        }
        if !(full && skipped) {
            break;
        }
    }
    let mut invocations = Vec::with_capacity(picked.len());
    if !picked.is_empty() {
        let sql = format!(
            "UPDATE invocations SET status = 'running', lease_owner = ?1, leased_at = ?2, \
             lease_expires_at = ?3, updated_at = ?2 WHERE id IN (SELECT value FROM json_each(?4)) \
             RETURNING {INVOCATION_COLUMNS}"
        );
        let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
        let found = st
            .query_map(params![req.owner, req.now, req.expires_at, json(&picked)], rows::invocation)
            .map_err(db_err)?;
        for inv in found {
            invocations.push(inv.map_err(db_err)?);
        }
        invocations.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
    }
    // Only values it could still take count: a full value's due work would wake the dispatcher
    // at once, forever; an attempt of it ending wakes the dispatcher instead.
    let next_due_at = conn
        .prepare_cached(&format!(
            "SELECT due_at FROM invocations AS c WHERE function = ?1 AND status IN ('queued', 'retrying') \
             AND {} AND {NOT_WAITING} ORDER BY due_at LIMIT 1",
            key_has_room("?2", "?3")
        ))
        .and_then(|mut st| {
            st.query_row(params![req.function, budget.limit(), json(&budget.saturated())], |r| r.get::<_, Millis>(0))
                .optional()
        })
        .map_err(db_err)?;
    Ok(Leased { invocations, next_due_at })
}

/// A JSON array of strings, for `json_each`.
fn json<S: AsRef<str>>(values: &[S]) -> String {
    serde_json::Value::Array(values.iter().map(|v| serde_json::Value::from(v.as_ref())).collect()).to_string()
}

/// Pauses (keeping the first `paused_at`) or resumes a function.
pub(crate) fn set_paused(conn: &Connection, function: &str, paused: bool, now: Millis) -> Result<()> {
    match paused {
        true => conn
            .prepare_cached(
                "INSERT INTO paused_functions (function, paused_at) VALUES (?, ?) ON CONFLICT (function) DO NOTHING",
            )
            .and_then(|mut st| st.execute(params![function, now])),
        false => conn
            .prepare_cached("DELETE FROM paused_functions WHERE function = ?")
            .and_then(|mut st| st.execute([function])),
    }
    .map_err(db_err)?;
    Ok(())
}

/// The paused functions with when each was paused, by name.
pub(crate) fn paused(conn: &Connection) -> Result<Vec<(String, Millis)>> {
    conn.prepare_cached("SELECT function, paused_at FROM paused_functions ORDER BY function")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db_err)
}

/// The statement that moves a running invocation on after an attempt, if the caller still holds
/// its lease.
pub(super) const COMPLETE_INVOCATION: &str = "UPDATE invocations SET status = ?1, due_at = ?2, \
     last_delay_ms = COALESCE(?3, last_delay_ms), error = ?4, attempt_count = attempt_count + ?5, updated_at = ?6, \
     lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL, \
     result_status = COALESCE(?7, result_status), \
     result_content_type = CASE WHEN ?7 IS NULL THEN result_content_type ELSE ?8 END, \
     result = CASE WHEN ?7 IS NULL THEN result ELSE ?9 END, \
     first_started_at = COALESCE(?13, first_started_at), first_ended_at = COALESCE(?14, first_ended_at) \
     WHERE id = ?10 AND status = 'running' AND lease_owner = ?11 AND attempt_count = ?12";

pub(crate) fn complete(conn: &Connection, c: &Completion) -> Result<()> {
    if c.effects.is_some() {
        // The lease is checked before effects are applied, so a node that lost it applies nothing.
        let held: bool = conn
            .prepare_cached(
                "SELECT count(*) FROM invocations WHERE id = ? AND status = 'running' AND lease_owner = ? \
                 AND attempt_count = ?",
            )
            .and_then(|mut st| st.query_row(params![c.id, c.owner, c.fence], |r| r.get::<_, i64>(0)))
            .map_err(db_err)?
            == 1;
        if held {
            events::apply(conn, c.effects.as_ref(), c.now)?;
        }
    }
    let mut update = conn.prepare_cached(COMPLETE_INVOCATION).map_err(db_err)?;
    if let Some(a) = move_on(&mut update, c)? {
        rows::insert_attempts(conn, &[(&c.id, a)])?;
    }
    // A step's end moves its run on in the same transaction, or nothing is written.
    if let Some(update) = &c.run {
        super::workflows::apply(conn, update)?;
    }
    Ok(())
}

/// The transition of `c`, with [`COMPLETE_INVOCATION`] prepared by the caller, and its attempt if
/// the row does not keep it ([`first_attempt::kept_in_row`]): the caller records that one in `attempts`. A
/// lease no longer held writes nothing ([`Error::LeaseLost`]).
fn move_on<'c>(update: &mut rusqlite::CachedStatement<'_>, c: &'c Completion) -> Result<Option<&'c Attempt>> {
    let counted = u32::from(c.attempt.is_some());
    let (status, due_at, delay, error, response) = match &c.next {
        Transition::Succeed { response } => (Status::Succeeded, None, None, None, Some(response)),
        Transition::Retry { due_at, delay_ms, error } => {
            (Status::Retrying, Some(*due_at), Some(*delay_ms), Some(error.as_str()), None)
        }
        Transition::Die { error, response } => (Status::Dead, None, None, Some(error.as_str()), response.as_ref()),
        Transition::Requeue => (Status::Queued, Some(c.now), None, None, None),
    };
    let in_row = c.attempt.as_ref().filter(|a| first_attempt::kept_in_row(status, a, response));
    let changed = update
        .execute(params![
            status.as_str(),
            due_at,
            delay,
            error,
            counted,
            c.now,
            response.map(|r| r.status),
            response.and_then(|r| r.content_type.as_deref()),
            response.map(|r| &r.body[..]),
            c.id,
            c.owner,
            c.fence,
            in_row.map(|a| a.started_at),
            in_row.map(|a| a.ended_at),
        ])
        .map_err(db_err)?;
    if changed == 0 {
        return Err(Error::LeaseLost(format!(
            "invocation {} is not leased by {}: the lease expired or was taken back",
            c.id, c.owner
        )));
    }
    Ok(if in_row.is_some() { None } else { c.attempt.as_ref() })
}

/// The completions of a batch call, each judged alone. A plain one (no effects, no run) needs no
/// savepoint: its only refusal, a lost lease, is found before it writes anything, and any other
/// error fails the whole job. One with effects or a run update may fail half-way (a
/// precondition, a stale run), so it runs inside a savepoint of its own.
pub(crate) fn complete_all(conn: &Connection, completions: &[Completion]) -> Result<Vec<Result<()>>> {
    let mut answers = Vec::with_capacity(completions.len());
    let mut update = conn.prepare_cached(COMPLETE_INVOCATION).map_err(db_err)?;
    // The plain ones' attempts go in together, many a statement, once their updates are made.
    let mut attempts: Vec<(&str, &Attempt)> = Vec::with_capacity(completions.len());
    for c in completions {
        if c.effects.is_none() && c.run.is_none() {
            answers.push(match move_on(&mut update, c) {
                Err(e @ Error::LeaseLost(_)) => Err(e),
                Err(e) => return Err(e),
                Ok(to_record) => {
                    attempts.extend(to_record.map(|a| (c.id.as_str(), a)));
                    Ok(())
                }
            });
            continue;
        }
        answers.push(savepoint(conn, || complete(conn, c))?);
    }
    rows::insert_attempts(conn, &attempts)?;
    Ok(answers)
}

/// Single admissions gathered by the writer (`writer::Coalesced`): their rows many a statement;
/// if that is refused, each alone, so that an admission refused refuses only itself. The outer
/// error (a savepoint that could not be set or undone) refuses them all.
pub(crate) fn enqueue_each(conn: &Connection, news: Vec<NewInvocation>) -> Result<Vec<Result<Invocation>>> {
    let invs: Vec<Invocation> = news.into_iter().map(NewInvocation::into_stored).collect();
    if invs.len() > 1 && savepoint(conn, || insert_all(conn, &invs))?.is_ok() {
        return Ok(invs.into_iter().map(Ok).collect());
    }
    // One row is one statement: refused, it wrote nothing.
    Ok(invs.into_iter().map(|inv| insert(conn, &inv).map(|()| inv)).collect())
}

/// Single completions gathered by the writer (`writer::Coalesced`): judged together as a batch
/// call's are ([`complete_all`]); if that fails as a whole, each alone. The outer error (a
/// savepoint that could not be set or undone) refuses them all.
pub(crate) fn complete_each(conn: &Connection, completions: Vec<Completion>) -> Result<Vec<Result<()>>> {
    if let Ok(answers) = savepoint(conn, || complete_all(conn, &completions))? {
        return Ok(answers);
    }
    completions.iter().map(|c| savepoint(conn, || complete(conn, c))).collect()
}

/// Runs `f` inside a savepoint: what it wrote stands if it succeeds and is undone if it fails.
/// The outer error: the savepoint itself failed (then what `f` wrote may stand).
fn savepoint<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<Result<T>> {
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut st| st.execute([])).map_err(db_err);
    run("SAVEPOINT each")?;
    let done = f();
    if done.is_err() {
        run("ROLLBACK TO each")?;
    }
    run("RELEASE each")?;
    Ok(done)
}

pub(crate) fn reclaim(conn: &Connection, scope: Reclaim, now: Millis) -> Result<Vec<String>> {
    let cutoff = match scope {
        Reclaim::All => Millis::MAX,
        Reclaim::ExpiredBefore(t) => t,
    };
    let sql = "SELECT id, function, attempt_count, leased_at, lease_owner, sync FROM invocations \
               WHERE status = 'running' AND lease_expires_at < ?";
    let expired: Vec<(String, String, u32, Millis, String, bool)> = conn
        .prepare_cached(sql)
        .and_then(|mut st| {
            st.query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
                .collect()
        })
        .map_err(db_err)?;
    let mut functions = Vec::new();
    for (id, function, attempt_count, leased_at, owner, sync) in expired {
        if sync {
            super::keys::interrupt_sync(conn, &id, attempt_count, leased_at, &owner, now)?;
            continue;
        }
        let attempt = Attempt::interrupted(attempt_count + 1, leased_at, now, &owner);
        let error = attempt.error.clone().unwrap_or_default();
        complete(
            conn,
            &Completion {
                id,
                owner,
                fence: attempt_count,
                now,
                attempt: Some(attempt),
                next: Transition::Retry { due_at: now, delay_ms: 0, error },
                effects: None,
                run: None,
            },
        )?;
        if !functions.contains(&function) {
            functions.push(function);
        }
    }
    functions.sort();
    Ok(functions)
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<Invocation>> {
    // The row's own attempt, if it keeps one ([`first_attempt::kept_in_row`]): then it has no other.
    let sql = format!("SELECT {INVOCATION_COLUMNS}, first_started_at, first_ended_at FROM invocations WHERE id = ?");
    let read = |row: &rusqlite::Row<'_>| {
        let inv = rows::invocation(row)?;
        let in_row = first_attempt::of_row((row.get(29)?, row.get(30)?), inv.response.as_ref().map(|r| r.status));
        Ok((inv, in_row))
    };
    let found = conn.prepare_cached(&sql).and_then(|mut st| st.query_row([id], read).optional()).map_err(db_err)?;
    let Some((mut inv, in_row)) = found else { return Ok(None) };
    if let Some(attempt) = in_row {
        inv.attempts.push(attempt);
        return Ok(Some(inv));
    }
    inv.attempts = conn
        .prepare_cached(
            "SELECT number, started_at, ended_at, outcome, http_status, error FROM attempts \
             WHERE invocation_id = ? ORDER BY number",
        )
        .and_then(|mut st| st.query_map([id], rows::attempt)?.collect())
        .map_err(db_err)?;
    Ok(Some(inv))
}

/// Waiting invocations (queued and retrying, of the function listed when there is one) up to
/// this many are listed from their own index and sorted; past it, as other statuses are.
pub(crate) const SORT_WAITING_UP_TO: usize = 10_000;

/// A partial index holding the rows of some statuses only: its name, its condition (a query
/// must state it for SQLite to use the index, or to let it be named), whether its rows are in
/// id order, and whether it can hold a large backlog.
struct Partial {
    index: &'static str,
    condition: &'static str,
    in_id_order: bool,
    backlog: bool,
}

/// The partial index of `status`'s rows, if it has one (the schema's `CREATE INDEX … WHERE`).
fn partial_index(status: Status) -> Option<Partial> {
    let (index, condition, in_id_order, backlog) = match status {
        // The lease sweeper's: as many rows as attempts in flight.
        Status::Running => ("invocations_leases", "status = 'running'", false, false),
        Status::Dead => ("invocations_dead", "status = 'dead'", true, false),
        // Endings few invocations reach.
        Status::Failed | Status::Cancelled | Status::Discarded => (
            "invocations_unsuccessful",
            "(status = 'failed' OR status = 'cancelled' OR status = 'discarded')",
            true,
            false,
        ),
        // The dispatcher's.
        Status::Queued | Status::Retrying => ("invocations_due", "status IN ('queued', 'retrying')", false, true),
        Status::Succeeded => return None,
    };
    Some(Partial { index, condition, in_id_order, backlog })
}

/// Where a list by `status` reads from. Without a hint SQLite walks the function's history
/// (`invocations_by_function`, or the table) newest first, reading each row for its status:
/// cheap for the statuses most invocations end in, whose rows it meets at once, but a walk of
/// the whole history for a status few or none are in — 29 ms a call at 110,000 invocations
/// here, growing with the history, for `GET /v1/invocations?function=f&status=queued` with
/// nothing queued (BENCHMARKS.md, "Lists by an open status"). Every status but `succeeded` has
/// a partial index that holds only its rows ([`partial_index`]); a backlog's (queued and
/// retrying) can be large: past [`SORT_WAITING_UP_TO`] of them, sorting them all costs more than
/// the walk, which then meets waiting rows soon. SQLite's planner does not choose these by
/// itself once the function is named (`function = ?` matches `invocations_by_function`
/// exactly), hence the `INDEXED BY`.
fn list_access(conn: &Connection, filter: &ListFilter, sort_up_to: usize) -> Result<Access> {
    let Some(partial) = filter.status.and_then(partial_index) else {
        return Ok(Access::Planner);
    };
    if partial.backlog {
        let (index, condition) = (partial.index, partial.condition);
        let over = (sort_up_to + 1) as i64;
        let count = |of_function: &str| {
            format!(
                "SELECT count(*) FROM (SELECT 1 FROM invocations INDEXED BY {index} \
                 WHERE {of_function}{condition} LIMIT ?)"
            )
        };
        let waiting: i64 = match &filter.function {
            Some(f) => conn
                .prepare_cached(&count("function = ? AND "))
                .and_then(|mut st| st.query_row(params![f, over], |row| row.get(0))),
            None => conn.prepare_cached(&count("")).and_then(|mut st| st.query_row([over], |row| row.get(0))),
        }
        .map_err(db_err)?;
        if waiting as usize > sort_up_to {
            return Ok(Access::Planner);
        }
    }
    Ok(Access::Index(partial))
}

/// How a list reads ([`list_access`]).
enum Access {
    /// From this partial index.
    Index(Partial),
    /// As SQLite's planner chooses.
    Planner,
}

pub(crate) fn list(conn: &Connection, filter: &ListFilter) -> Result<Page<Invocation>> {
    let (sql, args) = list_query(conn, filter, SORT_WAITING_UP_TO)?;
    let items: Vec<Invocation> = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_map(params_from_iter(args), rows::invocation)?.collect())
        .map_err(db_err)?;
    Ok(Page::from_overfetched(items, filter.page_size(), |i| &i.id))
}

/// The statement (and its arguments) that lists a page of `filter`, with waiting invocations
/// sorted from their index up to `sort_up_to` of them ([`list_access`]).
pub(crate) fn list_query(conn: &Connection, filter: &ListFilter, sort_up_to: usize) -> Result<(String, Vec<Value>)> {
    let access = list_access(conn, filter, sort_up_to)?;
    let mut conditions = String::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(f) = &filter.function {
        conditions.push_str(" AND function = ?");
        args.push(Value::Text(f.clone()));
    }
    if let Some(sub) = &filter.subscription {
        conditions.push_str(" AND subscription = ?");
        args.push(Value::Text(sub.clone()));
    }
    if let Some(s) = filter.status {
        // A literal, not a parameter: SQLite uses a partial index only for a condition it can
        // see when the statement is prepared. `Status` names are fixed words.
        let term = format!("status = '{}'", s.as_str());
        conditions.push_str(&format!(" AND {term}"));
        // The condition of the status's partial index, where this term is not already it, so
        // that the index can be used (and named).
        if let Some(partial) = partial_index(s).filter(|p| p.condition != term) {
            conditions.push_str(&format!(" AND {}", partial.condition));
        }
    }
    if let Some(c) = &filter.cursor {
        conditions.push_str(" AND id < ?");
        args.push(Value::Text(c.clone()));
    }
    args.push(Value::Integer(filter.page_size() as i64 + 1));
    let sql = match access {
        // An index out of id order: its rows are sorted by id, and only the ids (a sort of whole
        // rows would carry every payload), then the page's rows are read by id.
        Access::Index(Partial { index, in_id_order: false, .. }) => format!(
            "SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id IN (SELECT id FROM invocations \
             INDEXED BY {index} WHERE 1 = 1{conditions} ORDER BY id DESC LIMIT ?) ORDER BY id DESC"
        ),
        Access::Index(Partial { index, in_id_order: true, .. }) => format!(
            "SELECT {INVOCATION_COLUMNS} FROM invocations INDEXED BY {index} WHERE 1 = 1{conditions} \
             ORDER BY id DESC LIMIT ?"
        ),
        Access::Planner => {
            format!("SELECT {INVOCATION_COLUMNS} FROM invocations WHERE 1 = 1{conditions} ORDER BY id DESC LIMIT ?")
        }
    };
    Ok((sql, args))
}

/// Moves one invocation from one of `from` to `to`, or explains why it cannot.
fn transition(
    conn: &Connection,
    id: &str,
    from: &[Status],
    to: Status,
    now: Millis,
    action: &str,
) -> Result<Invocation> {
    let inv = get(conn, id)?.ok_or_else(|| Error::NotFound { what: "invocation", id: id.into() })?;
    if !from.contains(&inv.status) {
        let allowed: Vec<_> = from.iter().map(|s| s.as_str()).collect();
        return Err(Error::InvalidState(format!(
            "cannot {action} invocation {id}: it is {}, and only {} invocations can be",
            inv.status,
            allowed.join(" or ")
        )));
    }
    let redrive = to == Status::Queued;
    conn.prepare_cached(
        "UPDATE invocations SET status = ?1, updated_at = ?2, \
         due_at = CASE WHEN ?3 THEN ?2 ELSE NULL END, \
         redrives = redrives + ?3, budget_start = CASE WHEN ?3 THEN attempt_count ELSE budget_start END, \
         error = CASE WHEN ?3 THEN NULL ELSE error END, last_delay_ms = CASE WHEN ?3 THEN NULL ELSE last_delay_ms END \
         WHERE id = ?4",
    )
    .and_then(|mut st| st.execute(params![to.as_str(), now, redrive, id]))
    .map_err(db_err)?;
    get(conn, id)?.ok_or_else(|| Error::NotFound { what: "invocation", id: id.into() })
}

pub(crate) fn cancel(conn: &Connection, id: &str, now: Millis) -> Result<Invocation> {
    transition(conn, id, &[Status::Queued, Status::Retrying], Status::Cancelled, now, "cancel")
}

pub(crate) fn redrive(conn: &Connection, id: &str, now: Millis) -> Result<Invocation> {
    if let Some(step) = get(conn, id)?.and_then(|inv| inv.workflow).filter(|w| !w.compensate) {
        return Err(crate::run_json::step_not_redriven(id, &step));
    }
    transition(conn, id, &[Status::Dead], Status::Queued, now, "redrive")
}

pub(crate) fn discard(conn: &Connection, id: &str, now: Millis) -> Result<Invocation> {
    transition(conn, id, &[Status::Dead], Status::Discarded, now, "discard")
}

pub(crate) fn redrive_matching(conn: &Connection, filter: &ListFilter, now: Millis) -> Result<Vec<Invocation>> {
    let dead = ListFilter { status: Some(Status::Dead), ..filter.clone() };
    let page = list(conn, &dead)?;
    // A dead workflow step stays: its run compensated what came before it.
    let redrivable = page.items.iter().filter(|inv| inv.workflow.as_ref().is_none_or(|w| w.compensate));
    redrivable.map(|inv| redrive(conn, &inv.id, now)).collect()
}
