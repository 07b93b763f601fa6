//! Path and host rewrites of a route, applied to the forwarded head.
//!
//! Why: a backend often serves under another prefix or name than the one
//! clients use (nginx `rewrite`/`proxy_pass` with a URI, `proxy_set_header
//! Host`).
//!
//! Order: `strip_prefix`, then `replace_prefix`, then `add_prefix`, then
//! `regex_rewrite`, each on the result of the one before; the query string
//! is kept as it came. Only the path (before `?`) is rewritten; a `*`
//! target is left alone.
//!
//! Invariants: every literal (prefixes, `to`, the substitution's text) is
//! checked at load to be a valid path piece, and a `regex_rewrite`
//! substitution starts with `/`, so a result is always an origin-form
//! path; the one thing that can still fail at run time is length (captures
//! repeated), which is a 500.

use crate::http::LocalReply;
use crate::proxy::filter::{Filter, RequestCtx};

use super::Pattern;

/// Longest rewritten target (path and query) we forward.
pub const MAX_TARGET_LEN: usize = 8192;

/// A route's rewrites; at least one is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    /// `strip_prefix`: removed when the path starts with it; an empty
    /// result becomes `/`, and one without a leading `/` gets one.
    pub strip_prefix: Option<String>,
    /// `replace_prefix = { from, to }`: `from` replaced by `to` when the
    /// path starts with `from`.
    pub replace_prefix: Option<(String, String)>,
    /// `add_prefix`: put before the path (one `/` between them).
    pub add_prefix: Option<String>,
    /// `regex_rewrite = { pattern, substitution }`: the first match is
    /// replaced; `$1`, `${name}` name capture groups.
    pub regex_rewrite: Option<(Pattern, String)>,
    /// `host_rewrite`: the `Host` sent to the backend.
    pub host: Option<HostRewrite>,
}

/// `host_rewrite = "name"` or `host_rewrite = "backend"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// A host name with an optional `:port`, the same on every attempt.
    Name(String),
    /// The `ip:port` of the backend each attempt goes to (a retry on
    /// another backend sends that one's), as nginx's `$proxy_host`.
    Backend,
}

impl HostRewrite {
    /// The fixed name, when it is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            HostRewrite::Name(name) => Some(name),
            HostRewrite::Backend => None,
        }
    }
}

impl Rewrite {
    /// The rewritten origin-form target for `target`, or `None` when the
    /// path rewrites leave it as it was. `Err` when the result is too long.
    pub fn target(&self, target: &str) -> Result<Option<String>, LocalReply> {
        if !target.starts_with('/') || !self.rewrites_path() {
            return Ok(None);
        }
        let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        let mut path = path.to_owned();
        if let Some(prefix) = &self.strip_prefix {
            if let Some(rest) = path.strip_prefix(prefix.as_str()) {
                path = if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    format!("/{rest}")
                };
            }
        }
        if let Some((from, to)) = &self.replace_prefix {
            if let Some(rest) = path.strip_prefix(from.as_str()) {
                path = format!("{to}{rest}");
            }
        }
        if let Some(prefix) = &self.add_prefix {
            path = format!("{}{path}", prefix.trim_end_matches('/'));
        }
        if let Some((pattern, substitution)) = &self.regex_rewrite {
            let replaced = pattern
                .regex()
                .replace(path.as_bytes(), substitution.as_bytes());
            // Captures are pieces of a UTF-8 path and the substitution is
            // UTF-8, so this holds; checked anyway rather than assumed.
            path = String::from_utf8(replaced.into_owned())
                .map_err(|_| LocalReply::InternalError(REWRITE_FAILED))?;
        }
        if path.len() + query.len() > MAX_TARGET_LEN || !path.starts_with('/') {
            return Err(LocalReply::InternalError(REWRITE_FAILED));
        }
        path.push_str(query);
        Ok(Some(path))
    }

    fn rewrites_path(&self) -> bool {
        self.strip_prefix.is_some()
            || self.replace_prefix.is_some()
            || self.add_prefix.is_some()
            || self.regex_rewrite.is_some()
    }
}

/// The 500's reason; the log line names the route.
pub const REWRITE_FAILED: &str = "the route's path rewrite gave an invalid target";

impl Filter for Rewrite {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        req.target = self.target(req.head.path())?;
        Ok(())
    }
}

/// Whether `text` may appear in a rewritten path as it is: visible ASCII,
/// no `?` or `#` (they would end the path), no space or control byte.
pub fn valid_path_piece(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// Puts `target` and `host` into a head written by
/// `http::write_request_head`, whose first line is `METHOD SP target SP
/// HTTP/1.1` and whose second, when the request had a host, is `Host:`.
/// Does nothing for `None`s.
pub fn splice_head(head: &mut Vec<u8>, target: Option<&str>, host: Option<&str>) {
    if let Some(target) = target {
        let line_end = find(head, b"\r\n").unwrap_or(head.len());
        let line = &head[..line_end];
        if let (Some(start), Some(end)) = (
            line.iter().position(|&b| b == b' '),
            line.iter().rposition(|&b| b == b' '),
        ) {
            if start < end {
                head.splice(start + 1..end, target.bytes());
            }
        }
    }
    if let Some(host) = host {
        let line_end = find(head, b"\r\n").map_or(head.len(), |i| i + 2);
        let field = format!("Host: {host}\r\n");
        if head[line_end..].starts_with(b"Host: ") {
            let host_end =
                find(&head[line_end..], b"\r\n").map_or(head.len(), |i| line_end + i + 2);
            head.splice(line_end..host_end, field.bytes());
        } else {
            head.splice(line_end..line_end, field.bytes());
        }
    }
}

/// Removes the `Host` line that `http::write_request_head` put right after
/// the request line, if any (each attempt then puts the backend's).
pub fn remove_host(head: &mut Vec<u8>) {
    let line_end = find(head, b"\r\n").map_or(head.len(), |i| i + 2);
    if head[line_end..].starts_with(b"Host: ") {
        let host_end = find(&head[line_end..], b"\r\n").map_or(head.len(), |i| line_end + i + 2);
        head.drain(line_end..host_end);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, write_request_head, ForwardContext, Limits, Status};

    fn rewrite() -> Rewrite {
        Rewrite::default()
    }

    #[test]
    fn prefixes_chain_in_order_and_keep_the_query() {
        let r = Rewrite {
            strip_prefix: Some("/api".into()),
            ..rewrite()
        };
        assert_eq!(
            r.target("/api/users?x=1").unwrap().as_deref(),
            Some("/users?x=1")
        );
        assert_eq!(r.target("/api").unwrap().as_deref(), Some("/"));
        assert_eq!(r.target("/apix").unwrap().as_deref(), Some("/x"));
        assert_eq!(r.target("/other").unwrap().as_deref(), Some("/other"));
        assert_eq!(r.target("*").unwrap(), None);

        let r = Rewrite {
            strip_prefix: Some("/api".into()),
            replace_prefix: Some(("/v1/".into(), "/legacy/".into())),
            add_prefix: Some("/svc/".into()),
            ..rewrite()
        };
        // strip, then replace, then add.
        assert_eq!(
            r.target("/api/v1/a?q").unwrap().as_deref(),
            Some("/svc/legacy/a?q")
        );
        assert_eq!(r.target("/api/v2/a").unwrap().as_deref(), Some("/svc/v2/a"));
    }

    #[test]
    fn regex_rewrite_uses_captures_after_the_prefixes() {
        let r = Rewrite {
            add_prefix: Some("/x".into()),
            regex_rewrite: Some((
                Pattern::new(r"^/x/users/(?P<id>[0-9]+)/(\w+)$").unwrap(),
                "/profile/$2/${id}".into(),
            )),
            ..rewrite()
        };
        assert_eq!(
            r.target("/users/42/posts?page=2").unwrap().as_deref(),
            Some("/profile/posts/42?page=2")
        );
        // No match: the prefixes' result stands.
        assert_eq!(r.target("/other").unwrap().as_deref(), Some("/x/other"));
    }

    #[test]
    fn an_over_long_result_is_a_500() {
        let r = Rewrite {
            regex_rewrite: Some((Pattern::new("^(.*)$").unwrap(), "/$1$1$1$1".into())),
            ..rewrite()
        };
        let long = format!("/{}", "a".repeat(3000));
        let err = r.target(&long).unwrap_err();
        assert_eq!(err.status(), 500);
        assert_eq!(r.target("/a").unwrap().as_deref(), Some("//a/a/a/a"));
    }

    #[test]
    fn path_pieces() {
        assert!(valid_path_piece("/a-b_c.d~e%20/"));
        for bad in ["/a b", "/a?", "/a#", "/a\t", "/é"] {
            assert!(!valid_path_piece(bad), "{bad:?}");
        }
    }

    fn forwarded(raw: &[u8]) -> Vec<u8> {
        let Status::Complete(head) = parse_request(raw, &Limits::default()).unwrap() else {
            panic!("partial")
        };
        let ctx = ForwardContext {
            client_ip: "127.0.0.1".parse().unwrap(),
            keep_client_xff: true,
            proto: "http",
            host_fallback: None,
            request_id: None,
        };
        let mut out = Vec::new();
        write_request_head(&head, &ctx, &mut out);
        out
    }

    /// Against the real head writer, so a change in its layout fails here.
    #[test]
    fn splice_replaces_target_and_host() {
        let mut head =
            forwarded(b"GET /api/x?q=1 HTTP/1.1\r\nHost: public.example\r\nAccept: */*\r\n\r\n");
        splice_head(&mut head, Some("/x?q=1"), Some("internal.svc"));
        let text = String::from_utf8(head).unwrap();
        assert!(
            text.starts_with("GET /x?q=1 HTTP/1.1\r\nHost: internal.svc\r\nAccept: */*\r\n"),
            "{text}"
        );
        // The client's host is still told to the backend.
        assert!(
            text.contains("X-Forwarded-Host: public.example\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("\r\nHost:").count(), 1, "{text}");

        // HTTP/1.0 without Host: the field is added.
        let mut head = forwarded(b"GET / HTTP/1.0\r\n\r\n");
        splice_head(&mut head, None, Some("internal.svc"));
        let text = String::from_utf8(head).unwrap();
        assert!(
            text.starts_with("GET / HTTP/1.1\r\nHost: internal.svc\r\n"),
            "{text}"
        );

        let mut head = forwarded(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
        let before = head.clone();
        splice_head(&mut head, None, None);
        assert_eq!(head, before);

        // host_rewrite = "backend": the client's Host goes (each attempt
        // puts the backend's), and is still told as X-Forwarded-Host.
        remove_host(&mut head);
        let text = String::from_utf8(head).unwrap();
        assert!(!text.contains("\r\nHost:"), "{text}");
        assert!(text.starts_with("GET /a HTTP/1.1\r\nX-Forwarded"), "{text}");
        assert!(text.contains("X-Forwarded-Host: h\r\n"), "{text}");
    }
}
