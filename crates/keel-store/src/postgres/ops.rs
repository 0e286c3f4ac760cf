//! The statements behind each store operation; each runs inside a transaction the caller commits.
//! Enqueues and completions also have batched forms, in `writer.rs`.

use keel_core::clock::Millis;
use keel_core::invocation::{
    Attempt, CommitEffects, Completion, Delivery, Invocation, Lease, Status, StoredResponse, Transition,
};
use keel_core::store::{KeyLimit, LeaseRequest, Leased, ListFilter, Page, Reclaim};
use keel_core::{Error, Result};
use tokio_postgres::types::ToSql;

use super::events;
use super::nodes::DB_NOW_MS;
use super::notify::notify;
use super::rows::{self, db_err, encode_headers, execute, invocation_columns_of, query, Tx, INVOCATION_COLUMNS};
use crate::first_attempt;
use crate::key_budget::KeyBudget;

pub(crate) async fn record_finished(tx: &Tx<'_>, inv: &Invocation, effects: Option<&CommitEffects>) -> Result<()> {
    events::apply(tx, effects, inv.updated_at).await?;
    record_finished_all(tx, std::slice::from_ref(inv)).await
}

/// Finished sync invocations without effects (the records written behind their replies), and
/// their attempts: two statements whatever their number, one round trip each, where a statement
/// an invocation and one an attempt made a batch of 30 records cost 60 or more in turn. A row
/// refused (an id stored before, or twice in the batch) refuses them all: the caller's
/// transaction is rolled back.
///
/// A first success is kept in its invocation's row ([`first_attempt::kept_in_row`]): a batch of
/// such records, the usual one, needs no second statement.
pub(crate) async fn record_finished_all(tx: &Tx<'_>, invs: &[Invocation]) -> Result<()> {
    insert_all(tx, invs).await?;
    rows::insert_attempts(tx, &first_attempt::kept_apart(invs)).await.map_err(db_err)
}

/// Stores the row of `inv` (not its attempts).
pub(crate) async fn insert(tx: &Tx<'_>, inv: &Invocation) -> Result<()> {
    insert_all(tx, std::slice::from_ref(inv)).await
}

/// Stores the rows of `invs` (not their attempts) in one statement, in their order. A row
/// refused (an id stored before, or twice in `invs`) refuses them all.
pub(crate) async fn insert_all(tx: &Tx<'_>, invs: &[Invocation]) -> Result<()> {
    if invs.is_empty() {
        return Ok(());
    }
    let responses: Vec<Option<&StoredResponse>> = invs.iter().map(|i| i.response.as_ref()).collect();
    let leases: Vec<Option<&Lease>> = invs.iter().map(|i| i.lease.as_ref()).collect();
    let deliveries: Vec<Option<&Delivery>> = invs.iter().map(|i| i.delivery.as_ref()).collect();
    let ids: Vec<&str> = invs.iter().map(|i| i.id.as_str()).collect();
    let functions: Vec<&str> = invs.iter().map(|i| i.function.as_str()).collect();
    let statuses: Vec<&str> = invs.iter().map(|i| i.status.as_str()).collect();
    let payloads: Vec<&[u8]> = invs.iter().map(|i| &i.payload[..]).collect();
    let content_types: Vec<Option<&str>> = invs.iter().map(|i| i.content_type.as_deref()).collect();
    let created: Vec<i64> = invs.iter().map(|i| i.created_at).collect();
    let updated: Vec<i64> = invs.iter().map(|i| i.updated_at).collect();
    let due: Vec<Option<i64>> = invs.iter().map(|i| i.due_at).collect();
    let attempt_counts: Vec<i32> = invs.iter().map(|i| i.attempt_count as i32).collect();
    let budget_starts: Vec<i32> = invs.iter().map(|i| i.budget_start as i32).collect();
    let redrives: Vec<i32> = invs.iter().map(|i| i.redrives as i32).collect();
    let delays: Vec<Option<i64>> = invs.iter().map(|i| i.last_delay_ms.map(|d| d as i64)).collect();
    let result_statuses: Vec<Option<i32>> = responses.iter().map(|r| r.map(|r| i32::from(r.status))).collect();
    let result_types: Vec<Option<&str>> = responses.iter().map(|r| r.and_then(|r| r.content_type.as_deref())).collect();
    let results: Vec<Option<&[u8]>> = responses.iter().map(|r| r.map(|r| &r.body[..])).collect();
    let errors: Vec<Option<&str>> = invs.iter().map(|i| i.error.as_deref()).collect();
    let keys: Vec<Option<&str>> = invs.iter().map(|i| i.idempotency_key.as_deref()).collect();
    let traces: Vec<Option<&str>> = invs.iter().map(|i| i.traceparent.as_deref()).collect();
    let syncs: Vec<bool> = invs.iter().map(|i| i.sync).collect();
    let owners: Vec<Option<&str>> = leases.iter().map(|l| l.map(|l| l.owner.as_str())).collect();
    let leased_at: Vec<Option<i64>> = leases.iter().map(|l| l.map(|l| l.leased_at)).collect();
    let expires: Vec<Option<i64>> = leases.iter().map(|l| l.map(|l| l.expires_at)).collect();
    let subscriptions: Vec<Option<&str>> = deliveries.iter().map(|d| d.map(|d| d.subscription.as_str())).collect();
    let events: Vec<Option<&str>> = deliveries.iter().map(|d| d.map(|d| d.event_id.as_str())).collect();
    let headers: Vec<Option<String>> = deliveries.iter().map(|d| d.map(|d| encode_headers(&d.headers))).collect();
    let ordering: Vec<Option<&str>> = deliveries.iter().map(|d| d.and_then(|d| d.ordering_key.as_deref())).collect();
    let hops: Vec<i32> = deliveries.iter().map(|d| d.map_or(0, |d| d.hops as i32)).collect();
    let concurrency: Vec<Option<&str>> = invs.iter().map(|i| i.concurrency_key.as_deref()).collect();
    let steps: Vec<Option<String>> = invs.iter().map(|i| i.workflow.as_ref().map(|w| w.key())).collect();
    let in_row: Vec<Option<&Attempt>> = invs.iter().map(first_attempt::in_row).collect();
    let first_started: Vec<Option<i64>> = in_row.iter().map(|a| a.map(|a| a.started_at)).collect();
    let first_ended: Vec<Option<i64>> = in_row.iter().map(|a| a.map(|a| a.ended_at)).collect();
    // WITH ORDINALITY: the rows take their `seq` in the order given, as one insert each did.
    execute(
        tx,
        "INSERT INTO invocations (id, function, status, payload, content_type, created_at, updated_at, \
           due_at, attempt_count, budget_start, redrives, last_delay_ms, result_status, result_content_type, \
           result, error, idempotency_key, traceparent, sync, lease_owner, leased_at, lease_expires_at, \
           subscription, event_id, headers, ordering_key, hops, concurrency_key, workflow_step, first_started_at, \
           first_ended_at) \
         SELECT id, f, st, p, ct, c, u, d, ac, bs, rd, dl, rs, rt, r, e, k, tp, sy, lo, la, le, s, ev, h, o, hp, ck, ws, \
           fs, fe \
         FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BYTEA[], $5::TEXT[], $6::INT8[], $7::INT8[], \
           $8::INT8[], $9::INT4[], $10::INT4[], $11::INT4[], $12::INT8[], $13::INT4[], $14::TEXT[], $15::BYTEA[], \
           $16::TEXT[], $17::TEXT[], $18::TEXT[], $19::BOOL[], $20::TEXT[], $21::INT8[], $22::INT8[], $23::TEXT[], \
           $24::TEXT[], $25::TEXT[], $26::TEXT[], $27::INT4[], $28::TEXT[], $29::TEXT[], $30::INT8[], $31::INT8[]) \
           WITH ORDINALITY AS t(id, f, st, p, ct, c, u, d, ac, bs, rd, dl, rs, rt, r, e, k, tp, sy, lo, la, le, s, ev, \
           h, o, hp, ck, ws, fs, fe, n) \
         ORDER BY n",
        &[
            &ids,
            &functions,
            &statuses,
            &payloads,
            &content_types,
            &created,
            &updated,
            &due,
            &attempt_counts,
            &budget_starts,
            &redrives,
            &delays,
            &result_statuses,
            &result_types,
            &results,
            &errors,
            &keys,
            &traces,
            &syncs,
            &owners,
            &leased_at,
            &expires,
            &subscriptions,
            &events,
            &headers,
            &ordering,
            &hops,
            &concurrency,
            &steps,
            &first_started,
            &first_ended,
        ],
    )
    .await
    .map_err(|e| match rows::is_unique_violation(&e) {
        true => already_stored(invs, &e),
        false => db_err(e),
    })?;
    Ok(())
}

/// The error of rows refused for an id already stored: the id itself for one row, else what
/// PostgreSQL says (`Key (id)=(…) already exists.`).
fn already_stored(invs: &[Invocation], e: &tokio_postgres::Error) -> Error {
    Error::InvalidState(match invs {
        [inv] => format!("invocation {} already exists", inv.id),
        _ => format!(
            "an invocation of the batch already exists: {}",
            e.as_db_error().and_then(|d| d.detail()).unwrap_or("an id stored before, or twice in the batch")
        ),
    })
}

/// The condition on a candidate `c` that it does not wait behind another delivery of its ordering
/// key: one published earlier and not finished, or any that is running (an earlier one redriven
/// from the DLQ while a later one runs waits for it, never runs beside it).
const NOT_WAITING: &str = "(c.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM invocations AS o \
     WHERE o.ordering_key = c.ordering_key AND o.seq <> c.seq \
     AND o.status IN ('queued', 'running', 'retrying') AND (o.seq < c.seq OR o.status = 'running')))";

/// The condition that function `$n` is not paused: a one-time filter (an InitPlan probing the
/// tiny `paused_functions` table's primary key once per statement), not a per-row test.
fn not_paused(n: u8) -> String {
    format!("NOT EXISTS (SELECT 1 FROM paused_functions WHERE function = ${n})")
}

pub(crate) async fn lease(tx: &Tx<'_>, req: &LeaseRequest) -> Result<Leased> {
    if let Some(keys) = &req.keys {
        return lease_keyed(tx, req, keys).await;
    }
    let mut invocations = Vec::new();
    if req.limit > 0 {
        // SKIP LOCKED: nodes leasing the same function at once each take different rows instead
        // of queueing behind one another's row locks.
        let sql = format!(
            "WITH due AS (SELECT id FROM invocations AS c WHERE function = $4 AND status IN ('queued', 'retrying') \
               AND due_at <= $2 AND {NOT_WAITING} AND {} \
               ORDER BY due_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             UPDATE invocations AS i SET status = 'running', lease_owner = $1, leased_at = $2, \
               lease_expires_at = $3, updated_at = $2 FROM due WHERE i.id = due.id RETURNING {}",
            not_paused(4),
            invocation_columns_of("i")
        );
        let params: [&(dyn ToSql + Sync); 5] =
            [&req.owner, &req.now, &req.expires_at, &req.function, &(req.limit as i64)];
        for row in query(tx, &sql, &params).await.map_err(db_err)? {
            invocations.push(rows::invocation(&row)?);
        }
        // RETURNING gives no order guarantee: restore due order (ids break ties).
        invocations.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
    }
    // Due work the dispatcher could lease: an ordered delivery waiting behind an earlier one is
    // not (its predecessor's end wakes the dispatcher), else it would be woken at once, forever.
    let next = query(
        tx,
        &format!(
            "SELECT due_at FROM invocations AS c WHERE function = $1 AND status IN ('queued', 'retrying') \
             AND {NOT_WAITING} AND {} ORDER BY due_at LIMIT 1",
            not_paused(1)
        ),
        &[&req.function],
    )
    .await
    .map_err(db_err)?;
    Ok(Leased { invocations, next_due_at: next.first().and_then(|r| r.get(0)) })
}

/// The condition on a candidate `c` that its `concurrency_key` value is not at its limit: `$L`
/// is the limit, `$S` the values at it (with limit 0, every value is).
fn key_has_room(limit: u8, saturated: u8) -> String {
    format!("(c.concurrency_key IS NULL OR (${limit}::BIGINT > 0 AND c.concurrency_key <> ALL(${saturated}::TEXT[])))")
}

/// A lease under a `concurrency_key` limit, in rounds (see `key_budget.rs`): values at their
/// limit are left out in SQL, so their backlog never hides other values' due work. Each round
/// locks its rows with SKIP LOCKED, so nodes leasing at once take different rows; a row a round
/// locked but could not take (its value filled up) stays locked until this transaction ends.
async fn lease_keyed(tx: &Tx<'_>, req: &LeaseRequest, keys: &KeyLimit) -> Result<Leased> {
    let mut budget = KeyBudget::new(keys);
    let mut picked: Vec<String> = Vec::new();
    let limit = keys.limit as i64;
    let round_sql = format!(
        "SELECT id, concurrency_key FROM invocations AS c WHERE function = $1 \
         AND status IN ('queued', 'retrying') AND due_at <= $2 AND {NOT_WAITING} AND {} AND {} \
         AND c.id <> ALL($5::TEXT[]) ORDER BY due_at, id LIMIT $6 FOR UPDATE SKIP LOCKED",
        not_paused(1),
        key_has_room(3, 4)
    );
    while picked.len() < req.limit {
        let wanted = req.limit - picked.len();
        let saturated = budget.saturated();
        let params: [&(dyn ToSql + Sync); 6] = [&req.function, &req.now, &limit, &saturated, &picked, &(wanted as i64)];
        let round = query(tx, &round_sql, &params).await.map_err(db_err)?;
        let full = round.len() == wanted;
        let mut skipped = false;
        for row in round {
            let (id, value): (String, Option<String>) = (row.get(0), row.get(1));
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
            "UPDATE invocations SET status = 'running', lease_owner = $1, leased_at = $2, \
             lease_expires_at = $3, updated_at = $2 WHERE id = ANY($4::TEXT[]) RETURNING {INVOCATION_COLUMNS}"
        );
        for row in query(tx, &sql, &[&req.owner, &req.now, &req.expires_at, &picked]).await.map_err(db_err)? {
            invocations.push(rows::invocation(&row)?);
        }
        invocations.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
    }
    // Only values it could still take count: a full value's due work would wake the dispatcher
    // at once, forever; an attempt of it ending wakes the dispatcher instead.
    let saturated = budget.saturated();
    let next = query(
        tx,
        &format!(
            "SELECT due_at FROM invocations AS c WHERE function = $1 AND status IN ('queued', 'retrying') \
             AND {NOT_WAITING} AND {} AND {} ORDER BY due_at LIMIT 1",
            not_paused(1),
            key_has_room(2, 3)
        ),
        &[&req.function, &limit, &saturated],
    )
    .await
    .map_err(db_err)?;
    Ok(Leased { invocations, next_due_at: next.first().and_then(|r| r.get(0)) })
}

/// Pauses (keeping the first `paused_at`) or resumes a function. A resume tells every node, as
/// new work does, so their idle dispatchers lease again.
pub(crate) async fn set_paused(tx: &Tx<'_>, function: &str, paused: bool, now: Millis) -> Result<()> {
    match paused {
        true => execute(
            tx,
            "INSERT INTO paused_functions (function, paused_at) VALUES ($1, $2) ON CONFLICT (function) DO NOTHING",
            &[&function, &now],
        )
        .await
        .map_err(db_err)?,
        false => execute(tx, "DELETE FROM paused_functions WHERE function = $1", &[&function]).await.map_err(db_err)?,
    };
    if !paused {
        notify(tx, &[function.to_string()]).await?;
    }
    Ok(())
}

/// The paused functions with when each was paused, by name.
pub(crate) async fn paused(tx: &Tx<'_>) -> Result<Vec<(String, Millis)>> {
    let rows =
        query(tx, "SELECT function, paused_at FROM paused_functions ORDER BY function", &[]).await.map_err(db_err)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The columns a completion writes, shared by the single and the batched form.
pub(crate) struct CompletionRow<'a> {
    pub(crate) status: &'static str,
    pub(crate) due_at: Option<Millis>,
    pub(crate) delay_ms: Option<i64>,
    pub(crate) error: Option<&'a str>,
    pub(crate) counted: i32,
    pub(crate) result_status: Option<i32>,
    pub(crate) result_content_type: Option<&'a str>,
    pub(crate) result: Option<&'a [u8]>,
    /// The attempt's times when the row keeps it ([`first_attempt::kept_in_row`]).
    pub(crate) first_started_at: Option<Millis>,
    pub(crate) first_ended_at: Option<Millis>,
}

impl<'a> CompletionRow<'a> {
    pub(crate) fn of(c: &'a Completion) -> Self {
        let (status, due_at, delay, error, response) = match &c.next {
            Transition::Succeed { response } => (Status::Succeeded, None, None, None, Some(response)),
            Transition::Retry { due_at, delay_ms, error } => {
                (Status::Retrying, Some(*due_at), Some(*delay_ms as i64), Some(error.as_str()), None)
            }
            Transition::Die { error, response } => (Status::Dead, None, None, Some(error.as_str()), response.as_ref()),
            Transition::Requeue => (Status::Queued, Some(c.now), None, None, None),
        };
        let in_row = c.attempt.as_ref().filter(|a| first_attempt::kept_in_row(status, a, response));
        Self {
            status: status.as_str(),
            due_at,
            delay_ms: delay,
            error,
            counted: i32::from(c.attempt.is_some()),
            result_status: response.map(|r| i32::from(r.status)),
            result_content_type: response.and_then(|r| r.content_type.as_deref()),
            result: response.map(|r| &r.body[..]),
            first_started_at: in_row.map(|a| a.started_at),
            first_ended_at: in_row.map(|a| a.ended_at),
        }
    }

    /// The attempt of `c` to record in `attempts`: none when the row keeps it.
    pub(crate) fn to_record<'c>(&self, c: &'c Completion) -> Option<&'c Attempt> {
        c.attempt.as_ref().filter(|_| self.first_started_at.is_none())
    }
}

/// The refusal of a completion whose lease is gone.
pub(crate) fn lease_lost(c: &Completion) -> Error {
    Error::LeaseLost(format!("invocation {} is not leased by {}: the lease expired or was taken back", c.id, c.owner))
}

/// One completion in its own statement: the path of completions carrying effects, which must be
/// applied (or refused whole) in the same transaction, and of reclaimed leases.
pub(crate) async fn complete(tx: &Tx<'_>, c: &Completion) -> Result<()> {
    if c.effects.is_some() {
        // The lease is checked (and the row locked) before effects are applied, so a node that
        // lost it applies nothing.
        let held = query(
            tx,
            "SELECT 1 FROM invocations WHERE id = $1 AND status = 'running' AND lease_owner = $2 \
             AND attempt_count = $3 FOR UPDATE",
            &[&c.id, &c.owner, &(c.fence as i32)],
        )
        .await
        .map_err(db_err)?;
        if !held.is_empty() {
            events::apply(tx, c.effects.as_ref(), c.now).await?;
        }
    }
    let row = CompletionRow::of(c);
    let changed = execute(
        tx,
        "UPDATE invocations SET status = $1, due_at = $2, last_delay_ms = COALESCE($3, last_delay_ms), \
         error = $4, attempt_count = attempt_count + $5, updated_at = $6, \
         lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL, \
         result_status = COALESCE($7, result_status), \
         result_content_type = CASE WHEN $7::INTEGER IS NULL THEN result_content_type ELSE $8 END, \
         result = CASE WHEN $7::INTEGER IS NULL THEN result ELSE $9 END, \
         first_started_at = COALESCE($13, first_started_at), first_ended_at = COALESCE($14, first_ended_at) \
         WHERE id = $10 AND status = 'running' AND lease_owner = $11 AND attempt_count = $12",
        &[
            &row.status,
            &row.due_at,
            &row.delay_ms,
            &row.error,
            &row.counted,
            &c.now,
            &row.result_status,
            &row.result_content_type,
            &row.result,
            &c.id,
            &c.owner,
            &(c.fence as i32),
            &row.first_started_at,
            &row.first_ended_at,
        ],
    )
    .await
    .map_err(db_err)?;
    if changed == 0 {
        return Err(lease_lost(c));
    }
    if let Some(a) = row.to_record(c) {
        rows::insert_attempts(tx, &[(&c.id, a)]).await.map_err(db_err)?;
    }
    // A step's end moves its run on in the same transaction, or nothing is written.
    if let Some(update) = &c.run {
        super::workflows::apply(tx, update).await?;
    }
    Ok(())
}

/// Takes back expired leases, and every lease of a node whose heartbeat stopped more than
/// `node_timeout` ago ([`NODE_TIMEOUT_MS`](keel_core::store::NODE_TIMEOUT_MS) outside tests): a
/// node that died is noticed in seconds, not after its leases' full term. (A sync holder is
/// named `node/request`; its node is the part before the slash.)
pub(crate) async fn reclaim(tx: &Tx<'_>, scope: Reclaim, now: Millis, node_timeout: Millis) -> Result<Vec<String>> {
    let cutoff = match scope {
        Reclaim::All => Millis::MAX,
        Reclaim::ExpiredBefore(t) => t,
    };
    // Silence is measured on the database's clock: a node whose clock runs behind the
    // reclaimer's must not look dead, nor one whose clock runs ahead look alive.
    let rows = query(
        tx,
        &format!(
            "SELECT id, function, attempt_count, leased_at, lease_owner, sync FROM invocations \
             WHERE status = 'running' AND (lease_expires_at < $1 OR split_part(lease_owner, '/', 1) IN \
               (SELECT id FROM nodes WHERE seen_at < {DB_NOW_MS} - $2)) \
             ORDER BY id FOR UPDATE SKIP LOCKED"
        ),
        &[&cutoff, &node_timeout],
    )
    .await
    .map_err(db_err)?;
    let mut functions: Vec<String> = Vec::new();
    for r in rows {
        let (id, function, attempt_count, leased_at, owner, sync): (String, String, i32, Millis, String, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        if sync {
            super::keys::interrupt_sync(tx, &id, attempt_count as u32, leased_at, &owner, now).await?;
            continue;
        }
        let attempt = Attempt::interrupted(attempt_count as u32 + 1, leased_at, now, &owner);
        let error = attempt.error.clone().unwrap_or_default();
        let next = Transition::Retry { due_at: now, delay_ms: 0, error };
        let fence = attempt_count as u32;
        complete(tx, &Completion { id, owner, fence, now, attempt: Some(attempt), next, effects: None, run: None })
            .await?;
        if !functions.contains(&function) {
            functions.push(function);
        }
    }
    functions.sort();
    notify(tx, &functions).await?;
    Ok(functions)
}

pub(crate) async fn get(tx: &Tx<'_>, id: &str) -> Result<Option<Invocation>> {
    let sql = format!("SELECT {INVOCATION_COLUMNS}, first_started_at, first_ended_at FROM invocations WHERE id = $1");
    let Some(row) = query(tx, &sql, &[&id]).await.map_err(db_err)?.into_iter().next() else { return Ok(None) };
    let mut inv = rows::invocation(&row)?;
    // The row's own attempt, if it keeps one ([`first_attempt::kept_in_row`]): then it has no other.
    let times = (row.try_get(29).map_err(db_err)?, row.try_get(30).map_err(db_err)?);
    if let Some(attempt) = first_attempt::of_row(times, inv.response.as_ref().map(|r| r.status)) {
        inv.attempts.push(attempt);
        return Ok(Some(inv));
    }
    let attempts = query(
        tx,
        "SELECT number, started_at, ended_at, outcome, http_status, error FROM attempts \
         WHERE invocation_id = $1 ORDER BY number",
        &[&id],
    )
    .await
    .map_err(db_err)?;
    inv.attempts = attempts.iter().map(rows::attempt).collect::<Result<_>>()?;
    Ok(Some(inv))
}

pub(crate) async fn list(tx: &Tx<'_>, filter: &ListFilter) -> Result<Page<Invocation>> {
    let (conditions, args) = conditions(filter);
    let size = filter.page_size();
    let limit = size as i64 + 1;
    let mut params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    params.push(&limit);
    let sql = format!(
        "SELECT {INVOCATION_COLUMNS} FROM invocations WHERE {conditions} ORDER BY id DESC LIMIT ${}",
        params.len()
    );
    let found = query(tx, &sql, &params).await.map_err(db_err)?;
    let items = found.iter().map(rows::invocation).collect::<Result<Vec<_>>>()?;
    Ok(Page::from_overfetched(items, size, |i| &i.id))
}

/// The `WHERE` clause of a list filter and its text arguments (`$1`, `$2`, … in order).
fn conditions(filter: &ListFilter) -> (String, Vec<String>) {
    let mut sql = String::from("TRUE");
    let mut args = Vec::new();
    let mut add = |column_test: &str, value: String| {
        args.push(value);
        sql.push_str(&format!(" AND {column_test} ${}", args.len()));
    };
    if let Some(f) = &filter.function {
        add("function =", f.clone());
    }
    if let Some(sub) = &filter.subscription {
        add("subscription =", sub.clone());
    }
    if let Some(s) = filter.status {
        add("status =", s.as_str().to_string());
    }
    if let Some(c) = &filter.cursor {
        add("id <", c.clone());
    }
    (sql, args)
}
