//! Custom bodies for the replies the proxy makes itself (`error_pages`, in
//! `[server]` and per route) and `intercept_errors`, which replaces a
//! backend's own error response with the page.
//!
//! Why: an API wants its errors in its own format (JSON with the request
//! id) and a site its own HTML, whoever made the error (nginx `error_page`
//! and `proxy_intercept_errors`).
//!
//! Precedence: the route's page for a status, else the server's, else the
//! standard text. A reply made before routing (a bad head: 400, 408, 431)
//! has no route and uses the server's pages.
//!
//! Invariants: a page's body is read and checked at load (at most
//! `MAX_PAGE_BYTES`, variables known); its content type is a visible-ASCII
//! value. Rendering is bounded by the body template and the variables'
//! sizes (a request id is at most a head's size).

use std::sync::Arc;

use super::headers::Template;

/// Statuses a page can be given for: the ones the proxy makes itself
/// (414 and 501 included) and 500, for `intercept_errors`.
pub const PAGE_STATUSES: [u16; 12] = [400, 404, 408, 413, 414, 429, 431, 500, 501, 502, 503, 504];

/// Variables a page's body may use.
pub const PAGE_VARIABLES: [&str; 3] = ["status", "request_id", "reason"];

/// Largest page body, inline or file.
pub const MAX_PAGE_BYTES: usize = 64 * 1024;

/// One page: its content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    pub content_type: String,
    pub body: Template,
}

impl ErrorPage {
    /// Appends the body for `status`, with the request's id and the
    /// reply's short reason.
    pub fn render(&self, status: u16, reason: &str, request_id: &str, out: &mut Vec<u8>) {
        self.body.expand_into(
            &|name, out| {
                use std::io::Write as _;
                // Writing to a Vec cannot fail.
                let _ = match name {
                    "status" => write!(out, "{status}"),
                    "request_id" => {
                        put_safe_id(request_id, out);
                        Ok(())
                    }
                    "reason" => write!(out, "{reason}"),
                    _ => Ok(()),
                };
            },
            out,
        );
    }
}

/// Appends a request id for a page body: a client's `X-Request-ID` is
/// its own text, and in an HTML or JSON page a `<` or `"` in it would
/// inject markup or break the document, so every byte but letters,
/// digits and `-_.:/+=@` becomes `_` (generated ids, UUIDs and hex ids
/// pass unchanged).
fn put_safe_id(id: &str, out: &mut Vec<u8>) {
    out.extend(id.bytes().map(|b| {
        if b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b) {
            b
        } else {
            b'_'
        }
    }));
}

/// A set of pages (the server's or a route's) and, for a route, the
/// backend statuses to intercept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorPages {
    /// At most one page per status.
    pub pages: Vec<(u16, Arc<ErrorPage>)>,
    /// `intercept_errors`: a backend response with one of these statuses
    /// is replaced by the page for it (checked at load that one exists,
    /// here or in the server's).
    pub intercept: Vec<u16>,
}

impl ErrorPages {
    pub fn get(&self, status: u16) -> Option<&ErrorPage> {
        self.pages
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, p)| &**p)
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.intercept.is_empty()
    }

    /// Whether a backend's response with `status` is replaced.
    pub fn intercepts(&self, status: u16) -> bool {
        self.intercept.contains(&status)
    }
}

/// The page for `status`: the route's (`route`), else the server's.
pub fn choose<'p>(
    route: Option<&'p ErrorPages>,
    server: &'p ErrorPages,
    status: u16,
) -> Option<&'p ErrorPage> {
    route
        .and_then(|r| r.get(status))
        .or_else(|| server.get(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> Arc<ErrorPage> {
        Arc::new(ErrorPage {
            content_type: "application/json".into(),
            body: Template::parse_body(body, &PAGE_VARIABLES).unwrap(),
        })
    }

    #[test]
    fn route_pages_override_the_servers() {
        let server = ErrorPages {
            pages: vec![(503, page("server 503")), (404, page("server 404"))],
            intercept: vec![],
        };
        let route = ErrorPages {
            pages: vec![(503, page("route 503"))],
            intercept: vec![503],
        };
        let body = |p: Option<&ErrorPage>| {
            let mut out = Vec::new();
            p.unwrap().render(0, "", "", &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(body(choose(Some(&route), &server, 503)), "route 503");
        assert_eq!(body(choose(Some(&route), &server, 404)), "server 404");
        assert_eq!(body(choose(None, &server, 503)), "server 503");
        assert!(choose(Some(&route), &server, 502).is_none());
        assert!(route.intercepts(503) && !route.intercepts(502));
    }

    #[test]
    fn bodies_expand_variables_and_keep_newlines() {
        let p =
            page("{\"error\":\"$reason\",\n\"status\":$status,\"request_id\":\"$request_id\"}\n$5");
        let mut out = Vec::new();
        p.render(503, "no backend available", "abc", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"error\":\"no backend available\",\n\"status\":503,\"request_id\":\"abc\"}\n$5"
        );
        assert!(Template::parse_body("$client_ip", &PAGE_VARIABLES).is_err());
        // A client's id cannot inject markup or break a JSON string.
        let mut out = Vec::new();
        page("<p>$request_id</p>").render(400, "", "a\"b<script>x:1-2_3", &mut out);
        assert_eq!(out, b"<p>a_b_script_x:1-2_3</p>");
    }
}
