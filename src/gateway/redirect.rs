//! Redirects a route answers itself: `redirect = { to, status }` and
//! `https_redirect = true` (on a route or a listener).
//!
//! Why: moving a path, a host or plain HTTP to HTTPS should not need a
//! backend (nginx `return 301 ...`, Traefik's RedirectScheme).
//!
//! Order: a route's path rewrites run first, so `$path` in `to` is the
//! rewritten path (a rewrite and a redirect on one route move old paths to
//! new ones); `https_redirect` keeps the path and query as they came, as it
//! sends the same request to the HTTPS side, which rewrites it then.
//!
//! Invariants: `to` is checked at load to be an absolute `http(s)://` URL
//! or a path starting with `/`, without control bytes; the variables come
//! from a parsed head (no CR, LF or space), so a `Location` cannot split
//! the reply's head. The location is bounded by `MAX_LOCATION_LEN`.

use crate::http::LocalReply;
use crate::proxy::filter::{Filter, RequestCtx};

use super::headers::Template;

/// Variables a redirect's `to` may use.
pub const REDIRECT_VARIABLES: [&str; 4] = ["scheme", "host", "path", "query"];

/// Statuses a `redirect` may answer with.
pub const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];

/// `https_redirect`'s status: 308 keeps the method and body (RFC 9110
/// §15.4.9), so a plain `POST` is not turned into a `GET`.
pub const HTTPS_REDIRECT_STATUS: u16 = 308;

/// Longest `Location` sent; a longer one is a 500 naming the route.
pub const MAX_LOCATION_LEN: usize = 8192;

/// The 500's reason when a location grows over the bound.
pub const REDIRECT_FAILED: &str = "the route's redirect gave a location too long";

/// `redirect = { to, status }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub to: Template,
    pub status: u16,
}

impl Redirect {
    /// The location for a request with `scheme`, `host` (as the client
    /// sent it) and origin-form `target` (rewritten, if the route
    /// rewrites).
    pub fn location(&self, scheme: &str, host: &str, target: &str) -> Result<String, LocalReply> {
        let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        let mut out = Vec::with_capacity(64 + target.len());
        self.to.expand_into(
            &|name, out| {
                out.extend_from_slice(
                    match name {
                        "scheme" => scheme,
                        "host" => host,
                        "path" => path,
                        "query" => query,
                        _ => "",
                    }
                    .as_bytes(),
                )
            },
            &mut out,
        );
        if out.len() > MAX_LOCATION_LEN {
            return Err(LocalReply::InternalError(REDIRECT_FAILED));
        }
        // Every piece is UTF-8 text.
        String::from_utf8(out).map_err(|_| LocalReply::InternalError(REDIRECT_FAILED))
    }
}

impl Filter for Redirect {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        let target = req.target.as_deref().unwrap_or(req.head.path());
        let host = req.head.host().unwrap_or("");
        req.location = Some(self.location(req.scheme, host, target)?);
        Err(LocalReply::Redirect(self.status))
    }
}

/// `https_redirect = true`: a request that came over plain HTTP is sent to
/// `https://` the same host name (its port dropped, so 443) with the same
/// path and query; one over TLS passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsRedirect;

/// The reason of the 400 when a plain request without `Host` (HTTP/1.0)
/// would be redirected: there is no name to send it to.
pub const NO_HOST_TO_REDIRECT: &str = "no Host to redirect to HTTPS";

impl HttpsRedirect {
    /// The `https://` location for `host` and `target`, or `Err` (400)
    /// without a host.
    pub fn location(host: Option<&str>, target: &str) -> Result<String, LocalReply> {
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return Err(LocalReply::BadRequest(NO_HOST_TO_REDIRECT));
        };
        let name = strip_port(host);
        let target = if target.starts_with('/') { target } else { "/" };
        if name.len() + target.len() + 8 > MAX_LOCATION_LEN {
            return Err(LocalReply::InternalError(REDIRECT_FAILED));
        }
        Ok(format!("https://{name}{target}"))
    }
}

impl Filter for HttpsRedirect {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        if req.scheme != "http" {
            return Ok(());
        }
        req.location = Some(HttpsRedirect::location(req.head.host(), req.head.path())?);
        Err(LocalReply::Redirect(HTTPS_REDIRECT_STATUS))
    }
}

/// `host` without a `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(to: &str, status: u16) -> Redirect {
        Redirect {
            to: Template::parse(to, &REDIRECT_VARIABLES).unwrap(),
            status,
        }
    }

    #[test]
    fn location_expands_scheme_host_path_and_query() {
        let r = redirect("$scheme://new.example$path$query", 301);
        assert_eq!(
            r.location("http", "old.example:8080", "/a/b?x=1&y")
                .unwrap(),
            "http://new.example/a/b?x=1&y"
        );
        assert_eq!(
            r.location("https", "h", "/a").unwrap(),
            "https://new.example/a"
        );
        let r = redirect("https://$host/v2$path", 308);
        assert_eq!(
            r.location("http", "h:81", "/x?q").unwrap(),
            "https://h:81/v2/x"
        );
        assert!(Template::parse("/$backend", &REDIRECT_VARIABLES).is_err());
    }

    fn ctx_for<'r, 'b>(
        head: &'r crate::http::RequestHead<'b>,
        scheme: &'r str,
    ) -> RequestCtx<'r, 'b> {
        // Leaked: a few tables per test run, and contexts borrow them.
        let shared: &'static crate::gateway::shared::Shared =
            Box::leak(Box::new(crate::gateway::shared::Shared::new()));
        let mut ctx = RequestCtx::new(head, None, "", "192.0.2.1".parse().unwrap(), shared);
        ctx.scheme = scheme;
        ctx
    }

    fn parsed(raw: &[u8]) -> crate::http::RequestHead<'_> {
        match crate::http::parse_request(raw, &Default::default()).unwrap() {
            crate::http::Status::Complete(head) => head,
            crate::http::Status::Partial => panic!("partial"),
        }
    }

    /// As filters: the redirect answers with the rewritten target when a
    /// rewrite ran before it; the HTTPS one passes a TLS request.
    #[test]
    fn filters_answer_with_the_location() {
        let head = parsed(b"GET /old/a?x HTTP/1.1\r\nHost: h.example:80\r\n\r\n");
        let mut ctx = ctx_for(&head, "http");
        ctx.target = Some("/v2/a?x".into());
        let r = redirect("$scheme://$host$path$query", 307);
        assert_eq!(r.on_request(&mut ctx), Err(LocalReply::Redirect(307)));
        assert_eq!(ctx.location.as_deref(), Some("http://h.example:80/v2/a?x"));

        let mut ctx = ctx_for(&head, "http");
        assert_eq!(
            HttpsRedirect.on_request(&mut ctx),
            Err(LocalReply::Redirect(HTTPS_REDIRECT_STATUS))
        );
        // The client's target, not a rewritten one.
        assert_eq!(ctx.location.as_deref(), Some("https://h.example/old/a?x"));
        let mut ctx = ctx_for(&head, "https");
        assert_eq!(HttpsRedirect.on_request(&mut ctx), Ok(()));
        assert_eq!(ctx.location, None);
    }

    #[test]
    fn an_over_long_location_is_a_500() {
        let r = redirect("/$path$path$path$path$path", 302);
        let long = format!("/{}", "a".repeat(2000));
        assert_eq!(r.location("http", "h", &long).unwrap_err().status(), 500);
    }

    #[test]
    fn https_location_drops_the_port_and_keeps_path_and_query() {
        assert_eq!(
            HttpsRedirect::location(Some("example.com:8080"), "/a?b=1").unwrap(),
            "https://example.com/a?b=1"
        );
        assert_eq!(
            HttpsRedirect::location(Some("[::1]:80"), "/").unwrap(),
            "https://[::1]/"
        );
        assert_eq!(
            HttpsRedirect::location(Some("[::1]"), "/").unwrap(),
            "https://[::1]/"
        );
        assert_eq!(
            HttpsRedirect::location(Some("h"), "*").unwrap(),
            "https://h/"
        );
        assert_eq!(
            HttpsRedirect::location(None, "/").unwrap_err(),
            LocalReply::BadRequest(NO_HOST_TO_REDIRECT)
        );
    }
}
