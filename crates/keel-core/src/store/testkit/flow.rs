//! Conformance cases: flow control in the store — `concurrency_key` limits on leases, and
//! paused functions.

use std::collections::BTreeMap;

use super::keys::{key_claim, reply};
use super::*;
use crate::store::KeyLimit;

fn keyed(id: &str, function: &str, due_at: Millis, key: Option<&str>) -> NewInvocation {
    NewInvocation { concurrency_key: key.map(str::to_string), ..new_inv(id, function, due_at) }
}

fn limit(limit: u32, running: &[(&str, u32)]) -> Option<KeyLimit> {
    Some(KeyLimit { limit, running: running.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>() })
}

fn keyed_req(function: &str, now: Millis, max: usize, keys: Option<KeyLimit>) -> LeaseRequest {
    LeaseRequest { keys, ..lease_req(function, now, max) }
}

fn ids(invocations: &[Invocation]) -> Vec<&str> {
    invocations.iter().map(|i| i.id.as_str()).collect()
}

pub async fn concurrency_keys_are_kept_through_every_path(store: &dyn Store) {
    // Async admission, read back by get and list.
    store.enqueue(keyed("01A", "f", T0, Some("tenant-a"))).await.unwrap();
    store.enqueue(keyed("01B", "f", T0 + 1_000_000, None)).await.unwrap();
    assert_eq!(store.get("01A").await.unwrap().unwrap().concurrency_key.as_deref(), Some("tenant-a"));
    assert_eq!(store.get("01B").await.unwrap().unwrap().concurrency_key, None);
    let page = store.list(ListFilter { function: Some("f".into()), ..Default::default() }).await.unwrap();
    let listed: Vec<_> = page.items.iter().map(|i| (i.id.as_str(), i.concurrency_key.as_deref())).collect();
    assert_eq!(listed, [("01B", None), ("01A", Some("tenant-a"))]);

    // A lease, a retry, a death, a redrive and a lease taken back keep it.
    let leased = store.lease(keyed_req("f", T0, 1, limit(5, &[]))).await.unwrap().invocations;
    assert_eq!(leased[0].concurrency_key.as_deref(), Some("tenant-a"), "the lease returns it");
    let retry = Transition::Retry { due_at: T0 + 10, delay_ms: 10, error: "HTTP 503".into() };
    fail_once(store, &leased[0], T0 + 5, retry).await;
    assert_eq!(store.get("01A").await.unwrap().unwrap().concurrency_key.as_deref(), Some("tenant-a"));
    let again = lease_one(store, "f", T0 + 10).await;
    assert_eq!((again.id.as_str(), again.concurrency_key.as_deref()), ("01A", Some("tenant-a")));
    fail_once(store, &again, T0 + 20, Transition::Die { error: "gave up".into(), response: None }).await;
    let redriven = store.redrive("01A", T0 + 30).await.unwrap();
    assert_eq!(redriven.concurrency_key.as_deref(), Some("tenant-a"));
    let third = lease_one(store, "f", T0 + 30).await;
    assert_eq!(third.id, "01A");
    store.reclaim_leases(Reclaim::All, T0 + 40).await.unwrap();
    let reclaimed = store.get("01A").await.unwrap().unwrap();
    assert_eq!((reclaimed.status, reclaimed.concurrency_key.as_deref()), (Status::Retrying, Some("tenant-a")));

    // Keyed admission, and sync records (finished, begun and finished under a key).
    let decision = store
        .enqueue_keyed(keyed("01C", "f", T0, Some("tenant-c")), key_claim("k1", "fp", "h1", T0), reply("c"))
        .await
        .unwrap();
    assert_eq!(decision, KeyDecision::Claim);
    assert_eq!(store.get("01C").await.unwrap().unwrap().concurrency_key.as_deref(), Some("tenant-c"));
    let mut finished = keyed("01D", "f", T0, Some("tenant-d")).into_stored();
    finished.status = Status::Succeeded;
    finished.sync = true;
    finished.due_at = None;
    finished.response = Some(ok_response("{}"));
    store.record_finished(finished.clone(), None, Urgency::Now).await.unwrap();
    assert_eq!(store.get("01D").await.unwrap().unwrap(), finished);
    let behind = Invocation { id: "01E".into(), concurrency_key: Some("tenant-e".into()), ..finished.clone() };
    store.record_finished(behind, None, Urgency::Unhurried).await.unwrap();
    store.hurry();
    assert_eq!(store.get("01E").await.unwrap().unwrap().concurrency_key.as_deref(), Some("tenant-e"));
    let mut running = keyed("01F", "f", T0, Some("tenant-f")).into_stored();
    running.status = Status::Running;
    running.sync = true;
    running.due_at = None;
    running.lease = Some(crate::invocation::Lease { owner: "h2".into(), leased_at: T0, expires_at: T0 + 1_000 });
    let claim = key_claim("k2", "fp", "h2", T0);
    assert_eq!(store.begin_sync(running.clone(), claim.clone()).await.unwrap(), KeyDecision::Claim);
    assert_eq!(store.get("01F").await.unwrap().unwrap().concurrency_key.as_deref(), Some("tenant-f"));
    let done = Invocation { status: Status::Succeeded, lease: None, response: Some(ok_response("{}")), ..running };
    store.finish_sync(done, None, claim.key, "h2".into(), reply("f")).await.unwrap();
    assert_eq!(store.get("01F").await.unwrap().unwrap().concurrency_key.as_deref(), Some("tenant-f"));
}

pub async fn a_key_at_its_limit_does_not_hide_other_keys(store: &dyn Store) {
    // Tenant A floods the queue ahead of tenant B.
    for i in 0..40 {
        store.enqueue(keyed(&format!("A{i:03}"), "f", T0 + i, Some("a"))).await.unwrap();
    }
    for i in 0..3 {
        store.enqueue(keyed(&format!("B{i:03}"), "f", T0 + 100 + i, Some("b"))).await.unwrap();
    }
    let leased = store.lease(keyed_req("f", T0 + 1_000, 10, limit(2, &[("a", 2)]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["B000", "B001"], "A is at its limit; B has room for two");
    assert_eq!(leased.next_due_at, None, "A and B are both at their limit now");
    // One of A's attempts ends: A has room for one, and its oldest comes first.
    let leased = store.lease(keyed_req("f", T0 + 1_000, 10, limit(2, &[("a", 1), ("b", 2)]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["A000"]);
    // A has room for one, so a window of its rows must not hide B's last one.
    let leased = store.lease(keyed_req("f", T0 + 1_000, 3, limit(2, &[("a", 1), ("b", 1)]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["A001", "B002"]);
    assert_eq!(leased.next_due_at, None);
    // Nothing running any more: A's rows come back, oldest first.
    let leased = store.lease(keyed_req("f", T0 + 1_000, 10, limit(2, &[]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["A002", "A003"]);
    assert_eq!(leased.next_due_at, None, "A is at its limit again, and nothing else waits");
    let unlimited = store.lease(lease_req("f", T0 + 1_000, 100)).await.unwrap();
    assert_eq!(unlimited.invocations.len(), 36, "a lease without keys takes everything due");
}

pub async fn a_lease_takes_at_most_the_room_of_each_key(store: &dyn Store) {
    for i in 0..5 {
        store.enqueue(keyed(&format!("A{i}"), "f", T0 + i, Some("a"))).await.unwrap();
    }
    for i in 0..3 {
        store.enqueue(keyed(&format!("B{i}"), "f", T0 + 10 + i, Some("b"))).await.unwrap();
    }
    store.enqueue(keyed("N0", "f", T0 + 20, None)).await.unwrap();
    store.enqueue(keyed("C0", "f", T0 + 30, Some("c"))).await.unwrap();
    store.enqueue(keyed("C1", "f", T0 + 5_000, Some("c"))).await.unwrap();
    let leased = store.lease(keyed_req("f", T0 + 100, 10, limit(2, &[]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["A0", "A1", "B0", "B1", "N0", "C0"]);
    assert_eq!(leased.next_due_at, Some(T0 + 5_000), "C has room for one more; A and B are full");
    let leased = store.lease(keyed_req("f", T0 + 100, 10, limit(2, &[("a", 1), ("b", 2)]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["A2"], "room for one of A, none of B");
}

pub async fn invocations_without_a_key_are_unlimited(store: &dyn Store) {
    for i in 0..5 {
        store.enqueue(keyed(&format!("N{i}"), "f", T0 + i, None)).await.unwrap();
    }
    store.enqueue(keyed("A0", "f", T0, Some("a"))).await.unwrap();
    let leased = store.lease(keyed_req("f", T0 + 10, 3, limit(1, &[("a", 1)]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["N0", "N1", "N2"]);
    assert_eq!(leased.next_due_at, Some(T0 + 3));
    // A limit of 0 holds every keyed invocation back, and none without a key.
    let leased = store.lease(keyed_req("f", T0 + 10, 10, limit(0, &[]))).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["N3", "N4"]);
    assert_eq!(leased.next_due_at, None, "A0 waits for room, not for time");
}

pub async fn next_due_at_counts_only_keys_with_room(store: &dyn Store) {
    store.enqueue(keyed("A0", "f", T0, Some("a"))).await.unwrap();
    store.enqueue(keyed("A1", "f", T0 + 1, Some("a"))).await.unwrap();
    let full = limit(1, &[("a", 1)]);
    let leased = store.lease(keyed_req("f", T0 + 10, 10, full.clone())).await.unwrap();
    assert!(leased.invocations.is_empty());
    assert_eq!(leased.next_due_at, None, "A's due work must not wake the dispatcher while A is full");
    store.enqueue(keyed("B0", "f", T0 + 1_000, Some("b"))).await.unwrap();
    store.enqueue(keyed("N0", "f", T0 + 2_000, None)).await.unwrap();
    let leased = store.lease(keyed_req("f", T0 + 10, 10, full.clone())).await.unwrap();
    assert!(leased.invocations.is_empty());
    assert_eq!(leased.next_due_at, Some(T0 + 1_000), "B's, not A's");
    let unkeyed = store.lease(lease_req("f", T0 - 1, 10)).await.unwrap();
    assert_eq!(unkeyed.next_due_at, Some(T0), "without keys, every value counts");
}

pub async fn a_paused_function_leases_nothing_until_resumed(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    store.enqueue(new_inv("01G", "g", T0)).await.unwrap();
    assert!(store.paused().await.unwrap().is_empty());
    store.set_paused("f", true, T0 + 1).await.unwrap();
    let leased = store.lease(lease_req("f", T0 + 10, 10)).await.unwrap();
    assert!(leased.invocations.is_empty(), "a paused function's work is held");
    assert_eq!(leased.next_due_at, None, "and does not wake its dispatcher");
    let keyed_lease = store.lease(keyed_req("f", T0 + 10, 10, limit(5, &[]))).await.unwrap();
    assert!(keyed_lease.invocations.is_empty());
    assert_eq!(keyed_lease.next_due_at, None);
    // Admission goes on; other functions run.
    store.enqueue(keyed("01B", "f", T0 + 2, Some("a"))).await.unwrap();
    assert_eq!(store.get("01B").await.unwrap().unwrap().status, Status::Queued);
    assert_eq!(lease_one(store, "g", T0 + 10).await.id, "01G");
    // Pausing again keeps the first time; the list is sorted by name.
    store.set_paused("f", true, T0 + 5).await.unwrap();
    store.set_paused("e", true, T0 + 6).await.unwrap();
    assert_eq!(store.paused().await.unwrap(), [("e".to_string(), T0 + 6), ("f".to_string(), T0 + 1)]);
    let held = store.get("01A").await.unwrap().unwrap();
    assert_eq!((held.status, held.attempt_count, held.lease), (Status::Queued, 0, None), "untouched");
    // Resumed: the held work is leased as usual.
    store.set_paused("f", false, T0 + 20).await.unwrap();
    assert_eq!(store.paused().await.unwrap(), [("e".to_string(), T0 + 6)]);
    let leased = store.lease(lease_req("f", T0 + 20, 10)).await.unwrap();
    assert_eq!(ids(&leased.invocations), ["01A", "01B"]);
    // Resuming what is not paused is no error.
    store.set_paused("f", false, T0 + 21).await.unwrap();
    store.set_paused("nobody", false, T0 + 21).await.unwrap();
    store.set_paused("e", false, T0 + 22).await.unwrap();
    assert!(store.paused().await.unwrap().is_empty());
}
