//! `[server.firewall]` and `[server.throttle]`: every network, rule and limit checked, each
//! bad value reported where it was written.

use super::{key, Checker};
use crate::config::locate::Anchor;
use crate::config::raw::{RawFirewall, RawRequestRule, RawThrottle};
use crate::edge::{Cidr, FirewallConfig, RequestRule, RuleAction, ThrottleConfig};

const RULE_EXAMPLE: &str = r#"{ method = "DELETE", path = "/v1/dlq/*", action = "deny" }"#;

impl Checker {
    pub(super) fn firewall(&mut self, raw: &RawFirewall) -> Option<FirewallConfig> {
        let allow = self.networks("allow", raw.allow.as_deref());
        let deny = self.networks("deny", raw.deny.as_deref());
        let trusted_proxies = self.networks("trusted_proxies", raw.trusted_proxies.as_deref());
        let mut rules = Some(Vec::new());
        for (i, rule) in raw.rules.iter().flatten().enumerate() {
            let checked = self.request_rule(i, rule);
            rules = rules.zip(checked).map(|(mut rules, rule)| {
                rules.push(rule);
                rules
            });
        }
        Some(FirewallConfig { allow: allow?, deny: deny?, trusted_proxies: trusted_proxies?, rules: rules? })
    }

    /// One list of networks; `None` when any entry is bad (each one reported).
    fn networks(&mut self, list: &str, raw: Option<&[String]>) -> Option<Vec<Cidr>> {
        let mut networks = Some(Vec::new());
        for (i, text) in raw.unwrap_or_default().iter().enumerate() {
            match text.parse::<Cidr>() {
                Ok(network) => {
                    if let Some(networks) = networks.as_mut() {
                        networks.push(network);
                    }
                }
                Err(message) => {
                    self.report(key(&["server", "firewall", list, &format!("[{i}]")]), Anchor::Value, message);
                    networks = None;
                }
            }
        }
        networks
    }

    fn request_rule(&mut self, index: usize, raw: &RawRequestRule) -> Option<RequestRule> {
        let at = |field: &str| key(&["server", "firewall", "rules", &format!("[{index}]"), field]);
        let mut ok = true;
        let method = match raw.method.as_deref() {
            None => None,
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            Some(m) => {
                self.report(
                    at("method"),
                    Anchor::Value,
                    format!(r#"expected an HTTP method like "DELETE" (got "{m}")"#),
                );
                ok = false;
                None
            }
        };
        let path = match raw.path.as_deref() {
            Some(p) if p.starts_with('/') && !p.strip_suffix('*').unwrap_or(p).contains('*') => Some(p.to_owned()),
            Some(p) => {
                let message = format!(
                    r#"expected a path starting with "/", with at most a trailing `*` for a prefix, like "/v1/dlq/*" (got "{p}")"#
                );
                self.report(at("path"), Anchor::Value, message);
                None
            }
            None => {
                let path = key(&["server", "firewall", "rules", &format!("[{index}]")]);
                self.report(path, Anchor::Value, format!("missing required key `path`, like {RULE_EXAMPLE}"));
                None
            }
        };
        let action = match raw.action.as_deref() {
            Some("deny") => Some(RuleAction::Deny),
            Some("allow") => Some(RuleAction::Allow),
            Some(other) => {
                self.report(at("action"), Anchor::Value, format!(r#"expected "deny" or "allow" (got "{other}")"#));
                None
            }
            None => {
                let path = key(&["server", "firewall", "rules", &format!("[{index}]")]);
                self.report(path, Anchor::Value, format!("missing required key `action`, like {RULE_EXAMPLE}"));
                None
            }
        };
        if !ok {
            return None;
        }
        Some(RequestRule { method, path: path?, action: action? })
    }

    pub(super) fn throttle(&mut self, raw: &RawThrottle) -> Option<ThrottleConfig> {
        let mut ok = true;
        let mut limit = |check: &mut Self, name: &str, raw: Option<&crate::config::raw::RawRateLimit>| match raw {
            None => None,
            Some(raw) => {
                let limit = check.rate_limit(key(&["server", "throttle", name]), raw);
                ok &= limit.is_some();
                limit
            }
        };
        let per_key = limit(self, "per_key", raw.per_key.as_ref());
        let per_address = limit(self, "per_address", raw.per_address.as_ref());
        ok.then_some(ThrottleConfig { per_key, per_address })
    }
}
