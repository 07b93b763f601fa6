//! The PROXY protocol header (HAProxy's, versions 1 and 2), sans-IO: the
//! parser an accepting listener runs over the first bytes of a connection,
//! and the encoders an upstream uses to send one.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//!
//! Invariants: [`parse`] never reads past the header it returns (its
//! `len` is exactly the header's bytes, so what follows, a request or a
//! TLS ClientHello, is left alone); `Ok(None)` means every byte seen so
//! far belongs to the header and more are needed; the input considered is
//! bounded by [`MAX_HEADER_BYTES`] and the TLVs by [`MAX_TLVS`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A v1 header's longest form, CRLF included (spec section 2.1).
pub const V1_MAX_BYTES: usize = 107;
/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v2 fixed part: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// The largest v2 address block plus TLVs accepted. The spec allows 64
/// KiB; L4 balancers send well under 1 KiB (AWS NLB, HAProxy: a few
/// hundred bytes), so more is refused rather than buffered.
pub const MAX_V2_PAYLOAD: usize = 2048;
/// The most bytes a header can take: what a reader needs to look at.
pub const MAX_HEADER_BYTES: usize = V2_FIXED + MAX_V2_PAYLOAD;
/// The most TLVs accepted in one v2 header.
pub const MAX_TLVS: usize = 32;

/// The protocol version of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// The original connection's source and destination; `None` for a v2
    /// LOCAL command (a health check from the L4 tier itself), v1
    /// `UNKNOWN`, or an address family other than TCP over IPv4/IPv6: the
    /// connection's own peer address stands.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// v2 TLVs, `(type, value)`, in order.
    pub tlvs: Vec<(u8, Vec<u8>)>,
    /// The header's length in bytes: where the payload starts.
    pub len: usize,
}

impl Header {
    /// The client address the connection stands for: the header's source,
    /// or `peer` when the header carries none.
    pub fn client_addr(&self, peer: SocketAddr) -> SocketAddr {
        self.addresses.map_or(peer, |(source, _)| source)
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The bytes start with neither a v1 nor a v2 signature.
    NotProxy,
    /// A v1 header that breaks the grammar; the reason.
    V1(&'static str),
    /// A v2 header that breaks the format; the reason.
    V2(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotProxy => f.write_str("no PROXY protocol header"),
            Error::V1(why) => write!(f, "bad PROXY v1 header: {why}"),
            Error::V2(why) => write!(f, "bad PROXY v2 header: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses a header at the start of `buf`. `Ok(None)`: `buf` is a proper
/// beginning of a header (every byte of it is header) and more bytes are
/// needed.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, Error> {
    let buf = &buf[..buf.len().min(MAX_HEADER_BYTES)];
    const V1_PREFIX: &[u8] = b"PROXY ";
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(None);
        }
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(None);
        }
        parse_v1(buf)
    } else {
        Err(Error::NotProxy)
    }
}

/// Whether `buf` and `prefix` agree on their common length (and `buf` is
/// not empty, which is no evidence either way but is handled as "more").
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, Error> {
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= V1_MAX_BYTES {
            return Err(Error::V1("no CRLF within 107 bytes"));
        }
        if window.contains(&b'\n') {
            return Err(Error::V1("bare LF"));
        }
        return Ok(None);
    };
    // Checked before the CR's partner, so a prefix and the whole line
    // agree (a bare LF is refused as soon as it is seen).
    if window[..cr].contains(&b'\n') {
        return Err(Error::V1("bare LF"));
    }
    match window.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(Error::V1("CR not followed by LF")),
    }
    let line = std::str::from_utf8(&window[6..cr]).map_err(|_| Error::V1("not ASCII"))?;
    let len = cr + 2;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or("");
    if proto == "UNKNOWN" {
        // The receiver must ignore whatever follows UNKNOWN.
        return Ok(Some(Header {
            version: Version::V1,
            addresses: None,
            tlvs: Vec::new(),
            len,
        }));
    }
    let v4 = match proto {
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err(Error::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut next = || fields.next().ok_or(Error::V1("missing field"));
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(Error::V1("extra field"));
    }
    let ip = |text: &str| -> Result<IpAddr, Error> {
        let ip = if v4 {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        } else {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        };
        ip.map_err(|_| Error::V1("bad address for the protocol"))
    };
    let source = SocketAddr::new(ip(src)?, v1_port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, v1_port(dport)?);
    Ok(Some(Header {
        version: Version::V1,
        addresses: Some((source, destination)),
        tlvs: Vec::new(),
        len,
    }))
}

/// A v1 port: 1 to 5 decimal digits, no sign, no leading zero, at most 65535.
fn v1_port(text: &str) -> Result<u16, Error> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(Error::V1("bad port"));
    }
    text.parse().map_err(|_| Error::V1("port above 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, Error> {
    if buf.len() < V2_FIXED {
        // Check what is there already, so garbage fails at once.
        if let Some(&ver_cmd) = buf.get(12) {
            check_ver_cmd(ver_cmd)?;
        }
        return Ok(None);
    }
    let local = check_ver_cmd(buf[12])?;
    let family = buf[13];
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > MAX_V2_PAYLOAD {
        return Err(Error::V2("longer than the 2048 bytes accepted"));
    }
    let len = V2_FIXED + payload;
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[V2_FIXED..len];
    // Address block length by family (high nibble) and protocol (low).
    let (address_len, stream) = match family >> 4 {
        0x0 => (0, true),
        0x1 => (12, family & 0x0f == 0x1),
        0x2 => (36, family & 0x0f == 0x1),
        0x3 => (216, family & 0x0f == 0x1),
        _ => return Err(Error::V2("unknown address family")),
    };
    if family & 0x0f > 0x2 {
        return Err(Error::V2("unknown transport protocol"));
    }
    // A LOCAL header's addresses are to be ignored, whatever their length.
    let address_len = if local {
        address_len.min(body.len())
    } else {
        address_len
    };
    if body.len() < address_len {
        return Err(Error::V2("address block longer than the header"));
    }
    let block = &body[..address_len];
    let addresses = match family >> 4 {
        _ if local => None,
        // UNSPEC and UNIX: nothing an IP client address can come from.
        0x0 | 0x3 => None,
        _ if !stream => return Err(Error::V2("not a stream (TCP) connection")),
        0x1 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        _ => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
    };
    let tlvs = parse_tlvs(&body[address_len..])?;
    Ok(Some(Header {
        version: Version::V2,
        addresses,
        tlvs,
        len,
    }))
}

/// Checks the version/command byte; `true` for LOCAL, `false` for PROXY.
fn check_ver_cmd(ver_cmd: u8) -> Result<bool, Error> {
    match ver_cmd {
        0x20 => Ok(true),
        0x21 => Ok(false),
        _ if ver_cmd >> 4 != 2 => Err(Error::V2("version is not 2")),
        _ => Err(Error::V2("command is neither LOCAL nor PROXY")),
    }
}

fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, Error> {
    let mut tlvs = Vec::new();
    while !rest.is_empty() {
        if tlvs.len() == MAX_TLVS {
            return Err(Error::V2("more than 32 TLVs"));
        }
        if rest.len() < 3 {
            return Err(Error::V2("truncated TLV"));
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let value = rest
            .get(3..3 + len)
            .ok_or(Error::V2("TLV longer than the header"))?;
        tlvs.push((rest[0], value.to_vec()));
        rest = &rest[3 + len..];
    }
    Ok(tlvs)
}

/// Appends a v1 header for a connection from `source` to `destination`.
/// Mixed families are sent as TCP6 with the IPv4 one mapped.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let (source, destination) = same_family(source, destination);
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {proto} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
}

/// Appends a v2 header: PROXY with the addresses, or LOCAL with `None`
/// (a connection of the proxy's own, such as a health check).
pub fn encode_v2(addresses: Option<(SocketAddr, SocketAddr)>, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    let Some((source, destination)) = addresses else {
        out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return;
    };
    out.push(0x21);
    match same_family(source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s.ip()).octets());
            out.extend_from_slice(&v6(d.ip()).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both addresses in one family: IPv4-mapped IPv6 addresses become IPv4
/// when both can, else both become IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canon(source), canon(destination));
    if s.is_ipv4() == d.is_ipv4() {
        return (s, d);
    }
    let wide = |a: SocketAddr| SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port());
    (wide(s), wide(d))
}

#[cfg(test)]
mod tests;
