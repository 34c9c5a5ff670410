//! Which address a request comes from, for every per-address limit (registrations,
//! failed logins, socket handshakes): the TCP peer, unless the peer is one of the
//! `TRUSTED_PROXIES`; then the client those proxies name in `X-Forwarded-For`.
//!
//! A client can put anything in the header it sends; a proxy appends the address it
//! received the request from. So the header is read from the right: trusted proxies'
//! own addresses are skipped, and the first address that is not a trusted proxy is
//! the client (what the last trusted proxy saw). Everything to its left was written
//! by the client or by proxies nobody vouches for, and is never read. If every entry
//! is a trusted address, the leftmost one read is the client; an entry that is not
//! an address ends the walk the same way (the peer when it is the rightmost).
//!
//! Computed once per request, from the peer the listener records
//! (`ConnectInfo<SocketAddr>`), into [`ClientIp`], which every limit reads.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request},
    http::HeaderMap,
};
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address a request counts against in per-address limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The proxies whose `X-Forwarded-For` entries are believed (`TRUSTED_PROXIES`).
/// Empty: nobody's, and the client is always the TCP peer.
#[derive(Debug, Clone)]
pub struct TrustedProxies(Arc<[IpNet]>);

/// A `TRUSTED_PROXIES` entry that is neither an address nor a CIDR range.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range (such as 10.1.2.3, 10.0.0.0/8 or fd00::/8)")]
pub struct InvalidProxy(String);

impl TrustedProxies {
    /// Comma-separated addresses and CIDR ranges, IPv4 or IPv6; blank: none.
    pub fn parse(list: &str) -> Result<Self, InvalidProxy> {
        let entries = list.split(',').map(str::trim).filter(|entry| !entry.is_empty());
        let nets = entries
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(canonical_net)
                    .map_err(|_| InvalidProxy(entry.to_owned()))
            })
            .collect::<Result<Arc<[IpNet]>, _>>()?;
        Ok(Self(nets))
    }

    fn trust(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers` (see the
    /// module's header for the rule).
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trust(client) {
            return client;
        }
        // Several header lines are one list, in order (RFC 9110, section 5.3).
        let lines = headers.get_all(X_FORWARDED_FOR).iter().rev();
        let entries = lines.flat_map(|line| -> Vec<Option<IpAddr>> {
            match line.to_str() {
                // Empty list elements are allowed and mean nothing (RFC 9110, section 5.6.1).
                Ok(line) => line.rsplit(',').map(str::trim).filter(|e| !e.is_empty()).map(|e| e.parse().ok()).collect(),
                Err(_) => vec![None],
            }
        });
        for entry in entries {
            let Some(hop) = entry else { break };
            client = hop.to_canonical();
            if !self.trust(client) {
                break;
            }
        }
        client
    }

    /// Tags a request with its [`ClientIp`]; a request the listener did not record a
    /// peer for (none reaches the server that way) gets none.
    pub fn tag(&self, mut request: Request) -> Request {
        if let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
            let client = self.client_of(peer.ip(), request.headers());
            request.extensions_mut().insert(ClientIp(client));
        }
        request
    }
}

/// An IPv4 range written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) as the IPv4 range
/// it is: addresses are compared in their canonical form, so `::ffff:10.0.0.1` and
/// `10.0.0.1` are one client.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
            (Some(v4), Some(prefix)) => ipnet::Ipv4Net::new(v4, prefix).map_or(net, IpNet::V4),
            _ => net,
        },
        IpNet::V4(_) => net,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn forwarded(lines: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_bytes(line).expect("a header value"));
        }
        headers
    }

    fn client(trusted: &str, peer: &str, lines: &[&[u8]]) -> IpAddr {
        TrustedProxies::parse(trusted).expect("trusted proxies").client_of(ip(peer), &forwarded(lines))
    }

    #[test]
    fn parses_addresses_and_ranges_of_both_families() {
        let trusted = TrustedProxies::parse(" 127.0.0.1, 10.0.0.0/8 ,fd00::/8,::1,").expect("valid");
        for address in ["127.0.0.1", "10.255.0.3", "fd12::7", "::1"] {
            assert!(trusted.trust(ip(address)), "{address}");
        }
        for address in ["127.0.0.2", "11.0.0.1", "fe80::1", "::2"] {
            assert!(!trusted.trust(ip(address)), "{address}");
        }
        assert!(TrustedProxies::parse("").expect("blank").0.is_empty());
    }

    #[test]
    fn a_malformed_entry_is_named() {
        let error = TrustedProxies::parse("10.0.0.0/8, 10.0.0.0/33").expect_err("invalid");
        assert_eq!(error, InvalidProxy("10.0.0.0/33".into()));
        assert!(error.to_string().starts_with("`10.0.0.0/33` is not an IP address or CIDR range"), "{error}");
        for bad in ["nginx", "1.2.3", "10.0.0.0/", "::1/129", "1.2.3.4:80"] {
            assert_eq!(TrustedProxies::parse(bad).expect_err(bad), InvalidProxy(bad.into()));
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(client("", "198.51.100.7", &[b"203.0.113.1"]), ip("198.51.100.7"));
        assert_eq!(client("10.0.0.0/8", "198.51.100.7", &[b"203.0.113.1"]), ip("198.51.100.7"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_address_it_appended_is_the_client() {
        assert_eq!(client("10.0.0.1", "10.0.0.1", &[b"203.0.113.1"]), ip("203.0.113.1"));
        // Without the header (or with none of it readable) it is the proxy itself.
        assert_eq!(client("10.0.0.1", "10.0.0.1", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn entries_a_client_prepends_are_never_read() {
        // The client sent `X-Forwarded-For: 192.0.2.9, 10.0.0.5`; the proxy appended
        // the address it saw. Neither spoofed entry counts, trusted-looking or not.
        let spoofed = client("10.0.0.0/8", "10.0.0.1", &[b"192.0.2.9, 10.0.0.5, 203.0.113.1"]);
        assert_eq!(spoofed, ip("203.0.113.1"));
        // Garbage to the left of the client's entry changes nothing either.
        assert_eq!(client("10.0.0.1", "10.0.0.1", &[b"not-an-ip, 203.0.113.1"]), ip("203.0.113.1"));
        assert_eq!(client("10.0.0.1", "10.0.0.1", &[b"\xff\xfe", b"203.0.113.1"]), ip("203.0.113.1"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_skipped_from_the_right() {
        // client -> edge (10.0.0.9) -> nginx (10.0.0.1) -> server; two header lines are one list.
        let chain = client("10.0.0.0/8", "10.0.0.1", &[b"203.0.113.1", b"10.0.0.9"]);
        assert_eq!(chain, ip("203.0.113.1"));
        // An untrusted hop in between is where belief stops.
        let hop = client("10.0.0.0/8", "10.0.0.1", &[b"203.0.113.1, 198.51.100.2, 10.0.0.9"]);
        assert_eq!(hop, ip("198.51.100.2"));
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
        assert_eq!(client("10.0.0.0/8", "10.0.0.1", &[b"10.0.0.7, 10.0.0.9"]), ip("10.0.0.7"));
        // A client inside the trusted range that prepends garbage: the last address read.
        assert_eq!(client("10.0.0.0/8", "10.0.0.1", &[b"junk, 10.0.0.7"]), ip("10.0.0.7"));
    }

    #[test]
    fn an_unreadable_rightmost_entry_leaves_the_peer() {
        for header in [&b"203.0.113.1:4711"[..], b"unknown", b"", b" , ", b"\xff"] {
            assert_eq!(client("10.0.0.1", "10.0.0.1", &[header]), ip("10.0.0.1"), "{header:?}");
        }
        // Empty list elements are no entries at all.
        assert_eq!(client("10.0.0.1", "10.0.0.1", &[b"203.0.113.1, ,"]), ip("203.0.113.1"));
    }

    #[test]
    fn ipv6_and_ipv4_mapped_addresses() {
        assert_eq!(client("fd00::/8", "fd00::1", &[b"2001:db8::1, fd00::2"]), ip("2001:db8::1"));
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d: trusted as IPv4,
        // and an IPv4 client is one client however it is written.
        assert_eq!(client("127.0.0.1", "::ffff:127.0.0.1", &[b"::ffff:203.0.113.1"]), ip("203.0.113.1"));
        assert_eq!(client("::ffff:10.0.0.0/104", "10.1.2.3", &[b"203.0.113.1"]), ip("203.0.113.1"));
        assert_eq!(client("", "::ffff:198.51.100.7", &[]), ip("198.51.100.7"));
    }
}
