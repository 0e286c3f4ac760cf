//! The access-control tables on PostgreSQL: API keys, signing keys and the audit log. Every node
//! writes them, so what decides on what it read (the first signing key) holds a lock.

use keel_core::auth::{ApiKey, AuditEntry, AuditFilter, SigningKey};
use keel_core::clock::Millis;
use keel_core::store::Page;
use keel_core::{Error, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::rows::{db_err, execute, is_unique_violation, query, Tx};
use crate::scope_list::{decode_scopes, encode_scopes};

/// `pg_advisory_xact_lock` key of signing-key changes ("keys" in ASCII): nodes starting at once
/// on an empty database would otherwise each see no key and each add one.
const SIGNING_KEY_LOCK: i64 = 0x6b65_7973;

const API_KEY_COLUMNS: &str = "id, name, hash, scopes, created_at, expires_at, revoked_at, last_used_at";

fn api_key(row: &Row) -> Result<ApiKey> {
    let id: String = row.try_get(0).map_err(db_err)?;
    let scopes: String = row.try_get(3).map_err(db_err)?;
    Ok(ApiKey {
        scopes: decode_scopes(&id, &scopes)?,
        name: row.try_get(1).map_err(db_err)?,
        hash: row.try_get(2).map_err(db_err)?,
        created_at: row.try_get(4).map_err(db_err)?,
        expires_at: row.try_get(5).map_err(db_err)?,
        revoked_at: row.try_get(6).map_err(db_err)?,
        last_used_at: row.try_get(7).map_err(db_err)?,
        id,
    })
}

pub(crate) async fn create_api_key(tx: &Tx<'_>, key: &ApiKey) -> Result<()> {
    execute(
        tx,
        "INSERT INTO api_keys (id, name, hash, scopes, created_at, expires_at, revoked_at, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &key.id,
            &key.name,
            &key.hash,
            &encode_scopes(&key.scopes),
            &key.created_at,
            &key.expires_at,
            &key.revoked_at,
            &key.last_used_at,
        ],
    )
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => Error::InvalidState(format!("api key {} (or one with the same secret) already exists", key.id)),
        false => db_err(e),
    })?;
    Ok(())
}

pub(crate) async fn api_keys(tx: &Tx<'_>) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
    query(tx, &sql, &[]).await.map_err(db_err)?.iter().map(api_key).collect()
}

pub(crate) async fn revoke_api_key(tx: &Tx<'_>, id: &str, now: Millis) -> Result<ApiKey> {
    let sql =
        format!("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING {API_KEY_COLUMNS}");
    let rows = query(tx, &sql, &[&now, &id]).await.map_err(db_err)?;
    let row = rows.first().ok_or_else(|| Error::NotFound { what: "api key", id: id.to_string() })?;
    api_key(row)
}

/// One statement per use, in id order: every node locks the rows in the same order, so two
/// nodes flushing at once wait for each other instead of deadlocking. Each keeps the later
/// time (`GREATEST` ignores a NULL), so repeated ids need no merging first.
pub(crate) async fn touch_api_keys(tx: &Tx<'_>, mut used: Vec<(String, Millis)>) -> Result<()> {
    used.sort();
    for (id, at) in &used {
        execute(tx, "UPDATE api_keys SET last_used_at = GREATEST(last_used_at, $1) WHERE id = $2", &[at, id])
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

pub(crate) async fn signing_keys(tx: &Tx<'_>) -> Result<Vec<SigningKey>> {
    let rows = query(tx, "SELECT id, secret, created_at, expires_at FROM signing_keys ORDER BY created_at, id", &[])
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(SigningKey {
                id: r.try_get(0).map_err(db_err)?,
                secret: r.try_get(1).map_err(db_err)?,
                created_at: r.try_get(2).map_err(db_err)?,
                expires_at: r.try_get(3).map_err(db_err)?,
            })
        })
        .collect()
}

/// Under [`SIGNING_KEY_LOCK`], held to the end of the transaction: a second node's call waits
/// for the first to commit, and its statements (each a fresh snapshot under READ COMMITTED)
/// then see the first one's key.
pub(crate) async fn add_signing_key(
    tx: &Tx<'_>,
    key: &SigningKey,
    retire_at: Millis,
    only_if_none: bool,
) -> Result<()> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&SIGNING_KEY_LOCK]).await.map_err(db_err)?;
    if only_if_none {
        let live: i64 = query(
            tx,
            "SELECT count(*) FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1",
            &[&key.created_at],
        )
        .await
        .map_err(db_err)?[0]
            .try_get(0)
            .map_err(db_err)?;
        if live > 0 {
            return Ok(());
        }
    }
    execute(tx, "DELETE FROM signing_keys WHERE expires_at < $1", &[&key.created_at]).await.map_err(db_err)?;
    execute(tx, "UPDATE signing_keys SET expires_at = $1 WHERE expires_at IS NULL", &[&retire_at])
        .await
        .map_err(db_err)?;
    execute(
        tx,
        "INSERT INTO signing_keys (id, secret, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        &[&key.id, &key.secret, &key.created_at, &key.expires_at],
    )
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => Error::InvalidState(format!("signing key {} already exists", key.id)),
        false => db_err(e),
    })?;
    Ok(())
}

pub(crate) async fn audit(tx: &Tx<'_>, entry: &AuditEntry) -> Result<()> {
    execute(
        tx,
        "INSERT INTO audit_log (id, at, actor, action, target, request_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &entry.id,
            &entry.at,
            &entry.actor,
            &entry.action,
            &entry.target,
            &entry.request_id,
            &entry.detail.to_string(),
        ],
    )
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => Error::InvalidState(format!("audit entry {} already exists", entry.id)),
        false => db_err(e),
    })?;
    Ok(())
}

pub(crate) async fn audit_log(tx: &Tx<'_>, filter: &AuditFilter) -> Result<Page<AuditEntry>> {
    let mut conditions = String::from("TRUE");
    let mut args: Vec<String> = Vec::new();
    let tests = [("action =", &filter.action), ("actor =", &filter.actor), ("id <", &filter.cursor)];
    for (column_test, value) in tests {
        if let Some(v) = value {
            args.push(v.clone());
            conditions.push_str(&format!(" AND {column_test} ${}", args.len()));
        }
    }
    let size = filter.page_size();
    let limit = size as i64 + 1;
    let mut params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    params.push(&limit);
    let sql = format!(
        "SELECT id, at, actor, action, target, request_id, detail FROM audit_log WHERE {conditions} \
         ORDER BY id DESC LIMIT ${}",
        params.len()
    );
    let rows = query(tx, &sql, &params).await.map_err(db_err)?;
    let items = rows.iter().map(audit_entry).collect::<Result<Vec<_>>>()?;
    Ok(Page::from_overfetched(items, size, |e| &e.id))
}

fn audit_entry(row: &Row) -> Result<AuditEntry> {
    let id: String = row.try_get(0).map_err(db_err)?;
    let detail: String = row.try_get(6).map_err(db_err)?;
    Ok(AuditEntry {
        detail: serde_json::from_str(&detail)
            .map_err(|e| Error::Bug(format!("audit entry {id}: its detail is not JSON: {e}")))?,
        at: row.try_get(1).map_err(db_err)?,
        actor: row.try_get(2).map_err(db_err)?,
        action: row.try_get(3).map_err(db_err)?,
        target: row.try_get(4).map_err(db_err)?,
        request_id: row.try_get(5).map_err(db_err)?,
        id,
    })
}
