//! `[region]`: name, role, peers, the key sent to peers, automatic failover.

use std::collections::BTreeMap;

use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::{RawKvNamespace, RawRegion};
use crate::config::{KvNamespaceConfig, RegionConfig, StorageConfig};
use crate::region::Role;

impl Checker {
    pub(super) fn region(
        &mut self,
        raw: &RawRegion,
        storage: Option<&StorageConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<RegionConfig> {
        let at = |field: &str| key(&["region", field]);
        let name = match raw.name.as_deref() {
            Some(name) if is_region_name(name) => Some(name.to_owned()),
            Some(name) => {
                let message = format!(
                    r#"expected lowercase letters, digits and '-', starting with a letter, like "eu-west" (got "{name}")"#
                );
                self.report(at("name"), Anchor::Value, message);
                None
            }
            None => {
                self.report(key(&["region"]), Anchor::Value, r#"needs a `name`, like name = "eu""#.to_owned());
                None
            }
        };
        let role = match raw.role.as_deref() {
            None | Some("primary") => Some(Role::Primary),
            Some("standby") => Some(Role::Standby),
            Some("active") => Some(Role::Active),
            Some(other) => {
                let message = format!(r#"expected "primary", "standby" or "active" (got "{other}")"#);
                self.report(at("role"), Anchor::Value, message);
                None
            }
        };
        if let (Some(role @ (Role::Primary | Role::Standby)), Some(storage)) = (role, storage) {
            if !storage.url.starts_with("postgres") {
                let message = format!(
                    "a {} region needs PostgreSQL (the standby's database is a streaming replica of the primary's); \
                     set storage.url to a postgres:// URL, or use role = \"active\"",
                    role.as_str()
                );
                self.report(at("role"), Anchor::Value, message);
            }
        }
        let mut peers = BTreeMap::new();
        for (peer, url) in raw.peers.iter().flatten() {
            let here = key(&["region", "peers", peer]);
            if !is_region_name(peer) {
                let message =
                    format!(r#"a peer is named like a region: lowercase letters, digits and '-' (got "{peer}")"#);
                self.report(here, Anchor::Key, message);
                continue;
            }
            if name.as_deref() == Some(peer.as_str()) {
                self.report(
                    here,
                    Anchor::Key,
                    format!("`{peer}` is this region's own name; peers are the other regions"),
                );
                continue;
            }
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                    peers.insert(peer.clone(), url.trim_end_matches('/').to_owned());
                }
                _ => {
                    let message = format!(
                        r#"expected the base URL of the peer's Keel API, like "https://keel-us.internal:7733" (got "{url}")"#
                    );
                    self.report(here, Anchor::Value, message);
                }
            }
        }
        let key_value = match raw.key.as_deref().map(|k| (k, k.strip_prefix("env:"))) {
            None => None,
            Some((_, Some(var))) => match env(var) {
                Some(value) => Some(value),
                None => {
                    let message = format!("the environment variable {var} is not set (named by \"env:{var}\")");
                    self.report(at("key"), Anchor::Value, message);
                    None
                }
            },
            Some((literal, None)) => Some(literal.to_owned()),
        };
        let failover_after = match &raw.failover_after {
            None => None,
            Some(_) => {
                let after = self.positive_duration(at("failover_after"), &raw.failover_after, Default::default());
                if role.is_some_and(|r| r != Role::Standby) || peers.is_empty() {
                    let message = "only a standby with peers promotes itself: failover_after needs role = \"standby\" \
                                   and the primary among `peers`"
                        .to_owned();
                    self.report(at("failover_after"), Anchor::Value, message);
                }
                after
            }
        };
        Some(RegionConfig { name: name?, role: role?, peers, key: key_value, failover_after })
    }
}

impl Checker {
    /// `[kv.NS] home`: this region or one of its peers.
    pub(super) fn kv_namespaces(
        &mut self,
        raw: &BTreeMap<String, RawKvNamespace>,
        region: Option<&RawRegion>,
    ) -> BTreeMap<String, KvNamespaceConfig> {
        let mut out = BTreeMap::new();
        for (ns, kv) in raw {
            if let Some(home) = &kv.home {
                let here = key(&["kv", ns, "home"]);
                let Some(region) = region else {
                    let message = format!(
                        r#"a home region needs [region] (this region's name and its peers); got home = "{home}""#
                    );
                    self.report(here, Anchor::Value, message);
                    continue;
                };
                let mut known: Vec<&str> = region.name.iter().map(String::as_str).collect();
                known.extend(region.peers.iter().flatten().map(|(peer, _)| peer.as_str()));
                if !known.contains(&home.as_str()) {
                    let message = format!(
                        r#"unknown region "{home}": expected this region or one of its peers ({})"#,
                        known.join(", ")
                    );
                    self.report(here, Anchor::Value, message);
                    continue;
                }
            }
            out.insert(ns.clone(), KvNamespaceConfig { home: kv.home.clone() });
        }
        out
    }
}

/// `eu`, `us-east-1`: what a region may be called (it ends up in headers and metric labels).
fn is_region_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
