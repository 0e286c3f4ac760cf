//! Events and their fan-out deliveries, and KV with version preconditions.
//!
//! Several nodes may publish the same event (same `source` + `id`) or write the same KV key at
//! once: the event's unique constraint makes the second publisher wait for the first and then
//! find its id, and a KV write first takes a transaction-scoped advisory lock on its key, so a
//! precondition is always checked against the version the write replaces.

use std::ops::Bound;

use bytes::Bytes;
use keel_core::clock::Millis;
use keel_core::events::{CloudEvent, NewEvent, Outgoing, Published, StoredEvent};
use keel_core::invocation::CommitEffects;
use keel_core::kv::{KeyRange, KvEntry, KvItem, KvWrite};
use keel_core::store::{page_size, Page};
use keel_core::{Error, Result};

use super::notify::notify;
use super::ops;
use super::rows::{self, db_err, decode_headers, encode_headers, execute, query, Tx, INVOCATION_COLUMNS};

/// Stores each event and its deliveries, skipping duplicates (same `source` + `id`).
pub(crate) async fn publish(tx: &Tx<'_>, events: &[NewEvent]) -> Result<Vec<Published>> {
    let mut out = Vec::with_capacity(events.len());
    let mut woken: Vec<String> = Vec::new();
    for new in events {
        let e = &new.event;
        let extensions: Vec<(String, String)> = e.extensions.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let inserted = query(
            tx,
            "INSERT INTO events (id, topic, source, ce_id, type, subject, time, datacontenttype, dataschema, data, \
             extensions, hops, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (source, ce_id) DO NOTHING RETURNING id",
            &[
                &new.id,
                &new.topic,
                &e.source,
                &e.id,
                &e.ty,
                &e.subject,
                &e.time,
                &e.datacontenttype,
                &e.dataschema,
                &&e.data[..],
                &encode_headers(&extensions),
                &(new.hops as i32),
                &new.created_at,
            ],
        )
        .await
        .map_err(db_err)?;
        if inserted.is_empty() {
            let existing = query(tx, "SELECT id FROM events WHERE source = $1 AND ce_id = $2", &[&e.source, &e.id])
                .await
                .map_err(db_err)?;
            let id = existing.first().map(|r| r.get(0)).unwrap_or_default();
            out.push(Published { id, duplicate: true });
            continue;
        }
        for peer in &new.replicate_to {
            execute(
                tx,
                "INSERT INTO region_outbox (peer, event_id, created_at) VALUES ($1, $2, $3)",
                &[peer, &new.id, &new.created_at],
            )
            .await
            .map_err(db_err)?;
        }
        // One statement for all of the event's deliveries, in their order (ordered deliveries
        // follow it): a fan-out to N subscriptions is one round trip, not N.
        let deliveries: Vec<_> = new.deliveries.iter().map(|d| d.clone().into_stored()).collect();
        ops::insert_all(tx, &deliveries).await?;
        for delivery in &new.deliveries {
            if !woken.contains(&delivery.function) {
                woken.push(delivery.function.clone());
            }
        }
        out.push(Published { id: new.id.clone(), duplicate: false });
    }
    notify(tx, &woken).await?;
    Ok(out)
}

pub(crate) async fn get_event(tx: &Tx<'_>, id: &str) -> Result<Option<StoredEvent>> {
    let found = query(
        tx,
        "SELECT topic, source, ce_id, type, subject, time, datacontenttype, dataschema, data, extensions, hops, \
         created_at FROM events WHERE id = $1",
        &[&id],
    )
    .await
    .map_err(db_err)?;
    let Some(r) = found.first() else { return Ok(None) };
    let event = CloudEvent {
        source: r.get(1),
        id: r.get(2),
        ty: r.get(3),
        subject: r.get(4),
        time: r.get(5),
        datacontenttype: r.get(6),
        dataschema: r.get(7),
        data: Bytes::from(r.get::<_, Vec<u8>>(8)),
        extensions: decode_headers(r.get(9)).into_iter().collect(),
    };
    let sql = format!("SELECT {INVOCATION_COLUMNS} FROM invocations WHERE event_id = $1 ORDER BY subscription, id");
    let deliveries = query(tx, &sql, &[&id]).await.map_err(db_err)?;
    Ok(Some(StoredEvent {
        id: id.to_string(),
        topic: r.get(0),
        event,
        hops: r.get::<_, i32>(10) as u32,
        created_at: r.get(11),
        deliveries: deliveries.iter().map(rows::invocation).collect::<Result<_>>()?,
    }))
}

/// The oldest `limit` events waiting for `peer`. (Rows of transactions still open may commit
/// with lower numbers later: they are sent then, and only acknowledged rows are removed.)
pub(crate) async fn outbox_next(tx: &Tx<'_>, peer: &str, limit: usize) -> Result<Vec<Outgoing>> {
    let found = query(
        tx,
        "SELECT o.seq, e.topic, e.source, e.ce_id, e.type, e.subject, e.time, e.datacontenttype, e.dataschema, \
         e.data, e.extensions, e.created_at, e.hops FROM region_outbox o JOIN events e ON e.id = o.event_id \
         WHERE o.peer = $1 ORDER BY o.seq LIMIT $2",
        &[&peer, &(limit as i64)],
    )
    .await
    .map_err(db_err)?;
    Ok(found
        .iter()
        .map(|r| Outgoing {
            seq: r.get(0),
            topic: r.get(1),
            event: CloudEvent {
                source: r.get(2),
                id: r.get(3),
                ty: r.get(4),
                subject: r.get(5),
                time: r.get(6),
                datacontenttype: r.get(7),
                dataschema: r.get(8),
                data: Bytes::from(r.get::<_, Vec<u8>>(9)),
                extensions: decode_headers(r.get(10)).into_iter().collect(),
            },
            created_at: r.get(11),
            hops: r.get::<_, i32>(12) as u32,
        })
        .collect())
}

pub(crate) async fn outbox_ack(tx: &Tx<'_>, peer: &str, seqs: &[i64]) -> Result<()> {
    execute(tx, "DELETE FROM region_outbox WHERE peer = $1 AND seq = ANY($2)", &[&peer, &seqs])
        .await
        .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn outbox_depth(tx: &Tx<'_>) -> Result<Vec<(String, u64)>> {
    let found =
        query(tx, "SELECT peer, COUNT(*) FROM region_outbox GROUP BY peer ORDER BY peer", &[]).await.map_err(db_err)?;
    Ok(found.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect())
}

pub(crate) async fn kv_get(tx: &Tx<'_>, ns: &str, key: &str) -> Result<Option<KvEntry>> {
    let found = query(tx, "SELECT value, version, updated_at FROM kv WHERE ns = $1 AND key = $2", &[&ns, &key])
        .await
        .map_err(db_err)?;
    Ok(found.first().map(|r| KvEntry {
        value: Bytes::from(r.get::<_, Vec<u8>>(0)),
        version: r.get(1),
        updated_at: r.get(2),
    }))
}

/// One page of a namespace's keys in `range`, in byte order: every comparison and the order
/// are `COLLATE "C"` (the column's own collation since migration 9, so the primary key serves
/// them), whatever the database's default collation, so cursors agree with SQLite's.
pub(crate) async fn kv_list(tx: &Tx<'_>, ns: &str, range: &KeyRange, limit: usize) -> Result<Page<KvItem>> {
    let size = page_size(limit);
    let mut sql = String::from("SELECT key, value, version, updated_at FROM kv WHERE ns = $1");
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&ns];
    let start = match &range.start {
        Bound::Included(key) => Some((">=", key)),
        Bound::Excluded(key) => Some((">", key)),
        Bound::Unbounded => None,
    };
    if let Some((op, key)) = start {
        args.push(key);
        sql.push_str(&format!(" AND key COLLATE \"C\" {op} ${}", args.len()));
    }
    if let Some(end) = &range.end {
        args.push(end);
        sql.push_str(&format!(" AND key COLLATE \"C\" < ${}", args.len()));
    }
    // One row past the page says whether another follows; bound, so every size shares a statement.
    let fetch = size as i64 + 1;
    args.push(&fetch);
    sql.push_str(&format!(" ORDER BY key COLLATE \"C\" LIMIT ${}", args.len()));
    let rows = query(tx, &sql, &args).await.map_err(db_err)?;
    let items = rows
        .iter()
        .map(|r| KvItem {
            key: r.get(0),
            entry: KvEntry { value: Bytes::from(r.get::<_, Vec<u8>>(1)), version: r.get(2), updated_at: r.get(3) },
        })
        .collect();
    Ok(Page::from_overfetched(items, size, |item| &item.key))
}

/// Applies one write if its precondition holds; the new version, `None` after a delete.
pub(crate) async fn kv_write(tx: &Tx<'_>, w: &KvWrite, now: Millis) -> Result<Option<i64>> {
    execute(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended('kv' || chr(31) || $1 || chr(31) || $2, 0))",
        &[&w.ns, &w.key],
    )
    .await
    .map_err(db_err)?;
    let current = kv_get(tx, &w.ns, &w.key).await?.map(|e| e.version);
    if !w.precondition.holds(current) {
        return Err(Error::PreconditionFailed(w.precondition.describe_failure(&w.ns, &w.key, current)));
    }
    match &w.value {
        Some(value) => {
            let version = current.unwrap_or(0) + 1;
            execute(
                tx,
                "INSERT INTO kv (ns, key, value, version, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version, \
                 updated_at = EXCLUDED.updated_at",
                &[&w.ns, &w.key, &&value[..], &version, &now],
            )
            .await
            .map_err(db_err)?;
            Ok(Some(version))
        }
        None => {
            execute(tx, "DELETE FROM kv WHERE ns = $1 AND key = $2", &[&w.ns, &w.key]).await.map_err(db_err)?;
            Ok(None)
        }
    }
}

/// Applies a success's effects: every KV write (all or none) and every event.
pub(crate) async fn apply(tx: &Tx<'_>, effects: Option<&CommitEffects>, now: Millis) -> Result<()> {
    let Some(effects) = effects else { return Ok(()) };
    for w in &effects.kv {
        kv_write(tx, w, now).await?;
    }
    publish(tx, &effects.events).await?;
    Ok(())
}
