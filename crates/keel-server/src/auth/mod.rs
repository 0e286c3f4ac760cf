//! Access control on a node ([`Auth`]): who a request is ([`Principal`]), from an API key or a
//! function token, checked against what its route needs (`keel_core::auth::Need`, derived in
//! `api::access`). Keys and signing keys are cached and read again every second ([`keep`]), so
//! verifying costs no store read and a revocation on any node is seen here within about a second;
//! when keys were last used is kept in memory and written every few seconds.
//!
//! With `[auth] mode = "none"` nothing is checked: every request is [`Principal::Anonymous`].

pub(crate) mod secret;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderValue;
use keel_core::auth::{ApiKey, AuditEntry, Scope, SigningKey, TokenClaims, SECRET_PREFIX, TOKEN_PREFIX};
use keel_core::clock::Millis;
use keel_core::config::{AuthMode, Config};
use keel_core::store::Store;
use tokio::sync::watch;

use crate::problem::Problem;
use crate::state::Shared;

/// How often a node reads the keys again: the bound on how long a revoked key still works here.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often the times keys were last used are written.
const FLUSH_USED_EVERY: Duration = Duration::from_secs(5);
/// A new signing key is used for signing only once it is this old, so that every node has read
/// it (see [`REFRESH_EVERY`]) before a token it signed can reach them.
const SIGN_AFTER_MS: Millis = 3_000;
/// How long a replaced signing key keeps verifying, on top of the longest function timeout: a
/// token lives no longer than its attempt.
const RETIRE_MARGIN_MS: Millis = 60_000;

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// Auth is off.
    Anonymous,
    /// The node itself, or the CLI on the store (`keel keys … -c`): only in the audit log.
    Local,
    /// An API key.
    Key(Arc<ApiKey>),
    /// A function's attempt, by the token Keel gave it.
    Function(Arc<TokenClaims>),
}

impl Principal {
    /// Who acted, as the audit log and the idempotency scope name them.
    pub(crate) fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::Local => keel_core::auth::ACTOR_LOCAL.to_owned(),
            Principal::Key(key) => key.id.clone(),
            Principal::Function(claims) => format!("fn:{}", claims.function),
        }
    }

    /// How a 403 names the caller.
    pub(crate) fn describe(&self) -> String {
        match self {
            Principal::Anonymous => "an anonymous caller".to_owned(),
            Principal::Local => "this node".to_owned(),
            Principal::Key(key) => format!("API key {} ({})", key.id, key.name),
            Principal::Function(claims) => format!("function {}'s token", claims.function),
        }
    }

    pub(crate) fn scopes(&self) -> &[Scope] {
        match self {
            Principal::Anonymous | Principal::Local => &[Scope::Admin],
            Principal::Key(key) => &key.scopes,
            Principal::Function(claims) => &claims.scopes,
        }
    }
}

/// An API key as a node holds it: with when it was last used here and not yet written (0: not
/// since the last write). An atomic, not a shared map behind a lock: every request with a key
/// marks it, and at most once a second per key does that write to memory shared by threads.
#[derive(Debug)]
struct CachedKey {
    key: Arc<ApiKey>,
    used: AtomicI64,
}

/// A signing key with its HMAC key made once (a key schedule per token was measurable).
#[derive(Debug)]
struct Signer {
    key: SigningKey,
    mac: ring::hmac::Key,
}

/// The keys a node knows, read whole from the store.
#[derive(Debug, Default)]
struct Known {
    /// API keys by the hash of their secret.
    keys: HashMap<String, CachedKey>,
    /// Signing keys, oldest first.
    signing: Vec<Signer>,
    /// Which read this is ([`Auth::reads`] when it began): a read that began earlier never
    /// replaces what a later one installed (a refresh racing the one after a revocation).
    read: u64,
}

#[derive(Debug)]
pub(crate) struct Auth {
    mode: AuthMode,
    known: RwLock<Known>,
    /// Reads of the keys begun so far.
    reads: std::sync::atomic::AtomicU64,
    /// Each function's token scopes: its grants and its dependencies.
    function_scopes: HashMap<String, Vec<Scope>>,
    /// How long a replaced signing key keeps verifying.
    retire_after_ms: Millis,
}

impl Auth {
    pub(crate) fn new(config: &Config) -> Self {
        let longest = config.functions.values().map(|f| f.timeout.max(f.sync_timeout)).max().unwrap_or_default();
        Self {
            mode: config.auth.mode,
            known: RwLock::default(),
            reads: Default::default(),
            function_scopes: config.functions.values().map(|f| (f.name.clone(), f.token_scopes())).collect(),
            retire_after_ms: longest.as_millis() as Millis + RETIRE_MARGIN_MS,
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        self.mode == AuthMode::Keys
    }

    /// When a signing key replaced at `now` stops verifying.
    pub(crate) fn retire_at(&self, now: Millis) -> Millis {
        now + self.retire_after_ms
    }

    /// Before the node serves: makes the first signing key if the store has none, and reads
    /// every key. A store that cannot be read stops the start (auth on only).
    pub(crate) async fn start(&self, store: &dyn Store, now: Millis) -> keel_core::Result<()> {
        if !self.is_on() {
            return Ok(());
        }
        store.add_signing_key(secret::new_signing_key(now), now, true).await?;
        self.refresh(store).await
    }

    /// Reads every key again.
    pub(crate) async fn refresh(&self, store: &dyn Store) -> keel_core::Result<()> {
        let read = self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let keys = store.api_keys().await?;
        let signing = store.signing_keys().await?;
        let signing = signing
            .into_iter()
            .map(|key| Signer { mac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret), key })
            .collect();
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if read > known.read {
            // Uses not yet written carry over to the new entries.
            let keys = keys
                .into_iter()
                .map(|key| {
                    let used = known.keys.get(&key.hash).map_or(0, |old| old.used.load(Ordering::Relaxed));
                    (key.hash.clone(), CachedKey { key: Arc::new(key), used: AtomicI64::new(used) })
                })
                .collect();
            *known = Known { keys, signing, read };
        }
        Ok(())
    }

    /// Writes when keys were last used here.
    async fn flush_used(&self, store: &dyn Store) {
        let used: Vec<(String, Millis)> = {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            let taken = known.keys.values().map(|k| (k.key.id.clone(), k.used.swap(0, Ordering::Relaxed)));
            taken.filter(|(_, at)| *at > 0).collect()
        };
        if used.is_empty() {
            return;
        }
        if let Err(error) = store.touch_api_keys(used).await {
            tracing::warn!(%error, "could not record when API keys were last used");
        }
    }

    /// Who sent `authorization` at `now`: an API key (`Bearer keel_sk_…`) or a function token
    /// (`Bearer keel_ft_…`), or a 401 that says what is wrong. With auth off, anyone.
    pub(crate) fn authenticate(&self, authorization: Option<&HeaderValue>, now: Millis) -> Result<Principal, Problem> {
        if !self.is_on() {
            return Ok(Principal::Anonymous);
        }
        let Some(header) = authorization else {
            return Err(Problem::unauthorized("this request needs an API key: send `Authorization: Bearer keel_sk_…`"));
        };
        let credential = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be `Bearer <API key or function token>`")
            })?;
        if credential.starts_with(TOKEN_PREFIX) {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            let key_of = |kid: &str| known.signing.iter().find(|s| s.key.id == kid).map(|s| s.key.clone());
            return secret::verify(credential, now, key_of)
                .map(|claims| Principal::Function(Arc::new(claims)))
                .map_err(|e| Problem::unauthorized(e.to_string()));
        }
        if !credential.starts_with(SECRET_PREFIX) {
            return Err(Problem::unauthorized(
                "the bearer credential is neither an API key (keel_sk_…) nor a function token",
            ));
        }
        let hash = secret::hash_secret(credential);
        let key = {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            known.keys.get(&hash).map(|cached| {
                if cached.used.load(Ordering::Relaxed) < now - 1_000 {
                    cached.used.store(now, Ordering::Relaxed);
                }
                cached.key.clone()
            })
        };
        // The map is keyed by the hash; this compares the whole hash once more in constant time
        // so that no timing of the lookup tells how close a guess came.
        let key = key
            .filter(|k| bool::from(subtle::ConstantTimeEq::ct_eq(k.hash.as_bytes(), hash.as_bytes())))
            .ok_or_else(|| Problem::unauthorized("unknown API key"))?;
        if key.revoked_at.is_some() {
            return Err(Problem::unauthorized(format!("API key {} was revoked", key.id)));
        }
        if !key.is_live(now) {
            return Err(Problem::unauthorized(format!("API key {} has expired", key.id)));
        }
        Ok(Principal::Key(key))
    }

    /// The token for an attempt of `function` on `invocation` that must end by `deadline`: signed
    /// with the newest signing key every node has had time to read. `None` with auth off.
    pub(crate) fn token(&self, function: &str, invocation: &str, deadline: Millis, now: Millis) -> Option<String> {
        if !self.is_on() {
            return None;
        }
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let live = known.signing.iter().filter(|s| s.key.is_live(now));
        let signer =
            live.clone().rfind(|s| s.key.created_at + SIGN_AFTER_MS <= now).or_else(|| live.clone().next_back())?;
        let scopes = self.function_scopes.get(function).map_or(&[][..], Vec::as_slice);
        Some(secret::sign_with(&signer.key.id, &signer.mac, function, invocation, deadline, scopes))
    }

    /// An `Auth` that knows `key` as if it had read it from the store: for unit tests of what
    /// carries tokens, without a store.
    #[cfg(test)]
    pub(crate) fn with_signing_key(config: &Config, key: SigningKey) -> Self {
        let auth = Self::new(config);
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret);
        auth.known.write().unwrap_or_else(|p| p.into_inner()).signing.push(Signer { key, mac });
        auth
    }
}

/// Keeps a node's keys fresh (every [`REFRESH_EVERY`]) and writes when keys were used, until
/// `stop`; one last write at the end.
pub(crate) async fn keep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    if !shared.auth.is_on() {
        return;
    }
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    let mut flush = tokio::time::interval(FLUSH_USED_EVERY);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                if let Err(error) = shared.auth.refresh(shared.store.as_ref()).await {
                    tracing::warn!(%error, "could not read the API keys again; keeping the ones known");
                }
            }
            // A standby's database is read-only: uses there go unrecorded.
            _ = flush.tick(), if shared.region.is_active() => shared.auth.flush_used(shared.store.as_ref()).await,
            _ = stop.changed() => break,
        }
    }
    if shared.region.is_active() {
        shared.auth.flush_used(shared.store.as_ref()).await;
    }
}

/// Appends to the audit log; a failure is logged, not answered (the change itself is done).
pub(crate) async fn record(
    shared: &Shared,
    principal: &Principal,
    action: &str,
    target: &str,
    request_id: Option<String>,
    detail: serde_json::Value,
) {
    let entry = AuditEntry::new(shared.clock.now_ms(), principal.actor(), action, target, request_id, detail);
    if let Err(error) = shared.store.audit(entry).await {
        tracing::error!(%error, action, target, "could not write the audit log");
    }
}
