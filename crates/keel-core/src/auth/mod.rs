//! Access control as pure decisions: scopes and what a request needs ([`scope`]), the records
//! the store keeps (API keys, the keys that sign function tokens, the audit log), and the claims a
//! function token carries. Hashing, signing and randomness live in the server; nothing here does
//! I/O.

pub mod scope;

use serde::{Deserialize, Serialize};

pub use scope::{Need, Scope, ScopeError};

use crate::clock::Millis;

/// The printed prefix of every API key secret: `keel_sk_` + 43 base64url characters (256 bits).
pub const SECRET_PREFIX: &str = "keel_sk_";
/// The printed prefix of every function token.
pub const TOKEN_PREFIX: &str = "keel_ft_";

/// An API key as the store keeps it: never the secret, only its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_` + a ULID; what `keel keys revoke` and the audit log name.
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the whole secret (`keel_sk_…`).
    pub hash: String,
    pub scopes: Vec<Scope>,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    /// Updated in batches (a node flushes what it saw every few seconds), so it may lag.
    pub last_used_at: Option<Millis>,
}

impl ApiKey {
    /// Whether the key may be used at `now`: not revoked, not expired.
    pub fn is_live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A secret that signs function tokens (HMAC-SHA256). The newest live one signs; every live one
/// verifies, so a rotation never invalidates a token in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// `sk_` + a ULID; tokens name it (`kid`).
    pub id: String,
    /// 32 random bytes.
    pub secret: Vec<u8>,
    pub created_at: Millis,
    /// After this the key verifies nothing (set when a newer key replaces it); `None` while
    /// it is the current one.
    pub expires_at: Option<Millis>,
}

impl SigningKey {
    pub fn is_live(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// Who did something, in the audit log and in the idempotency scope.
pub const ACTOR_LOCAL: &str = "local";

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// A ULID: the log's order and its cursor.
    pub id: String,
    pub at: Millis,
    /// The key id that acted; `local` for the CLI writing to the store with `-c keel.toml`, or
    /// `anonymous` when auth is off.
    pub actor: String,
    /// What was done: `key.create`, `key.revoke`, `signing_key.rotate`, `function.pause`,
    /// `function.resume`, `dlq.redrive`, `dlq.discard`, `chaos.fault`, `config.reload`.
    pub action: String,
    /// What it was done to: a key id, a function name, an invocation id, `*` for a bulk redrive.
    pub target: String,
    /// The request's `x-request-id`, when it came over the API.
    pub request_id: Option<String>,
    /// Anything else worth keeping (a bulk redrive's filter and count, a key's name and scopes).
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// A line made at `at`, its id a ULID of that time that sorts after every line made before
    /// by this process (the log lists newest first, by id, also within one millisecond).
    pub fn new(
        at: Millis,
        actor: impl Into<String>,
        action: &str,
        target: &str,
        request_id: Option<String>,
        detail: serde_json::Value,
    ) -> Self {
        let (actor, action, target) = (actor.into(), action.to_owned(), target.to_owned());
        AuditEntry { id: crate::id::new_ordered_id(at), at, actor, action, target, request_id, detail }
    }
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    /// As [`crate::store::ListFilter`]: at most `MAX_LIMIT`, 0 → `DEFAULT_LIMIT`.
    pub limit: usize,
    /// The last id of the previous page: newest first.
    pub cursor: Option<String>,
}

impl AuditFilter {
    /// The page size actually used ([`crate::store::page_size`]).
    pub fn page_size(&self) -> usize {
        crate::store::page_size(self.limit)
    }
}

/// What a function token says, signed. Short field names: it rides on every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The signing key's id.
    pub kid: String,
    /// The function.
    #[serde(rename = "fn")]
    pub function: String,
    /// The invocation.
    #[serde(rename = "inv")]
    pub invocation: String,
    /// Expires at (Unix ms): the attempt's deadline.
    pub exp: Millis,
    /// What the function may do: its `grants` as scopes, plus `egress:DEP` per dependency.
    pub scopes: Vec<Scope>,
}
