//! An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare address is
//! one host), and whether an address falls in it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: its first address and prefix length. The address has no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a
    /// socket bound to `[::]` reports for an IPv4 client) count as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & mask32(self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) & mask128(self.prefix) == u128::from(net),
            _ => false,
        }
    }

    /// Whether any of `networks` holds `ip`.
    pub fn any_contains(networks: &[Cidr], ip: IpAddr) -> bool {
        networks.iter().any(|n| n.contains(ip))
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `ADDRESS/PREFIX` or a bare address; the error says what would be valid.
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!(r#"expected an IP network like "10.0.0.0/8", "2001:db8::/32" or an address (got "{text}")"#)
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `"+8".parse::<u8>()` would succeed.
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix length must be 0 to {max} (got \"{text}\")"))?,
        };
        let masked = match network {
            IpAddr::V4(ip) => IpAddr::from((u32::from(ip) & mask32(prefix)).to_be_bytes()),
            IpAddr::V6(ip) => IpAddr::from((u128::from(ip) & mask128(prefix)).to_be_bytes()),
        };
        if masked != network {
            return Err(format!(
                "{network} has bits set past the /{prefix} prefix: the network is {masked}/{prefix} (got \"{text}\")"
            ));
        }
        // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network it carries:
        // `contains` compares a client by its canonical address, so as an IPv6 network it held
        // no client at all (a `deny` that denied nothing).
        match network {
            IpAddr::V6(ip) if prefix >= 96 => match ip.to_ipv4_mapped() {
                Some(ip) => Ok(Cidr { network: IpAddr::V4(ip), prefix: prefix - 96 }),
                None => Ok(Cidr { network, prefix }),
            },
            _ => Ok(Cidr { network, prefix }),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_hold_their_addresses_only() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.0.0.0")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("9.255.255.255")));
        let net = cidr("203.0.113.0/24");
        assert!(net.contains(ip("203.0.113.77")));
        assert!(!net.contains(ip("203.0.114.1")));
    }

    #[test]
    fn a_slash_32_or_a_bare_address_is_one_host() {
        for net in [cidr("127.0.0.1/32"), cidr("127.0.0.1")] {
            assert!(net.contains(ip("127.0.0.1")));
            assert!(!net.contains(ip("127.0.0.2")));
        }
        assert_eq!(cidr("127.0.0.1").to_string(), "127.0.0.1/32");
        assert!(cidr("::1").contains(ip("::1")));
        assert!(!cidr("::1/128").contains(ip("::2")));
    }

    #[test]
    fn slash_0_holds_every_address_of_its_family() {
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("1.2.3.4")));
    }

    #[test]
    fn ipv6_networks_and_mapped_ipv4_addresses() {
        let net = cidr("2001:db8::/32");
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db9::1")));
        assert!(cidr("fe80::/10").contains(ip("febf::1")));
        assert!(!cidr("fe80::/10").contains(ip("fec0::1")));
        // What a socket bound to [::] reports for an IPv4 client.
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn an_ipv4_mapped_network_is_the_ipv4_network_it_carries() {
        // Regression, found by the `cidr` fuzz target: `::ffff:10.0.0.0/104` parsed as an IPv6
        // network that held no client, mapped or not, since clients are compared canonically.
        let net = cidr("::ffff:10.0.0.0/104");
        assert_eq!(net, cidr("10.0.0.0/8"));
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert_eq!(cidr("::ffff:203.0.113.7").to_string(), "203.0.113.7/32");
        // Below /96 the network is wider than the mapped range: it stays IPv6.
        assert_eq!(cidr("::/64").to_string(), "::/64");
    }

    #[test]
    fn bad_networks_say_what_would_be_valid() {
        let err = |text: &str| text.parse::<Cidr>().unwrap_err();
        assert_eq!(
            err("10.0.0/8"),
            r#"expected an IP network like "10.0.0.0/8", "2001:db8::/32" or an address (got "10.0.0/8")"#
        );
        assert_eq!(err("10.0.0.0/33"), r#"the prefix length must be 0 to 32 (got "10.0.0.0/33")"#);
        assert_eq!(err("::/129"), r#"the prefix length must be 0 to 128 (got "::/129")"#);
        assert_eq!(err("10.0.0.0/+8"), r#"the prefix length must be 0 to 32 (got "10.0.0.0/+8")"#);
        assert_eq!(err("10.0.0.0/"), r#"the prefix length must be 0 to 32 (got "10.0.0.0/")"#);
        assert_eq!(
            err("10.1.0.0/8"),
            r#"10.1.0.0 has bits set past the /8 prefix: the network is 10.0.0.0/8 (got "10.1.0.0/8")"#
        );
    }
}
