//! The access-control tables on SQLite: API keys, signing keys and the audit log. Writes run on
//! the writer thread (one at a time, so a check and the write it decides are never raced).

use keel_core::auth::{ApiKey, AuditEntry, AuditFilter, SigningKey};
use keel_core::clock::Millis;
use keel_core::store::Page;
use keel_core::{Error, Result};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::rows::db_err;
use crate::scope_list::{decode_scopes, encode_scopes};

const API_KEY_COLUMNS: &str = "id, name, hash, scopes, created_at, expires_at, revoked_at, last_used_at";

/// A key as read, its scopes still text: they are parsed outside rusqlite's row mapping, so a bad
/// one can be reported as the [`Error::Bug`] it is.
fn api_key_row(row: &Row<'_>) -> rusqlite::Result<(ApiKey, String)> {
    let key = ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        hash: row.get(2)?,
        scopes: Vec::new(),
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
        last_used_at: row.get(7)?,
    };
    Ok((key, row.get(3)?))
}

fn with_scopes((mut key, scopes): (ApiKey, String)) -> Result<ApiKey> {
    key.scopes = decode_scopes(&key.id, &scopes)?;
    Ok(key)
}

pub(crate) fn create_api_key(conn: &Connection, key: &ApiKey) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, name, hash, scopes, created_at, expires_at, revoked_at, last_used_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut st| {
        st.execute(params![
            key.id,
            key.name,
            key.hash,
            encode_scopes(&key.scopes),
            key.created_at,
            key.expires_at,
            key.revoked_at,
            key.last_used_at
        ])
    })
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Error::InvalidState(format!("api key {} (or one with the same secret) already exists", key.id))
        }
        e => db_err(e),
    })?;
    Ok(())
}

pub(crate) fn api_keys(conn: &Connection) -> Result<Vec<ApiKey>> {
    let rows: Vec<(ApiKey, String)> = conn
        .prepare_cached(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"))
        .and_then(|mut st| st.query_map([], api_key_row)?.collect())
        .map_err(db_err)?;
    rows.into_iter().map(with_scopes).collect()
}

pub(crate) fn revoke_api_key(conn: &Connection, id: &str, now: Millis) -> Result<ApiKey> {
    let row = conn
        .prepare_cached(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {API_KEY_COLUMNS}"
        ))
        .and_then(|mut st| st.query_row(params![now, id], api_key_row).optional())
        .map_err(db_err)?;
    let row = row.ok_or_else(|| Error::NotFound { what: "api key", id: id.to_string() })?;
    with_scopes(row)
}

/// One statement per use: each keeps the later time, so repeated ids need no merging first.
pub(crate) fn touch_api_keys(conn: &Connection, used: &[(String, Millis)]) -> Result<()> {
    let mut st = conn
        .prepare_cached("UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, ?1), ?1) WHERE id = ?2")
        .map_err(db_err)?;
    for (id, at) in used {
        st.execute(params![at, id]).map_err(db_err)?;
    }
    Ok(())
}

pub(crate) fn signing_keys(conn: &Connection) -> Result<Vec<SigningKey>> {
    conn.prepare_cached("SELECT id, secret, created_at, expires_at FROM signing_keys ORDER BY created_at, id")
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok(SigningKey { id: r.get(0)?, secret: r.get(1)?, created_at: r.get(2)?, expires_at: r.get(3)? })
            })?
            .collect()
        })
        .map_err(db_err)
}

pub(crate) fn add_signing_key(
    conn: &Connection,
    key: &SigningKey,
    retire_at: Millis,
    only_if_none: bool,
) -> Result<()> {
    if only_if_none {
        let live: i64 = conn
            .prepare_cached("SELECT count(*) FROM signing_keys WHERE expires_at IS NULL OR expires_at > ?")
            .and_then(|mut st| st.query_row([key.created_at], |r| r.get(0)))
            .map_err(db_err)?;
        if live > 0 {
            return Ok(());
        }
    }
    conn.prepare_cached("DELETE FROM signing_keys WHERE expires_at < ?")
        .and_then(|mut st| st.execute([key.created_at]))
        .map_err(db_err)?;
    conn.prepare_cached("UPDATE signing_keys SET expires_at = ? WHERE expires_at IS NULL")
        .and_then(|mut st| st.execute([retire_at]))
        .map_err(db_err)?;
    conn.prepare_cached("INSERT INTO signing_keys (id, secret, created_at, expires_at) VALUES (?, ?, ?, ?)")
        .and_then(|mut st| st.execute(params![key.id, key.secret, key.created_at, key.expires_at]))
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                Error::InvalidState(format!("signing key {} already exists", key.id))
            }
            e => db_err(e),
        })?;
    Ok(())
}

pub(crate) fn audit(conn: &Connection, entry: &AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (id, at, actor, action, target, request_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut st| {
        st.execute(params![
            entry.id,
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            entry.request_id,
            entry.detail.to_string()
        ])
    })
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Error::InvalidState(format!("audit entry {} already exists", entry.id))
        }
        e => db_err(e),
    })?;
    Ok(())
}

pub(crate) fn audit_log(conn: &Connection, filter: &AuditFilter) -> Result<Page<AuditEntry>> {
    let mut sql = String::from("SELECT id, at, actor, action, target, request_id, detail FROM audit_log WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    for (column, value) in [("action", &filter.action), ("actor", &filter.actor)] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(v.clone()));
        }
    }
    if let Some(c) = &filter.cursor {
        sql.push_str(" AND id < ?");
        args.push(Value::Text(c.clone()));
    }
    let size = filter.page_size();
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(size as i64 + 1));
    let rows: Vec<(AuditEntry, String)> = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(params_from_iter(args), |r| {
                let entry = AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    request_id: r.get(5)?,
                    detail: serde_json::Value::Null,
                };
                Ok((entry, r.get(6)?))
            })?
            .collect()
        })
        .map_err(db_err)?;
    let items = rows.into_iter().map(|(entry, detail)| with_detail(entry, &detail)).collect::<Result<Vec<_>>>()?;
    Ok(Page::from_overfetched(items, size, |e| &e.id))
}

fn with_detail(mut entry: AuditEntry, detail: &str) -> Result<AuditEntry> {
    entry.detail = serde_json::from_str(detail)
        .map_err(|e| Error::Bug(format!("audit entry {}: its detail is not JSON: {e}", entry.id)))?;
    Ok(entry)
}
