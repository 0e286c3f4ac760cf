//! What a lease costs with a deep backlog, keyed and not: run by hand with
//! `cargo test -p keel-store measure_lease_cost -- --ignored --nocapture --test-threads=1`
//! (set `CI=1` so the PostgreSQL one fails instead of skipping when no cluster starts).
use std::sync::Arc;
use std::time::Instant;

use keel_core::invocation::NewInvocation;
use keel_core::store::{KeyLimit, LeaseRequest, Store};

const T0: i64 = 1_700_000_000_000;

fn inv(id: String, function: &str, due_at: i64, key: Option<&str>) -> NewInvocation {
    NewInvocation {
        concurrency_key: key.map(str::to_string),
        id,
        function: function.into(),
        payload: bytes::Bytes::from_static(b"{}"),
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

async fn fill(store: &Arc<dyn Store>, function: &str, flood: i64, others: i64, keyed: bool) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..flood + others {
        let store = store.clone();
        let (key, id) = if i < flood {
            (if keyed { Some("a") } else { None }, format!("{function}-a{i:06}"))
        } else {
            (if keyed { Some(if i % 2 == 0 { "b" } else { "c" }) } else { None }, format!("{function}-z{i:06}"))
        };
        let f = function.to_string();
        set.spawn(async move { store.enqueue(inv(id, &f, T0 + i, key)).await.unwrap() });
        if set.len() >= 256 {
            set.join_next().await;
        }
    }
    while set.join_next().await.is_some() {}
}

fn req(function: &str, keys: Option<KeyLimit>) -> LeaseRequest {
    LeaseRequest {
        function: function.into(),
        owner: "m".into(),
        now: T0 + 1_000_000,
        expires_at: T0 + 2_000_000,
        limit: 10,
        keys,
    }
}

async fn time(store: &Arc<dyn Store>, label: &str, n: u32, r: impl Fn() -> LeaseRequest) {
    // A first lease warms caches and prepares statements.
    let _ = store.lease(r()).await.unwrap();
    let started = Instant::now();
    let mut got = 0;
    for _ in 0..n {
        got += store.lease(r()).await.unwrap().invocations.len();
    }
    let per = started.elapsed() / n;
    println!("MEASURE {label}: {per:?} per lease ({got} leased over {n})");
}

pub(crate) async fn measure(store: Arc<dyn Store>, name: &str) {
    let flood = 10_000;
    fill(&store, "plain", flood, 2_000, false).await;
    fill(&store, "keyed", flood, 2_000, true).await;
    fill(&store, "sat", flood, 0, true).await;
    println!("MEASURE {name}: filled");
    let lim = |limit: u32, running: &[(&str, u32)]| {
        Some(KeyLimit { limit, running: running.iter().map(|(k, n)| (k.to_string(), *n)).collect() })
    };
    time(&store, &format!("{name} unkeyed, 12k due"), 50, || req("plain", None)).await;
    time(&store, &format!("{name} keyed, no value full (limit 1000)"), 50, || req("keyed", lim(1000, &[]))).await;
    time(&store, &format!("{name} keyed, flood value A full (10k rows skipped)"), 50, || {
        req("keyed", lim(1000, &[("a", 1000)]))
    })
    .await;
    time(&store, &format!("{name} keyed, A room 1 (two rounds)"), 20, || req("keyed", lim(1000, &[("a", 999)]))).await;
    time(&store, &format!("{name} keyed, only A, full (nothing to take)"), 50, || req("sat", lim(5, &[("a", 5)])))
        .await;
}
