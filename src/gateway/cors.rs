//! `cors = { allow_origins, allow_methods, allow_headers, expose_headers,
//! allow_credentials, max_age }` of a route (the Fetch standard's CORS
//! protocol, answered at the edge).
//!
//! Why: every API that a browser calls from another origin needs it, and
//! answering preflights at the edge saves the backend a round trip.
//!
//! Behaviour:
//! - A preflight (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) is answered by the proxy with 204 and
//!   not forwarded: with the `Access-Control-Allow-*` fields when the
//!   origin is allowed, without them otherwise (the browser then refuses).
//! - Any other request from an allowed origin gets
//!   `Access-Control-Allow-Origin` (the origin itself, or `*` when
//!   `allow_origins = ["*"]` without credentials),
//!   `Access-Control-Allow-Credentials` and `Access-Control-Expose-Headers`
//!   when configured, on the backend's response and on the proxy's own
//!   replies (a 429, 502, 503 or 504), so a page can read the error.
//! - Every response of the route says `Vary: Origin`, allowed or not, so
//!   a cache never serves one origin's answer to another.
//! - The backend's own `Access-Control-*` fields are dropped: the route's
//!   policy answers for CORS (two `Access-Control-Allow-Origin` fields
//!   would make a browser refuse).
//! - Origins: an exact origin (`https://app.example.com`, compared ASCII
//!   case-insensitively), `*`, or a wildcard `*.example.com` (any scheme
//!   and port, host a subdomain of `example.com`) or
//!   `https://*.example.com` (that scheme only).
//!
//! Invariants: `*` with `allow_credentials = true` is refused at load (the
//! standard forbids it); every value is checked at load to be a valid
//! field value, so nothing a client sends is echoed except an origin that
//! matched the list.

use std::io::Write as _;

use crate::http::LocalReply;
use crate::proxy::filter::{Filter, RequestCtx};

/// One `allow_origins` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    /// A whole origin, lowercase.
    Exact(String),
    /// `[scheme://]*.suffix`: `suffix` lowercase with its leading dot.
    Subdomains {
        scheme: Option<String>,
        suffix: String,
    },
}

impl OriginPattern {
    /// Parses an entry; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let lower = text.to_ascii_lowercase();
        let bad = || {
            format!(
                "{text:?} is not an origin (\"https://app.example.com\"), \"*\" or a wildcard (\"*.example.com\")"
            )
        };
        if lower.is_empty()
            || lower.len() > 253
            || !lower.bytes().all(|b| b.is_ascii_graphic())
            || lower.ends_with('/')
        {
            return Err(bad());
        }
        let (scheme, rest) = match lower.split_once("://") {
            Some((s, r))
                if !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                (Some(s.to_owned()), r)
            }
            Some(_) => return Err(bad()),
            None => (None, lower.as_str()),
        };
        if let Some(suffix) = rest.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains(['*', '/', ':']) {
                return Err(bad());
            }
            return Ok(OriginPattern::Subdomains {
                scheme,
                suffix: suffix.to_owned(),
            });
        }
        if scheme.is_none() || rest.is_empty() || rest.contains(['*', '/']) {
            return Err(bad());
        }
        Ok(OriginPattern::Exact(lower))
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains { scheme, suffix } => {
                let Some((s, rest)) = origin.split_once("://") else {
                    return false;
                };
                let host = match rest.rsplit_once(':') {
                    Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                    _ => rest,
                };
                scheme
                    .as_deref()
                    .is_none_or(|want| want.eq_ignore_ascii_case(s))
                    && host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// A route's CORS policy, checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cors {
    pub allow_origins: Vec<OriginPattern>,
    /// `Access-Control-Allow-Methods` as sent, e.g. `GET, POST`.
    pub allow_methods: String,
    /// `Access-Control-Allow-Headers`; empty: not sent.
    pub allow_headers: String,
    /// `Access-Control-Expose-Headers`; empty: not sent.
    pub expose_headers: String,
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age`, seconds.
    pub max_age: Option<u64>,
}

/// The preflight answer's reason (never shown: a 204 has no body).
pub const PREFLIGHT: &str = "CORS preflight answered by the proxy";

impl Cors {
    /// The `Access-Control-Allow-Origin` value for `origin`, if allowed.
    fn allowed_origin<'o>(&self, origin: &'o str) -> Option<&'o str> {
        let any_only = self.allow_origins == [OriginPattern::Any];
        if any_only && !self.allow_credentials {
            return Some("*");
        }
        self.allow_origins
            .iter()
            .any(|p| p.matches(origin))
            .then_some(origin)
    }

    /// Writes the fields of an answer to a request from `origin` (or with
    /// none) into `out`; `preflight` adds the `Allow-*` ones.
    pub fn write_fields(&self, origin: Option<&str>, preflight: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Vary: Origin\r\n");
        let Some(allowed) = origin.and_then(|o| self.allowed_origin(o)) else {
            return;
        };
        let _ = write!(out, "Access-Control-Allow-Origin: {allowed}\r\n");
        if self.allow_credentials {
            out.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\n");
        }
        if preflight {
            let _ = write!(
                out,
                "Access-Control-Allow-Methods: {}\r\n",
                self.allow_methods
            );
            if !self.allow_headers.is_empty() {
                let _ = write!(
                    out,
                    "Access-Control-Allow-Headers: {}\r\n",
                    self.allow_headers
                );
            }
            if let Some(age) = self.max_age {
                let _ = write!(out, "Access-Control-Max-Age: {age}\r\n");
            }
        } else if !self.expose_headers.is_empty() {
            let _ = write!(
                out,
                "Access-Control-Expose-Headers: {}\r\n",
                self.expose_headers
            );
        }
    }
}

impl Filter for Cors {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        let headers = req.head.headers();
        let mut origin = None;
        let mut asks_method = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("origin") {
                origin = std::str::from_utf8(value).ok().map(str::trim);
            } else if name.eq_ignore_ascii_case("access-control-request-method") {
                asks_method = true;
            }
        }
        let preflight = req.head.method() == "OPTIONS" && origin.is_some() && asks_method;
        self.write_fields(origin, preflight, &mut req.response_fields.lines);
        req.response_fields.replaces = Some("access-control-");
        if preflight {
            return Err(LocalReply::NoContent(PREFLIGHT));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            allow_origins: origins
                .iter()
                .map(|o| OriginPattern::parse(o).unwrap())
                .collect(),
            allow_methods: "GET, POST".into(),
            allow_headers: "Content-Type, X-Token".into(),
            expose_headers: "X-Total".into(),
            allow_credentials: credentials,
            max_age: Some(600),
        }
    }

    fn fields(c: &Cors, origin: Option<&str>, preflight: bool) -> String {
        let mut out = Vec::new();
        c.write_fields(origin, preflight, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn patterns_parse_and_match() {
        let exact = OriginPattern::parse("https://App.example.com").unwrap();
        assert!(exact.matches("https://app.EXAMPLE.com"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        let sub = OriginPattern::parse("*.example.com").unwrap();
        assert!(sub.matches("https://a.example.com"));
        assert!(sub.matches("http://a.b.example.com:8080"));
        assert!(!sub.matches("https://example.com"));
        assert!(!sub.matches("https://evilexample.com"));
        assert!(!sub.matches("https://a.example.com.evil.org"));
        assert!(!sub.matches("null"));
        let https_sub = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(https_sub.matches("https://x.example.com"));
        assert!(!https_sub.matches("http://x.example.com"));
        for bad in [
            "",
            "example.com",
            "https://",
            "https://a/",
            "*example.com",
            "https://*.a/b",
            "ftp://*",
            "a b",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn preflight_and_actual_fields() {
        let c = cors(&["https://app.example.com", "*.example.org"], true);
        assert_eq!(
            fields(&c, Some("https://app.example.com"), true),
            "Vary: Origin\r\nAccess-Control-Allow-Origin: https://app.example.com\r\n\
             Access-Control-Allow-Credentials: true\r\nAccess-Control-Allow-Methods: GET, POST\r\n\
             Access-Control-Allow-Headers: Content-Type, X-Token\r\nAccess-Control-Max-Age: 600\r\n"
        );
        assert_eq!(
            fields(&c, Some("https://x.example.org"), false),
            "Vary: Origin\r\nAccess-Control-Allow-Origin: https://x.example.org\r\n\
             Access-Control-Allow-Credentials: true\r\nAccess-Control-Expose-Headers: X-Total\r\n"
        );
        // Not allowed, or no origin: only Vary.
        assert_eq!(
            fields(&c, Some("https://evil.com"), true),
            "Vary: Origin\r\n"
        );
        assert_eq!(fields(&c, None, false), "Vary: Origin\r\n");
        // `*` without credentials answers `*`.
        let any = cors(&["*"], false);
        assert!(fields(&any, Some("https://x.org"), false)
            .contains("Access-Control-Allow-Origin: *\r\n"));
    }
}
