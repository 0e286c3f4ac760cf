//! Conformance of the faults table ([`crate::store::ChaosStore`]).

use super::*;
use crate::chaos::{Fault, Kind, Target};

fn fault(id: &str, target: Target, kind: Kind, expires_at: Millis) -> Fault {
    Fault { id: id.into(), target, kind, rate: 0.25, created_at: T0, expires_at }
}

pub async fn faults_are_kept_until_they_expire_or_are_removed(store: &dyn Store) {
    let latency =
        fault("01F1", Target::Function("charge".into()), Kind::Latency { min_ms: 5, max_ms: 900 }, T0 + 60_000);
    let error = fault("01F2", Target::Dependency("payments".into()), Kind::Error { status: 503 }, T0 + 10_000);
    let store_fault = fault("01F3", Target::Store, Kind::Latency { min_ms: 1, max_ms: 1 }, T0 + 60_000);
    for f in [&latency, &error, &store_fault] {
        store.add_fault(f.clone()).await.unwrap();
    }
    assert_eq!(store.faults(T0 + 1).await.unwrap(), [latency.clone(), error.clone(), store_fault.clone()]);
    assert_eq!(store.faults(T0 + 10_000).await.unwrap(), [latency.clone(), store_fault.clone()], "expired at its end");
    assert!(store.remove_fault("01F3").await.unwrap());
    assert!(!store.remove_fault("01F3").await.unwrap(), "removed once");
    assert_eq!(store.faults(T0 + 1).await.unwrap(), [latency.clone(), error]);
    assert_eq!(store.faults(T0 + 59_999).await.unwrap(), [latency]);
    assert!(store.faults(T0 + 60_000).await.unwrap().is_empty());
}
