//! The SQLite schema, applied as numbered migrations tracked in `PRAGMA user_version`.

use rusqlite::Connection;

/// Migrations in order; the one at index `i` brings `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE invocations (
    id                  TEXT PRIMARY KEY,
    function            TEXT NOT NULL,
    status              TEXT NOT NULL,
    payload             BLOB NOT NULL,
    content_type        TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    due_at              INTEGER,
    attempt_count       INTEGER NOT NULL DEFAULT 0,
    budget_start        INTEGER NOT NULL DEFAULT 0,
    redrives            INTEGER NOT NULL DEFAULT 0,
    last_delay_ms       INTEGER,
    lease_owner         TEXT,
    leased_at           INTEGER,
    lease_expires_at    INTEGER,
    result_status       INTEGER,
    result_content_type TEXT,
    result              BLOB,
    error               TEXT,
    idempotency_key     TEXT,
    traceparent         TEXT
);
-- Due work per function: only queued and retrying rows are in it, so it stays as small as the
-- backlog however many finished invocations the table holds.
CREATE INDEX invocations_due ON invocations (function, due_at) WHERE status IN ('queued', 'retrying');
CREATE INDEX invocations_leases ON invocations (lease_expires_at) WHERE status = 'running';
CREATE INDEX invocations_by_status ON invocations (status, id);
CREATE INDEX invocations_by_function ON invocations (function, status, id);

CREATE TABLE attempts (
    invocation_id TEXT NOT NULL,
    number        INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    http_status   INTEGER,
    error         TEXT,
    PRIMARY KEY (invocation_id, number)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE invocations ADD COLUMN sync INTEGER NOT NULL DEFAULT 0;

-- In flight while `holder` is set; completed once `reply_status` is.
CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    route         TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    holder        TEXT,
    lease_until   INTEGER,
    reply_status  INTEGER,
    reply_headers TEXT,
    reply_body    BLOB,
    invocation_id TEXT,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (scope, route, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_invocation ON idempotency_keys (invocation_id) WHERE invocation_id IS NOT NULL;
"#,
    r#"
ALTER TABLE invocations ADD COLUMN subscription TEXT;
ALTER TABLE invocations ADD COLUMN event_id TEXT;
ALTER TABLE invocations ADD COLUMN headers TEXT;
ALTER TABLE invocations ADD COLUMN ordering_key TEXT;
ALTER TABLE invocations ADD COLUMN hops INTEGER NOT NULL DEFAULT 0;
CREATE INDEX invocations_by_event ON invocations (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX invocations_by_subscription ON invocations (subscription, status, id) WHERE subscription IS NOT NULL;
-- Unfinished deliveries per ordering key: what an ordered delivery waits behind.
CREATE INDEX invocations_ordering ON invocations (ordering_key)
    WHERE ordering_key IS NOT NULL AND status IN ('queued', 'running', 'retrying');

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    topic           TEXT NOT NULL,
    source          TEXT NOT NULL,
    ce_id           TEXT NOT NULL,
    type            TEXT NOT NULL,
    subject         TEXT,
    time            TEXT,
    datacontenttype TEXT,
    dataschema      TEXT,
    data            BLOB NOT NULL,
    extensions      TEXT NOT NULL,
    hops            INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (source, ce_id)
);

CREATE TABLE kv (
    ns         TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
"#,
    // Indexes that held `status` were rewritten on every status change (enqueue, lease, complete):
    // the hot path's main page writes. Lists by function or subscription need only insertion
    // order; the DLQ and in-flight work have small partial indexes of their own.
    r#"
DROP INDEX invocations_by_status;
DROP INDEX invocations_by_function;
DROP INDEX invocations_by_subscription;
CREATE INDEX invocations_by_function ON invocations (function, id);
CREATE INDEX invocations_by_subscription ON invocations (subscription, id) WHERE subscription IS NOT NULL;
CREATE INDEX invocations_dead ON invocations (id) WHERE status = 'dead';
"#,
    // Flow control: the value of a function's `concurrency_key` header (leases keep at most
    // `limit` attempts of one value in flight), and the functions paused by an operator.
    r#"
ALTER TABLE invocations ADD COLUMN concurrency_key TEXT;
DROP INDEX invocations_due;
CREATE INDEX invocations_due ON invocations (function, due_at, concurrency_key) WHERE status IN ('queued', 'retrying');
CREATE TABLE paused_functions (
    function  TEXT PRIMARY KEY,
    paused_at INTEGER NOT NULL
);
"#,
    // Access control: API keys (only a hash of each secret; `scopes` is a JSON array of scope
    // strings such as `["invoke:f", "kv:balances:write"]`), the secrets that sign function
    // tokens, and the audit log (its ids are ULIDs, so id order is time order).
    r#"
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE TABLE signing_keys (
    id         TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
"#,
    // schedules — the last tick taken (fired or missed), the last that fired, and pauses.
    r#"
CREATE TABLE schedules (
    name       TEXT PRIMARY KEY,
    last_tick  INTEGER,
    last_fired INTEGER,
    armed_at   INTEGER NOT NULL,
    paused_at  INTEGER
);
"#,
    // Workflow runs: the step states as JSON (a run has a handful), `version` guarding every
    // change; an invocation that is a step (or compensation) names it in `workflow_step`.
    r#"
ALTER TABLE invocations ADD COLUMN workflow_step TEXT;
CREATE TABLE workflow_runs (
    id               TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    status           TEXT NOT NULL,
    idempotency_key  TEXT,
    input            TEXT NOT NULL,
    definition       TEXT NOT NULL,
    steps            TEXT NOT NULL,
    failed_step      TEXT,
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    traceparent      TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    version          INTEGER NOT NULL,
    UNIQUE (workflow, idempotency_key)
);
CREATE INDEX workflow_runs_by_workflow ON workflow_runs (workflow, id);
CREATE INDEX workflow_runs_by_status ON workflow_runs (status, id);
"#,
    // Chaos faults, kept so that every node applies them; expired rows are ignored.
    r#"
CREATE TABLE chaos_faults (
    id         TEXT PRIMARY KEY,
    target     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    rate       REAL NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    // Active-active regions: events waiting to reach a peer region, one row per peer, written
    // with the event and removed when the peer acknowledges it.
    r#"
CREATE TABLE region_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    peer       TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX region_outbox_by_peer ON region_outbox (peer, seq);
"#,
    // The other endings that few invocations reach (the DLQ's `dead` has its own): a list of
    // one of them reads these rows instead of the whole history (`ops::list_access`). Only rows
    // that end so are written to it.
    r#"
CREATE INDEX invocations_unsuccessful ON invocations (id) WHERE status IN ('failed', 'cancelled', 'discarded');
"#,
    // The same two conditions without an `IN` list. SQLite evaluates a list of three or more
    // values through a temporary B-tree, opened, filled and closed each time a statement runs,
    // so every INSERT and UPDATE of an invocation paid two of them for these indexes'
    // conditions: the writer's CPU per async invocation went from 17.2 to 13.9 µs without them.
    // ORs of equalities are plain comparisons, and a query's term written the same way still
    // implies them (`ops::NOT_WAITING`, `ops::partial_index`). BENCHMARKS.md, "SQLite: no
    // temporary B-tree per statement, no global locks".
    r#"
DROP INDEX invocations_ordering;
CREATE INDEX invocations_ordering ON invocations (ordering_key)
    WHERE ordering_key IS NOT NULL AND (status = 'queued' OR status = 'running' OR status = 'retrying');
DROP INDEX invocations_unsuccessful;
CREATE INDEX invocations_unsuccessful ON invocations (id)
    WHERE status = 'failed' OR status = 'cancelled' OR status = 'discarded';
"#,
    // Payloads of more than 512 bytes, of rows that will change, are kept here and the row holds
    // an empty one (`ops::kept_apart`): SQLite rewrites a row whole whenever its length changes,
    // so a payload in the row was written again at every lease, completion and retry. Rows
    // stored before keep theirs. The trigger keeps the two tables together whatever deletes an
    // invocation; it looks only for rows whose payload is empty.
    r#"
CREATE TABLE invocation_payloads (
    id      TEXT PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TRIGGER invocation_payloads_follow AFTER DELETE ON invocations WHEN length(OLD.payload) = 0
BEGIN
    DELETE FROM invocation_payloads WHERE id = OLD.id;
END;
"#,
    // A first attempt that succeeded, kept in its invocation's row instead of in `attempts`
    // (`first_attempt::kept_in_row`): its number is 1, its outcome a success, its HTTP status the row's
    // `result_status`, and it has no error, so only its two times need a place. Most invocations
    // have just such an attempt, and each of them wrote a row of `attempts` (a B-tree insert,
    // and for a sync call a second multi-row statement) that is now a two-integer change of a row
    // written anyway. Rows stored before keep theirs in `attempts`. BENCHMARKS.md, "A first
    // success kept in its row".
    r#"
ALTER TABLE invocations ADD COLUMN first_started_at INTEGER;
ALTER TABLE invocations ADD COLUMN first_ended_at INTEGER;
"#,
];

/// Brings the database to the latest schema.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Brings the database to schema `version` (tests make databases of older versions with it).
pub(crate) fn migrate_to(conn: &mut Connection, version: usize) -> rusqlite::Result<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().take(version).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
