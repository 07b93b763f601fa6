//! CIDR blocks and the client address a request is judged by
//! (`trusted_proxies`, `allow`/`deny`).
//!
//! Why: access rules, rate-limit keys and logs need one answer to "who is
//! the client"; behind a load balancer of our own that is the address in
//! `X-Forwarded-For`, from anyone else it is the connection's address.
//!
//! Invariants: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as
//! the IPv4 address it maps, so a dual-stack listener sees the same rules;
//! parsing never panics and bounds the work per request (`MAX_XFF_HOPS`).

use std::net::IpAddr;

/// Most `X-Forwarded-For` entries looked at, from the right, when the
/// client address is chosen.
pub const MAX_XFF_HOPS: usize = 16;

/// One block, `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip/len` or `ip`; host bits beyond the prefix must be zero, so
    /// a typo like `10.0.0.1/8` is an error rather than a surprise.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let net: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(len) => match len.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{text:?}: prefix length must be 0 to {max}")),
            },
        };
        let cidr = Cidr { net, prefix };
        if mask(net, prefix) != bits(net) {
            return Err(format!(
                "{text:?} has host bits set beyond /{prefix} (did you mean {}/{prefix}?)",
                cidr.network()
            ));
        }
        Ok(cidr)
    }

    fn network(&self) -> IpAddr {
        let m = mask(self.net, self.prefix);
        match self.net {
            IpAddr::V4(_) => IpAddr::V4((m as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(m.into()),
        }
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == bits(self.net)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; everything else as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let host_bits = u32::from(width - prefix);
    let keep = if host_bits >= 128 {
        0
    } else {
        u128::MAX << host_bits
    };
    bits(ip) & keep
}

/// A list of blocks; empty matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CidrList(pub Vec<Cidr>);

impl CidrList {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The longest prefix in the list that holds `ip`.
    pub fn longest_match(&self, ip: IpAddr) -> Option<u8> {
        self.0
            .iter()
            .filter(|c| c.contains(ip))
            .map(Cidr::prefix_len)
            .max()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client address of a request that came from `peer` with these
/// `X-Forwarded-For` values (each field's value, in order).
///
/// Only when `peer` is a trusted proxy is the header read: walking it from
/// the right, each trusted proxy is skipped and the first address that is
/// not one is the client (nginx `real_ip_recursive on`). An entry that is
/// not an address stops the walk: the last address before it is the client
/// (a hop we trust put it there). From an untrusted peer the header is
/// ignored, and the proxy replaces it (see `http::ForwardContext`).
pub fn client_ip<'v>(
    peer: IpAddr,
    xff: impl Iterator<Item = &'v [u8]>,
    trusted: &CidrList,
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let values: Vec<&[u8]> = xff.collect();
    let mut client = peer;
    let entries = values
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(|&b| b == b','))
        .take(MAX_XFF_HOPS);
    for entry in entries {
        let Some(ip) = std::str::from_utf8(entry).ok().and_then(parse_hop) else {
            break;
        };
        client = canonical(ip);
        if !trusted.contains(client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:5000`, `[2001:db8::1]:443`) as some proxies write it.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> CidrList {
        CidrList(items.iter().map(|s| Cidr::parse(s).unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_contain_v4_v6_and_mapped() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.200.1.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(!c.contains(ip("::a00:1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(!Cidr::parse("::/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert!(Cidr::parse("::ffff:127.0.0.0/104")
            .unwrap_err()
            .contains("prefix length"));
    }

    #[test]
    fn bad_blocks_say_why() {
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("::/129").unwrap_err().contains("0 to 128"));
        assert!(Cidr::parse("example.com")
            .unwrap_err()
            .contains("not an IP"));
        assert!(Cidr::parse("10.0.0.0/x").is_err());
        assert!(Cidr::parse("").is_err());
    }

    #[test]
    fn xff_is_read_only_from_trusted_peers() {
        let trusted = list(&["10.0.0.0/8", "::1"]);
        let xff = |v: &'static [&'static str]| v.iter().map(|s| s.as_bytes());
        // Untrusted peer: its header is ignored.
        assert_eq!(
            client_ip(ip("192.0.2.9"), xff(&["1.1.1.1"]), &trusted),
            ip("192.0.2.9")
        );
        // Nothing trusted: never read.
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff(&["1.1.1.1"]), &CidrList::default()),
            ip("10.0.0.1")
        );
        // Trusted peer: rightmost untrusted entry, trusted hops skipped.
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                xff(&["6.6.6.6, 1.1.1.1, 10.0.0.7"]),
                &trusted
            ),
            ip("1.1.1.1")
        );
        // Several fields are one list, in order.
        assert_eq!(
            client_ip(
                ip("::1"),
                xff(&["6.6.6.6", "2001:db8::1,10.1.1.1"]),
                &trusted
            ),
            ip("2001:db8::1")
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff(&["1.1.1.1, junk, 10.0.0.8"]), &trusted),
            ip("10.0.0.8")
        );
        // Ports, as some proxies write them, are dropped.
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                xff(&["1.1.1.1:5000, [2001:db8::1]:443"]),
                &trusted
            ),
            ip("2001:db8::1")
        );
        // All trusted: the leftmost.
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff(&["10.0.0.3, 10.0.0.2"]), &trusted),
            ip("10.0.0.3")
        );
        // No header: the peer.
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff(&[]), &trusted),
            ip("10.0.0.1")
        );
        // Bounded: only the last MAX_XFF_HOPS entries are looked at.
        let long = vec!["10.0.0.9"; 100].join(",");
        let long: &'static str = Box::leak(long.into_boxed_str());
        assert_eq!(
            client_ip(ip("10.0.0.1"), [long.as_bytes()].into_iter(), &trusted),
            ip("10.0.0.9")
        );
    }
}
