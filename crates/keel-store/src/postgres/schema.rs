//! The PostgreSQL schema, applied as numbered migrations tracked in `keel_migrations`.
//!
//! Several nodes may start at once on an empty database: each applies migrations inside one
//! transaction that first takes a transaction-scoped advisory lock, so exactly one of them does
//! the work and the others then find nothing left to apply.

use super::rows::Tx;

/// `pg_advisory_xact_lock` key of migrations ("keel" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b65_656c;

/// Migrations in order; the one at index `i` is version `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE invocations (
    id                  TEXT PRIMARY KEY,
    function            TEXT NOT NULL,
    status              TEXT NOT NULL,
    payload             BYTEA NOT NULL,
    content_type        TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    due_at              BIGINT,
    attempt_count       INTEGER NOT NULL DEFAULT 0,
    budget_start        INTEGER NOT NULL DEFAULT 0,
    redrives            INTEGER NOT NULL DEFAULT 0,
    last_delay_ms       BIGINT,
    lease_owner         TEXT,
    leased_at           BIGINT,
    lease_expires_at    BIGINT,
    result_status       INTEGER,
    result_content_type TEXT,
    result              BYTEA,
    error               TEXT,
    idempotency_key     TEXT,
    traceparent         TEXT,
    sync                BOOLEAN NOT NULL DEFAULT FALSE
);
-- Due work per function: only queued and retrying rows are in it, so it stays as small as the
-- backlog however many finished invocations the table holds.
CREATE INDEX invocations_due ON invocations (function, due_at, id) WHERE status IN ('queued', 'retrying');
CREATE INDEX invocations_leases ON invocations (lease_expires_at) WHERE status = 'running';
CREATE INDEX invocations_by_status ON invocations (status, id);
CREATE INDEX invocations_by_function ON invocations (function, status, id);

CREATE TABLE attempts (
    invocation_id TEXT NOT NULL,
    number        INTEGER NOT NULL,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT NOT NULL,
    outcome       TEXT NOT NULL,
    http_status   INTEGER,
    error         TEXT,
    PRIMARY KEY (invocation_id, number)
);

-- In flight while `holder` is set; completed once `reply_status` is.
CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    route         TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    holder        TEXT,
    lease_until   BIGINT,
    reply_status  INTEGER,
    reply_headers TEXT,
    reply_body    BYTEA,
    invocation_id TEXT,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (scope, route, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_invocation ON idempotency_keys (invocation_id) WHERE invocation_id IS NOT NULL;

-- One row per `keel serve` process that ever joined; a stale heartbeat marks a dead node.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    addr         TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE invocations ADD COLUMN subscription TEXT;
ALTER TABLE invocations ADD COLUMN event_id TEXT;
ALTER TABLE invocations ADD COLUMN headers TEXT;
ALTER TABLE invocations ADD COLUMN ordering_key TEXT;
ALTER TABLE invocations ADD COLUMN hops INTEGER NOT NULL DEFAULT 0;
-- Insertion order: what an ordered delivery waits behind (SQLite uses its rowid).
ALTER TABLE invocations ADD COLUMN seq BIGSERIAL;
CREATE INDEX invocations_by_event ON invocations (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX invocations_by_subscription ON invocations (subscription, status, id) WHERE subscription IS NOT NULL;
-- Unfinished deliveries per ordering key.
CREATE INDEX invocations_ordering ON invocations (ordering_key, seq)
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
    data            BYTEA NOT NULL,
    extensions      TEXT NOT NULL,
    hops            INTEGER NOT NULL,
    created_at      BIGINT NOT NULL,
    UNIQUE (source, ce_id)
);

CREATE TABLE kv (
    ns         TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BYTEA NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (ns, key)
);
"#,
    r#"
ALTER TABLE nodes ADD COLUMN draining BOOLEAN NOT NULL DEFAULT FALSE;
-- When the last heartbeat arrived by the database's clock: the one all nodes share.
ALTER TABLE nodes ADD COLUMN seen_at BIGINT NOT NULL DEFAULT 0;
"#,
    // Flow control: the value of a function's `concurrency_key` header (leases keep at most
    // `limit` attempts of one value in flight on a node), and the functions paused by an
    // operator (for every node). A nullable column without a default is added without a rewrite.
    r#"
ALTER TABLE invocations ADD COLUMN concurrency_key TEXT;
CREATE TABLE paused_functions (
    function  TEXT PRIMARY KEY,
    paused_at BIGINT NOT NULL
);
"#,
    // Access control: API keys (only a hash of each secret; `scopes` is a JSON array of scope
    // strings such as `["invoke:f", "kv:balances:write"]`), the secrets that sign function
    // tokens, and the audit log (its ids are ULIDs, so id order is time order; byte order, so
    // whatever the database's collation).
    r#"
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE TABLE signing_keys (
    id         TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE TABLE audit_log (
    id         TEXT COLLATE "C" PRIMARY KEY,
    at         BIGINT NOT NULL,
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
    name       TEXT COLLATE "C" PRIMARY KEY,
    last_tick  BIGINT,
    last_fired BIGINT,
    armed_at   BIGINT NOT NULL,
    paused_at  BIGINT
);
"#,
    // Workflow runs: the step states as JSON (a run has a handful), `version` guarding every
    // change; an invocation that is a step (or compensation) names it in `workflow_step`.
    r#"
ALTER TABLE invocations ADD COLUMN workflow_step TEXT;
CREATE TABLE workflow_runs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    workflow         TEXT NOT NULL,
    status           TEXT NOT NULL,
    idempotency_key  TEXT,
    input            TEXT NOT NULL,
    definition       TEXT NOT NULL,
    steps            TEXT NOT NULL,
    failed_step      TEXT,
    error            TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    traceparent      TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    ended_at         BIGINT,
    version          BIGINT NOT NULL,
    UNIQUE (workflow, idempotency_key)
);
CREATE INDEX workflow_runs_by_workflow ON workflow_runs (workflow, id);
CREATE INDEX workflow_runs_by_status ON workflow_runs (status, id);
"#,
    // Chaos faults, kept so that every node applies them; expired rows are ignored.
    r#"
CREATE TABLE chaos_faults (
    id         TEXT COLLATE "C" PRIMARY KEY,
    target     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    rate       DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    // KV keys in byte order, whatever the database's collation: listings page by key with
    // cursors that agree with SQLite's, along the primary key (rebuilt with the column).
    r#"
ALTER TABLE kv ALTER COLUMN key TYPE TEXT COLLATE "C";
"#,
    // Regions: how many promotions this database has seen and which region the last made
    // primary (one row; `keel region promote` raises it, a fenced old primary copies it).
    r#"
CREATE TABLE region_epoch (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    epoch      BIGINT NOT NULL,
    primary_region TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
"#,
    // Active-active regions: events waiting to reach a peer region, one row per peer, written
    // with the event and removed when the peer acknowledges it.
    r#"
CREATE TABLE region_outbox (
    seq        BIGSERIAL PRIMARY KEY,
    peer       TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX region_outbox_by_peer ON region_outbox (peer, seq);
"#,
    // A first attempt that succeeded, kept in its invocation's row instead of in `attempts`
    // (`first_attempt::kept_in_row`), as on SQLite: only its two times need a place. Each such
    // attempt was a row of `attempts` (for records written behind, a statement of their own a
    // batch; for completions, one a group). Rows stored before keep theirs in `attempts`.
    r#"
ALTER TABLE invocations ADD COLUMN first_started_at BIGINT;
ALTER TABLE invocations ADD COLUMN first_ended_at BIGINT;
"#,
];

/// Brings the database to the latest schema, inside `tx` (which the caller commits).
pub(crate) async fn migrate(tx: &Tx<'_>) -> Result<(), tokio_postgres::Error> {
    // A streaming replica (a standby region) is read-only: its primary migrates it.
    if tx.query_one("SELECT pg_is_in_recovery()", &[]).await?.get::<_, bool>(0) {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    // A migration may rewrite a large table: the per-statement limit of normal calls does not apply.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS keel_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .await?;
    let current: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM keel_migrations", &[]).await?.get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO keel_migrations (version) VALUES ($1)", &[&(i as i32 + 1)]).await?;
        tracing::info!(version = i + 1, "applied PostgreSQL migration");
    }
    Ok(())
}
