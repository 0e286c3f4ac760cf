//! Conformance cases: admission, leases, completions, retries, the DLQ, lists.

use std::sync::Arc;

use super::keys::{key_claim, reply, running_sync};
use super::*;

pub async fn enqueue_then_get(store: &dyn Store) {
    let stored = store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    assert_eq!(stored.status, Status::Queued);
    let got = store.get("01A").await.unwrap().expect("stored invocation");
    assert_eq!(got.payload, Bytes::from_static(b"{\"id\":\"01A\"}"));
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.due_at, Some(T0));
    assert_eq!(got.traceparent, stored.traceparent);
    assert!(got.attempts.is_empty());
    assert_eq!(got, stored, "every field reads back as stored");
    // Leased at admission, with an idempotency key and a concurrency key: read back whole too.
    let mut leased = new_inv("01L", "f", T0);
    leased.lease = Some(crate::invocation::Lease { owner: "node-a".into(), leased_at: T0, expires_at: T0 + 30_000 });
    leased.idempotency_key = Some("k".into());
    leased.concurrency_key = Some("user-1".into());
    let stored = store.enqueue(leased).await.unwrap();
    assert_eq!(store.get("01L").await.unwrap().as_ref(), Some(&stored));
    assert!(store.get("nope").await.unwrap().is_none());
}

pub async fn lease_takes_due_work_oldest_first(store: &dyn Store) {
    store.enqueue(new_inv("01B", "f", T0 + 20)).await.unwrap();
    store.enqueue(new_inv("01A", "f", T0 + 10)).await.unwrap();
    store.enqueue(new_inv("01C", "f", T0 + 5_000)).await.unwrap();
    let leased = store.lease(lease_req("f", T0 + 100, 10)).await.unwrap();
    let ids: Vec<_> = leased.invocations.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["01A", "01B"], "due ones, oldest due first; 01C is not due yet");
    assert!(leased.invocations.iter().all(|i| i.status == Status::Running));
    assert_eq!(leased.next_due_at, Some(T0 + 5_000));
    let again = store.lease(lease_req("f", T0 + 100, 10)).await.unwrap();
    assert!(again.invocations.is_empty(), "leased work is not leased twice");
    let got = store.get("01A").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Running);
    assert_eq!(got.lease.as_ref().map(|l| l.owner.as_str()), Some("node-a"));
    let limited = store.lease(lease_req("f", T0 + 6_000, 0)).await.unwrap();
    assert!(limited.invocations.is_empty(), "limit 0 leases nothing");
}

pub async fn lease_is_per_function(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    store.enqueue(new_inv("01B", "g", T0)).await.unwrap();
    let leased = store.lease(lease_req("g", T0, 10)).await.unwrap();
    assert_eq!(leased.invocations.len(), 1);
    assert_eq!(leased.invocations[0].id, "01B");
    assert_eq!(leased.next_due_at, None);
}

pub async fn success_keeps_the_response(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    let inv = lease_one(store, "f", T0).await;
    store.complete(success(&inv.id, "node-a", T0 + 30, "{\"ok\":true}"), Urgency::Now).await.unwrap();
    let got = store.get("01A").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Succeeded);
    assert_eq!(got.attempt_count, 1);
    assert_eq!(got.attempts, vec![attempt(1, Outcome::Success, Some(200))]);
    assert_eq!(got.response, Some(ok_response("{\"ok\":true}")));
    assert_eq!(got.due_at, None);
    assert_eq!(got.lease, None);
}

pub async fn retry_comes_due_later(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    let inv = lease_one(store, "f", T0).await;
    let next = Transition::Retry { due_at: T0 + 1_000, delay_ms: 970, error: "HTTP 503".into() };
    fail_once(store, &inv, T0 + 30, next).await;
    let got = store.get("01A").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Retrying);
    assert_eq!(got.due_at, Some(T0 + 1_000));
    assert_eq!(got.last_delay_ms, Some(970));
    assert_eq!(got.error.as_deref(), Some("HTTP 503"));
    let early = store.lease(lease_req("f", T0 + 999, 10)).await.unwrap();
    assert!(early.invocations.is_empty());
    assert_eq!(early.next_due_at, Some(T0 + 1_000));
    let second = lease_one(store, "f", T0 + 1_000).await;
    assert_eq!(second.attempt_count, 1);
}

pub async fn stale_lease_cannot_complete(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    let inv = lease_one(store, "f", T0).await;
    let err = store.complete(success(&inv.id, "node-b", T0 + 30, "{}"), Urgency::Now).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost(_)), "{err:?}");
    let got = store.get("01A").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Running);
    assert!(got.attempts.is_empty(), "a refused completion writes nothing");
}

pub async fn a_lease_taken_back_cannot_complete_after_its_node_leased_again(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    let first = lease_one(store, "f", T0).await;
    // The lease is taken back (the node looked dead); the same node then leases it again.
    store.reclaim_leases(Reclaim::ExpiredBefore(T0 + 60_000), T0 + 60_000).await.unwrap();
    let second = lease_one(store, "f", T0 + 60_001).await;
    assert_eq!(second.attempt_count, 1, "the interrupted attempt is charged");
    let stale = Completion { fence: first.attempt_count, ..success("01A", "node-a", T0 + 60_002, "{}") };
    let err = store.complete(stale, Urgency::Now).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost(_)), "refused as a lost lease, not retried as an outage: {err:?}");
    let current = Completion {
        fence: second.attempt_count,
        attempt: Some(attempt(2, Outcome::Success, Some(200))),
        ..success("01A", "node-a", T0 + 60_003, "{}")
    };
    store.complete(current, Urgency::Now).await.unwrap();
    assert_eq!(store.get("01A").await.unwrap().unwrap().status, Status::Succeeded);
}

pub async fn exhausted_goes_dead_and_redrive_gives_a_fresh_budget(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    let inv = lease_one(store, "f", T0).await;
    fail_once(
        store,
        &inv,
        T0 + 30,
        Transition::Die {
            error: "HTTP 400".into(),
            response: Some(StoredResponse { status: 400, content_type: None, body: Bytes::from_static(b"bad") }),
        },
    )
    .await;
    let dead = store.get("01A").await.unwrap().unwrap();
    assert_eq!(dead.status, Status::Dead);
    assert_eq!(dead.error.as_deref(), Some("HTTP 400"));
    assert_eq!(dead.response.as_ref().map(|r| r.status), Some(400));
    let dlq = store.list(ListFilter { status: Some(Status::Dead), ..Default::default() }).await.unwrap();
    assert_eq!(dlq.items.len(), 1);

    let redriven = store.redrive("01A", T0 + 100).await.unwrap();
    assert_eq!(redriven.status, Status::Queued);
    assert_eq!(redriven.redrives, 1);
    assert_eq!(redriven.budget_start, 1);
    assert_eq!(redriven.attempts_in_budget(), 0);
    let again = lease_one(store, "f", T0 + 100).await;
    assert_eq!(again.attempt_count, 1, "history is kept");
    assert!(
        matches!(store.redrive("01A", T0).await, Err(Error::InvalidState(_))),
        "only dead invocations are redriven"
    );
    assert!(matches!(store.redrive("zzz", T0).await, Err(Error::NotFound { .. })));
}

pub async fn discard_only_from_dlq(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    assert!(matches!(store.discard("01A", T0).await, Err(Error::InvalidState(_))));
    let inv = lease_one(store, "f", T0).await;
    fail_once(store, &inv, T0 + 1, Transition::Die { error: "gave up".into(), response: None }).await;
    let discarded = store.discard("01A", T0 + 2).await.unwrap();
    assert_eq!(discarded.status, Status::Discarded);
    assert!(matches!(store.discard("nope", T0).await, Err(Error::NotFound { .. })));
}

pub async fn cancel_queued_but_not_running(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0 + 60_000)).await.unwrap();
    store.enqueue(new_inv("01B", "f", T0)).await.unwrap();
    let cancelled = store.cancel("01A", T0).await.unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    let leased = store.lease(lease_req("f", T0 + 120_000, 10)).await.unwrap();
    assert_eq!(leased.invocations.len(), 1, "a cancelled invocation never runs");
    assert!(matches!(store.cancel("01B", T0).await, Err(Error::InvalidState(_))), "running cannot be cancelled");
    assert!(matches!(store.cancel("nope", T0).await, Err(Error::NotFound { .. })));
}

pub async fn reclaim_all_and_expired(store: &dyn Store) {
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    store.enqueue(new_inv("01B", "g", T0)).await.unwrap();
    let a = lease_one(store, "f", T0).await;
    let mut short = lease_req("g", T0, 1);
    short.expires_at = T0 + 10;
    store.lease(short).await.unwrap();

    let functions = store.reclaim_leases(Reclaim::ExpiredBefore(T0 + 100), T0 + 100).await.unwrap();
    assert_eq!(functions, vec!["g".to_string()], "only the expired lease");
    let b = store.get("01B").await.unwrap().unwrap();
    assert_eq!(b.status, Status::Retrying);
    assert_eq!(b.due_at, Some(T0 + 100));
    assert_eq!(b.attempt_count, 1, "the interrupted attempt counts");
    assert_eq!(b.attempts[0].outcome, Outcome::Transient);
    assert_eq!(b.attempts[0].started_at, T0);
    assert!(b.attempts[0].error.as_deref().unwrap_or("").contains("lease"));

    let functions = store.reclaim_leases(Reclaim::All, T0 + 200).await.unwrap();
    assert_eq!(functions, vec!["f".to_string()]);
    let a2 = lease_one(store, "f", T0 + 200).await;
    assert_eq!(a2.id, a.id);
    assert_eq!(a2.attempt_count, 1);
}

/// An invocation leased at admission (the admitting node runs it at once) is stored `running`
/// under that lease: no dispatcher leases it, its holder completes it, and a crash of its holder
/// gives it back like any other lease. Keyed admission stores the lease too.
pub async fn leased_at_admission_runs_only_under_its_lease(store: &dyn Store) {
    let held = crate::invocation::Lease { owner: "node-a".into(), leased_at: T0, expires_at: T0 + 30_000 };
    let mut a = new_inv("01A", "f", T0);
    a.lease = Some(held.clone());
    let stored = store.enqueue(a).await.unwrap();
    assert_eq!((stored.status, stored.lease.as_ref()), (Status::Running, Some(&held)));
    let mut b = new_inv("01B", "f", T0);
    b.lease = Some(held.clone());
    assert_eq!(store.enqueue_keyed(b, key_claim("k", "fp", "h1", T0), reply("b")).await.unwrap(), KeyDecision::Claim);
    store.enqueue(new_inv("01C", "f", T0)).await.unwrap();

    let got = store.lease(lease_req("f", T0 + 1, 10)).await.unwrap().invocations;
    assert_eq!(got.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["01C"], "only the queued one is leased");
    let a = store.get("01A").await.unwrap().unwrap();
    assert_eq!((a.status, a.lease), (Status::Running, Some(held.clone())));
    assert_eq!(store.get("01B").await.unwrap().unwrap().status, Status::Running);

    store.complete(success("01A", "node-a", T0 + 50, "{}"), Urgency::Now).await.unwrap();
    assert_eq!(store.get("01A").await.unwrap().unwrap().status, Status::Succeeded);

    // The holder died: its lease is taken back, the attempt counted as interrupted.
    let functions = store.reclaim_leases(Reclaim::ExpiredBefore(T0 + 30_001), T0 + 30_001).await.unwrap();
    assert_eq!(functions, vec!["f".to_string()]);
    let b = store.get("01B").await.unwrap().unwrap();
    assert_eq!((b.status, b.attempt_count), (Status::Retrying, 1));
}

/// An invocation leased at admission that its node gives back without an attempt (no slot freed
/// in time: `Transition::Requeue`) is `queued` again, due at once, with no attempt and no error,
/// and any node may lease it; only its holder can give it back.
pub async fn a_lease_given_back_unattempted_is_queued_again_with_no_attempt(store: &dyn Store) {
    let held = crate::invocation::Lease { owner: "node-a".into(), leased_at: T0, expires_at: T0 + 30_000 };
    let mut a = new_inv("01A", "f", T0);
    a.lease = Some(held);
    store.enqueue(a).await.unwrap();
    let give_back = |owner: &str| Completion {
        id: "01A".into(),
        owner: owner.into(),
        fence: 0,
        now: T0 + 1_000,
        attempt: None,
        next: Transition::Requeue,
        effects: None,
        run: None,
    };
    assert!(
        matches!(store.complete(give_back("node-b"), Urgency::Now).await, Err(crate::Error::LeaseLost(_))),
        "only its holder gives it back"
    );
    store.complete(give_back("node-a"), Urgency::Now).await.unwrap();
    let a = store.get("01A").await.unwrap().unwrap();
    assert_eq!(
        (a.status, a.due_at, a.attempt_count, a.lease, a.error),
        (Status::Queued, Some(T0 + 1_000), 0, None, None)
    );
    assert!(a.attempts.is_empty(), "{:?}", a.attempts);
    let again = lease_one(store, "f", T0 + 1_000).await;
    assert_eq!((again.id.as_str(), again.attempt_count), ("01A", 0));
    store.complete(success("01A", "node-a", T0 + 1_050, "{}"), Urgency::Now).await.unwrap();
    let done = store.get("01A").await.unwrap().unwrap();
    assert_eq!((done.status, done.attempt_count, done.attempts.len()), (Status::Succeeded, 1, 1));
}

pub async fn list_filters_and_pages(store: &dyn Store) {
    for (i, f) in ["f", "g", "f", "f", "g"].iter().enumerate() {
        store.enqueue(new_inv(&format!("01{i}"), f, T0)).await.unwrap();
    }
    let first = store.list(ListFilter { function: Some("f".into()), limit: 2, ..Default::default() }).await.unwrap();
    let ids: Vec<_> = first.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["013", "012"], "newest first");
    let cursor = first.next_cursor.expect("a second page");
    let second = store
        .list(ListFilter { function: Some("f".into()), limit: 2, cursor: Some(cursor), ..Default::default() })
        .await
        .unwrap();
    let ids: Vec<_> = second.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["010"]);
    assert_eq!(second.next_cursor, None);
    store.cancel("014", T0).await.unwrap();
    let cancelled = store.list(ListFilter { status: Some(Status::Cancelled), ..Default::default() }).await.unwrap();
    assert_eq!(cancelled.items.len(), 1);
    assert_eq!(cancelled.items[0].id, "014");
    let all = store.list(ListFilter::default()).await.unwrap();
    assert_eq!(all.items.len(), 5);
}

pub async fn bulk_redrive_by_function(store: &dyn Store) {
    for (id, f) in [("01A", "f"), ("01B", "f"), ("01C", "g")] {
        store.enqueue(new_inv(id, f, T0)).await.unwrap();
        let inv = lease_one(store, f, T0).await;
        fail_once(store, &inv, T0 + 1, Transition::Die { error: "x".into(), response: None }).await;
    }
    let redriven = store
        .redrive_matching(ListFilter { function: Some("f".into()), limit: 1, ..Default::default() }, T0 + 5)
        .await
        .unwrap();
    assert_eq!(redriven.len(), 1, "the limit holds");
    assert_eq!(redriven[0].id, "01B", "newest first");
    // It dies again at once; the next batch goes on below it and does not redrive it twice.
    let again = lease_one(store, "f", T0 + 5).await;
    fail_once(store, &again, T0 + 6, Transition::Die { error: "x".into(), response: None }).await;
    let below = ListFilter { function: Some("f".into()), cursor: Some("01B".into()), ..Default::default() };
    let redriven = store.redrive_matching(below, T0 + 7).await.unwrap();
    assert_eq!(redriven.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["01A"]);
    assert_eq!(store.get("01B").await.unwrap().unwrap().status, Status::Dead);
    assert_eq!(store.get("01C").await.unwrap().unwrap().status, Status::Dead, "other functions untouched");
    let leased = store.lease(lease_req("f", T0 + 7, 10)).await.unwrap();
    assert_eq!(leased.invocations.len(), 1);
}

/// Records written behind their replies go many in one commit, each whole with its attempts;
/// a batch with one refused row (an id stored before, or twice in the batch) stores none of its
/// records.
pub async fn finished_sync_invocations_are_recorded_many_at_once_all_or_none(store: &dyn Store) {
    let finished = |id: &str, attempts: u32| {
        let mut inv = new_inv(id, "f", T0).into_stored();
        inv.status = if attempts == 1 { Status::Succeeded } else { Status::Failed };
        inv.sync = true;
        inv.due_at = None;
        inv.attempt_count = attempts;
        inv.attempts = (1..=attempts).map(|n| attempt(n, Outcome::Transient, Some(503))).collect();
        inv.response = Some(StoredResponse { status: 200, content_type: None, body: Bytes::from_static(b"{}") });
        inv
    };
    store.record_finished_all(Arc::default(), Urgency::Now).await.unwrap();
    let batch: Vec<Invocation> = (0..120).map(|i| finished(&format!("01M{i:03}"), 1 + i % 3)).collect();
    store.record_finished_all(Arc::new(batch.clone()), Urgency::Unhurried).await.unwrap();
    for inv in &batch {
        assert_eq!(store.get(&inv.id).await.unwrap().as_ref(), Some(inv));
    }
    let refused =
        store.record_finished_all(Arc::new(vec![finished("01N", 1), finished("01M007", 2)]), Urgency::Now).await;
    assert!(refused.is_err(), "an id stored before refuses its batch");
    assert_eq!(store.get("01N").await.unwrap(), None, "all or none");
    assert_eq!(store.get("01M007").await.unwrap().unwrap().attempt_count, 2, "the stored record is untouched");
    let twice = store
        .record_finished_all(Arc::new(vec![finished("01P", 1), finished("01Q", 3), finished("01P", 2)]), Urgency::Now);
    assert!(twice.await.is_err(), "an id twice in a batch refuses it");
    for id in ["01P", "01Q"] {
        assert_eq!(store.get(id).await.unwrap(), None, "all or none: {id}");
    }
    let leased = store.lease(lease_req("f", T0 + 1, 10)).await.unwrap();
    assert!(leased.invocations.is_empty(), "finished sync invocations are not work");
}

pub async fn finished_sync_invocations_are_recorded(store: &dyn Store) {
    let mut inv = new_inv("01S", "f", T0).into_stored();
    inv.status = Status::Failed;
    inv.due_at = None;
    inv.attempt_count = 2;
    inv.attempts = vec![attempt(1, Outcome::Transient, Some(503)), attempt(2, Outcome::Permanent, Some(404))];
    inv.error = Some("HTTP 404".into());
    inv.response =
        Some(StoredResponse { status: 404, content_type: Some("text/plain".into()), body: Bytes::from_static(b"no") });
    store.record_finished(inv.clone(), None, Urgency::Now).await.unwrap();
    let got = store.get("01S").await.unwrap().unwrap();
    assert_eq!(got, inv);
    let leased = store.lease(lease_req("f", T0 + 1, 10)).await.unwrap();
    assert!(leased.invocations.is_empty(), "finished sync invocations are not work");
}

/// Payloads of every size, the empty one and ones far larger than a page among them, read back
/// byte for byte at every step: admitted alone, in bulk or leased at admission, leased, retried,
/// completed, redriven from the DLQ, listed, and recorded as finished sync calls.
pub async fn payloads_of_every_size_read_back_whole_at_every_step(store: &dyn Store) {
    let payload = |len: usize| -> Bytes { (0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>().into() };
    let sizes = [0, 1, 512, 513, 4_000, 70_000];
    let with = |id: &str, len: usize| NewInvocation { payload: payload(len), ..new_inv(id, "f", T0) };
    let expect = |inv: &Invocation| {
        let len: usize = inv.id[3..].parse().unwrap();
        assert_eq!(inv.payload, payload(len), "the payload of {}", inv.id);
    };
    for len in sizes {
        expect(&store.enqueue(with(&format!("01A{len}"), len)).await.unwrap());
    }
    let bulk = store.enqueue_all(sizes.iter().map(|&len| with(&format!("01B{len}"), len)).collect()).await.unwrap();
    bulk.iter().for_each(expect);
    for len in sizes {
        let mut leased = with(&format!("01L{len}"), len);
        leased.lease =
            Some(crate::invocation::Lease { owner: "node-a".into(), leased_at: T0, expires_at: T0 + 30_000 });
        store.enqueue(leased).await.unwrap();
    }
    let all = |status: Option<Status>| async move {
        let page = store.list(ListFilter { function: Some("f".into()), status, limit: 100, ..Default::default() });
        page.await.unwrap().items
    };
    let listed = all(None).await;
    assert_eq!(listed.len(), 3 * sizes.len());
    listed.iter().for_each(expect);

    // Leased, then a retry: every row changes, and every payload reads back.
    let leased = store.lease(lease_req("f", T0, 100)).await.unwrap().invocations;
    assert_eq!(leased.len(), 2 * sizes.len(), "the queued ones");
    leased.iter().for_each(expect);
    for inv in &leased {
        fail_once(store, inv, T0 + 1, Transition::Retry { due_at: T0 + 10, delay_ms: 9, error: "HTTP 503".into() })
            .await;
    }
    all(Some(Status::Retrying)).await.iter().for_each(expect);
    // Leased again and finished: half succeed, half die; the dead are redriven.
    let again = store.lease(lease_req("f", T0 + 10, 100)).await.unwrap().invocations;
    assert_eq!(again.len(), 2 * sizes.len());
    for (i, inv) in again.iter().enumerate() {
        let next = if i % 2 == 0 {
            Transition::Succeed { response: ok_response("{}") }
        } else {
            Transition::Die { error: "x".into(), response: None }
        };
        let completion = Completion {
            id: inv.id.clone(),
            owner: "node-a".into(),
            fence: inv.attempt_count,
            now: T0 + 11,
            attempt: Some(attempt(inv.attempt_count + 1, Outcome::Success, Some(200))),
            next,
            effects: None,
            run: None,
        };
        store.complete(completion, Urgency::Now).await.unwrap();
    }
    for inv in again.iter().skip(1).step_by(2) {
        expect(&store.redrive(&inv.id, T0 + 12).await.unwrap());
    }
    for len in sizes {
        for prefix in ["01A", "01B", "01L"] {
            expect(&store.get(&format!("{prefix}{len}")).await.unwrap().expect("stored"));
        }
    }
    all(None).await.iter().for_each(expect);

    // Finished sync calls, alone and many at once.
    let finished = |id: String, len: usize| {
        let mut inv = with(&id, len).into_stored();
        inv.status = Status::Succeeded;
        inv.sync = true;
        inv.due_at = None;
        inv
    };
    for len in sizes {
        store.record_finished(finished(format!("01S{len}"), len), None, Urgency::Now).await.unwrap();
    }
    let many = sizes.iter().map(|&len| finished(format!("01M{len}"), len)).collect();
    store.record_finished_all(Arc::new(many), Urgency::Now).await.unwrap();
    for len in sizes {
        for prefix in ["01S", "01M"] {
            expect(&store.get(&format!("{prefix}{len}")).await.unwrap().expect("recorded"));
        }
    }

    // Keyed sync calls: held while running, then finished; or taken over after their node died.
    for len in sizes {
        let (id, key) = (format!("01K{len}"), format!("k{len}"));
        let running = Invocation { payload: payload(len), ..running_sync(&id, "h1", T0) };
        store.begin_sync(running, key_claim(&key, "fp", "h1", T0)).await.unwrap();
        let mut done = store.get(&id).await.unwrap().expect("held");
        expect(&done);
        done.status = Status::Succeeded;
        done.lease = None;
        done.response = Some(ok_response("{}"));
        let claim = key_claim(&key, "fp", "h1", T0).key;
        store.finish_sync(done, None, claim, "h1".into(), reply("done")).await.unwrap();
        expect(&store.get(&id).await.unwrap().expect("finished"));
        let id = format!("01T{len}");
        let running = Invocation { payload: payload(len), ..running_sync(&id, "h1", T0) };
        store.begin_sync(running, key_claim(&format!("t{len}"), "fp", "h1", T0)).await.unwrap();
    }
    store.reclaim_leases(Reclaim::All, T0 + 50).await.unwrap();
    for len in sizes {
        let claim = key_claim(&format!("t{len}"), "fp", "h2", T0 + 60);
        let resumed = Invocation { payload: payload(len), ..running_sync(&format!("01X{len}"), "h2", T0 + 60) };
        let taken = store.begin_sync(resumed, claim).await.unwrap();
        assert_eq!(taken, KeyDecision::TakeOver { invocation_id: format!("01T{len}") });
        expect(&store.get(&format!("01T{len}")).await.unwrap().expect("taken over"));
    }
}
