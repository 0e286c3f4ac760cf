//! The edge of the API, as decisions over plain data: which client addresses may call it and
//! which requests are refused outright (`[server.firewall]`: [`FirewallConfig`]), who the
//! client is behind trusted proxies ([`client_address`]), and the throttles per API key and per
//! client address (`[server.throttle]`: one GCRA limiter per key in [`Buckets`]). The server's
//! edge layer applies them.

mod buckets;
mod cidr;
mod forwarded;

use std::net::IpAddr;

pub use buckets::Buckets;
pub use cidr::Cidr;
pub use forwarded::client_address;

use crate::flow::RateLimitConfig;

/// `[server.firewall]`. Empty (the default) lets every address and request through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallConfig {
    /// When not empty, only client addresses in these networks are served.
    pub allow: Vec<Cidr>,
    /// Client addresses in these networks are refused (checked before `allow`).
    pub deny: Vec<Cidr>,
    /// Peers whose `X-Forwarded-For` is believed ([`client_address`]).
    pub trusted_proxies: Vec<Cidr>,
    /// Method and path rules; the first that matches decides.
    pub rules: Vec<RequestRule>,
}

/// `{ method = "DELETE", path = "/v1/dlq/*", action = "deny" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRule {
    /// Upper case; any method when `None`.
    pub method: Option<String>,
    /// An exact path, or a prefix when it ends in `*`.
    pub path: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Served, and no later rule is asked.
    Allow,
    Deny,
}

/// Why a client address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRefusal {
    /// In `deny`.
    Denied,
    /// `allow` is set and the address is in none of its networks.
    NotAllowed,
}

impl FirewallConfig {
    /// Whether `client` may call the API at all: `deny` first, then `allow` when it is set.
    pub fn check_address(&self, client: IpAddr) -> Result<(), AddressRefusal> {
        if Cidr::any_contains(&self.deny, client) {
            return Err(AddressRefusal::Denied);
        }
        if !self.allow.is_empty() && !Cidr::any_contains(&self.allow, client) {
            return Err(AddressRefusal::NotAllowed);
        }
        Ok(())
    }

    /// The index of the rule that denies `method` on `path`, if the first rule to match is a
    /// `deny` one.
    pub fn denying_rule(&self, method: &str, path: &str) -> Option<usize> {
        let (index, rule) = self.rules.iter().enumerate().find(|(_, rule)| rule.matches(method, path))?;
        (rule.action == RuleAction::Deny).then_some(index)
    }
}

impl RequestRule {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let method_matches = self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method));
        let path_matches = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        };
        method_matches && path_matches
    }
}

/// `[server.throttle]`: requests a second per API key and per client address; off when `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThrottleConfig {
    pub per_key: Option<RateLimitConfig>,
    pub per_address: Option<RateLimitConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn deny_is_checked_before_allow() {
        let firewall = FirewallConfig {
            allow: nets(&["10.0.0.0/8", "127.0.0.1/32"]),
            deny: nets(&["10.9.0.0/16"]),
            ..FirewallConfig::default()
        };
        assert_eq!(firewall.check_address(ip("10.1.2.3")), Ok(()));
        assert_eq!(firewall.check_address(ip("127.0.0.1")), Ok(()));
        assert_eq!(firewall.check_address(ip("10.9.0.1")), Err(AddressRefusal::Denied));
        assert_eq!(firewall.check_address(ip("192.0.2.1")), Err(AddressRefusal::NotAllowed));
    }

    #[test]
    fn without_allow_every_address_not_denied_is_served() {
        let firewall = FirewallConfig { deny: nets(&["203.0.113.0/24"]), ..FirewallConfig::default() };
        assert_eq!(firewall.check_address(ip("198.51.100.1")), Ok(()));
        assert_eq!(firewall.check_address(ip("2001:db8::1")), Ok(()));
        assert_eq!(firewall.check_address(ip("203.0.113.9")), Err(AddressRefusal::Denied));
        assert_eq!(FirewallConfig::default().check_address(ip("203.0.113.9")), Ok(()));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rule = |method: Option<&str>, path: &str, action| RequestRule {
            method: method.map(str::to_owned),
            path: path.to_owned(),
            action,
        };
        let firewall = FirewallConfig {
            rules: vec![
                rule(Some("DELETE"), "/v1/dlq/keep", RuleAction::Allow),
                rule(Some("DELETE"), "/v1/dlq/*", RuleAction::Deny),
                rule(None, "/v1/keys", RuleAction::Deny),
            ],
            ..FirewallConfig::default()
        };
        assert_eq!(firewall.denying_rule("DELETE", "/v1/dlq/inv_1"), Some(1));
        assert_eq!(firewall.denying_rule("delete", "/v1/dlq/inv_1"), Some(1));
        assert_eq!(firewall.denying_rule("DELETE", "/v1/dlq/keep"), None, "allowed by the rule before");
        assert_eq!(firewall.denying_rule("GET", "/v1/dlq/inv_1"), None, "another method");
        assert_eq!(firewall.denying_rule("GET", "/v1/keys"), Some(2));
        assert_eq!(firewall.denying_rule("POST", "/v1/keys"), Some(2), "no method: any");
        assert_eq!(firewall.denying_rule("GET", "/v1/keys/key_1"), None, "no `*`: the exact path only");
        assert_eq!(firewall.denying_rule("GET", "/v1/dlq"), None);
    }
}
