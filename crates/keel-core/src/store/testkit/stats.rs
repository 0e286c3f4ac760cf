//! Conformance of [`NodeStore::queue_stats`]: the backlog and DLQ numbers `/metrics` shows.

use super::{delivery_of, event, fail_once, lease_one, new_inv, T0};
use crate::invocation::Transition;
use crate::store::{QueueStats, Store};

pub async fn queue_stats_count_backlog_and_dead(store: &dyn Store) {
    assert!(store.queue_stats(T0).await.unwrap().is_empty(), "an empty store has no backlog");
    store.enqueue(new_inv("01A", "f", T0)).await.unwrap();
    store.enqueue(new_inv("01B", "f", T0 + 5)).await.unwrap();
    // Not due yet: waiting, but not the oldest due.
    store.enqueue(new_inv("01C", "f", T0 + 60_000)).await.unwrap();
    store.enqueue(new_inv("01D", "g", T0)).await.unwrap();
    let dying = lease_one(store, "g", T0).await;
    fail_once(store, &dying, T0 + 1, Transition::Die { error: "HTTP 400".into(), response: None }).await;
    // Leased (running) work is in flight, not waiting.
    let running = lease_one(store, "f", T0 + 10).await;
    assert_eq!(running.id, "01A");
    store.publish(vec![event("01E", "ce-1", vec![delivery_of("01E", "audit", "01F", "g", None)])]).await.unwrap();

    let mut stats = store.queue_stats(T0 + 10).await.unwrap();
    stats.sort_by(|a, b| (&a.function, &a.subscription).cmp(&(&b.function, &b.subscription)));
    let row = |function: &str, subscription: Option<&str>, waiting, oldest_due_at, dead| QueueStats {
        function: function.into(),
        subscription: subscription.map(Into::into),
        waiting,
        oldest_due_at,
        dead,
    };
    assert_eq!(
        stats,
        vec![row("f", None, 2, Some(T0 + 5), 0), row("g", None, 0, None, 1), row("g", Some("audit"), 1, Some(T0), 0)]
    );
}
