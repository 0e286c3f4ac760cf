//! Completed idempotency key records kept in memory, so the common retry — the same request
//! again — is answered without touching the store. A completed record never changes before it
//! expires (a new claim is only possible after `expires_at`), so an entry is valid exactly until
//! then, on every node; entries are dropped at expiry and, past the capacity, oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use keel_core::clock::Millis;
use keel_core::idempotency::{KeyPhase, KeyRecord, KeyRef};

/// Most records kept.
const CAPACITY: usize = 10_000;

/// The cache. A std Mutex: nothing awaits while it is held.
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<KeyRef, KeyRecord>,
    /// Insertion order, for eviction.
    order: VecDeque<KeyRef>,
}

impl ReplayCache {
    /// The completed record of `key`, if cached and not expired at `now`.
    pub(crate) fn get(&self, key: &KeyRef, now: Millis) -> Option<KeyRecord> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.records.get(key).filter(|r| r.expires_at > now).cloned()
    }

    /// Keeps `record` if it is completed.
    pub(crate) fn put(&self, key: &KeyRef, record: &KeyRecord) {
        if !matches!(record.phase, KeyPhase::Completed(_)) {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.records.insert(key.clone(), record.clone()).is_none() {
            inner.order.push_back(key.clone());
        }
        while inner.order.len() > CAPACITY {
            if let Some(oldest) = inner.order.pop_front() {
                inner.records.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use keel_core::idempotency::StoredReply;

    use super::*;

    fn key(k: &str) -> KeyRef {
        KeyRef { scope: "anonymous".into(), route: "POST /x".into(), key: k.into() }
    }

    fn completed(expires_at: Millis) -> KeyRecord {
        let reply = StoredReply { status: 200, headers: vec![], body: Bytes::from_static(b"{}") };
        KeyRecord { fingerprint: "fp".into(), phase: KeyPhase::Completed(reply), invocation_id: None, expires_at }
    }

    #[test]
    fn keeps_completed_records_until_they_expire() {
        let cache = ReplayCache::default();
        cache.put(&key("a"), &completed(100));
        assert!(cache.get(&key("a"), 99).is_some());
        assert!(cache.get(&key("a"), 100).is_none(), "expired");
        let in_flight =
            KeyRecord { phase: KeyPhase::InFlight { holder: "h".into(), lease_until: 5 }, ..completed(100) };
        cache.put(&key("b"), &in_flight);
        assert!(cache.get(&key("b"), 0).is_none(), "only completed records are kept");
    }

    #[test]
    fn evicts_the_oldest_past_capacity() {
        let cache = ReplayCache::default();
        for i in 0..=CAPACITY {
            cache.put(&key(&i.to_string()), &completed(1_000));
        }
        assert!(cache.get(&key("0"), 0).is_none());
        assert!(cache.get(&key(&CAPACITY.to_string()), 0).is_some());
    }
}
