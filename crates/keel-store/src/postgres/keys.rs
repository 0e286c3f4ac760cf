//! Idempotency key records, written in the same transaction as the work they admit.
//!
//! Two nodes may claim the same new key at the same instant, when there is no row yet to lock:
//! each claim first takes a transaction-scoped advisory lock on the key's hash, so the second
//! claimant waits for the first to commit and then decides on what it wrote.

use bytes::Bytes;
use keel_core::clock::Millis;
use keel_core::idempotency::{claimed_record, decide, KeyClaim, KeyDecision, KeyPhase, KeyRecord, KeyRef, StoredReply};
use keel_core::invocation::{Attempt, CommitEffects, Invocation, Lease, NewInvocation, Status};
use keel_core::{Error, Result};

use super::ops;
use super::rows::{self, db_err, decode_headers, encode_headers, execute, query, Tx};

async fn lock_and_load(tx: &Tx<'_>, key: &KeyRef) -> Result<Option<KeyRecord>> {
    execute(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3, 0))",
        &[&key.scope, &key.route, &key.key],
    )
    .await
    .map_err(db_err)?;
    load(tx, key, " FOR UPDATE").await
}

/// The record without locking it: for answering replays without a write.
pub(crate) async fn peek(tx: &Tx<'_>, key: &KeyRef) -> Result<Option<KeyRecord>> {
    load(tx, key, "").await
}

async fn load(tx: &Tx<'_>, key: &KeyRef, lock: &str) -> Result<Option<KeyRecord>> {
    let sql = format!(
        "SELECT fingerprint, holder, lease_until, reply_status, reply_headers, reply_body, invocation_id, expires_at \
         FROM idempotency_keys WHERE scope = $1 AND route = $2 AND key = $3{lock}"
    );
    let found = query(tx, &sql, &[&key.scope, &key.route, &key.key]).await.map_err(db_err)?;
    let Some(r) = found.first() else { return Ok(None) };
    let phase = match r.get::<_, Option<i32>>(3) {
        Some(status) => KeyPhase::Completed(StoredReply {
            status: status as u16,
            headers: decode_headers(&r.get::<_, Option<String>>(4).unwrap_or_default()),
            body: Bytes::from(r.get::<_, Option<Vec<u8>>>(5).unwrap_or_default()),
        }),
        None => KeyPhase::InFlight {
            holder: r.get::<_, Option<String>>(1).unwrap_or_default(),
            lease_until: r.get::<_, Option<Millis>>(2).unwrap_or(0),
        },
    };
    Ok(Some(KeyRecord { fingerprint: r.get(0), phase, invocation_id: r.get(6), expires_at: r.get(7) }))
}

async fn write_in_flight(tx: &Tx<'_>, claim: &KeyClaim, invocation_id: Option<&str>) -> Result<()> {
    let record = claimed_record(claim, invocation_id.map(str::to_string));
    let KeyPhase::InFlight { holder, lease_until } = &record.phase else { unreachable!("a claim is in flight") };
    execute(
        tx,
        "INSERT INTO idempotency_keys (scope, route, key, fingerprint, holder, lease_until, \
         reply_status, reply_headers, reply_body, invocation_id, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, NULL, $7, $8) \
         ON CONFLICT (scope, route, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
         holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until, reply_status = NULL, \
         reply_headers = NULL, reply_body = NULL, invocation_id = EXCLUDED.invocation_id, \
         expires_at = EXCLUDED.expires_at",
        &[
            &claim.key.scope,
            &claim.key.route,
            &claim.key.key,
            &record.fingerprint,
            holder,
            lease_until,
            &record.invocation_id,
            &record.expires_at,
        ],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Claims `claim.key`; on `Claim` or `TakeOver` the record is in flight, held by the claimant.
pub(crate) async fn claim(tx: &Tx<'_>, claim: &KeyClaim, invocation_id: Option<&str>) -> Result<KeyDecision> {
    let decision = decide(lock_and_load(tx, &claim.key).await?.as_ref(), &claim.fingerprint, claim.now);
    match &decision {
        KeyDecision::Claim => write_in_flight(tx, claim, invocation_id).await?,
        KeyDecision::TakeOver { invocation_id } => write_in_flight(tx, claim, Some(invocation_id)).await?,
        _ => {}
    }
    Ok(decision)
}

/// Completes the record if `holder` still holds it; returns whether it did.
pub(crate) async fn complete(tx: &Tx<'_>, key: &KeyRef, holder: &str, reply: &StoredReply) -> Result<bool> {
    let changed = execute(
        tx,
        "UPDATE idempotency_keys SET holder = NULL, lease_until = NULL, reply_status = $1, reply_headers = $2, \
         reply_body = $3 WHERE scope = $4 AND route = $5 AND key = $6 AND holder = $7",
        &[
            &i32::from(reply.status),
            &encode_headers(&reply.headers),
            &&reply.body[..],
            &key.scope,
            &key.route,
            &key.key,
            &holder,
        ],
    )
    .await
    .map_err(db_err)?;
    Ok(changed == 1)
}

pub(crate) async fn release(tx: &Tx<'_>, key: &KeyRef, holder: &str) -> Result<()> {
    execute(
        tx,
        "DELETE FROM idempotency_keys WHERE scope = $1 AND route = $2 AND key = $3 AND holder = $4",
        &[&key.scope, &key.route, &key.key, &holder],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn enqueue_keyed(
    tx: &Tx<'_>,
    new: NewInvocation,
    claim_: &KeyClaim,
    reply: &StoredReply,
) -> Result<KeyDecision> {
    let decision = claim(tx, claim_, Some(&new.id)).await?;
    // An async admission is one transaction and never leaves a record in flight; a record taken
    // over here belonged to a request that died before committing anything, so admit afresh.
    if matches!(decision, KeyDecision::Claim | KeyDecision::TakeOver { .. }) {
        let function = new.function.clone();
        ops::insert(tx, &new.into_stored()).await?;
        complete(tx, &claim_.key, &claim_.holder, reply).await?;
        super::notify::notify(tx, &[function]).await?;
        return Ok(KeyDecision::Claim);
    }
    Ok(decision)
}

/// [`enqueue_keyed`] for a bulk admission: the key record names the first invocation.
pub(crate) async fn enqueue_all_keyed(
    tx: &Tx<'_>,
    news: Vec<NewInvocation>,
    claim_: &KeyClaim,
    reply: &StoredReply,
) -> Result<KeyDecision> {
    let decision = claim(tx, claim_, news.first().map(|n| n.id.as_str())).await?;
    if matches!(decision, KeyDecision::Claim | KeyDecision::TakeOver { .. }) {
        super::batch::enqueue_all(tx, news).await?;
        complete(tx, &claim_.key, &claim_.holder, reply).await?;
        return Ok(KeyDecision::Claim);
    }
    Ok(decision)
}

pub(crate) async fn begin_sync(tx: &Tx<'_>, invocation: &Invocation, claim_: &KeyClaim) -> Result<KeyDecision> {
    let decision = claim(tx, claim_, Some(&invocation.id)).await?;
    match &decision {
        KeyDecision::Claim => ops::insert(tx, invocation).await?,
        KeyDecision::TakeOver { invocation_id } => {
            let stored = ops::get(tx, invocation_id)
                .await?
                .ok_or_else(|| Error::NotFound { what: "invocation", id: invocation_id.clone() })?;
            if stored.status == Status::Running {
                let lease = stored.lease.clone().unwrap_or(Lease {
                    owner: String::new(),
                    leased_at: claim_.now,
                    expires_at: claim_.now,
                });
                interrupt_sync(tx, invocation_id, stored.attempt_count, lease.leased_at, &lease.owner, claim_.now)
                    .await?;
            }
            execute(
                tx,
                "UPDATE invocations SET status = 'running', lease_owner = $1, leased_at = $2, lease_expires_at = $3, \
                 updated_at = $2 WHERE id = $4",
                &[&claim_.holder, &claim_.now, &claim_.lease_until, invocation_id],
            )
            .await
            .map_err(db_err)?;
        }
        _ => {}
    }
    Ok(decision)
}

pub(crate) async fn finish_sync(
    tx: &Tx<'_>,
    inv: &Invocation,
    effects: Option<&CommitEffects>,
    key: &KeyRef,
    holder: &str,
    reply: &StoredReply,
) -> Result<()> {
    if !complete(tx, key, holder, reply).await? {
        return Err(Error::LeaseLost(format!("the idempotency key of invocation {} is no longer held", inv.id)));
    }
    execute(tx, "DELETE FROM invocations WHERE id = $1", &[&inv.id]).await.map_err(db_err)?;
    execute(tx, "DELETE FROM attempts WHERE invocation_id = $1", &[&inv.id]).await.map_err(db_err)?;
    ops::record_finished(tx, inv, effects).await
}

/// A sync invocation whose node stopped mid-call: it failed, and its key may be taken over now.
pub(crate) async fn interrupt_sync(
    tx: &Tx<'_>,
    id: &str,
    attempt_count: u32,
    leased_at: Millis,
    owner: &str,
    now: Millis,
) -> Result<()> {
    let attempt = Attempt::interrupted_sync(attempt_count + 1, leased_at, now, owner);
    let error = attempt.error.clone().unwrap_or_default();
    rows::insert_attempts(tx, &[(id, &attempt)]).await.map_err(db_err)?;
    execute(
        tx,
        "UPDATE invocations SET status = 'failed', error = $1, attempt_count = attempt_count + 1, updated_at = $2, \
         lease_owner = NULL, leased_at = NULL, lease_expires_at = NULL WHERE id = $3",
        &[&error, &now, &id],
    )
    .await
    .map_err(db_err)?;
    execute(
        tx,
        "UPDATE idempotency_keys SET lease_until = $1 WHERE invocation_id = $2 AND holder IS NOT NULL",
        &[&now, &id],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Deletes records past their TTL, except one still held by a request whose lease runs on (its
/// holder may still be running and must find the record to complete it).
pub(crate) async fn purge_expired(tx: &Tx<'_>, now: Millis, limit: usize) -> Result<usize> {
    let deleted = execute(
        tx,
        "DELETE FROM idempotency_keys WHERE ctid IN \
         (SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
          LIMIT $2 FOR UPDATE SKIP LOCKED)",
        &[&now, &(limit as i64)],
    )
    .await
    .map_err(db_err)?;
    Ok(deleted as usize)
}
