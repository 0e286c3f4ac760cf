//! Conformance cases: idempotency key records, and node heartbeats.

use super::*;

pub(super) fn key_claim(key: &str, fingerprint: &str, holder: &str, now: Millis) -> KeyClaim {
    KeyClaim {
        key: KeyRef { scope: "anonymous".into(), route: "POST /v1/functions/f/invoke".into(), key: key.into() },
        fingerprint: fingerprint.into(),
        holder: holder.into(),
        now,
        lease_until: now + 1_000,
        expires_at: now + 60_000,
    }
}

pub(super) fn reply(body: &str) -> StoredReply {
    StoredReply {
        status: 202,
        headers: vec![("content-type".into(), "application/json".into()), ("location".into(), "/v1/x".into())],
        body: Bytes::from(body.to_string()),
    }
}

pub async fn keyed_enqueue_admits_once_and_replays(store: &dyn Store) {
    let first =
        store.enqueue_keyed(new_inv("01A", "f", T0), key_claim("k1", "fp", "h1", T0), reply("one")).await.unwrap();
    assert_eq!(first, KeyDecision::Claim);
    let again =
        store.enqueue_keyed(new_inv("01B", "f", T0), key_claim("k1", "fp", "h2", T0 + 5), reply("two")).await.unwrap();
    assert_eq!(again, KeyDecision::Replay(reply("one")), "the stored answer, headers and all");
    assert!(store.get("01B").await.unwrap().is_none(), "a replay admits nothing");
    let other =
        store.enqueue_keyed(new_inv("01C", "f", T0), key_claim("k1", "other", "h3", T0 + 5), reply("x")).await.unwrap();
    assert_eq!(other, KeyDecision::Mismatch);
    assert!(store.get("01C").await.unwrap().is_none());
    let stored = store.get("01A").await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Queued);
}

pub(super) fn running_sync(id: &str, holder: &str, now: Millis) -> Invocation {
    let mut inv = new_inv(id, "f", now).into_stored();
    inv.status = Status::Running;
    inv.sync = true;
    inv.due_at = None;
    inv.lease = Some(crate::invocation::Lease { owner: holder.into(), leased_at: now, expires_at: now + 1_000 });
    inv
}

pub async fn keyed_sync_holds_then_completes_the_key(store: &dyn Store) {
    let d = store.begin_sync(running_sync("01S", "h1", T0), key_claim("k", "fp", "h1", T0)).await.unwrap();
    assert_eq!(d, KeyDecision::Claim);
    assert_eq!(store.get("01S").await.unwrap().unwrap().status, Status::Running);
    let busy = store.begin_sync(running_sync("01T", "h2", T0 + 10), key_claim("k", "fp", "h2", T0 + 10)).await.unwrap();
    assert_eq!(busy, KeyDecision::InFlight { lease_until: T0 + 1_000 });
    let leased = store.lease(lease_req("f", T0 + 10, 10)).await.unwrap();
    assert!(leased.invocations.is_empty(), "a running sync invocation is nobody's async work");

    let mut done = store.get("01S").await.unwrap().unwrap();
    done.status = Status::Succeeded;
    done.lease = None;
    done.attempt_count = 1;
    done.attempts = vec![attempt(1, Outcome::Success, Some(200))];
    done.response = Some(ok_response("{}"));
    let key = key_claim("k", "fp", "h1", T0).key;
    store.finish_sync(done.clone(), None, key.clone(), "h1".into(), reply("done")).await.unwrap();
    assert_eq!(store.get("01S").await.unwrap().unwrap(), done);
    let replay =
        store.begin_sync(running_sync("01U", "h3", T0 + 20), key_claim("k", "fp", "h3", T0 + 20)).await.unwrap();
    assert_eq!(replay, KeyDecision::Replay(reply("done")));
    let stale = store.finish_sync(done, None, key, "h2".into(), reply("late")).await;
    assert!(matches!(stale, Err(Error::LeaseLost(_))), "only the holder completes the key");
}

pub async fn a_dead_sync_holder_is_taken_over_with_the_same_invocation(store: &dyn Store) {
    store.begin_sync(running_sync("01S", "h1", T0), key_claim("k", "fp", "h1", T0)).await.unwrap();
    // The node died: at restart its lease is taken back and the invocation marked failed.
    store.reclaim_leases(Reclaim::All, T0 + 50).await.unwrap();
    let failed = store.get("01S").await.unwrap().unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.attempt_count, 1, "the interrupted attempt is recorded");
    let d = store.begin_sync(running_sync("01X", "h2", T0 + 60), key_claim("k", "fp", "h2", T0 + 60)).await.unwrap();
    assert_eq!(d, KeyDecision::TakeOver { invocation_id: "01S".into() }, "retried at once, not after the lease");
    let resumed = store.get("01S").await.unwrap().unwrap();
    assert_eq!(resumed.status, Status::Running);
    assert_eq!(resumed.lease.map(|l| l.owner), Some("h2".to_string()));
    assert!(store.get("01X").await.unwrap().is_none(), "the same invocation runs again, no second one");
}

pub async fn claimed_keys_complete_release_and_expire(store: &dyn Store) {
    let c = key_claim("r", "fp", "h1", T0);
    assert_eq!(store.claim_key(c.clone()).await.unwrap(), KeyDecision::Claim);
    assert!(matches!(store.claim_key(key_claim("r", "fp", "h2", T0 + 1)).await.unwrap(), KeyDecision::InFlight { .. }));
    let peeked = store.peek_key(&c.key).await.unwrap().expect("an in-flight record");
    assert!(matches!(peeked.phase, crate::idempotency::KeyPhase::InFlight { ref holder, .. } if holder == "h1"));
    assert_eq!(peeked.fingerprint, "fp");
    store.release_key(c.key.clone(), "h1".into()).await.unwrap();
    assert_eq!(store.claim_key(key_claim("r", "fp", "h2", T0 + 2)).await.unwrap(), KeyDecision::Claim, "released");
    store.complete_key(c.key.clone(), "h2".into(), reply("ok")).await.unwrap();
    assert_eq!(store.claim_key(key_claim("r", "fp", "h3", T0 + 3)).await.unwrap(), KeyDecision::Replay(reply("ok")));
    let peeked = store.peek_key(&c.key).await.unwrap();
    assert_eq!(
        crate::idempotency::decide(peeked.as_ref(), "fp", T0 + 3),
        KeyDecision::Replay(reply("ok")),
        "a peek settles a replay without a claim"
    );
    assert!(store.peek_key(&key_claim("never", "fp", "h", T0).key).await.unwrap().is_none());
    // Expired records are purged in bounded batches and forgotten.
    store.claim_key(key_claim("s", "fp", "h1", T0)).await.unwrap();
    assert_eq!(store.purge_expired_keys(T0 + 59_999, 10).await.unwrap(), 0);
    assert_eq!(store.purge_expired_keys(T0 + 60_002, 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(store.purge_expired_keys(T0 + 60_002, 10).await.unwrap(), 1);
    assert_eq!(store.claim_key(key_claim("r", "fp", "h4", T0 + 60_003)).await.unwrap(), KeyDecision::Claim);
}

pub async fn a_held_key_outlives_its_ttl_until_its_lease_ends(store: &dyn Store) {
    // A TTL shorter than the call: the record must survive the purge and keep the key held.
    let short = KeyClaim { lease_until: T0 + 10_000, expires_at: T0 + 1_000, ..key_claim("k", "fp", "h1", T0) };
    let d = store.begin_sync(running_sync("01S", "h1", T0), short.clone()).await.unwrap();
    assert_eq!(d, KeyDecision::Claim);
    assert_eq!(store.purge_expired_keys(T0 + 5_000, 10).await.unwrap(), 0, "held: not purged past its TTL");
    let busy = store.begin_sync(running_sync("01T", "h2", T0 + 5_000), key_claim("k", "fp", "h2", T0 + 5_000)).await;
    assert_eq!(busy.unwrap(), KeyDecision::InFlight { lease_until: T0 + 10_000 }, "still held past its TTL");
    let mut done = store.get("01S").await.unwrap().unwrap();
    done.status = Status::Succeeded;
    done.lease = None;
    store.finish_sync(done, None, short.key.clone(), "h1".into(), reply("done")).await.unwrap();
    assert_eq!(store.get("01S").await.unwrap().unwrap().status, Status::Succeeded, "its holder completed it");
    // Completed and past its TTL: forgotten.
    assert_eq!(store.purge_expired_keys(T0 + 5_001, 10).await.unwrap(), 1);
}

pub async fn nodes_report_heartbeats_and_leases(store: &dyn Store) {
    assert!(store.nodes().await.unwrap().is_empty(), "no node has reported yet");
    let beat =
        NodeBeat { id: "node-a".into(), addr: "127.0.0.1:7733".into(), started_at: T0, now: T0, draining: false };
    store.heartbeat(beat.clone()).await.unwrap();
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    store.enqueue(new_inv("01B", "f", T0)).await.unwrap();
    assert_eq!(store.lease(lease_req("f", T0, 10)).await.unwrap().invocations.len(), 2);
    // A sync call's holder is named `node/request`: its lease counts for its node.
    let claim = key_claim("k", "fp", "node-a/r1", T0);
    store.begin_sync(running_sync("01S", "node-a/r1", T0), claim).await.unwrap();
    store.heartbeat(NodeBeat { now: T0 + 2_000, ..beat.clone() }).await.unwrap();
    // How long it has been silent is the store's own measure: just now, whatever `now` said.
    let seen = |mut nodes: Vec<NodeState>| {
        for n in &mut nodes {
            assert!((0..5_000).contains(&n.silent_ms), "{n:?}");
            n.silent_ms = 0;
            n.clock_skew_ms = 0;
        }
        nodes
    };
    let expected = NodeState {
        id: "node-a".into(),
        addr: "127.0.0.1:7733".into(),
        started_at: T0,
        heartbeat_at: T0 + 2_000,
        leases: 3,
        draining: false,
        silent_ms: 0,
        clock_skew_ms: 0,
    };
    assert_eq!(seen(store.nodes().await.unwrap()), vec![expected.clone()]);
    store.heartbeat(NodeBeat { now: T0 + 4_000, draining: true, ..beat }).await.unwrap();
    let draining = NodeState { heartbeat_at: T0 + 4_000, draining: true, ..expected };
    assert_eq!(seen(store.nodes().await.unwrap()), vec![draining], "a draining node says so");
}
