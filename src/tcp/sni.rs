//! SNI routing without terminating TLS: the server name of a TLS
//! ClientHello, read from the bytes the client sent first, and the
//! listener's `sni_routes` that map it to an upstream.
//!
//! Why rustls's `Acceptor`: it is the ClientHello parser this process
//! already trusts for its own TLS listeners (record reassembly, bounds,
//! extension checks), and it works on a copy of the bytes, so the original
//! bytes still go to the backend untouched.

use std::io::Cursor;

/// Most bytes read while waiting for a whole ClientHello: a handshake
/// message up to this size may span several records. Real ones are 0.5 to
/// 2 KiB (post-quantum key shares included).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not a whole ClientHello yet: read more (up to [`MAX_CLIENT_HELLO`]).
    Partial,
    /// A ClientHello naming this server (lowercase).
    Name(String),
    /// A ClientHello without a server name.
    NoName,
    /// Not a TLS ClientHello, or one longer than [`MAX_CLIENT_HELLO`].
    NotTls(String),
}

/// Parses the ClientHello at the start of `bytes` (everything the client
/// sent so far). Pure: the caller keeps `bytes` to forward them.
pub fn client_hello(bytes: &[u8]) -> Hello {
    // The record header: handshake (22), version 3.x. Anything else is
    // refused at once rather than after a timeout.
    match bytes {
        [] => return Hello::Partial,
        [first, ..] if *first != 22 => return Hello::NotTls("not a TLS handshake record".into()),
        [_, major, ..] if *major != 3 => return Hello::NotTls("not a TLS record version".into()),
        _ => {}
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut cursor = Cursor::new(bytes);
    // `read_tls` takes at most one buffer's worth per call; feed it all.
    while (cursor.position() as usize) < bytes.len() {
        match acceptor.read_tls(&mut cursor) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Hello::NotTls(format!("unreadable TLS records: {e}")),
        }
    }
    match acceptor.accept() {
        Ok(None) if bytes.len() >= MAX_CLIENT_HELLO => {
            Hello::NotTls(format!("no whole ClientHello in {MAX_CLIENT_HELLO} bytes"))
        }
        Ok(None) => Hello::Partial,
        Ok(Some(accepted)) => match accepted.client_hello().server_name() {
            Some(name) => Hello::Name(name.to_ascii_lowercase()),
            None => Hello::NoName,
        },
        Err((e, _alert)) => Hello::NotTls(format!("not a valid ClientHello: {e}")),
    }
}

/// One `sni` pattern: an exact name, or `*.suffix` for any name with at
/// least one more label in front of `.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPattern {
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Wildcard(String),
}

impl SniPattern {
    /// Checks a pattern as written in the config; names are compared
    /// lowercase.
    pub fn parse(text: &str) -> Result<SniPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "{text:?} is not a DNS name or `*.` followed by one (a server name, without port)"
            ));
        }
        Ok(if wildcard {
            SniPattern::Wildcard(format!(".{name}"))
        } else {
            SniPattern::Exact(name.to_owned())
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            SniPattern::Exact(exact) => name == exact,
            SniPattern::Wildcard(suffix) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
        }
    }
}

/// A listener's `sni_routes`: exact names first, then the longest
/// matching wildcard, whatever their order in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SniRoutes {
    routes: Vec<(SniPattern, usize)>,
}

impl SniRoutes {
    pub fn new(routes: Vec<(SniPattern, usize)>) -> SniRoutes {
        SniRoutes { routes }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The upstreams the routes name (for the metrics' labels).
    pub fn upstreams(&self) -> impl Iterator<Item = usize> + '_ {
        self.routes.iter().map(|(_, u)| *u)
    }

    /// The upstream for server name `name` (lowercase), if a route
    /// matches.
    pub fn find(&self, name: &str) -> Option<usize> {
        let exact = self.routes.iter().find(|(p, _)| match p {
            SniPattern::Exact(e) => e == name,
            SniPattern::Wildcard(_) => false,
        });
        if let Some((_, upstream)) = exact {
            return Some(*upstream);
        }
        self.routes
            .iter()
            .filter(|(p, _)| matches!(p, SniPattern::Wildcard(_)) && p.matches(name))
            .max_by_key(|(p, _)| match p {
                SniPattern::Wildcard(suffix) => suffix.len(),
                SniPattern::Exact(_) => 0,
            })
            .map(|(_, upstream)| *upstream)
    }
}

#[cfg(test)]
mod tests;
