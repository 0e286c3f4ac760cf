//! Events and their fan-out deliveries, and KV with version preconditions.

use std::ops::Bound;

use bytes::Bytes;
use keel_core::clock::Millis;
use keel_core::events::{CloudEvent, NewEvent, Outgoing, Published, StoredEvent};
use keel_core::invocation::CommitEffects;
use keel_core::kv::{KeyRange, KvEntry, KvItem, KvWrite};
use keel_core::store::{page_size, Page};
use keel_core::{Error, Result};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::ops;
use super::rows::{self, db_err, decode_headers, encode_headers, INVOCATION_COLUMNS};

/// Stores each event and its deliveries, skipping duplicates (same `source` + `id`).
pub(crate) fn publish(conn: &Connection, events: Vec<NewEvent>) -> Result<Vec<Published>> {
    let mut out = Vec::with_capacity(events.len());
    for new in events {
        let e = &new.event;
        let existing: Option<String> = conn
            .prepare_cached("SELECT id FROM events WHERE source = ? AND ce_id = ?")
            .and_then(|mut st| st.query_row(params![e.source, e.id], |r| r.get(0)).optional())
            .map_err(db_err)?;
        if let Some(id) = existing {
            out.push(Published { id, duplicate: true });
            continue;
        }
        let extensions: Vec<(String, String)> = e.extensions.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        conn.prepare_cached(
            "INSERT INTO events (id, topic, source, ce_id, type, subject, time, datacontenttype, dataschema, data, \
             extensions, hops, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .and_then(|mut st| {
            st.execute(params![
                new.id,
                new.topic,
                e.source,
                e.id,
                e.ty,
                e.subject,
                e.time,
                e.datacontenttype,
                e.dataschema,
                &e.data[..],
                encode_headers(&extensions),
                new.hops,
                new.created_at
            ])
        })
        .map_err(db_err)?;
        for delivery in new.deliveries {
            ops::enqueue(conn, delivery)?;
        }
        for peer in &new.replicate_to {
            conn.prepare_cached("INSERT INTO region_outbox (peer, event_id, created_at) VALUES (?, ?, ?)")
                .and_then(|mut st| st.execute(params![peer, new.id, new.created_at]))
                .map_err(db_err)?;
        }
        out.push(Published { id: new.id, duplicate: false });
    }
    Ok(out)
}

pub(crate) fn get_event(conn: &Connection, id: &str) -> Result<Option<StoredEvent>> {
    let row = conn
        .prepare_cached(
            "SELECT topic, source, ce_id, type, subject, time, datacontenttype, dataschema, data, extensions, hops, \
             created_at FROM events WHERE id = ?",
        )
        .and_then(|mut st| {
            st.query_row([id], |r| {
                let event = CloudEvent {
                    source: r.get(1)?,
                    id: r.get(2)?,
                    ty: r.get(3)?,
                    subject: r.get(4)?,
                    time: r.get(5)?,
                    datacontenttype: r.get(6)?,
                    dataschema: r.get(7)?,
                    data: Bytes::from(r.get::<_, Vec<u8>>(8)?),
                    extensions: decode_headers(&r.get::<_, String>(9)?).into_iter().collect(),
                };
                Ok(StoredEvent {
                    id: id.to_string(),
                    topic: r.get(0)?,
                    event,
                    hops: r.get(10)?,
                    created_at: r.get(11)?,
                    deliveries: Vec::new(),
                })
            })
            .optional()
        })
        .map_err(db_err)?;
    let Some(mut event) = row else { return Ok(None) };
    let sql = format!("SELECT {INVOCATION_COLUMNS} FROM invocations WHERE event_id = ? ORDER BY subscription, id");
    event.deliveries =
        conn.prepare_cached(&sql).and_then(|mut st| st.query_map([id], rows::invocation)?.collect()).map_err(db_err)?;
    Ok(Some(event))
}

/// The oldest `limit` events waiting for `peer`.
pub(crate) fn outbox_next(conn: &Connection, peer: &str, limit: usize) -> Result<Vec<Outgoing>> {
    conn.prepare_cached(
        "SELECT o.seq, e.topic, e.source, e.ce_id, e.type, e.subject, e.time, e.datacontenttype, e.dataschema, \
         e.data, e.extensions, e.created_at, e.hops FROM region_outbox o JOIN events e ON e.id = o.event_id \
         WHERE o.peer = ? ORDER BY o.seq LIMIT ?",
    )
    .and_then(|mut st| {
        st.query_map(params![peer, limit as i64], |r| {
            Ok(Outgoing {
                seq: r.get(0)?,
                topic: r.get(1)?,
                event: CloudEvent {
                    source: r.get(2)?,
                    id: r.get(3)?,
                    ty: r.get(4)?,
                    subject: r.get(5)?,
                    time: r.get(6)?,
                    datacontenttype: r.get(7)?,
                    dataschema: r.get(8)?,
                    data: Bytes::from(r.get::<_, Vec<u8>>(9)?),
                    extensions: decode_headers(&r.get::<_, String>(10)?).into_iter().collect(),
                },
                created_at: r.get(11)?,
                hops: r.get(12)?,
            })
        })?
        .collect()
    })
    .map_err(db_err)
}

pub(crate) fn outbox_ack(conn: &Connection, peer: &str, seqs: &[i64]) -> Result<()> {
    for seq in seqs {
        conn.prepare_cached("DELETE FROM region_outbox WHERE peer = ? AND seq = ?")
            .and_then(|mut st| st.execute(params![peer, seq]))
            .map_err(db_err)?;
    }
    Ok(())
}

pub(crate) fn outbox_depth(conn: &Connection) -> Result<Vec<(String, u64)>> {
    conn.prepare_cached("SELECT peer, COUNT(*) FROM region_outbox GROUP BY peer ORDER BY peer")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?.collect())
        .map_err(db_err)
}

pub(crate) fn kv_get(conn: &Connection, ns: &str, key: &str) -> Result<Option<KvEntry>> {
    conn.prepare_cached("SELECT value, version, updated_at FROM kv WHERE ns = ? AND key = ?")
        .and_then(|mut st| {
            st.query_row(params![ns, key], |r| {
                Ok(KvEntry { value: Bytes::from(r.get::<_, Vec<u8>>(0)?), version: r.get(1)?, updated_at: r.get(2)? })
            })
            .optional()
        })
        .map_err(db_err)
}

/// One page of a namespace's keys in `range`, in byte order (`TEXT` compares with `BINARY`:
/// `memcmp` of the UTF-8), read along the primary key.
pub(crate) fn kv_list(conn: &Connection, ns: &str, range: &KeyRange, limit: usize) -> Result<Page<KvItem>> {
    let size = page_size(limit);
    let mut sql = String::from("SELECT key, value, version, updated_at FROM kv WHERE ns = ?");
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![&ns];
    let start = match &range.start {
        Bound::Included(key) => Some((">=", key)),
        Bound::Excluded(key) => Some((">", key)),
        Bound::Unbounded => None,
    };
    if let Some((op, key)) = start {
        sql.push_str(&format!(" AND key {op} ?"));
        args.push(key);
    }
    if let Some(end) = &range.end {
        sql.push_str(" AND key < ?");
        args.push(end);
    }
    // One row past the page says whether another follows; bound, so every size shares a statement.
    let fetch = size as i64 + 1;
    args.push(&fetch);
    sql.push_str(" ORDER BY key LIMIT ?");
    let items = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(params_from_iter(args), |r| {
                let entry =
                    KvEntry { value: Bytes::from(r.get::<_, Vec<u8>>(1)?), version: r.get(2)?, updated_at: r.get(3)? };
                Ok(KvItem { key: r.get(0)?, entry })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    Ok(Page::from_overfetched(items, size, |item| &item.key))
}

/// Applies one write if its precondition holds; the new version, `None` after a delete.
pub(crate) fn kv_write(conn: &Connection, w: &KvWrite, now: Millis) -> Result<Option<i64>> {
    let current = kv_get(conn, &w.ns, &w.key)?.map(|e| e.version);
    if !w.precondition.holds(current) {
        return Err(Error::PreconditionFailed(w.precondition.describe_failure(&w.ns, &w.key, current)));
    }
    match &w.value {
        Some(value) => {
            let version = current.unwrap_or(0) + 1;
            conn.prepare_cached(
                "INSERT OR REPLACE INTO kv (ns, key, value, version, updated_at) VALUES (?, ?, ?, ?, ?)",
            )
            .and_then(|mut st| st.execute(params![w.ns, w.key, &value[..], version, now]))
            .map_err(db_err)?;
            Ok(Some(version))
        }
        None => {
            conn.prepare_cached("DELETE FROM kv WHERE ns = ? AND key = ?")
                .and_then(|mut st| st.execute(params![w.ns, w.key]))
                .map_err(db_err)?;
            Ok(None)
        }
    }
}

/// Applies a success's effects: every KV write (all or none) and every event.
pub(crate) fn apply(conn: &Connection, effects: Option<&CommitEffects>, now: Millis) -> Result<()> {
    let Some(effects) = effects else { return Ok(()) };
    for w in &effects.kv {
        kv_write(conn, w, now)?;
    }
    publish(conn, effects.events.clone())?;
    Ok(())
}
