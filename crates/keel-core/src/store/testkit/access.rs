//! Conformance of the access-control tables ([`crate::store::AccessStore`]): API keys, the keys
//! that sign function tokens, and the audit log.

use super::T0;
use crate::auth::{ApiKey, AuditEntry, AuditFilter, Scope, SigningKey};
use crate::store::Store;
use crate::Error;

fn api_key(id: &str, created_at: i64, scopes: &[&str]) -> ApiKey {
    ApiKey {
        id: id.into(),
        name: format!("app {id}"),
        hash: format!("{:0>64}", id.trim_start_matches("key_")),
        scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
        created_at,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

pub async fn api_keys_are_created_listed_and_revoked(store: &dyn Store) {
    assert!(store.api_keys().await.unwrap().is_empty());
    let app = ApiKey {
        expires_at: Some(T0 + 90 * 86_400_000),
        ..api_key("key_01B", T0 + 1, &["invoke:register-user", "publish:user.*", "kv:balances:write"])
    };
    let admin = api_key("key_01A", T0, &["admin"]);
    store.create_api_key(app.clone()).await.unwrap();
    store.create_api_key(admin.clone()).await.unwrap();
    assert_eq!(store.api_keys().await.unwrap(), [admin.clone(), app.clone()], "oldest first, scopes and all");
    assert_eq!(
        app.scopes,
        [Scope::Invoke("register-user".into()), Scope::Publish("user.*".into()), Scope::KvWrite("balances".into())]
    );

    let again = store.create_api_key(ApiKey { name: "other".into(), ..api_key("key_01A", T0 + 2, &[]) }).await;
    assert!(matches!(again, Err(Error::InvalidState(_))), "an id is taken once: {again:?}");

    let revoked = store.revoke_api_key("key_01B", T0 + 10).await.unwrap();
    assert_eq!(revoked, ApiKey { revoked_at: Some(T0 + 10), ..app.clone() });
    let twice = store.revoke_api_key("key_01B", T0 + 20).await.unwrap();
    assert_eq!(twice.revoked_at, Some(T0 + 10), "the first revocation is kept");
    let unknown = store.revoke_api_key("key_nope", T0 + 20).await;
    assert!(matches!(unknown, Err(Error::NotFound { what: "api key", ref id }) if id == "key_nope"), "{unknown:?}");
    let listed = store.api_keys().await.unwrap();
    assert_eq!(listed, [admin, ApiKey { revoked_at: Some(T0 + 10), ..app }], "revoked keys are still listed");
}

pub async fn api_key_use_keeps_the_latest_time(store: &dyn Store) {
    store.create_api_key(api_key("key_01A", T0, &["read"])).await.unwrap();
    store.create_api_key(api_key("key_01B", T0, &["metrics"])).await.unwrap();
    store.touch_api_keys(Vec::new()).await.unwrap();
    let used = vec![("key_01A".to_string(), T0 + 50), ("key_gone".to_string(), T0 + 60), ("key_01A".into(), T0 + 40)];
    store.touch_api_keys(used).await.unwrap();
    let last_used = |keys: Vec<ApiKey>| keys.into_iter().map(|k| (k.id, k.last_used_at)).collect::<Vec<_>>();
    assert_eq!(
        last_used(store.api_keys().await.unwrap()),
        [("key_01A".to_string(), Some(T0 + 50)), ("key_01B".to_string(), None)],
        "the latest use of each key; unknown ids are ignored"
    );
    // A node that flushes late reports an older use: it does not move the time back.
    store.touch_api_keys(vec![("key_01A".into(), T0 + 30), ("key_01B".into(), T0 + 70)]).await.unwrap();
    assert_eq!(
        last_used(store.api_keys().await.unwrap()),
        [("key_01A".to_string(), Some(T0 + 50)), ("key_01B".to_string(), Some(T0 + 70))]
    );
}

fn signing_key(id: &str, created_at: i64) -> SigningKey {
    SigningKey { id: id.into(), secret: id.bytes().cycle().take(32).collect(), created_at, expires_at: None }
}

pub async fn signing_keys_are_made_once_rotated_and_expired(store: &dyn Store) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    let first = signing_key("sk_01A", T0);
    store.add_signing_key(first.clone(), T0 + 1_000, true).await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap(), std::slice::from_ref(&first), "the first key, nothing retired");
    // A second node starting: a live key exists, so nothing is written.
    store.add_signing_key(signing_key("sk_01B", T0 + 5), T0 + 1_005, true).await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap(), std::slice::from_ref(&first));

    // A rotation: the old key keeps verifying until `retire_at`.
    let second = signing_key("sk_01C", T0 + 10);
    store.add_signing_key(second.clone(), T0 + 3_600_000, false).await.unwrap();
    let retired = SigningKey { expires_at: Some(T0 + 3_600_000), ..first.clone() };
    assert_eq!(store.signing_keys().await.unwrap(), [retired.clone(), second.clone()]);
    let duplicate = store.add_signing_key(signing_key("sk_01C", T0 + 20), T0 + 3_600_020, false).await;
    assert!(matches!(duplicate, Err(Error::InvalidState(_))), "{duplicate:?}");
    assert_eq!(store.signing_keys().await.unwrap(), [retired.clone(), second.clone()], "a refused add writes nothing");

    // Before the retired key expires, `only_if_none` still sees a live key.
    store.add_signing_key(signing_key("sk_01D", T0 + 20), T0 + 3_600_020, true).await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap().len(), 2);

    // The next rotation after the retired key expired deletes it.
    let later = T0 + 7_200_000;
    let third = signing_key("sk_01E", later);
    store.add_signing_key(third.clone(), later + 60_000, false).await.unwrap();
    let second_retired = SigningKey { expires_at: Some(later + 60_000), ..second };
    assert_eq!(store.signing_keys().await.unwrap(), [second_retired, third.clone()]);

    // Once every key has expired, `only_if_none` makes a new one (and the expired ones go).
    let short_lived = SigningKey { expires_at: Some(later + 2), ..signing_key("sk_01F", later + 1) };
    store.add_signing_key(short_lived, later + 2, false).await.unwrap();
    let much_later = later + 3_600_000;
    let fresh = signing_key("sk_01G", much_later);
    store.add_signing_key(fresh.clone(), much_later + 60_000, true).await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap(), [fresh], "expired keys are gone, the new one is current");
}

fn entry(n: u32, actor: &str, action: &str) -> AuditEntry {
    AuditEntry {
        id: format!("01J{n:023}"),
        at: T0 + i64::from(n),
        actor: actor.into(),
        action: action.into(),
        target: format!("target-{n}"),
        request_id: n.is_multiple_of(2).then(|| format!("req-{n}")),
        detail: serde_json::json!({ "n": n, "scopes": ["publish:user.*"] }),
    }
}

pub async fn audit_log_pages_newest_first_with_filters(store: &dyn Store) {
    let page = store.audit_log(AuditFilter::default()).await.unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
    let entries: Vec<AuditEntry> = (1..=7)
        .map(|n| match n % 3 {
            0 => entry(n, "key_01A", "key.create"),
            1 => entry(n, "local", "function.pause"),
            _ => entry(n, "key_01A", "function.pause"),
        })
        .collect();
    for e in &entries {
        store.audit(e.clone()).await.unwrap();
    }
    let duplicate = store.audit(entries[0].clone()).await;
    assert!(matches!(duplicate, Err(Error::InvalidState(_))), "{duplicate:?}");

    let newest_first: Vec<AuditEntry> = entries.iter().rev().cloned().collect();
    let all = store.audit_log(AuditFilter::default()).await.unwrap();
    assert_eq!(all.items, newest_first, "every field kept, newest first");
    assert_eq!(all.next_cursor, None);

    // Pages of three: each cursor is its page's last id; the last page has none.
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            store.audit_log(AuditFilter { limit: 3, cursor: cursor.clone(), ..Default::default() }).await.unwrap();
        pages.push(page.items.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
        match page.next_cursor {
            Some(next) => {
                assert_eq!(Some(&next), page.items.last().map(|e| &e.id), "the cursor is the page's last id");
                cursor = Some(next);
            }
            None => break,
        }
        assert!(pages.len() < 5, "paging must end");
    }
    let ids = |ns: &[usize]| ns.iter().map(|&n| entries[n - 1].id.clone()).collect::<Vec<_>>();
    assert_eq!(pages, [ids(&[7, 6, 5]), ids(&[4, 3, 2]), ids(&[1])]);
    // A page that takes exactly the rest says so: no cursor to an empty page.
    let exact = store.audit_log(AuditFilter { limit: 7, ..Default::default() }).await.unwrap();
    assert_eq!(exact.items.len(), 7);
    assert_eq!(exact.next_cursor, None, "nothing left after all seven");

    let actions = |filter: AuditFilter| async move {
        store.audit_log(filter).await.unwrap().items.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let paused = AuditFilter { action: Some("function.pause".into()), ..Default::default() };
    assert_eq!(actions(paused).await, ids(&[7, 5, 4, 2, 1]));
    let by_key = AuditFilter { actor: Some("key_01A".into()), ..Default::default() };
    assert_eq!(actions(by_key).await, ids(&[6, 5, 3, 2]));
    let both = AuditFilter {
        action: Some("function.pause".into()),
        actor: Some("key_01A".into()),
        limit: 1,
        cursor: Some(entries[4].id.clone()),
    };
    let page = store.audit_log(both).await.unwrap();
    assert_eq!(page.items.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids(&[2]));
    assert_eq!(page.next_cursor, None, "filters and cursor together: nothing older matches");
}
