//! The conformance suite on PostgreSQL (a fresh database per test on one throwaway cluster per
//! test process), and what only a shared database shows: nodes racing for work and keys.

use std::sync::Arc;

use bytes::Bytes;
use keel_core::auth::SigningKey;
use keel_core::idempotency::{KeyClaim, KeyDecision, KeyRef};
use keel_core::invocation::NewInvocation;
use keel_core::store::prelude::*;
use keel_core::store::{LeaseRequest, ListFilter, NodeBeat, Reclaim, NODE_TIMEOUT_MS};

use super::PgStore;
use crate::pg_testkit::{fresh_database, fresh_database_with};

async fn make() -> Option<(PgStore, ())> {
    let url = fresh_database().await?;
    Some((PgStore::open(&url).expect("opening the store"), ()))
}

keel_core::store_conformance!(make);

/// In a database whose default collation is a language's (ICU `en`: `a` before `B`), keys
/// still list in byte order, with the cursors SQLite gives.
#[tokio::test]
async fn kv_lists_in_byte_order_whatever_the_databases_collation() {
    let options = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C.UTF-8'";
    let Some(url) = fresh_database_with(options).await else { return };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let sorted = "SELECT array_agg(k ORDER BY k) FROM unnest(ARRAY['a', 'B', 'a_c', 'ab']) AS k";
    let order: Vec<String> = client.query_one(sorted, &[]).await.unwrap().get(0);
    assert_eq!(order.first().map(String::as_str), Some("a"), "the database's own order is not byte order: {order:?}");
    drop(client);
    let _ = driver.await;
    let store = PgStore::open(&url).expect("opening the store");
    keel_core::store::testkit::kv_lists_keys_in_byte_order_by_prefix_and_cursor(&store).await;
}

const T0: i64 = 1_700_000_000_000;

fn new_inv(id: String, due_at: i64) -> NewInvocation {
    NewInvocation {
        concurrency_key: None,
        id,
        function: "f".into(),
        payload: Bytes::from_static(b"{}"),
        content_type: None,
        created_at: T0,
        due_at,
        idempotency_key: None,
        traceparent: None,
        delivery: None,
        lease: None,
        workflow: None,
    }
}

/// Two stores on one database, as two nodes would have.
async fn two_nodes() -> Option<(Arc<PgStore>, Arc<PgStore>)> {
    let url = fresh_database().await?;
    Some((Arc::new(PgStore::open(&url).unwrap()), Arc::new(PgStore::open(&url).unwrap())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_group_commit_and_two_nodes_lease_disjoint_work() {
    let Some((a, b)) = two_nodes().await else { return };
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { store.enqueue(new_inv(format!("{i:05}"), T0)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let duplicate = a.enqueue(new_inv("00001".into(), T0)).await;
    assert!(matches!(duplicate, Err(keel_core::Error::InvalidState(_))), "{duplicate:?}");
    let lease = |store: Arc<PgStore>, owner: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let request = LeaseRequest {
                function: "f".into(),
                owner: owner.into(),
                now: T0,
                expires_at: T0 + 1,
                limit: 7,
                keys: None,
            };
            let got = store.lease(request).await.unwrap().invocations;
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|i| i.id));
        }
    };
    let (x, y) = tokio::join!(tokio::spawn(lease(a.clone(), "node-a")), tokio::spawn(lease(b.clone(), "node-b")));
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut all: Vec<_> = x.iter().chain(&y).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 400, "every invocation leased exactly once ({} + {})", x.len(), y.len());
    assert_eq!(x.len() + y.len(), 400, "no invocation leased by both nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_new_key_claimed_by_two_nodes_at_once_is_claimed_once() {
    let Some((a, b)) = two_nodes().await else { return };
    let claim = |holder: &str| KeyClaim {
        key: KeyRef { scope: "caller".into(), route: "POST /x".into(), key: "k".into() },
        fingerprint: "fp".into(),
        holder: holder.into(),
        now: T0,
        lease_until: T0 + 30_000,
        expires_at: T0 + 86_400_000,
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (store, claim) = (if i % 2 == 0 { a.clone() } else { b.clone() }, claim(&format!("h{i}")));
        tasks.push(tokio::spawn(async move { store.claim_key(claim).await.unwrap() }));
    }
    let mut claimed = 0;
    for t in tasks {
        match t.await.unwrap() {
            KeyDecision::Claim => claimed += 1,
            KeyDecision::InFlight { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_starting_at_once_make_one_signing_key() {
    // A race may go either way once: a few fresh databases give it room to go wrong.
    for _ in 0..5 {
        let Some((a, b)) = two_nodes().await else { return };
        // Migrate first, so both adds meet at the signing-key lock rather than the migration's.
        a.api_keys().await.unwrap();
        b.api_keys().await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let add = |store: Arc<PgStore>, id: &'static str| {
            let barrier = barrier.clone();
            let key = SigningKey { id: id.into(), secret: vec![7; 32], created_at: T0, expires_at: None };
            tokio::spawn(async move {
                barrier.wait().await;
                store.add_signing_key(key, T0 + 60_000, true).await
            })
        };
        let (x, y) = tokio::join!(add(a.clone(), "sk_a"), add(b.clone(), "sk_b"));
        x.unwrap().unwrap();
        y.unwrap().unwrap();
        let keys = a.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 1, "exactly one first key: {keys:?}");
        assert!(keys[0].is_live(T0 + 1), "and it is live: {keys:?}");
    }
}

#[tokio::test]
async fn a_silent_node_loses_its_leases_before_they_expire() {
    let Some(url) = fresh_database().await else { return };
    // Silence is measured on the database's clock, which a test cannot hurry: a short timeout.
    let node_timeout = 1_000;
    let a = PgStore::open(&url).unwrap().with_node_timeout(node_timeout);
    let b = PgStore::open(&url).unwrap().with_node_timeout(node_timeout);
    let beat = |id: &str, now| NodeBeat { id: id.into(), addr: "-".into(), started_at: T0, now, draining: false };
    a.heartbeat(beat("node-a", T0)).await.unwrap();
    a.enqueue(new_inv("01A".into(), T0)).await.unwrap();
    let long = LeaseRequest {
        function: "f".into(),
        owner: "node-a".into(),
        now: T0,
        expires_at: T0 + 3_600_000,
        limit: 1,
        keys: None,
    };
    assert_eq!(a.lease(long).await.unwrap().invocations.len(), 1);
    // node-b's clock runs far ahead of node-a's: node-a still looks alive to it.
    let ahead = T0 + 10 * NODE_TIMEOUT_MS;
    b.heartbeat(beat("node-b", ahead)).await.unwrap();
    let reclaimed = b.reclaim_leases(Reclaim::ExpiredBefore(ahead), ahead).await.unwrap();
    assert!(reclaimed.is_empty(), "node-a is alive, whatever node-b's clock says");
    let skews: Vec<_> = b.nodes().await.unwrap().iter().map(|n| n.clock_skew_ms).collect();
    let apart = skews[1] - skews[0] - 10 * NODE_TIMEOUT_MS;
    assert!(apart.abs() < 1_000, "each clock's distance to the database's is reported: {skews:?}");
    // node-a falls silent past the timeout, on the database's clock.
    tokio::time::sleep(std::time::Duration::from_millis(node_timeout as u64 + 300)).await;
    let later = ahead + node_timeout + 300;
    b.heartbeat(beat("node-b", later)).await.unwrap();
    assert_eq!(b.reclaim_leases(Reclaim::ExpiredBefore(later), later).await.unwrap(), ["f"]);
    let inv = b.get("01A").await.unwrap().unwrap();
    assert_eq!(inv.status, keel_core::invocation::Status::Retrying);
    let nodes = b.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| (n.id.as_str(), n.leases)).collect::<Vec<_>>(), [("node-a", 0), ("node-b", 0)]);
}

#[tokio::test]
async fn other_nodes_hear_of_new_work() {
    let Some((a, b)) = two_nodes().await else { return };
    a.list(ListFilter::default()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    b.on_wakeup(Arc::new(move |f: &str| {
        let _ = tx.send(f.to_string());
    }));
    // The listener connects in the background; keep enqueueing until it hears one.
    for i in 0..50 {
        a.enqueue(new_inv(format!("{i:03}"), T0)).await.unwrap();
        if let Ok(Some(f)) = tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await {
            assert_eq!(f, "f");
            return;
        }
    }
    panic!("node b never heard of the work enqueued on node a");
}

#[tokio::test]
async fn an_unreachable_database_answers_unavailable_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = PgStore::open(&format!("postgres://keel@127.0.0.1:{port}/keel")).unwrap();
    let started = std::time::Instant::now();
    let err = store.enqueue(new_inv("01A".into(), T0)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn resuming_a_function_wakes_the_other_nodes() {
    let Some((a, b)) = two_nodes().await else { return };
    a.set_paused("f", true, T0).await.unwrap();
    assert_eq!(b.paused().await.unwrap(), [("f".to_string(), T0)], "a pause is every node's");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    b.on_wakeup(Arc::new(move |f: &str| {
        let _ = tx.send(f.to_string());
    }));
    // Nothing is queued, so only a resume can wake node b. Its listener connects in the
    // background: pause and resume until it hears one.
    for _ in 0..50 {
        a.set_paused("f", true, T0).await.unwrap();
        a.set_paused("f", false, T0 + 1).await.unwrap();
        if let Ok(Some(f)) = tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await {
            assert_eq!(f, "f");
            assert!(b.paused().await.unwrap().is_empty());
            return;
        }
    }
    panic!("node b never heard that f was resumed on node a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_lease_cost() {
    let url = fresh_database().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(PgStore::open(&url).unwrap());
    crate::lease_cost::measure(store, "postgres").await;
}

/// As on SQLite: a first attempt that succeeded is kept in its invocation's row, not in
/// `attempts`, for a sync call's record and for an async completion alike (the grouped
/// completions and the single one), and reads back as it was written; any other attempt has its
/// row of `attempts`. A row stored before the change keeps its first success in `attempts`.
#[tokio::test]
async fn a_first_success_is_kept_in_its_row_and_any_other_attempt_in_attempts() {
    use crate::first_attempt::scenario::{self, attempt};
    use keel_core::outcome::Outcome;
    let Some(url) = fresh_database().await else { return };
    let store = PgStore::open(&url).expect("opening the store");
    scenario::run(&store).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let rows = client.query("SELECT invocation_id, number FROM attempts ORDER BY 1, 2", &[]).await.unwrap();
    let in_attempts: Vec<(String, u32)> = rows.iter().map(|r| (r.get(0), r.get::<_, i32>(1) as u32)).collect();
    let expected = scenario::IN_ATTEMPTS.map(|(id, n)| (id.to_string(), n));
    assert_eq!(in_attempts, expected, "a1's and s1's first successes are kept in their rows");

    client
        .batch_execute(
            "UPDATE invocations SET first_started_at = NULL, first_ended_at = NULL WHERE id = 'a1';
             INSERT INTO attempts (invocation_id, number, started_at, ended_at, outcome, http_status, error)
                 VALUES ('a1', 1, 10, 17, 'success', 200, NULL);",
        )
        .await
        .unwrap();
    let old = store.get("a1").await.unwrap().unwrap();
    assert_eq!(old.attempts, vec![attempt(1, Outcome::Success, Some(200))], "an attempt stored before, read back");
    drop(client);
    let _ = driver.await;
}
