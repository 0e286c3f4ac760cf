//! Mapping between SQLite rows and domain records.

use bytes::Bytes;
use keel_core::invocation::{Attempt, Delivery, Invocation, Lease, Status, StoredResponse};
use keel_core::outcome::Outcome;
use keel_core::Error;
use rusqlite::{params, Connection, Row};

/// The invocation columns, in the order [`invocation`] reads them, from a statement on the table
/// `invocations` (not an alias). A payload kept apart (`ops::kept_apart`) is read from
/// `invocation_payloads`; the row holds an empty one then, and only such rows look there.
pub(crate) const INVOCATION_COLUMNS: &str = "id, function, status, \
     CASE WHEN length(invocations.payload) > 0 THEN invocations.payload \
     ELSE IFNULL((SELECT p.payload FROM invocation_payloads AS p WHERE p.id = invocations.id), invocations.payload) END, \
     content_type, created_at, updated_at, \
     due_at, attempt_count, budget_start, redrives, last_delay_ms, lease_owner, leased_at, \
     lease_expires_at, result_status, result_content_type, result, error, idempotency_key, traceparent, sync, \
     subscription, event_id, headers, ordering_key, hops, concurrency_key, workflow_step";

fn bad(column: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unexpected {column} {value:?}").into(),
    )
}

/// Reads an invocation (without attempts) from a row selected with [`INVOCATION_COLUMNS`].
pub(crate) fn invocation(row: &Row<'_>) -> rusqlite::Result<Invocation> {
    let status: String = row.get(2)?;
    let lease_owner: Option<String> = row.get(12)?;
    let result_status: Option<u16> = row.get(15)?;
    Ok(Invocation {
        id: row.get(0)?,
        function: row.get(1)?,
        status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
        payload: Bytes::from(row.get::<_, Vec<u8>>(3)?),
        content_type: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        due_at: row.get(7)?,
        attempt_count: row.get(8)?,
        budget_start: row.get(9)?,
        redrives: row.get(10)?,
        last_delay_ms: row.get(11)?,
        lease: match lease_owner {
            Some(owner) => Some(Lease { owner, leased_at: row.get(13)?, expires_at: row.get(14)? }),
            None => None,
        },
        response: match result_status {
            Some(status) => Some(StoredResponse {
                status,
                content_type: row.get(16)?,
                body: Bytes::from(row.get::<_, Option<Vec<u8>>>(17)?.unwrap_or_default()),
            }),
            None => None,
        },
        error: row.get(18)?,
        idempotency_key: row.get(19)?,
        traceparent: row.get(20)?,
        concurrency_key: row.get(27)?,
        sync: row.get(21)?,
        delivery: match row.get::<_, Option<String>>(22)? {
            Some(subscription) => Some(Delivery {
                subscription,
                event_id: row.get::<_, Option<String>>(23)?.unwrap_or_default(),
                headers: decode_headers(&row.get::<_, Option<String>>(24)?.unwrap_or_default()),
                ordering_key: row.get(25)?,
                hops: row.get(26)?,
            }),
            None => None,
        },
        attempts: Vec::new(),
        workflow: row.get::<_, Option<String>>(28)?.as_deref().and_then(keel_core::workflow::StepRef::parse),
    })
}

/// Reads an attempt from `SELECT number, started_at, ended_at, outcome, http_status, error`.
pub(crate) fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let outcome: String = row.get(3)?;
    Ok(Attempt {
        number: row.get(0)?,
        started_at: row.get(1)?,
        ended_at: row.get(2)?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| bad("outcome", &outcome))?,
        http_status: row.get(4)?,
        error: row.get(5)?,
    })
}

/// Attempt rows, many a statement.
pub(super) static ATTEMPTS: MultiInsert = MultiInsert::new(
    "INSERT INTO attempts (invocation_id, number, started_at, ended_at, outcome, http_status, error)",
    7,
);

/// Inserts `attempts`, each of the invocation named with it.
pub(crate) fn insert_attempts(conn: &Connection, attempts: &[(&str, &Attempt)]) -> keel_core::Result<()> {
    let bind = |st: &mut rusqlite::Statement<'_>, at, (id, a): &(&str, &Attempt)| {
        bind_values(st, at, params![id, a.number, a.started_at, a.ended_at, a.outcome.as_str(), a.http_status, a.error])
    };
    ATTEMPTS.run(conn, attempts, bind, |e, _| db_err(e))
}

/// Binds `values` to parameters `at + 1 ..= at + values.len()` of `st`, whose parameters must
/// all be NULL (unbound, or cleared): a NULL value is left unbound, saving a call through
/// rusqlite into SQLite for each of the half of an invocation's 29 values that are NULL.
pub(crate) fn bind_values(
    st: &mut rusqlite::Statement<'_>,
    at: usize,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<()> {
    use rusqlite::types::{ToSqlOutput, Value, ValueRef};
    for (i, value) in values.iter().enumerate() {
        let value = value.to_sql()?;
        if !matches!(value, ToSqlOutput::Owned(Value::Null) | ToSqlOutput::Borrowed(ValueRef::Null)) {
            st.raw_bind_parameter(at + i + 1, value)?;
        }
    }
    Ok(())
}

/// Rows per statement of a [`MultiInsert`], largest first: below 50, the rows go in one statement
/// per bit of their count (27: 16 + 8 + 2 + 1), at most six.
const ROWS_PER_STATEMENT: [usize; 7] = [50, 32, 16, 8, 4, 2, 1];

/// An `INSERT` of many rows at a time: rows go in statements of [`ROWS_PER_STATEMENT`] rows
/// (100: 2 statements of 50; 37: 3, of 32, 4 and 1), each prepared once. One statement of 50 rows costs the SQLite
/// writer about a quarter less per row than 50 statements of one (`keel bench`, `async-batch`).
pub(crate) struct MultiInsert {
    /// `INSERT INTO table (columns)`, without `VALUES`.
    into: &'static str,
    /// Values per row.
    width: usize,
    sql: [std::sync::OnceLock<String>; ROWS_PER_STATEMENT.len()],
}

impl MultiInsert {
    pub(crate) const fn new(into: &'static str, width: usize) -> Self {
        Self { into, width, sql: [const { std::sync::OnceLock::new() }; ROWS_PER_STATEMENT.len()] }
    }

    /// The statement of `ROWS_PER_STATEMENT[i]` rows, built once.
    pub(super) fn sql(&self, i: usize) -> &str {
        self.sql[i].get_or_init(|| {
            let row = format!("({})", vec!["?"; self.width].join(", "));
            format!("{} VALUES {}", self.into, vec![row; ROWS_PER_STATEMENT[i]].join(", "))
        })
    }

    /// Inserts `rows`, each bound by `bind(statement, first parameter - 1, row)` with
    /// [`bind_values`]; `refused` turns
    /// a statement's error into the store's (given the rows of that statement, none of them
    /// written).
    pub(crate) fn run<T>(
        &self,
        conn: &Connection,
        rows: &[T],
        bind: impl Fn(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>,
        refused: impl Fn(rusqlite::Error, &[T]) -> keel_core::Error,
    ) -> keel_core::Result<()> {
        let mut rest = rows;
        for (i, &size) in ROWS_PER_STATEMENT.iter().enumerate() {
            if rest.len() < size {
                continue;
            }
            // Its parameters all NULL: a cached statement's are cleared when it goes back to the
            // cache (rusqlite does it), and here between two uses. Not after the last: clearing
            // walks every parameter (29 a row), and the cache would clear them again.
            let mut st = conn.prepare_cached(self.sql(i)).map_err(db_err)?;
            while rest.len() >= size {
                let (chunk, tail) = rest.split_at(size);
                for (row, value) in chunk.iter().enumerate() {
                    bind(&mut st, row * self.width, value).map_err(db_err)?;
                }
                st.raw_execute().map_err(|e| refused(e, chunk))?;
                rest = tail;
                if rest.len() >= size {
                    st.clear_bindings();
                }
            }
        }
        Ok(())
    }
}

/// Every store failure surfaces as `Unavailable`: the caller may try again later.
/// A SQLite error as the store reports it: the database busy, locked, out of space or failing
/// I/O is [`Error::Unavailable`] (worth retrying); anything else — a constraint broken, a value
/// that cannot be read, a damaged file — is [`Error::Bug`].
pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(
            DatabaseBusy
            | DatabaseLocked
            | SystemIoFailure
            | DiskFull
            | CannotOpen
            | OutOfMemory
            | FileLockingProtocolFailed,
        ) => Error::Unavailable(e.to_string()),
        _ => {
            tracing::error!(error = %e, "SQLite refused a call for a reason no retry mends");
            Error::Bug(e.to_string())
        }
    }
}

pub(crate) use crate::header_list::{decode_headers, encode_headers};

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use rusqlite::{params, Connection};

    use super::{bind_values, MultiInsert, ROWS_PER_STATEMENT};

    static PAIRS: MultiInsert = MultiInsert::new("INSERT INTO pairs (k, v)", 2);

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE pairs (k INTEGER PRIMARY KEY, v TEXT NOT NULL)").unwrap();
        conn
    }

    /// Every row goes in, once, in the fewest statements the sizes allow: one per size taken,
    /// largest first (below 50 rows, one per bit of the count).
    #[test]
    fn every_row_goes_in_once_in_one_statement_per_size_taken() {
        for n in 0..=130usize {
            let conn = table();
            let rows: Vec<i64> = (0..n as i64).collect();
            let statements = Cell::new(0);
            PAIRS
                .run(
                    &conn,
                    &rows,
                    |st, at, k| {
                        statements.set(statements.get() + usize::from(at == 0));
                        bind_values(st, at, params![k, format!("v{k}")])
                    },
                    |e, _| panic!("{n} rows refused: {e}"),
                )
                .unwrap();
            let (count, sum): (usize, i64) = conn
                .query_row("SELECT count(*), ifnull(sum(k), 0) FROM pairs", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            assert_eq!((count, sum), (n, rows.iter().sum()), "{n} rows");
            let mut rest = n;
            let expected: usize = ROWS_PER_STATEMENT
                .iter()
                .map(|size| {
                    let taken = rest / size;
                    rest %= size;
                    taken
                })
                .sum();
            assert_eq!(statements.get(), expected, "statements for {n} rows");
            if n < 50 {
                assert_eq!(statements.get(), n.count_ones() as usize, "one statement per bit of {n}");
            }
        }
    }

    /// A statement refused names its own rows, and wrote none of them; the statements before it
    /// stand (the caller rolls the job back).
    #[test]
    fn a_refused_statement_is_given_its_own_rows_and_wrote_none() {
        let conn = table();
        conn.execute("INSERT INTO pairs (k, v) VALUES (20, 'there before')", []).unwrap();
        // 27 rows: statements of 16, 8, 2 and 1; k = 20 is in the second.
        let rows: Vec<i64> = (0..27).collect();
        let refused = RefCell::new(Vec::new());
        let outcome = PAIRS.run(
            &conn,
            &rows,
            |st, at, k| bind_values(st, at, params![k, "new"]),
            |_, chunk| {
                refused.borrow_mut().extend_from_slice(chunk);
                keel_core::Error::InvalidState("refused".into())
            },
        );
        assert!(outcome.is_err());
        assert_eq!(*refused.borrow(), (16..24).collect::<Vec<i64>>());
        let new: Vec<i64> = conn
            .prepare("SELECT k FROM pairs WHERE v = 'new' ORDER BY k")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(new, (0..16).collect::<Vec<i64>>());
    }
}
