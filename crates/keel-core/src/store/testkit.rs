//! The conformance suite: behaviour every [`Store`] must show, written once and run against each
//! backend with [`store_conformance!`](crate::store_conformance).

use bytes::Bytes;

use super::{LeaseRequest, ListFilter, NodeBeat, NodeState, Reclaim, Store};
use crate::clock::Millis;
use crate::events::{CloudEvent, NewEvent, Published};
use crate::idempotency::{KeyClaim, KeyDecision, KeyRef, StoredReply};
use crate::invocation::{Attempt, Completion, Invocation, NewInvocation, Status, StoredResponse, Transition};
use crate::invocation::{CommitEffects, Delivery};
use crate::kv::{KvWrite, Precondition};
use crate::outcome::Outcome;
use crate::Error;

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async function returning
/// `(store, guard)`, or `Option<(store, guard)>` for a backend that may be missing here (`None`
/// skips the case; `make` says why); the guard (a temp dir, a database) lives as long as the test.
#[macro_export]
macro_rules! store_conformance {
    ($make:path) => {
        $crate::store_conformance!(@cases $make;
            enqueue_then_get, lease_takes_due_work_oldest_first, lease_is_per_function,
            success_keeps_the_response, retry_comes_due_later, stale_lease_cannot_complete,
            exhausted_goes_dead_and_redrive_gives_a_fresh_budget, discard_only_from_dlq,
            cancel_queued_but_not_running, reclaim_all_and_expired, list_filters_and_pages,
            bulk_redrive_by_function, finished_sync_invocations_are_recorded,
            keyed_enqueue_admits_once_and_replays, keyed_sync_holds_then_completes_the_key,
            a_dead_sync_holder_is_taken_over_with_the_same_invocation, claimed_keys_complete_release_and_expire,
            nodes_report_heartbeats_and_leases, publish_stores_events_with_deliveries_once,
            kv_versions_and_preconditions, effects_commit_with_the_completion_or_not_at_all,
            ordered_deliveries_wait_for_earlier_ones, finished_sync_invocations_commit_their_effects,
            queue_stats_count_backlog_and_dead);
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $crate::store::testkit::Backend::into_backend($make().await) else {
                    return;
                };
                $crate::store::testkit::$case(&store).await;
            }
        )*
    };
}

/// What a `make` function of [`store_conformance!`] returns: `(store, guard)`, or an `Option`
/// of it.
pub trait Backend {
    type Store;
    type Guard;
    fn into_backend(self) -> Option<(Self::Store, Self::Guard)>;
}

impl<S, G> Backend for (S, G) {
    type Store = S;
    type Guard = G;
    fn into_backend(self) -> Option<(S, G)> {
        Some(self)
    }
}

impl<S, G> Backend for Option<(S, G)> {
    type Store = S;
    type Guard = G;
    fn into_backend(self) -> Option<(S, G)> {
        self
    }
}

mod stats;
pub use stats::queue_stats_count_backlog_and_dead;

const T0: Millis = 1_700_000_000_000;

fn new_inv(id: &str, function: &str, due_at: Millis) -> NewInvocation {
    NewInvocation {
        id: id.to_string(),
        function: function.to_string(),
        payload: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        content_type: Some("application/json".into()),
        created_at: T0,
        due_at,
        idempotency_key: None,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        delivery: None,
    }
}

fn lease_req(function: &str, now: Millis, limit: usize) -> LeaseRequest {
    LeaseRequest { function: function.into(), owner: "node-a".into(), now, expires_at: now + 30_000, limit }
}

fn attempt(number: u32, outcome: Outcome, status: Option<u16>) -> Attempt {
    Attempt { number, started_at: T0 + 10, ended_at: T0 + 25, outcome, http_status: status, error: None }
}

fn ok_response(body: &'static str) -> StoredResponse {
    StoredResponse {
        status: 200,
        content_type: Some("application/json".into()),
        body: Bytes::from_static(body.as_bytes()),
    }
}

async fn lease_one(store: &dyn Store, function: &str, now: Millis) -> Invocation {
    let mut leased = store.lease(lease_req(function, now, 1)).await.unwrap().invocations;
    assert_eq!(leased.len(), 1, "expected one due invocation of {function}");
    leased.pop().unwrap()
}

async fn fail_once(store: &dyn Store, inv: &Invocation, now: Millis, next: Transition) {
    let number = inv.attempt_count + 1;
    let completion = Completion {
        id: inv.id.clone(),
        owner: "node-a".into(),
        now,
        attempt: Some(Attempt { error: Some("boom".into()), ..attempt(number, Outcome::Transient, Some(503)) }),
        next,
        effects: None,
    };
    store.complete(completion).await.unwrap();
}

pub async fn enqueue_then_get(store: &dyn Store) {
    let stored = store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    assert_eq!(stored.status, Status::Queued);
    let got = store.get("01A").await.unwrap().expect("stored invocation");
    assert_eq!(got.payload, Bytes::from_static(b"{\"id\":\"01A\"}"));
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.due_at, Some(T0));
    assert_eq!(got.traceparent, stored.traceparent);
    assert!(got.attempts.is_empty());
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
    let completion = Completion {
        id: inv.id.clone(),
        owner: "node-a".into(),
        now: T0 + 30,
        attempt: Some(attempt(1, Outcome::Success, Some(200))),
        next: Transition::Succeed { response: ok_response("{\"ok\":true}") },
        effects: None,
    };
    store.complete(completion).await.unwrap();
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
    let completion = Completion {
        id: inv.id.clone(),
        owner: "node-b".into(),
        now: T0 + 30,
        attempt: Some(attempt(1, Outcome::Success, Some(200))),
        next: Transition::Succeed { response: ok_response("{}") },
        effects: None,
    };
    let err = store.complete(completion).await.unwrap_err();
    assert!(matches!(err, Error::InvalidState(_)), "{err:?}");
    let got = store.get("01A").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Running);
    assert!(got.attempts.is_empty(), "a refused completion writes nothing");
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
    let redriven =
        store.redrive_matching(ListFilter { function: Some("f".into()), ..Default::default() }, T0 + 5).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(store.get("01C").await.unwrap().unwrap().status, Status::Dead, "other functions untouched");
    let leased = store.lease(lease_req("f", T0 + 5, 10)).await.unwrap();
    assert_eq!(leased.invocations.len(), 2);
}

pub async fn finished_sync_invocations_are_recorded(store: &dyn Store) {
    let mut inv = new_inv("01S", "f", T0).into_queued();
    inv.status = Status::Failed;
    inv.due_at = None;
    inv.attempt_count = 2;
    inv.attempts = vec![attempt(1, Outcome::Transient, Some(503)), attempt(2, Outcome::Permanent, Some(404))];
    inv.error = Some("HTTP 404".into());
    inv.response =
        Some(StoredResponse { status: 404, content_type: Some("text/plain".into()), body: Bytes::from_static(b"no") });
    store.record_finished(inv.clone(), None).await.unwrap();
    let got = store.get("01S").await.unwrap().unwrap();
    assert_eq!(got, inv);
    let leased = store.lease(lease_req("f", T0 + 1, 10)).await.unwrap();
    assert!(leased.invocations.is_empty(), "finished sync invocations are not work");
}

fn key_claim(key: &str, fingerprint: &str, holder: &str, now: Millis) -> KeyClaim {
    KeyClaim {
        key: KeyRef { scope: "anonymous".into(), route: "POST /v1/functions/f/invoke".into(), key: key.into() },
        fingerprint: fingerprint.into(),
        holder: holder.into(),
        now,
        lease_until: now + 1_000,
        expires_at: now + 60_000,
    }
}

fn reply(body: &str) -> StoredReply {
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

fn running_sync(id: &str, holder: &str, now: Millis) -> Invocation {
    let mut inv = new_inv(id, "f", now).into_queued();
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
    assert!(matches!(stale, Err(Error::InvalidState(_))), "only the holder completes the key");
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
    store.release_key(c.key.clone(), "h1".into()).await.unwrap();
    assert_eq!(store.claim_key(key_claim("r", "fp", "h2", T0 + 2)).await.unwrap(), KeyDecision::Claim, "released");
    store.complete_key(c.key.clone(), "h2".into(), reply("ok")).await.unwrap();
    assert_eq!(store.claim_key(key_claim("r", "fp", "h3", T0 + 3)).await.unwrap(), KeyDecision::Replay(reply("ok")));
    // Expired records are purged in bounded batches and forgotten.
    store.claim_key(key_claim("s", "fp", "h1", T0)).await.unwrap();
    assert_eq!(store.purge_expired_keys(T0 + 59_999, 10).await.unwrap(), 0);
    assert_eq!(store.purge_expired_keys(T0 + 60_002, 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(store.purge_expired_keys(T0 + 60_002, 10).await.unwrap(), 1);
    assert_eq!(store.claim_key(key_claim("r", "fp", "h4", T0 + 60_003)).await.unwrap(), KeyDecision::Claim);
}

pub async fn nodes_report_heartbeats_and_leases(store: &dyn Store) {
    assert!(store.nodes().await.unwrap().is_empty(), "no node has reported yet");
    let beat = NodeBeat { id: "node-a".into(), addr: "127.0.0.1:7733".into(), started_at: T0, now: T0 };
    store.heartbeat(beat.clone()).await.unwrap();
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    store.enqueue(new_inv("01B", "f", T0)).await.unwrap();
    assert_eq!(store.lease(lease_req("f", T0, 10)).await.unwrap().invocations.len(), 2);
    // A sync call's holder is named `node/request`: its lease counts for its node.
    let claim = key_claim("k", "fp", "node-a/r1", T0);
    store.begin_sync(running_sync("01S", "node-a/r1", T0), claim).await.unwrap();
    store.heartbeat(NodeBeat { now: T0 + 2_000, ..beat }).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    let expected = NodeState {
        id: "node-a".into(),
        addr: "127.0.0.1:7733".into(),
        started_at: T0,
        heartbeat_at: T0 + 2_000,
        leases: 3,
    };
    assert_eq!(nodes, vec![expected]);
}

fn delivery_of(
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

fn event(id: &str, ce_id: &str, deliveries: Vec<NewInvocation>) -> NewEvent {
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
    }
}

fn put(ns: &str, key: &str, value: &str, precondition: Precondition) -> KvWrite {
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
    let completion = |version, owner: &str| Completion {
        id: inv.id.clone(),
        owner: owner.into(),
        now: T0 + 30,
        attempt: Some(attempt(1, Outcome::Success, Some(200))),
        next: Transition::Succeed { response: ok_response("{}") },
        effects: Some(effects(version)),
    };
    let conflict = store.complete(completion(7, "node-a")).await;
    assert!(matches!(conflict, Err(Error::PreconditionFailed(_))), "{conflict:?}");
    assert!(store.kv_get("users", "u1").await.unwrap().is_none(), "the first write was not applied either");
    assert!(store.get_event("01E").await.unwrap().is_none());
    assert_eq!(store.get("01A").await.unwrap().unwrap().status, Status::Running, "the completion was refused whole");

    let stale = store.complete(completion(1, "node-b")).await;
    assert!(matches!(stale, Err(Error::InvalidState(_))));
    assert!(store.kv_get("users", "u1").await.unwrap().is_none(), "a node without the lease applies nothing");

    store.complete(completion(1, "node-a")).await.unwrap();
    assert_eq!(store.get("01A").await.unwrap().unwrap().status, Status::Succeeded);
    assert_eq!(store.kv_get("b", "u1").await.unwrap().unwrap().version, 2);
    assert!(store.kv_get("users", "u1").await.unwrap().is_some());
    assert!(store.get_event("01E").await.unwrap().is_some());
    assert_eq!(store.get("01D").await.unwrap().unwrap().status, Status::Queued, "the emitted event's delivery");
    let again = store.complete(completion(2, "node-a")).await;
    assert!(matches!(again, Err(Error::InvalidState(_))), "effects apply at most once");
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
    fail_once(store, &b, T0 + 1, Transition::Retry { due_at: T0 + 5, delay_ms: 4, error: "x".into() }).await;
    assert!(
        store.lease(lease_req("f", T0 + 2, 10)).await.unwrap().invocations.is_empty(),
        "still waits while retrying"
    );
    let b = lease_one(store, "f", T0 + 5).await;
    assert_eq!(b.id, "01B");
    fail_once(store, &b, T0 + 6, Transition::Die { error: "gave up".into(), response: None }).await;
    let next = lease_one(store, "f", T0 + 6).await;
    assert_eq!(next.id, "01A", "moves on once the earlier one is dead-lettered");
}

pub async fn finished_sync_invocations_commit_their_effects(store: &dyn Store) {
    let mut inv = new_inv("01S", "f", T0).into_queued();
    inv.status = Status::Succeeded;
    inv.due_at = None;
    let effects = CommitEffects { kv: vec![put("c", "n", "1", Precondition::IfAbsent)], events: vec![] };
    store.record_finished(inv.clone(), Some(effects.clone())).await.unwrap();
    assert_eq!(store.kv_get("c", "n").await.unwrap().unwrap().version, 1);
    inv.id = "01T".into();
    let refused = store.record_finished(inv, Some(effects)).await;
    assert!(matches!(refused, Err(Error::PreconditionFailed(_))));
    assert!(store.get("01T").await.unwrap().is_none(), "refused whole");
}
