//! `keel keys create|ls|revoke|rotate-signing`: API keys and the key that signs function tokens.
//!
//! Each command goes one of two ways, and prints the same either way: through the API (`POST`,
//! `GET /v1/keys`, `DELETE /v1/keys/{id}`, `POST /v1/signing-keys/rotate`, which need an admin
//! key), or with `-c keel.toml` straight into the configured store — how the first admin key is
//! made — recording the change in the audit log as the `local` actor. The store path builds the
//! same JSON the API answers, so `--json` does not depend on the way taken.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_core::auth::{ApiKey, AuditEntry, ACTOR_LOCAL};
use keel_core::clock::{rfc3339, Clock, Millis, SystemClock};
use keel_core::config::{self, Config, Overrides};
use keel_core::store::Store;
use keel_store::StoreOptions;
use serde_json::{json, Value};

use super::client::{encode, print_json, KeelClient};
use super::table::Table;
use super::{Expiry, KeysCreateArgs, KeysRevokeArgs};

/// How long a signing key replaced from the command line keeps verifying, at least: tokens live
/// no longer than their attempt, so the longest function timeout (plus a margin) when longer.
const RETIRE_AFTER: Duration = Duration::from_secs(3600);
const RETIRE_MARGIN: Duration = Duration::from_secs(60);

/// Where a key command writes: the API of a running node, or the store of a config file.
#[derive(Debug)]
pub(crate) enum Target {
    Api(Box<KeelClient>),
    Store { config: Box<Config>, store: Arc<dyn Store> },
}

impl Target {
    /// The store of the config file at `path` (with the `KEEL_` environment applied).
    pub(crate) fn open_store(path: &Path) -> anyhow::Result<Self> {
        // Kept typed: `main` exits 2 for a configuration error.
        let config = config::load(Some(path), &Overrides::from_process_env()).map_err(anyhow::Error::new)?;
        let options = StoreOptions { url: config.storage.url.clone(), fsync: config.storage.fsync };
        let store = keel_store::open(&options)
            .context("cannot open the store of the config (with SQLite, stop `keel serve` first, or use the API with an admin key)")?;
        Ok(Target::Store { config: Box::new(config), store })
    }
}

pub(crate) async fn create(target: &Target, json: bool, args: KeysCreateArgs) -> anyhow::Result<()> {
    let answer = match target {
        Target::Api(client) => client.post_json("/v1/keys", Some(&create_body(&args)), None).await?,
        Target::Store { store, .. } => {
            let now = SystemClock.now_ms();
            let expires_at = args.expires.as_ref().map(|e| now + e.duration.as_millis() as Millis);
            let (key, secret) =
                keel_server::create_api_key(store.as_ref(), &args.name, args.scopes, expires_at).await?;
            let mut view = key_view(&key);
            view["secret"] = json!(secret);
            view
        }
    };
    if json {
        print_json(&answer);
        return Ok(());
    }
    let secret = answer.get("secret").and_then(Value::as_str).context("the server's answer holds no secret")?;
    eprintln!(
        "created {} ({}): scopes {}, expires {}. Its secret, shown this once:",
        text(&answer, "id"),
        text(&answer, "name"),
        scopes(&answer),
        answer.get("expires_at").and_then(Value::as_str).unwrap_or("never")
    );
    println!("{secret}");
    Ok(())
}

/// The body of `POST /v1/keys`.
fn create_body(args: &KeysCreateArgs) -> Value {
    let mut body = json!({ "name": args.name, "scopes": args.scopes });
    if let Some(expires) = &args.expires {
        body["expires_in"] = json!(expires_in(expires));
    }
    body
}

/// `--expires` as the API takes it: a whole number of its largest unit that divides it (`90d`,
/// `36h`), in whole seconds (a part of a second is rounded up).
fn expires_in(expires: &Expiry) -> String {
    let secs = expires.duration.as_millis().div_ceil(1000).max(1);
    let unit =
        [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")].into_iter().find(|(size, _)| secs.is_multiple_of(*size));
    let (size, name) = unit.unwrap_or((1, "s"));
    format!("{}{name}", secs / size)
}

pub(crate) async fn ls(target: &Target, json: bool) -> anyhow::Result<()> {
    let list = match target {
        Target::Api(client) => client.get_json("/v1/keys").await?,
        Target::Store { store, .. } => {
            let items: Vec<Value> = store.api_keys().await?.iter().map(key_view).collect();
            json!({ "items": items, "next_cursor": null })
        }
    };
    if json {
        print_json(&list);
        return Ok(());
    }
    let items = list.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        eprintln!("no API keys; create one with `keel keys create --name NAME --scope admin -c keel.toml`");
        return Ok(());
    }
    print!("{}", render_keys(items));
    Ok(())
}

/// The table of `keel keys ls`.
fn render_keys(items: &[Value]) -> Table {
    let mut table = Table::with_header(["ID", "NAME", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "REVOKED"]);
    for key in items {
        table.row([
            text(key, "id"),
            text(key, "name"),
            scopes(key),
            text(key, "created_at"),
            text(key, "expires_at"),
            text(key, "last_used_at"),
            text(key, "revoked_at"),
        ]);
    }
    table
}

pub(crate) async fn revoke(target: &Target, json: bool, args: KeysRevokeArgs) -> anyhow::Result<()> {
    let answer = match target {
        Target::Api(client) => client.delete_json(&format!("/v1/keys/{}", encode(&args.id))).await?,
        Target::Store { store, .. } => {
            let now = SystemClock.now_ms();
            let key = store.revoke_api_key(&args.id, now).await?;
            audit(store.as_ref(), now, "key.revoke", &key.id, json!({ "name": key.name })).await?;
            key_view(&key)
        }
    };
    if json {
        print_json(&answer);
    } else {
        println!("revoked {} ({}) at {}", text(&answer, "id"), text(&answer, "name"), text(&answer, "revoked_at"));
    }
    Ok(())
}

pub(crate) async fn rotate_signing(target: &Target, json: bool) -> anyhow::Result<()> {
    let answer = match target {
        Target::Api(client) => client.post_json("/v1/signing-keys/rotate", None, None).await?,
        Target::Store { config, store } => {
            let now = SystemClock.now_ms();
            let key = keel_server::new_signing_key(now);
            let previous_expire_at = now + retire_after(config).as_millis() as Millis;
            store.add_signing_key(key.clone(), previous_expire_at, false).await?;
            let detail = json!({ "previous_expire_at": rfc3339(previous_expire_at) });
            audit(store.as_ref(), now, "signing_key.rotate", &key.id, detail).await?;
            json!({ "id": key.id, "created_at": rfc3339(now), "previous_expire_at": rfc3339(previous_expire_at) })
        }
    };
    if json {
        print_json(&answer);
    } else {
        println!(
            "{} now signs function tokens; the previous key verifies until {}",
            text(&answer, "id"),
            text(&answer, "previous_expire_at")
        );
    }
    Ok(())
}

/// How long a replaced signing key keeps verifying: an hour, or longer than any attempt lasts.
fn retire_after(config: &Config) -> Duration {
    let longest = config.functions.values().map(|f| f.timeout.max(f.sync_timeout)).max().unwrap_or_default();
    RETIRE_AFTER.max(longest + RETIRE_MARGIN)
}

/// One line of the audit log, written as the `local` actor.
async fn audit(store: &dyn Store, now: Millis, action: &str, target: &str, detail: Value) -> anyhow::Result<()> {
    let entry = AuditEntry::new(now, ACTOR_LOCAL, action, target, None, detail);
    store.audit(entry).await.context("the change is made, but the audit log could not record it")
}

/// A key as `GET /v1/keys` shows it: never the hash.
fn key_view(key: &ApiKey) -> Value {
    let time = |at: Option<Millis>| at.map(rfc3339);
    json!({
        "id": key.id,
        "name": key.name,
        "scopes": key.scopes,
        "created_at": rfc3339(key.created_at),
        "expires_at": time(key.expires_at),
        "revoked_at": time(key.revoked_at),
        "last_used_at": time(key.last_used_at),
    })
}

/// A field as a table cell: `-` when absent or null.
fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(v) => v.to_string(),
    }
}

/// The `scopes` array, comma-separated.
fn scopes(value: &Value) -> String {
    let all: Vec<&str> =
        value.get("scopes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if all.is_empty() {
        "-".to_owned()
    } else {
        all.join(",")
    }
}

#[cfg(test)]
mod tests {
    use keel_core::auth::{AuditFilter, Scope};

    use super::*;
    use crate::cli::StoreArg;

    fn create_args(expires: Option<&str>) -> KeysCreateArgs {
        KeysCreateArgs {
            name: "app".into(),
            scopes: vec!["invoke:register-user".parse().unwrap(), "publish:user.*".parse().unwrap()],
            expires: expires.map(|e| super::super::expiry_parser(e).unwrap()),
            store: StoreArg { config: None },
        }
    }

    #[test]
    fn the_create_body_is_what_the_api_takes() {
        assert_eq!(
            create_body(&create_args(Some("90d"))),
            json!({"name": "app", "scopes": ["invoke:register-user", "publish:user.*"], "expires_in": "90d"})
        );
        assert_eq!(
            create_body(&create_args(None)),
            json!({"name": "app", "scopes": ["invoke:register-user", "publish:user.*"]})
        );
        let sent = |text: &str| expires_in(&super::super::expiry_parser(text).unwrap());
        assert_eq!(
            [sent("12h"), sent("90m"), sent("1h 30s"), sent("1500ms"), sent("2d")],
            ["12h", "90m", "3630s", "2s", "2d"]
        );
    }

    #[test]
    fn a_key_lists_with_its_times_and_never_its_hash() {
        let key = ApiKey {
            id: "key_01J".into(),
            name: "app".into(),
            hash: "ab".repeat(32),
            scopes: vec![Scope::Read, Scope::Invoke("charge".into())],
            created_at: 0,
            expires_at: Some(86_400_000),
            revoked_at: None,
            last_used_at: None,
        };
        let view = key_view(&key);
        assert_eq!(
            view,
            json!({"id": "key_01J", "name": "app", "scopes": ["read", "invoke:charge"],
                "created_at": "1970-01-01T00:00:00.000Z", "expires_at": "1970-01-02T00:00:00.000Z",
                "revoked_at": null, "last_used_at": null})
        );
        let table = render_keys(&[view]).to_string();
        assert_eq!(
            table,
            "ID       NAME  SCOPES              CREATED                   EXPIRES                   LAST USED  REVOKED\n\
             key_01J  app   read,invoke:charge  1970-01-01T00:00:00.000Z  1970-01-02T00:00:00.000Z  -          -\n"
        );
        assert!(!table.contains("abab"));
    }

    /// `-c keel.toml`: a key made, listed, revoked, and a signing key rotated straight in a
    /// SQLite store, each change in the audit log as `local`.
    #[tokio::test]
    async fn with_a_config_the_store_is_written_directly_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, format!("[storage]\nurl = \"sqlite://{}/keel.db\"\n", dir.path().display())).unwrap();
        let target = Target::open_store(&path).unwrap();
        let Target::Store { store, .. } = &target else { panic!() };

        create(&target, true, create_args(Some("90d"))).await.unwrap();
        let keys = store.api_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert_eq!((key.name.as_str(), key.scopes.len()), ("app", 2));
        let lifetime = key.expires_at.unwrap() - key.created_at;
        assert_eq!(lifetime, 90 * 86_400_000);

        revoke(&target, true, KeysRevokeArgs { id: key.id.clone(), store: StoreArg { config: None } }).await.unwrap();
        assert!(store.api_keys().await.unwrap()[0].revoked_at.is_some());
        let unknown = KeysRevokeArgs { id: "key_nope".into(), store: StoreArg { config: None } };
        assert!(revoke(&target, true, unknown).await.is_err());

        rotate_signing(&target, true).await.unwrap();
        rotate_signing(&target, true).await.unwrap();
        let signing = store.signing_keys().await.unwrap();
        assert_eq!(signing.iter().filter(|k| k.expires_at.is_none()).count(), 1, "one current signing key");

        let log = store.audit_log(AuditFilter::default()).await.unwrap();
        let actions: Vec<(&str, &str)> = log.items.iter().map(|e| (e.actor.as_str(), e.action.as_str())).collect();
        assert_eq!(
            actions,
            [
                ("local", "signing_key.rotate"),
                ("local", "signing_key.rotate"),
                ("local", "key.revoke"),
                ("local", "key.create")
            ]
        );
        let created = &log.items[3];
        assert_eq!(created.target, key.id);
        assert_eq!(created.detail, json!({"name": "app", "scopes": ["invoke:register-user", "publish:user.*"]}));
    }
}
