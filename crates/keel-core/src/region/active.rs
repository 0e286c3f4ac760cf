//! Active-active regions: which peers an event is replicated to, and whether a request is served
//! here or forwarded to another region (a KV namespace's home, a client's `keel-region`).

use crate::config::{KvNamespaceConfig, RegionConfig, SubscriptionConfig, SubscriptionScope};
use std::collections::BTreeMap;

use super::Role;

/// The peers an event of `topic` stored in this region is replicated to: every peer of an active
/// region, when at least one subscription to the topic is global; none otherwise (and none for
/// an event that itself came from a peer: the caller does not ask). Keel's own events
/// (`keel.system`) tell of this region and stay in it.
pub fn replicates_to(region: Option<&RegionConfig>, subscriptions: &[SubscriptionConfig], topic: &str) -> Vec<String> {
    let Some(region) = region.filter(|r| r.role == Role::Active) else { return Vec::new() };
    if topic == crate::system_events::SYSTEM_TOPIC {
        return Vec::new();
    }
    let global = subscriptions.iter().any(|s| s.topic == topic && s.scope == SubscriptionScope::Global);
    if !global {
        return Vec::new();
    }
    region.peers.keys().cloned().collect()
}

/// Where a request is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Here,
    /// Forwarded to this peer region.
    Peer(String),
}

/// Where a request is served: the region a client names in `keel-region` when it is a peer,
/// else the home of the KV namespace it touches (`kv_namespace`) when that is a peer, else here.
/// A request a peer already forwarded to its namespace's home (`home_forwarded`) is served here,
/// so that two regions that disagree about a home cannot bounce it between them. (A request
/// forwarded for its `keel-region` names the region it reaches, so it is not forwarded again.)
pub fn route(
    region: Option<&RegionConfig>,
    kv: &BTreeMap<String, KvNamespaceConfig>,
    named: Option<&str>,
    kv_namespace: Option<&str>,
    home_forwarded: bool,
) -> Route {
    let Some(region) = region else { return Route::Here };
    let peer = |name: &str| region.peers.contains_key(name).then(|| Route::Peer(name.to_owned()));
    if let Some(to) = named.and_then(peer) {
        return to;
    }
    if home_forwarded {
        return Route::Here;
    }
    kv_namespace.and_then(|ns| kv.get(ns)).and_then(|ns| ns.home.as_deref()).and_then(peer).unwrap_or(Route::Here)
}

/// How long a replicator waits after `failures` failed sends in a row (1 or more): doubling from
/// 100 ms up to 5 s, less a random part (`sample` in [0, 1)) of up to half, so peers coming back
/// are not hit by every region at once.
pub fn replication_backoff(failures: u32, sample: f64) -> std::time::Duration {
    const FIRST_MS: u64 = 100;
    const CAP_MS: u64 = 5_000;
    let full = FIRST_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(16)).min(CAP_MS);
    let jitter = (full as f64 / 2.0 * sample.clamp(0.0, 1.0)) as u64;
    std::time::Duration::from_millis(full - jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OrderedBy;

    fn region(role: Role) -> RegionConfig {
        let peers = [("us", "http://us"), ("ap", "http://ap")].map(|(n, u)| (n.to_owned(), u.to_owned()));
        RegionConfig { name: "eu".into(), role, peers: peers.into(), key: None, failover_after: None }
    }

    fn subscription(topic: &str, scope: SubscriptionScope) -> SubscriptionConfig {
        SubscriptionConfig {
            name: format!("{topic}-sub"),
            topic: topic.into(),
            function: "f".into(),
            filter: Default::default(),
            retry: Default::default(),
            ordered_by: None::<OrderedBy>,
            scope,
        }
    }

    #[test]
    fn an_event_is_replicated_to_every_peer_when_its_topic_has_a_global_subscription() {
        let subs = [subscription("orders", SubscriptionScope::Global), subscription("audit", SubscriptionScope::Local)];
        let active = region(Role::Active);
        assert_eq!(replicates_to(Some(&active), &subs, "orders"), ["ap", "us"]);
        assert!(replicates_to(Some(&active), &subs, "audit").is_empty(), "local subscriptions only");
        assert!(replicates_to(Some(&active), &subs, "nobody").is_empty(), "no subscription at all");
        assert!(replicates_to(Some(&region(Role::Primary)), &subs, "orders").is_empty(), "active-passive");
        assert!(replicates_to(None, &subs, "orders").is_empty(), "no [region]");
    }

    #[test]
    fn a_request_goes_to_the_region_it_names_or_to_its_namespace_home() {
        let eu = region(Role::Active);
        let kv: BTreeMap<_, _> = [("balances", "us"), ("carts", "eu")]
            .map(|(ns, home)| (ns.to_owned(), KvNamespaceConfig { home: Some(home.into()) }))
            .into();
        let us = Route::Peer("us".into());
        assert_eq!(route(Some(&eu), &kv, None, None, false), Route::Here);
        assert_eq!(route(Some(&eu), &kv, Some("us"), None, false), us);
        assert_eq!(route(Some(&eu), &kv, Some("eu"), None, false), Route::Here, "this region");
        assert_eq!(route(Some(&eu), &kv, Some("mars"), None, false), Route::Here, "not a peer");
        assert_eq!(route(Some(&eu), &kv, None, Some("balances"), false), us);
        assert_eq!(route(Some(&eu), &kv, None, Some("carts"), false), Route::Here);
        assert_eq!(route(Some(&eu), &kv, None, Some("sessions"), false), Route::Here, "no home");
        assert_eq!(route(Some(&eu), &kv, Some("ap"), Some("balances"), false), Route::Peer("ap".into()));
        assert_eq!(route(Some(&eu), &kv, None, Some("balances"), true), Route::Here, "forwarded home once");
        assert_eq!(route(None, &kv, Some("us"), Some("balances"), false), Route::Here);
    }

    #[test]
    fn a_failing_peer_is_retried_ever_later_up_to_five_seconds_with_jitter() {
        let ms = |failures, sample| replication_backoff(failures, sample).as_millis();
        assert_eq!(
            [ms(1, 0.0), ms(2, 0.0), ms(3, 0.0), ms(6, 0.0), ms(7, 0.0), ms(60, 0.0)],
            [100, 200, 400, 3200, 5000, 5000]
        );
        assert_eq!(ms(1, 0.999_999), 51, "at most half is taken off");
        assert_eq!(ms(60, 0.5), 3750);
    }
}
