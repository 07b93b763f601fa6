//! Stable hashing: request keys for `consistent_hash`, backend ids for
//! Maglev and the sticky cookie.
//!
//! Why not `ahash` or `std`'s `RandomState`: every worker, every restart and
//! every ringlb instance behind the same DNS name must map a key to the same
//! backend, and a sticky cookie written yesterday must still name the same
//! backend today. ahash documents that its output may change between
//! versions and CPU features. So this is FNV-1a 64 followed by the
//! splitmix64 finaliser (FNV alone mixes its last bytes poorly): fixed
//! constants, no seed, the same on every machine forever. Not DoS-resistant,
//! which is acceptable: a client choosing its key can only choose its own
//! backend, which it can do anyway with a cookie.
//!
//! Invariant: changing any constant here moves every consistent-hash key and
//! invalidates every sticky cookie in the field. Don't.

use std::net::{IpAddr, SocketAddr};

use crate::config::HashKeySource;
use crate::http::{trim_ows, RequestHead};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The splitmix64 finaliser: a bijection that spreads every input bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a 64 of `bytes`, then [`mix`].
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

/// The stable id of a backend: a hash of its address as text
/// (`"10.0.0.1:80"`), so it survives reordering the backend list.
pub fn backend_id(addr: SocketAddr) -> u64 {
    hash_bytes(addr.to_string().as_bytes())
}

/// The id of a backend known only by its index (when the balancer was built
/// from weights alone).
pub fn index_id(index: usize) -> u64 {
    mix(index as u64 ^ 0x5bd1_e995_0000_0000)
}

/// The hash of a client address; an IPv4-mapped IPv6 address hashes as its
/// IPv4 address.
pub fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

/// The `consistent_hash` key of a request: its client IP, the first value
/// of a header, or a cookie's value. `None` when the header or cookie is
/// absent (the balancer then spreads such requests, see `maglev.rs`).
pub fn hash_key(source: &HashKeySource, head: &RequestHead<'_>, client_ip: IpAddr) -> Option<u64> {
    match source {
        HashKeySource::ClientIp => Some(ip_key(client_ip)),
        HashKeySource::Header(name) => head
            .headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| hash_bytes(v)),
        HashKeySource::Cookie(name) => cookie_value(head, name).map(hash_bytes),
    }
}

/// The value of cookie `name` from the request's `Cookie` fields (all of
/// them; the first match wins). Pairs are split on `;`, trimmed of spaces
/// and tabs; a value in double quotes is unquoted; pairs without `=` are
/// skipped. Names compare case-sensitively (RFC 6265).
pub fn cookie_value<'b>(head: &RequestHead<'b>, name: &str) -> Option<&'b [u8]> {
    head.headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .find_map(|(_, value)| find_cookie(value, name.as_bytes()))
}

fn find_cookie<'b>(header: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (n, v) = (trim_ows(&pair[..eq]), trim_ows(&pair[eq + 1..]));
        (n == name).then(|| {
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v)
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::http::{parse_request, Limits, Status};

    /// Parses a request head for tests; `buf` must hold a complete head.
    pub(crate) fn head(buf: &[u8]) -> RequestHead<'_> {
        match parse_request(buf, &Limits::default()) {
            Ok(Status::Complete(h)) => h,
            other => panic!("test head did not parse: {other:?}"),
        }
    }

    #[test]
    fn fixed_values_never_change() {
        // Pinned: a change here breaks every cookie and hash in the field.
        assert_eq!(hash_bytes(b""), mix(FNV_OFFSET));
        assert_eq!(hash_bytes(b"a"), mix(0xaf63_dc4c_8601_ec8c));
        let id = backend_id("10.0.0.1:80".parse().unwrap());
        assert_eq!(id, hash_bytes(b"10.0.0.1:80"));
    }

    #[test]
    fn ip_keys_treat_mapped_v4_as_v4() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), ip_key(mapped));
        assert_ne!(ip_key(v4), ip_key("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn keys_from_ip_header_and_cookie() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-User: alice\r\n\
                    Cookie: a=1; sid=\"xyz\"\r\nCookie: sid=second\r\n\r\n";
        let h = head(buf);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(hash_key(&HashKeySource::ClientIp, &h, ip), Some(ip_key(ip)));
        assert_eq!(
            hash_key(&HashKeySource::Header("x-user".into()), &h, ip),
            Some(hash_bytes(b"alice"))
        );
        assert_eq!(
            hash_key(&HashKeySource::Header("x-none".into()), &h, ip),
            None
        );
        assert_eq!(
            hash_key(&HashKeySource::Cookie("sid".into()), &h, ip),
            Some(hash_bytes(b"xyz"))
        );
        assert_eq!(hash_key(&HashKeySource::Cookie("SID".into()), &h, ip), None);
    }

    #[test]
    fn cookie_parsing_is_robust() {
        for (header, want) in [
            ("a=1", Some("1")),
            (" a = 1 ", Some("1")),
            ("b=2;a=1", Some("1")),
            ("b=2; ; junk; a=1;", Some("1")),
            ("a=", Some("")),
            ("aa=1; a=2", Some("2")),
            ("a=\"q\"", Some("q")),
            ("b=a=1", None),
            ("a", None),
            ("", None),
        ] {
            let got = find_cookie(header.as_bytes(), b"a");
            assert_eq!(got, want.map(str::as_bytes), "in {header:?}");
        }
    }
}
