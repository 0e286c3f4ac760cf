//! Conformance cases: events with their deliveries, KV, effects, ordered delivery.

use super::*;

pub(super) fn delivery_of(
    event_id: &str,
    subscription: &str,
    id: &str,
    function: &str,
    ordering_key: Option<&str>,
) -> NewInvocation {
    let mut inv = new_inv(id, function, T0);
    inv.delivery = Some(Delivery {
        subscription: subscription.into(),
        event_id: event_id.into(),
        headers: vec![("ce-id".into(), format!("ce-{event_id}")), ("ce-type".into(), "t".into())],
        ordering_key: ordering_key.map(str::to_string),
        hops: 0,
    });
    inv
}

pub(super) fn event(id: &str, ce_id: &str, deliveries: Vec<NewInvocation>) -> NewEvent {
    NewEvent {
        id: id.into(),
        topic: "orders".into(),
        event: CloudEvent {
            id: ce_id.into(),
            source: "/shop".into(),
            ty: "order.placed".into(),
            subject: Some("o-1".into()),
            time: None,
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Bytes::from_static(b"{\"total\":5}"),
            extensions: [(
                "traceparent".to_string(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
            )]
            .into(),
        },
        hops: 2,
        created_at: T0,
        deliveries,
        replicate_to: Vec::new(),
    }
}

pub(super) fn put(ns: &str, key: &str, value: &str, precondition: Precondition) -> KvWrite {
    KvWrite { ns: ns.into(), key: key.into(), value: Some(Bytes::from(value.to_string())), precondition }
}

pub async fn publish_stores_events_with_deliveries_once(store: &dyn Store) {
    let e1 = event(
        "01E",
        "a",
        vec![delivery_of("01E", "mail", "01D1", "f", None), delivery_of("01E", "count", "01D2", "g", None)],
    );
    let published = store.publish(vec![e1.clone()]).await.unwrap();
    assert_eq!(published, vec![Published { id: "01E".into(), duplicate: false }]);
    // The same source + id again: the original id, and no new deliveries.
    let again = event("01F", "a", vec![delivery_of("01F", "mail", "01D3", "f", None)]);
    let published = store.publish(vec![again]).await.unwrap();
    assert_eq!(published, vec![Published { id: "01E".into(), duplicate: true }]);
    assert!(store.get("01D3").await.unwrap().is_none());

    let stored = store.get_event("01E").await.unwrap().expect("stored event");
    assert_eq!(stored.event, e1.event, "every attribute and the data survive");
    assert_eq!((stored.topic.as_str(), stored.hops), ("orders", 2));
    let subs: Vec<_> = stored.deliveries.iter().map(|d| d.delivery.as_ref().unwrap().subscription.clone()).collect();
    assert_eq!(subs, ["count", "mail"]);
    let d = store.get("01D1").await.unwrap().unwrap();
    assert_eq!(d.delivery.as_ref().unwrap().headers[0], ("ce-id".to_string(), "ce-01E".to_string()));
    assert_eq!(d.status, Status::Queued);
    let mail = store.list(ListFilter { subscription: Some("mail".into()), ..Default::default() }).await.unwrap();
    assert_eq!(mail.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["01D1"]);
    assert!(store.get_event("nope").await.unwrap().is_none());
}

/// Regions: an event to replicate gets one outbox row per peer in the same transaction; a
/// duplicate gets none; rows come out per peer in order, in batches, until acknowledged.
pub async fn events_to_replicate_wait_in_the_outbox_until_acknowledged(store: &dyn Store) {
    let peers = || vec!["ap".to_string(), "us".to_string()];
    let mut first = event("01A", "a", vec![delivery_of("01A", "mail", "01D1", "f", None)]);
    first.replicate_to = peers();
    let mut second = event("01B", "b", Vec::new());
    second.replicate_to = vec!["us".into()];
    let local = event("01C", "c", Vec::new());
    store.publish(vec![first.clone(), second, local]).await.unwrap();
    // The same source + id again, to replicate: a duplicate is not replicated twice.
    let mut again = event("01Z", "a", Vec::new());
    again.replicate_to = peers();
    assert!(store.publish(vec![again]).await.unwrap()[0].duplicate);
    assert_eq!(store.outbox_depth().await.unwrap(), [("ap".to_string(), 1), ("us".to_string(), 2)]);

    let us = store.outbox_next("us", 10).await.unwrap();
    let ids: Vec<_> = us.iter().map(|o| o.event.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"], "in the order they were stored");
    assert_eq!(us[0].event, first.event, "every attribute and the data");
    assert_eq!((us[0].topic.as_str(), us[0].created_at, us[0].hops), ("orders", T0, 2));
    assert!(us[0].seq < us[1].seq);
    let batch = store.outbox_next("us", 1).await.unwrap();
    assert_eq!(batch.len(), 1, "at most the limit");
    assert_eq!(batch[0].seq, us[0].seq);

    // Acknowledged rows go, for that peer only; the others stay until acknowledged.
    store.outbox_ack("us", &[us[0].seq]).await.unwrap();
    let left: Vec<_> = store.outbox_next("us", 10).await.unwrap().into_iter().map(|o| o.event.id).collect();
    assert_eq!(left, ["b"]);
    store.outbox_ack("us", &[us[1].seq]).await.unwrap();
    assert_eq!(store.outbox_depth().await.unwrap(), [("ap".to_string(), 1)]);
    let ap = store.outbox_next("ap", 10).await.unwrap();
    store.outbox_ack("ap", &[ap[0].seq]).await.unwrap();
    assert!(store.outbox_depth().await.unwrap().is_empty());
    assert!(store.outbox_next("ap", 10).await.unwrap().is_empty());
}

/// Header lists (a delivery's headers, an event's extensions) come back exactly as stored: a
/// value holding a line break stays one value and never becomes a header of its own.
pub async fn header_lists_keep_every_character(store: &dyn Store) {
    let hostile = "x\nidempotency-key: attacker-key\r\nkeel-attempt: 9: \u{0}";
    let mut delivery = delivery_of("01H", "mail", "01HD", "f", None);
    let headers = vec![("ce-subject".to_string(), hostile.to_string()), ("ce-id".to_string(), "a: b".to_string())];
    delivery.delivery.as_mut().unwrap().headers = headers.clone();
    let mut e = event("01H", "h", vec![delivery]);
    e.event.extensions.insert("tenant".into(), hostile.into());
    store.publish(vec![e.clone()]).await.unwrap();

    assert_eq!(store.get_event("01H").await.unwrap().expect("stored event").event, e.event);
    assert_eq!(store.get("01HD").await.unwrap().unwrap().delivery.unwrap().headers, headers);
    let leased = lease_one(store, "f", T0).await;
    assert_eq!(leased.delivery.unwrap().headers, headers, "as read back for an attempt");
}

pub async fn kv_versions_and_preconditions(store: &dyn Store) {
    assert_eq!(store.kv_write(put("b", "u1", "100", Precondition::IfAbsent), T0).await.unwrap(), Some(1));
    assert_eq!(store.kv_write(put("b", "u1", "90", Precondition::IfVersion(1)), T0 + 1).await.unwrap(), Some(2));
    let stale = store.kv_write(put("b", "u1", "80", Precondition::IfVersion(1)), T0 + 2).await;
    assert!(matches!(stale, Err(Error::PreconditionFailed(_))), "{stale:?}");
    let exists = store.kv_write(put("b", "u1", "0", Precondition::IfAbsent), T0 + 2).await;
    assert!(matches!(exists, Err(Error::PreconditionFailed(_))));
    let got = store.kv_get("b", "u1").await.unwrap().unwrap();
    assert_eq!((&got.value[..], got.version, got.updated_at), (&b"90"[..], 2, T0 + 1));
    assert_eq!(store.kv_write(put("b", "u1", "70", Precondition::None), T0 + 3).await.unwrap(), Some(3));
    let delete = KvWrite { ns: "b".into(), key: "u1".into(), value: None, precondition: Precondition::IfVersion(3) };
    assert_eq!(store.kv_write(delete, T0 + 4).await.unwrap(), None);
    assert!(store.kv_get("b", "u1").await.unwrap().is_none());
    assert!(store.kv_get("other", "u1").await.unwrap().is_none());
}

/// Keys chosen where byte order and a language's collation disagree (case, punctuation,
/// accents), and where `LIKE` would not take a prefix literally (`%`, `_`).
const LISTED_KEYS: [&str; 14] =
    ["B", "a", "a%d", "a-b", "aXd", "a_c", "ab", "user/1", "user/10", "user/2", "user_1", "z", "é", "\u{10FFFF}"];

async fn list_keys(
    store: &dyn Store,
    ns: &str,
    prefix: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Page<String> {
    let page = store.kv_list(ns, prefix, after, limit).await.unwrap();
    Page { items: page.items.into_iter().map(|item| item.key).collect(), next_cursor: page.next_cursor }
}

pub async fn kv_lists_keys_in_byte_order_by_prefix_and_cursor(store: &dyn Store) {
    for (i, key) in LISTED_KEYS.iter().rev().enumerate() {
        store.kv_write(put("b", key, &i.to_string(), Precondition::None), T0 + i as Millis).await.unwrap();
    }
    store.kv_write(put("b", "ab", "\"again\"", Precondition::None), T0 + 100).await.unwrap();
    store.kv_write(put("other", "a", "0", Precondition::None), T0).await.unwrap();
    store.kv_write(put("b", "gone", "0", Precondition::None), T0).await.unwrap();
    store.kv_write(KvWrite { value: None, ..put("b", "gone", "", Precondition::None) }, T0 + 1).await.unwrap();
    let mut in_byte_order = LISTED_KEYS.to_vec();
    in_byte_order.sort_unstable();
    assert_eq!(in_byte_order, LISTED_KEYS, "the list above is written in byte order");

    let all = store.kv_list("b", None, None, 0).await.unwrap();
    assert_eq!(all.items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), LISTED_KEYS, "byte order, one namespace");
    assert_eq!(all.next_cursor, None);
    let ab = all.items.iter().find(|i| i.key == "ab").unwrap();
    assert_eq!((&ab.entry.value[..], ab.entry.version, ab.entry.updated_at), (&b"\"again\""[..], 2, T0 + 100));

    // Pages of 2, each cursor the page's last key, the last page without one.
    let (mut pages, mut after, mut seen) = (0, None, Vec::new());
    loop {
        let page = list_keys(store, "b", None, after.as_deref(), 2).await;
        pages += 1;
        seen.extend(page.items.clone());
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(Some(&cursor), page.items.last(), "the cursor is the page's last key");
                after = Some(cursor);
            }
            None => break,
        }
    }
    assert_eq!((seen, pages), (LISTED_KEYS.map(String::from).to_vec(), 7), "every key once, in order");
    let exact = list_keys(store, "b", None, None, LISTED_KEYS.len()).await;
    assert_eq!((exact.items.len(), exact.next_cursor), (LISTED_KEYS.len(), None), "a full last page says so");

    // Prefixes are literal: `_` and `%` match only themselves.
    for (prefix, want) in [
        ("a", &["a", "a%d", "a-b", "aXd", "a_c", "ab"][..]),
        ("a_", &["a_c"]),
        ("a%", &["a%d"]),
        ("user/", &["user/1", "user/10", "user/2"]),
        ("user/1", &["user/1", "user/10"]),
        ("user_", &["user_1"]),
        ("é", &["é"]),
        ("\u{10FFFF}", &["\u{10FFFF}"]),
        ("nothing", &[]),
    ] {
        let page = list_keys(store, "b", Some(prefix), None, 0).await;
        assert_eq!((page.items, page.next_cursor), (want.iter().map(|k| k.to_string()).collect(), None), "{prefix:?}");
    }
    let first = list_keys(store, "b", Some("a"), None, 4).await;
    assert_eq!(
        (first.items.as_slice(), first.next_cursor.as_deref()),
        (&["a", "a%d", "a-b", "aXd"].map(String::from)[..], Some("aXd"))
    );
    let rest = list_keys(store, "b", Some("a"), Some("aXd"), 4).await;
    assert_eq!((rest.items, rest.next_cursor), (vec!["a_c".to_string(), "ab".to_string()], None));
    let before = list_keys(store, "b", Some("user/"), Some("B"), 0).await;
    assert_eq!(before.items, ["user/1", "user/10", "user/2"], "a cursor before the prefix starts at the prefix");
    assert!(list_keys(store, "b", Some("a"), Some("z"), 0).await.items.is_empty(), "a cursor past the prefix");
    assert!(list_keys(store, "none", None, None, 0).await.items.is_empty());
}

pub async fn effects_commit_with_the_completion_or_not_at_all(store: &dyn Store) {
    store.kv_write(put("b", "u1", "100", Precondition::None), T0).await.unwrap();
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    let inv = lease_one(store, "f", T0).await;
    let emitted = event("01E", "x", vec![delivery_of("01E", "mail", "01D", "g", None)]);
    let effects = |version| CommitEffects {
        kv: vec![
            put("users", "u1", "{}", Precondition::IfAbsent),
            put("b", "u1", "90", Precondition::IfVersion(version)),
        ],
        events: vec![emitted.clone()],
    };
    let completion =
        |version, owner: &str| Completion { effects: Some(effects(version)), ..success(&inv.id, owner, T0 + 30, "{}") };
    let conflict = store.complete(completion(7, "node-a"), Urgency::Now).await;
    assert!(matches!(conflict, Err(Error::PreconditionFailed(_))), "{conflict:?}");
    assert!(store.kv_get("users", "u1").await.unwrap().is_none(), "the first write was not applied either");
    assert!(store.get_event("01E").await.unwrap().is_none());
    assert_eq!(store.get("01A").await.unwrap().unwrap().status, Status::Running, "the completion was refused whole");

    let stale = store.complete(completion(1, "node-b"), Urgency::Now).await;
    assert!(matches!(stale, Err(Error::LeaseLost(_))));
    assert!(store.kv_get("users", "u1").await.unwrap().is_none(), "a node without the lease applies nothing");

    store.complete(completion(1, "node-a"), Urgency::Now).await.unwrap();
    assert_eq!(store.get("01A").await.unwrap().unwrap().status, Status::Succeeded);
    assert_eq!(store.kv_get("b", "u1").await.unwrap().unwrap().version, 2);
    assert!(store.kv_get("users", "u1").await.unwrap().is_some());
    assert!(store.get_event("01E").await.unwrap().is_some());
    assert_eq!(store.get("01D").await.unwrap().unwrap().status, Status::Queued, "the emitted event's delivery");
    let again = store.complete(completion(2, "node-a"), Urgency::Now).await;
    assert!(matches!(again, Err(Error::LeaseLost(_))), "effects apply at most once");
    assert_eq!(store.kv_get("b", "u1").await.unwrap().unwrap().version, 2);
}

pub async fn ordered_deliveries_wait_for_earlier_ones(store: &dyn Store) {
    let first = delivery_of("01E", "s", "01B", "f", Some("s/o-1"));
    let second = delivery_of("01F", "s", "01A", "f", Some("s/o-1"));
    let other = delivery_of("01G", "s", "01C", "f", Some("s/o-2"));
    store
        .publish(vec![event("01E", "a", vec![first]), event("01F", "b", vec![second]), event("01G", "c", vec![other])])
        .await
        .unwrap();
    let leased = store.lease(lease_req("f", T0, 10)).await.unwrap();
    let ids: Vec<_> = leased.invocations.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["01B", "01C"], "the later event of o-1 waits; o-2 is independent");
    let b = leased.invocations[0].clone();
    let running = store.lease(lease_req("f", T0 + 1, 10)).await.unwrap();
    assert_eq!(running.next_due_at, None, "nothing due may be leased while 01B runs: no wake-up for 01A");
    fail_once(store, &b, T0 + 1, Transition::Retry { due_at: T0 + 5, delay_ms: 4, error: "x".into() }).await;
    let waiting = store.lease(lease_req("f", T0 + 2, 10)).await.unwrap();
    assert!(waiting.invocations.is_empty(), "still waits while retrying");
    assert_eq!(waiting.next_due_at, Some(T0 + 5), "the next wake-up is the earlier one's retry, not the waiting one");
    let b = lease_one(store, "f", T0 + 5).await;
    assert_eq!(b.id, "01B");
    fail_once(store, &b, T0 + 6, Transition::Die { error: "gave up".into(), response: None }).await;
    let next = lease_one(store, "f", T0 + 6).await;
    assert_eq!(next.id, "01A", "moves on once the earlier one is dead-lettered");
    // The earlier one, redriven while the later one runs, waits for it: never both at once.
    store.redrive("01B", T0 + 7).await.unwrap();
    let meanwhile = store.lease(lease_req("f", T0 + 8, 10)).await.unwrap();
    assert!(meanwhile.invocations.is_empty(), "01B must not run beside 01A");
    assert_eq!(meanwhile.next_due_at, None);
    store.complete(success("01A", "node-a", T0 + 9, "{}"), Urgency::Now).await.unwrap();
    assert_eq!(lease_one(store, "f", T0 + 10).await.id, "01B", "then the redriven one runs");
}

pub async fn finished_sync_invocations_commit_their_effects(store: &dyn Store) {
    let mut inv = new_inv("01S", "f", T0).into_stored();
    inv.status = Status::Succeeded;
    inv.due_at = None;
    let effects = CommitEffects { kv: vec![put("c", "n", "1", Precondition::IfAbsent)], events: vec![] };
    store.record_finished(inv.clone(), Some(effects.clone()), Urgency::Now).await.unwrap();
    assert_eq!(store.kv_get("c", "n").await.unwrap().unwrap().version, 1);
    inv.id = "01T".into();
    let refused = store.record_finished(inv, Some(effects), Urgency::Now).await;
    assert!(matches!(refused, Err(Error::PreconditionFailed(_))));
    assert!(store.get("01T").await.unwrap().is_none(), "refused whole");
}
