//! The access-control part of a store: API keys, the keys that sign function tokens, and the
//! audit log. Small tables read whole (a node caches them and reads again every second), so
//! there is nothing to page but the audit log.

use async_trait::async_trait;

use super::Page;
use crate::auth::{ApiKey, AuditEntry, AuditFilter, SigningKey};
use crate::clock::Millis;
use crate::Result;

#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new key. An id already taken → [`crate::Error::InvalidState`].
    async fn create_api_key(&self, key: ApiKey) -> Result<()>;

    /// Every key, revoked and expired ones included, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKey>>;

    /// Revokes a key at `now` and returns it; revoking a revoked key keeps its first
    /// `revoked_at`. An unknown id → [`crate::Error::NotFound`].
    async fn revoke_api_key(&self, id: &str, now: Millis) -> Result<ApiKey>;

    /// Records when keys were last used: each key's `last_used_at` becomes the later of what it
    /// had and what is given. Unknown ids are ignored.
    async fn touch_api_keys(&self, used: Vec<(String, Millis)>) -> Result<()>;

    /// Every signing key, expired ones included, oldest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>>;

    /// Adds `key` as the current signing key. Every other key without an `expires_at` gets
    /// `retire_at` (they keep verifying until then); keys expired before `key.created_at` are
    /// deleted. With `only_if_none`, nothing is written when a live key exists already (how a
    /// node makes the first one without racing another node into two).
    async fn add_signing_key(&self, key: SigningKey, retire_at: Millis, only_if_none: bool) -> Result<()>;

    /// Appends one line to the audit log.
    async fn audit(&self, entry: AuditEntry) -> Result<()>;

    /// The audit log, newest first.
    async fn audit_log(&self, filter: AuditFilter) -> Result<Page<AuditEntry>>;
}
