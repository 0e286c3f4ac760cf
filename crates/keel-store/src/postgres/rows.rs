//! Mapping between PostgreSQL rows and domain records, and how driver errors become store errors.

use bytes::Bytes;
use deadpool_postgres::GenericClient;
use keel_core::invocation::{Attempt, Delivery, Invocation, Lease, Status, StoredResponse};
use keel_core::outcome::Outcome;
use keel_core::{Error, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The invocation columns, in the order [`invocation`] reads them.
pub(crate) const INVOCATION_COLUMNS: &str = "id, function, status, payload, content_type, created_at, updated_at, \
     due_at, attempt_count, budget_start, redrives, last_delay_ms, lease_owner, leased_at, \
     lease_expires_at, result_status, result_content_type, result, error, idempotency_key, traceparent, sync, \
     subscription, event_id, headers, ordering_key, hops, concurrency_key, workflow_step";

/// [`INVOCATION_COLUMNS`] qualified with the alias `i`, for joins and `UPDATE … FROM`.
pub(crate) fn invocation_columns_of(alias: &str) -> String {
    INVOCATION_COLUMNS.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

fn bad(column: &str, value: &str) -> Error {
    Error::Unavailable(format!("unexpected {column} {value:?} in the database"))
}

/// Reads an invocation (without attempts) from a row selected with [`INVOCATION_COLUMNS`].
pub(crate) fn invocation(row: &Row) -> Result<Invocation> {
    let status: String = row.try_get(2).map_err(db_err)?;
    let lease_owner: Option<String> = row.try_get(12).map_err(db_err)?;
    let result_status: Option<i32> = row.try_get(15).map_err(db_err)?;
    let get_u32 = |i: usize| row.try_get::<_, i32>(i).map(|v| v as u32).map_err(db_err);
    Ok(Invocation {
        id: row.try_get(0).map_err(db_err)?,
        function: row.try_get(1).map_err(db_err)?,
        status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
        payload: Bytes::from(row.try_get::<_, Vec<u8>>(3).map_err(db_err)?),
        content_type: row.try_get(4).map_err(db_err)?,
        created_at: row.try_get(5).map_err(db_err)?,
        updated_at: row.try_get(6).map_err(db_err)?,
        due_at: row.try_get(7).map_err(db_err)?,
        attempt_count: get_u32(8)?,
        budget_start: get_u32(9)?,
        redrives: get_u32(10)?,
        last_delay_ms: row.try_get::<_, Option<i64>>(11).map_err(db_err)?.map(|v| v as u64),
        lease: match lease_owner {
            Some(owner) => Some(Lease {
                owner,
                leased_at: row.try_get(13).map_err(db_err)?,
                expires_at: row.try_get(14).map_err(db_err)?,
            }),
            None => None,
        },
        response: match result_status {
            Some(status) => Some(StoredResponse {
                status: status as u16,
                content_type: row.try_get(16).map_err(db_err)?,
                body: Bytes::from(row.try_get::<_, Option<Vec<u8>>>(17).map_err(db_err)?.unwrap_or_default()),
            }),
            None => None,
        },
        error: row.try_get(18).map_err(db_err)?,
        idempotency_key: row.try_get(19).map_err(db_err)?,
        delivery: match row.try_get::<_, Option<String>>(22).map_err(db_err)? {
            Some(subscription) => Some(Delivery {
                subscription,
                event_id: row.try_get::<_, Option<String>>(23).map_err(db_err)?.unwrap_or_default(),
                headers: decode_headers(&row.try_get::<_, Option<String>>(24).map_err(db_err)?.unwrap_or_default()),
                ordering_key: row.try_get(25).map_err(db_err)?,
                hops: row.try_get::<_, i32>(26).map_err(db_err)? as u32,
            }),
            None => None,
        },
        traceparent: row.try_get(20).map_err(db_err)?,
        concurrency_key: row.try_get(27).map_err(db_err)?,
        sync: row.try_get(21).map_err(db_err)?,
        attempts: Vec::new(),
        workflow: row
            .try_get::<_, Option<String>>(28)
            .map_err(db_err)?
            .as_deref()
            .and_then(keel_core::workflow::StepRef::parse),
    })
}

/// Reads an attempt from `SELECT number, started_at, ended_at, outcome, http_status, error`.
pub(crate) fn attempt(row: &Row) -> Result<Attempt> {
    let outcome: String = row.try_get(3).map_err(db_err)?;
    Ok(Attempt {
        number: row.try_get::<_, i32>(0).map_err(db_err)? as u32,
        started_at: row.try_get(1).map_err(db_err)?,
        ended_at: row.try_get(2).map_err(db_err)?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| bad("outcome", &outcome))?,
        http_status: row.try_get::<_, Option<i32>>(4).map_err(db_err)?.map(|s| s as u16),
        error: row.try_get(5).map_err(db_err)?,
    })
}

pub(crate) use crate::header_list::{decode_headers, encode_headers};

/// Inserts `attempts` (each with its invocation's id) in one statement, whatever their number:
/// one round trip to the server, not one an attempt. The error is PostgreSQL's, as a group
/// commit needs it (`batch::complete_all`); a store operation maps it with [`db_err`].
pub(crate) async fn insert_attempts(
    tx: &Tx<'_>,
    attempts: &[(&str, &Attempt)],
) -> std::result::Result<(), tokio_postgres::Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = attempts.iter().map(|(id, _)| *id).collect();
    let numbers: Vec<i32> = attempts.iter().map(|(_, a)| a.number as i32).collect();
    let started: Vec<i64> = attempts.iter().map(|(_, a)| a.started_at).collect();
    let ended: Vec<i64> = attempts.iter().map(|(_, a)| a.ended_at).collect();
    let outcomes: Vec<&str> = attempts.iter().map(|(_, a)| a.outcome.as_str()).collect();
    let statuses: Vec<Option<i32>> = attempts.iter().map(|(_, a)| a.http_status.map(i32::from)).collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|(_, a)| a.error.as_deref()).collect();
    execute(
        tx,
        "INSERT INTO attempts (invocation_id, number, started_at, ended_at, outcome, http_status, error) \
         SELECT * FROM unnest($1::TEXT[], $2::INT4[], $3::INT8[], $4::INT8[], $5::TEXT[], $6::INT4[], $7::TEXT[])",
        &[&ids, &numbers, &started, &ended, &outcomes, &statuses, &errors],
    )
    .await?;
    Ok(())
}

/// Every database failure surfaces as `Unavailable`: the caller may try again later (the API
/// answers 503 with `Retry-After`).
/// A PostgreSQL error as the store reports it: a lost connection, a timeout, a server shutting
/// down, out of resources or a serialization conflict is [`Error::Unavailable`] (worth
/// retrying); a data, constraint or statement error (SQLSTATE classes 22, 23, 42, XX) is
/// [`Error::Bug`].
pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    classify(&e)
}

pub(crate) fn classify(e: &tokio_postgres::Error) -> Error {
    let class = e.code().map(|c| &c.code()[..2]);
    match class {
        Some("22" | "23" | "42" | "XX") => {
            tracing::error!(error = %describe(e), "PostgreSQL refused a call for a reason no retry mends");
            Error::Bug(describe(e))
        }
        _ => Error::Unavailable(describe(e)),
    }
}

/// The error of a COMMIT: refused by the server, so nothing was applied, or else of unknown
/// outcome: the transaction may have committed ([`commit_refused`]).
pub(crate) fn commit_err(e: tokio_postgres::Error) -> Error {
    match commit_refused(&e) {
        true => classify(&e),
        false => Error::OutcomeUnknown(describe(&e)),
    }
}

/// True when a failed COMMIT surely rolled back: the server answered it with an error that
/// refuses the transaction (a serialization failure or deadlock, a deferred constraint, an
/// invalid transaction state, bad data). A lost connection leaves the outcome unknown, and so
/// does any other answer: a server shutting down (`57P01` from `pg_ctl stop -m fast`) or a
/// backend being terminated may send its FATAL after the commit is on disk.
pub(crate) fn commit_refused(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| refuses_commit(db.code()))
}

fn refuses_commit(code: &SqlState) -> bool {
    matches!(&code.code()[..2], "40" | "23" | "25" | "22")
}

/// The server's message when there is one (the driver's `Display` says only "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {}", db.message()),
        None => format!("PostgreSQL: {e}"),
    }
}

/// True for a unique-key violation (an id or key already present).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A transaction on a pooled connection: every store operation runs inside one.
pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Runs a query through the connection's prepared-statement cache.
pub(crate) async fn query(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, params).await
}

/// Runs a statement through the connection's prepared-statement cache; returns the rows changed.
pub(crate) async fn execute(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_answered_by_a_shutdown_or_a_crash_may_have_committed() {
        for refused in [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNIQUE_VIOLATION,
            SqlState::IN_FAILED_SQL_TRANSACTION,
        ] {
            assert!(refuses_commit(&refused), "{refused:?} rolls back");
        }
        for unknown in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::QUERY_CANCELED,
            SqlState::INTERNAL_ERROR,
        ] {
            assert!(!refuses_commit(&unknown), "{unknown:?} leaves the outcome unknown");
        }
    }
}
