//! Idempotency key records, written in the same transaction as the work they admit.

use bytes::Bytes;
use keel_core::clock::Millis;
use keel_core::idempotency::{claimed_record, decide, KeyClaim, KeyDecision, KeyPhase, KeyRecord, KeyRef, StoredReply};
use keel_core::invocation::{Attempt, CommitEffects, Invocation, NewInvocation, Status};
use keel_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

use super::ops;
use super::rows::{self, db_err, decode_headers, encode_headers};

pub(crate) fn load(conn: &Connection, key: &KeyRef) -> Result<Option<KeyRecord>> {
    conn.prepare_cached(
        "SELECT fingerprint, holder, lease_until, reply_status, reply_headers, reply_body, invocation_id, expires_at \
         FROM idempotency_keys WHERE scope = ? AND route = ? AND key = ?",
    )
    .and_then(|mut st| {
        st.query_row(params![key.scope, key.route, key.key], |r| {
            let reply_status: Option<u16> = r.get(3)?;
            let phase = match reply_status {
                Some(status) => KeyPhase::Completed(StoredReply {
                    status,
                    headers: decode_headers(&r.get::<_, Option<String>>(4)?.unwrap_or_default()),
                    body: Bytes::from(r.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
                }),
                None => KeyPhase::InFlight {
                    holder: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    lease_until: r.get::<_, Option<Millis>>(2)?.unwrap_or(0),
                },
            };
            Ok(KeyRecord { fingerprint: r.get(0)?, phase, invocation_id: r.get(6)?, expires_at: r.get(7)? })
        })
        .optional()
    })
    .map_err(db_err)
}

fn write_in_flight(conn: &Connection, claim: &KeyClaim, invocation_id: Option<&str>) -> Result<()> {
    let record = claimed_record(claim, invocation_id.map(str::to_string));
    let KeyPhase::InFlight { holder, lease_until } = &record.phase else { unreachable!("a claim is in flight") };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (scope, route, key, fingerprint, holder, lease_until, \
         reply_status, reply_headers, reply_body, invocation_id, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)",
    )
    .and_then(|mut st| {
        st.execute(params![
            claim.key.scope,
            claim.key.route,
            claim.key.key,
            record.fingerprint,
            holder,
            lease_until,
            record.invocation_id,
            record.expires_at
        ])
    })
    .map_err(db_err)?;
    Ok(())
}

/// Claims `claim.key`; on `Claim` or `TakeOver` the record is in flight, held by the claimant.
pub(crate) fn claim(conn: &Connection, claim: &KeyClaim, invocation_id: Option<&str>) -> Result<KeyDecision> {
    let decision = decide(load(conn, &claim.key)?.as_ref(), &claim.fingerprint, claim.now);
    match &decision {
        KeyDecision::Claim => write_in_flight(conn, claim, invocation_id)?,
        KeyDecision::TakeOver { invocation_id } => write_in_flight(conn, claim, Some(invocation_id))?,
        _ => {}
    }
    Ok(decision)
}

/// Completes the record if `holder` still holds it; returns whether it did.
pub(crate) fn complete(conn: &Connection, key: &KeyRef, holder: &str, reply: &StoredReply) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE idempotency_keys SET holder = NULL, lease_until = NULL, reply_status = ?, reply_headers = ?, \
             reply_body = ? WHERE scope = ? AND route = ? AND key = ? AND holder = ?",
        )
        .and_then(|mut st| {
            st.execute(params![
                reply.status,
                encode_headers(&reply.headers),
                &reply.body[..],
                key.scope,
                key.route,
                key.key,
                holder
            ])
        })
        .map_err(db_err)?;
    Ok(changed == 1)
}

pub(crate) fn release(conn: &Connection, key: &KeyRef, holder: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE scope = ? AND route = ? AND key = ? AND holder = ?")
        .and_then(|mut st| st.execute(params![key.scope, key.route, key.key, holder]))
        .map_err(db_err)?;
    Ok(())
}

pub(crate) fn enqueue_keyed(
    conn: &Connection,
    new: NewInvocation,
    claim_: &KeyClaim,
    reply: &StoredReply,
) -> Result<KeyDecision> {
    enqueue_all_keyed(conn, vec![new], claim_, reply)
}

/// [`enqueue_keyed`] for a bulk admission: the key record names the first invocation. An async
/// admission is one transaction and never leaves a record in flight; a record taken over here
/// belonged to a request that died before committing anything, so it admits afresh.
pub(crate) fn enqueue_all_keyed(
    conn: &Connection,
    news: Vec<NewInvocation>,
    claim_: &KeyClaim,
    reply: &StoredReply,
) -> Result<KeyDecision> {
    let decision = claim(conn, claim_, news.first().map(|n| n.id.as_str()))?;
    if matches!(decision, KeyDecision::Claim | KeyDecision::TakeOver { .. }) {
        ops::enqueue_all(conn, news)?;
        complete(conn, &claim_.key, &claim_.holder, reply)?;
        return Ok(KeyDecision::Claim);
    }
    Ok(decision)
}

pub(crate) fn begin_sync(conn: &Connection, invocation: &Invocation, claim_: &KeyClaim) -> Result<KeyDecision> {
    let decision = claim(conn, claim_, Some(&invocation.id))?;
    match &decision {
        KeyDecision::Claim => ops::insert(conn, invocation)?,
        KeyDecision::TakeOver { invocation_id } => {
            let stored = ops::get(conn, invocation_id)?
                .ok_or_else(|| Error::NotFound { what: "invocation", id: invocation_id.clone() })?;
            if stored.status == Status::Running {
                let lease = stored.lease.clone().unwrap_or(keel_core::invocation::Lease {
                    owner: String::new(),
                    leased_at: claim_.now,
                    expires_at: claim_.now,
                });
                interrupt_sync(conn, invocation_id, stored.attempt_count, lease.leased_at, &lease.owner, claim_.now)?;
            }
            conn.prepare_cached(
                "UPDATE invocations SET status = 'running', lease_owner = ?, leased_at = ?, lease_expires_at = ?, \
                 updated_at = ? WHERE id = ?",
            )
            .and_then(|mut st| {
                st.execute(params![claim_.holder, claim_.now, claim_.lease_until, claim_.now, invocation_id])
            })
            .map_err(db_err)?;
        }
        _ => {}
    }
    Ok(decision)
}

pub(crate) fn finish_sync(
    conn: &Connection,
    inv: &Invocation,
    effects: Option<&CommitEffects>,
    key: &KeyRef,
    holder: &str,
    reply: &StoredReply,
) -> Result<()> {
    if !complete(conn, key, holder, reply)? {
        return Err(Error::LeaseLost(format!("the idempotency key of invocation {} is no longer held", inv.id)));
    }
    conn.prepare_cached("DELETE FROM invocations WHERE id = ?")
        .and_then(|mut st| st.execute([&inv.id]))
        .map_err(db_err)?;
    conn.prepare_cached("DELETE FROM attempts WHERE invocation_id = ?")
        .and_then(|mut st| st.execute([&inv.id]))
        .map_err(db_err)?;
    ops::record_finished(conn, inv, effects)
}

/// A sync invocation whose node stopped mid-call: it failed, and its key may be taken over now.
pub(crate) fn interrupt_sync(
    conn: &Connection,
    id: &str,
    attempt_count: u32,
    leased_at: Millis,
    owner: &str,
    now: Millis,
) -> Result<()> {
    let attempt = Attempt::interrupted_sync(attempt_count + 1, leased_at, now, owner);
    let error = attempt.error.clone().unwrap_or_default();
    rows::insert_attempts(conn, &[(id, &attempt)])?;
    conn.prepare_cached(
        "UPDATE invocations SET status = 'failed', error = ?, attempt_count = attempt_count + 1, updated_at = ?, \
         lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL WHERE id = ?",
    )
    .and_then(|mut st| st.execute(params![error, now, id]))
    .map_err(db_err)?;
    conn.prepare_cached("UPDATE idempotency_keys SET lease_until = ? WHERE invocation_id = ? AND holder IS NOT NULL")
        .and_then(|mut st| st.execute(params![now, id]))
        .map_err(db_err)?;
    Ok(())
}

/// Deletes records past their TTL, except one still held by a request whose lease runs on (its
/// holder may still be running and must find the record to complete it).
pub(crate) fn purge_expired(conn: &Connection, now: Millis, limit: usize) -> Result<usize> {
    conn.prepare_cached(
        "DELETE FROM idempotency_keys WHERE rowid IN \
         (SELECT rowid FROM idempotency_keys WHERE expires_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1) \
          LIMIT ?2)",
    )
    .and_then(|mut st| st.execute(params![now, limit as i64]))
    .map_err(db_err)
}
