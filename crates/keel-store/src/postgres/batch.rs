//! The set-based statements of a group commit: every enqueue of the group in one `INSERT … SELECT
//! FROM unnest(…)`, every completion in one `UPDATE … FROM unnest(…)` plus one insert of their
//! attempts, and one NOTIFY per function that got work. A bulk admission ([`enqueue_all`]) and
//! the completions of a batch call ([`complete_batch`]) use the same statements in a transaction
//! of their own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Pool;
use keel_core::invocation::{Completion, Delivery, Invocation, NewInvocation, Transition};
use keel_core::{Error, Result};

use super::notify::notify;
use super::ops::{lease_lost, CompletionRow};
use super::rows::{describe, encode_headers, query, Tx};
use super::writer::{first_of_each_id, Answer, GroupError, Work};

/// Writes `works` in one transaction; answers in the same order. Sets `committing` once COMMIT
/// is sent: from then on a failure leaves the group's outcome unknown.
pub(crate) async fn write(
    pool: &Pool,
    works: &[Work],
    committing: &AtomicBool,
) -> std::result::Result<Vec<Answer>, GroupError> {
    let mut client = pool.get().await.map_err(|e| GroupError::Unavailable(format!("PostgreSQL: {e}")))?;
    let tx = client.transaction().await?;
    let mut answers: Vec<Option<Answer>> = works.iter().map(|_| None).collect();
    let mut woken: Vec<String> = Vec::new();

    let enqueues = works.iter().enumerate().filter_map(|(i, w)| match w {
        Work::Enqueue(new) => Some((i, new.id.as_str())),
        Work::Complete(_) => None,
    });
    let (first, again) = first_of_each_id(enqueues);
    for i in again {
        let Work::Enqueue(new) = &works[i] else { unreachable!() };
        answers[i] = Some(Err(already_exists(new)));
    }
    let news: Vec<&NewInvocation> = first.iter().map(|&i| as_enqueue(&works[i])).collect();
    let inserted = insert_new(&tx, &news).await?;
    for (&i, new) in first.iter().zip(&news) {
        answers[i] = Some(match inserted.contains(new.id.as_str()) {
            true => Ok(Some((*new).clone().into_stored())),
            false => Err(already_exists(new)),
        });
        // Work leased at admission is no other node's business.
        if inserted.contains(new.id.as_str()) && new.lease.is_none() && !woken.contains(&new.function) {
            woken.push(new.function.clone());
        }
    }

    // The same invocation completed twice in one group: the second is judged after the first,
    // as it would be one transaction later.
    let mut pending: Vec<usize> = (0..works.len()).filter(|&i| matches!(works[i], Work::Complete(_))).collect();
    while !pending.is_empty() {
        let (round, later) = first_of_each_id(pending.iter().map(|&i| (i, as_completion(&works[i]).id.as_str())));
        let completions: Vec<&Completion> = round.iter().map(|&i| as_completion(&works[i])).collect();
        let done = complete_all(&tx, &completions).await?;
        for (&i, c) in round.iter().zip(&completions) {
            let function = done.get(c.id.as_str());
            answers[i] = Some(if function.is_some() { Ok(None) } else { Err(lease_lost(c)) });
            // Another node may be idle with nothing due: tell it when this retry comes due (a
            // requeued invocation is due at once).
            if let Some(function) =
                function.filter(|_| matches!(c.next, Transition::Retry { .. } | Transition::Requeue))
            {
                if !woken.contains(function) {
                    woken.push(function.clone());
                }
            }
        }
        pending = later;
    }
    notify(&tx, &woken).await.map_err(|e| GroupError::Unavailable(e.to_string()))?;
    committing.store(true, Ordering::Relaxed);
    tx.commit().await.map_err(|e| match super::rows::commit_refused(&e) {
        true => GroupError::Db(e),
        false => GroupError::Unknown(describe(&e)),
    })?;
    Ok(answers.into_iter().map(|a| a.unwrap_or(Ok(None))).collect())
}

fn as_enqueue(work: &Work) -> &NewInvocation {
    match work {
        Work::Enqueue(new) => new,
        Work::Complete(_) => unreachable!("indexes of enqueues only"),
    }
}

fn as_completion(work: &Work) -> &Completion {
    match work {
        Work::Complete(c) => c,
        Work::Enqueue(_) => unreachable!("indexes of completions only"),
    }
}

fn already_exists(new: &NewInvocation) -> Error {
    Error::InvalidState(format!("invocation {} already exists", new.id))
}

/// Inserts admitted invocations (queued, or running when leased at admission); returns the ids
/// that were new.
async fn insert_new(tx: &Tx<'_>, news: &[&NewInvocation]) -> std::result::Result<HashSet<String>, GroupError> {
    if news.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<&str> = news.iter().map(|n| n.id.as_str()).collect();
    let functions: Vec<&str> = news.iter().map(|n| n.function.as_str()).collect();
    let payloads: Vec<&[u8]> = news.iter().map(|n| &n.payload[..]).collect();
    let content_types: Vec<Option<&str>> = news.iter().map(|n| n.content_type.as_deref()).collect();
    let created: Vec<i64> = news.iter().map(|n| n.created_at).collect();
    let due: Vec<i64> = news.iter().map(|n| n.due_at).collect();
    let keys: Vec<Option<&str>> = news.iter().map(|n| n.idempotency_key.as_deref()).collect();
    let traces: Vec<Option<&str>> = news.iter().map(|n| n.traceparent.as_deref()).collect();
    let deliveries: Vec<Option<&Delivery>> = news.iter().map(|n| n.delivery.as_ref()).collect();
    let subscriptions: Vec<Option<&str>> = deliveries.iter().map(|d| d.map(|d| d.subscription.as_str())).collect();
    let events: Vec<Option<&str>> = deliveries.iter().map(|d| d.map(|d| d.event_id.as_str())).collect();
    let headers: Vec<Option<String>> = deliveries.iter().map(|d| d.map(|d| encode_headers(&d.headers))).collect();
    let ordering: Vec<Option<&str>> = deliveries.iter().map(|d| d.and_then(|d| d.ordering_key.as_deref())).collect();
    let hops: Vec<i32> = deliveries.iter().map(|d| d.map_or(0, |d| d.hops as i32)).collect();
    // Leased at admission: stored `running`, held by the admitting node.
    let owners: Vec<Option<&str>> = news.iter().map(|n| n.lease.as_ref().map(|l| l.owner.as_str())).collect();
    let leased_at: Vec<Option<i64>> = news.iter().map(|n| n.lease.as_ref().map(|l| l.leased_at)).collect();
    let expires: Vec<Option<i64>> = news.iter().map(|n| n.lease.as_ref().map(|l| l.expires_at)).collect();
    let concurrency: Vec<Option<&str>> = news.iter().map(|n| n.concurrency_key.as_deref()).collect();
    let steps: Vec<Option<String>> = news.iter().map(|n| n.workflow.as_ref().map(|w| w.key())).collect();
    // WITH ORDINALITY keeps the group's order in `seq`, which ordered deliveries follow.
    let rows = query(
        tx,
        "INSERT INTO invocations (id, function, status, payload, content_type, created_at, updated_at, due_at, \
           idempotency_key, traceparent, subscription, event_id, headers, ordering_key, hops, \
           lease_owner, leased_at, lease_expires_at, concurrency_key, workflow_step) \
         SELECT id, f, CASE WHEN lo IS NULL THEN 'queued' ELSE 'running' END, p, ct, c, c, d, k, tp, s, e, h, o, hp, \
           lo, la, le, ck, ws FROM unnest($1::TEXT[], $2::TEXT[], $3::BYTEA[], $4::TEXT[], $5::INT8[], $6::INT8[], \
           $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::INT4[], $14::TEXT[], \
           $15::INT8[], $16::INT8[], $17::TEXT[], $18::TEXT[]) \
           WITH ORDINALITY AS t(id, f, p, ct, c, d, k, tp, s, e, h, o, hp, lo, la, le, ck, ws, n) \
         ORDER BY n ON CONFLICT (id) DO NOTHING RETURNING id",
        &[
            &ids,
            &functions,
            &payloads,
            &content_types,
            &created,
            &due,
            &keys,
            &traces,
            &subscriptions,
            &events,
            &headers,
            &ordering,
            &hops,
            &owners,
            &leased_at,
            &expires,
            &concurrency,
            &steps,
        ],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Applies completions with distinct ids; returns the ids whose lease was still held, with their
/// function (the others changed nothing), after inserting their attempts.
async fn complete_all(
    tx: &Tx<'_>,
    completions: &[&Completion],
) -> std::result::Result<HashMap<String, String>, GroupError> {
    let fields: Vec<CompletionRow<'_>> = completions.iter().map(|c| CompletionRow::of(c)).collect();
    let ids: Vec<&str> = completions.iter().map(|c| c.id.as_str()).collect();
    let owners: Vec<&str> = completions.iter().map(|c| c.owner.as_str()).collect();
    let nows: Vec<i64> = completions.iter().map(|c| c.now).collect();
    let fences: Vec<i32> = completions.iter().map(|c| c.fence as i32).collect();
    let statuses: Vec<&str> = fields.iter().map(|f| f.status).collect();
    let due: Vec<Option<i64>> = fields.iter().map(|f| f.due_at).collect();
    let delays: Vec<Option<i64>> = fields.iter().map(|f| f.delay_ms).collect();
    let errors: Vec<Option<&str>> = fields.iter().map(|f| f.error).collect();
    let counted: Vec<i32> = fields.iter().map(|f| f.counted).collect();
    let result_statuses: Vec<Option<i32>> = fields.iter().map(|f| f.result_status).collect();
    let result_types: Vec<Option<&str>> = fields.iter().map(|f| f.result_content_type).collect();
    let results: Vec<Option<&[u8]>> = fields.iter().map(|f| f.result).collect();
    let first_started: Vec<Option<i64>> = fields.iter().map(|f| f.first_started_at).collect();
    let first_ended: Vec<Option<i64>> = fields.iter().map(|f| f.first_ended_at).collect();
    let rows = query(
        tx,
        "UPDATE invocations AS i SET status = c.status, due_at = c.due_at, \
           last_delay_ms = COALESCE(c.delay_ms, i.last_delay_ms), error = c.error, \
           attempt_count = i.attempt_count + c.counted, updated_at = c.now, \
           lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL, \
           result_status = COALESCE(c.result_status, i.result_status), \
           result_content_type = CASE WHEN c.result_status IS NULL THEN i.result_content_type ELSE c.result_type END, \
           result = CASE WHEN c.result_status IS NULL THEN i.result ELSE c.result END, \
           first_started_at = COALESCE(c.first_started_at, i.first_started_at), \
           first_ended_at = COALESCE(c.first_ended_at, i.first_ended_at) \
         FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::INT8[], $5::INT8[], $6::TEXT[], $7::INT4[], $8::INT8[], \
           $9::INT4[], $10::TEXT[], $11::BYTEA[], $12::INT4[], $13::INT8[], $14::INT8[]) \
           AS c(id, owner, status, due_at, delay_ms, error, counted, now, result_status, result_type, result, fence, \
           first_started_at, first_ended_at) \
         WHERE i.id = c.id AND i.status = 'running' AND i.lease_owner = c.owner AND i.attempt_count = c.fence \
         RETURNING i.id, i.function",
        &[
            &ids,
            &owners,
            &statuses,
            &due,
            &delays,
            &errors,
            &counted,
            &nows,
            &result_statuses,
            &result_types,
            &results,
            &fences,
            &first_started,
            &first_ended,
        ],
    )
    .await?;
    let done: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // A first success is kept in its row ([`crate::first_attempt::kept_in_row`]).
    let attempts: Vec<(&str, &keel_core::invocation::Attempt)> = completions
        .iter()
        .zip(&fields)
        .filter(|(c, _)| done.contains_key(c.id.as_str()))
        .filter_map(|(c, f)| f.to_record(c).map(|a| (c.id.as_str(), a)))
        .collect();
    super::rows::insert_attempts(tx, &attempts).await?;
    Ok(done)
}

/// A bulk admission in `tx`: every invocation stored, or an error (and the caller's transaction
/// rolled back with nothing of it). Wakes the nodes of the functions that got queued work.
pub(crate) async fn enqueue_all(tx: &Tx<'_>, news: Vec<NewInvocation>) -> Result<Vec<Invocation>> {
    let (_, again) = first_of_each_id(news.iter().enumerate().map(|(i, n)| (i, n.id.as_str())));
    if let Some(&i) = again.first() {
        return Err(already_exists(&news[i]));
    }
    let refs: Vec<&NewInvocation> = news.iter().collect();
    let inserted = insert_new(tx, &refs).await.map_err(|e| super::writer::failed(&e))?;
    if let Some(old) = news.iter().find(|n| !inserted.contains(n.id.as_str())) {
        return Err(already_exists(old));
    }
    let mut woken: Vec<String> = news.iter().filter(|n| n.lease.is_none()).map(|n| n.function.clone()).collect();
    woken.sort_unstable();
    woken.dedup();
    notify(tx, &woken).await?;
    Ok(news.into_iter().map(NewInvocation::into_stored).collect())
}

/// The completions of a batch call in `tx`, each judged alone: the plain ones set-based (as a
/// group commit writes them), one with effects or a run update in a savepoint of its own (it may
/// be refused half-way). Wakes the nodes of the functions that got a retry.
pub(crate) async fn complete_batch(tx: &Tx<'_>, completions: &[Completion]) -> Result<Vec<Result<()>>> {
    let mut answers: Vec<Option<Result<()>>> = completions.iter().map(|_| None).collect();
    let mut woken: Vec<String> = Vec::new();
    let (plain, own): (Vec<usize>, Vec<usize>) =
        (0..completions.len()).partition(|&i| completions[i].effects.is_none() && completions[i].run.is_none());
    let mut pending = plain;
    while !pending.is_empty() {
        let (round, later) = first_of_each_id(pending.iter().map(|&i| (i, completions[i].id.as_str())));
        let refs: Vec<&Completion> = round.iter().map(|&i| &completions[i]).collect();
        let done = complete_all(tx, &refs).await.map_err(|e| super::writer::failed(&e))?;
        for (&i, c) in round.iter().zip(&refs) {
            let function = done.get(c.id.as_str());
            answers[i] = Some(if function.is_some() { Ok(()) } else { Err(lease_lost(c)) });
            if let Some(function) =
                function.filter(|_| matches!(c.next, Transition::Retry { .. } | Transition::Requeue))
            {
                woken.push(function.clone());
            }
        }
        pending = later;
    }
    for i in own {
        let c = &completions[i];
        tx.batch_execute("SAVEPOINT item").await.map_err(super::rows::db_err)?;
        let done = super::ops::complete(tx, c).await;
        let end =
            if done.is_ok() { "RELEASE SAVEPOINT item" } else { "ROLLBACK TO SAVEPOINT item; RELEASE SAVEPOINT item" };
        tx.batch_execute(end).await.map_err(super::rows::db_err)?;
        answers[i] = Some(done);
    }
    woken.sort_unstable();
    woken.dedup();
    notify(tx, &woken).await?;
    Ok(answers.into_iter().map(|a| a.unwrap_or(Ok(()))).collect())
}
