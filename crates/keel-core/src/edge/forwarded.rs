//! Who the client is behind trusted proxies: the right-most address of `X-Forwarded-For` that is
//! not itself a trusted proxy. Each proxy appends the address it received the request from, so
//! only the entries appended by trusted proxies can be believed; anything to their left may have
//! been written by the client.

use std::net::IpAddr;

use super::Cidr;

/// The client address of a request from `peer` (the connection's far end) carrying the
/// `X-Forwarded-For` values `forwarded_for` (each header line, in order). A peer that is not in
/// `trusted` is the client, whatever its header says. From a trusted peer the header is read
/// right to left, past trusted proxies, to the first address that is not one; an entry that is
/// not an address stops the walk at the last address believed (the proxy that wrote it), and a
/// chain of trusted proxies only gives the left-most of them.
pub fn client_address<'h>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'h str>,
    trusted: &[Cidr],
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !Cidr::any_contains(trusted, client) {
        return client;
    }
    for entry in forwarded_for.rev().flat_map(|line| line.rsplit(',')) {
        let Some(address) = parse_entry(entry) else {
            return client;
        };
        client = address;
        if !Cidr::any_contains(trusted, client) {
            return client;
        }
    }
    client
}

/// One entry: an address, optionally with a port (`203.0.113.7:4711`, `[2001:db8::1]:4711`),
/// as some proxies write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(peer: &str, header: &[&str], trusted: &[&str]) -> IpAddr {
        let trusted: Vec<Cidr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_address(ip(peer), header.iter().copied(), &trusted)
    }

    #[test]
    fn an_untrusted_peers_header_is_ignored() {
        assert_eq!(client("198.51.100.9", &["1.2.3.4"], &["10.0.0.5/32"]), ip("198.51.100.9"));
        assert_eq!(client("198.51.100.9", &["1.2.3.4"], &[]), ip("198.51.100.9"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        assert_eq!(client("10.0.0.5", &["203.0.113.7"], &["10.0.0.5/32"]), ip("203.0.113.7"));
        // No header: the proxy itself is all that is known.
        assert_eq!(client("10.0.0.5", &[], &["10.0.0.5/32"]), ip("10.0.0.5"));
    }

    #[test]
    fn what_the_client_wrote_left_of_the_proxy_is_not_believed() {
        // The client sent "X-Forwarded-For: 1.1.1.1"; the proxy appended the real address.
        assert_eq!(client("10.0.0.5", &["1.1.1.1, 203.0.113.7"], &["10.0.0.5/32"]), ip("203.0.113.7"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_through() {
        let trusted = ["10.0.0.0/8"];
        // client → 10.1.1.1 → 10.2.2.2 → keel (peer 10.0.0.5)
        assert_eq!(client("10.0.0.5", &["1.1.1.1, 203.0.113.7, 10.1.1.1, 10.2.2.2"], &trusted), ip("203.0.113.7"));
        // The same chain written as several header lines.
        assert_eq!(client("10.0.0.5", &["1.1.1.1, 203.0.113.7", "10.1.1.1", "10.2.2.2"], &trusted), ip("203.0.113.7"));
        // Only trusted proxies in the header: the left-most of them.
        assert_eq!(client("10.0.0.5", &["10.1.1.1, 10.2.2.2"], &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn a_garbled_entry_stops_at_the_last_address_believed() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(client("10.0.0.5", &["203.0.113.7, unknown, 10.1.1.1"], &trusted), ip("10.1.1.1"));
        assert_eq!(client("10.0.0.5", &["nonsense"], &trusted), ip("10.0.0.5"));
    }

    #[test]
    fn ports_ipv6_and_mapped_addresses_are_understood() {
        let trusted = ["10.0.0.5/32", "2001:db8::5/128"];
        assert_eq!(client("10.0.0.5", &["203.0.113.7:4711"], &trusted), ip("203.0.113.7"));
        assert_eq!(client("2001:db8::5", &["[2001:db8::9]:4711"], &trusted), ip("2001:db8::9"));
        assert_eq!(client("::ffff:10.0.0.5", &["2001:db8::9"], &trusted), ip("2001:db8::9"));
        assert_eq!(client("::ffff:198.51.100.9", &[], &trusted), ip("198.51.100.9"));
    }
}
