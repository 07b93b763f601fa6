//! Matching a request's host and path to a route (sans-IO).
//!
//! Why: every request is routed, so the lookup must be cheap and must not
//! allocate; the table is built once per config and owned per worker.
//!
//! Rules, in order:
//! 1. Candidates are the routes whose `host` matches the request host
//!    (ASCII case-insensitive, request `:port` and one trailing dot ignored)
//!    and the routes without `host`.
//! 2. The path is the origin-form target up to `?`. A route matches when its
//!    `path_prefix` is a plain byte prefix of that path, like nginx
//!    `location /api` (so `/api` also matches `/apix`; write `/api/` to
//!    stop at a segment boundary).
//! 3. A route with conditions (`methods`, `headers`, `path_regex`) is a
//!    candidate only when all of them hold; `path_regex` sees the same path
//!    and is matched in addition to `path_prefix` (default `/`).
//! 4. The longest matching `path_prefix` wins.
//! 5. On equal prefix length, an exact host beats a `*.suffix` host, which
//!    beats no host.
//! 6. Then a route with conditions beats one without.
//! 7. Then the earlier route in the file wins.
//!
//! Invariants: each of the three lists (exact-host by host, wildcard, any
//! host) is sorted by prefix length, longest first, then routes with
//! conditions first, then file order, so the first match in each list is
//! that list's best; the answer is the best of at most three. `route` does
//! not allocate, and a route without conditions costs one `None` check.

use ahash::AHashMap;

use std::sync::Arc;

use crate::config::{
    AccessRules, Compress, Config, Cors, ErrorPages, HeaderEdits, HostPattern, RateLimit, Redirect,
    Rewrite, RouteCache, RouteConfig, RouteMatch,
};
use crate::http::{Headers, RequestHead};
use crate::proxy::filter::Filter;

/// Longest host name we look up (RFC 1035 limit plus IPv6 brackets).
const MAX_HOST_LEN: usize = 255;

/// One route, as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index into [`Config::upstreams`]; `None` only for a `redirect`.
    pub upstream: Option<usize>,
    /// Byte prefix of the request path, starts with `/`.
    pub path_prefix: String,
    /// `None` matches any host.
    pub host: Option<HostPattern>,
    /// Further conditions; `None` for a plain route.
    pub matching: Option<Box<RouteMatch>>,
    /// Path and host rewrites; `None` for a plain route.
    pub rewrite: Option<Arc<Rewrite>>,
    /// `request_headers` edits; `None` for a plain route.
    pub request_headers: Option<Arc<HeaderEdits>>,
    /// `response_headers` edits; `None` for a plain route.
    pub response_headers: Option<Arc<HeaderEdits>>,
    /// The route answers with this redirect itself.
    pub redirect: Option<Arc<Redirect>>,
    /// Plain HTTP requests get a redirect to HTTPS.
    pub https_redirect: bool,
    /// `error_pages` and `intercept_errors`; `None` for a plain route.
    pub error_pages: Option<Arc<ErrorPages>>,
    /// `cache`; `None` for a route that does not cache.
    pub cache: Option<Arc<RouteCache>>,
    /// `allow`/`deny`, `rate_limit`, `cors`; `None` when unset.
    pub access: Option<Arc<AccessRules>>,
    pub rate_limit: Option<Arc<RateLimit>>,
    pub cors: Option<Arc<Cors>>,
    /// `compress` policy; `None` when the route does not compress.
    pub compress: Option<Arc<Compress>>,
    /// Position in the file (`routes[index]`), for logs.
    pub index: usize,
}

impl Route {
    /// The route's edge filters, in the order they run: access rules (a
    /// denied client learns nothing more), CORS (a preflight is answered
    /// before it could count against a limit, and later refusals carry the
    /// CORS fields), then the rate limit.
    pub fn edge_filters(&self) -> impl Iterator<Item = &dyn Filter> {
        let access = self.access.as_deref().map(|f| f as &dyn Filter);
        let cors = self.cors.as_deref().map(|f| f as &dyn Filter);
        let rate = self.rate_limit.as_deref().map(|f| f as &dyn Filter);
        [access, cors, rate].into_iter().flatten()
    }
}

/// How specific a route's host is; higher wins on equal prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HostRank {
    Any,
    Wildcard,
    Exact,
}

/// All routes of one config, indexed for lookup.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// In file order; the lists below hold indexes into it.
    routes: Vec<Route>,
    /// Lowercase host → routes with that exact host.
    exact: AHashMap<String, Vec<usize>>,
    /// Routes with a `*.suffix` host.
    wildcard: Vec<usize>,
    /// Routes without a host.
    any_host: Vec<usize>,
}

impl RouteTable {
    /// Builds the table from a checked config.
    pub fn from_config(config: &Config) -> RouteTable {
        RouteTable::new(&config.routes)
    }

    /// Builds the table from routes in file order.
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let routes: Vec<Route> = routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                upstream: r.upstream,
                path_prefix: r.path_prefix.clone(),
                host: r.host.clone(),
                matching: r.matching.clone(),
                rewrite: r.rewrite.clone(),
                request_headers: r.request_headers.clone(),
                response_headers: r.response_headers.clone(),
                redirect: r.redirect.clone(),
                https_redirect: r.https_redirect,
                error_pages: r.error_pages.clone(),
                cache: r.cache.clone(),
                access: r.access.clone(),
                rate_limit: r.rate_limit.clone(),
                cors: r.cors.clone(),
                compress: r.compress.clone(),
                index,
            })
            .collect();
        let mut exact: AHashMap<String, Vec<usize>> = AHashMap::new();
        let mut wildcard = Vec::new();
        let mut any_host = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            match &route.host {
                Some(HostPattern::Exact(name)) => {
                    exact.entry(name.to_ascii_lowercase()).or_default().push(i)
                }
                Some(HostPattern::Suffix(_)) => wildcard.push(i),
                None => any_host.push(i),
            }
        }
        // Stable sort: equal lengths keep file order.
        let longest_first = |list: &mut Vec<usize>| {
            list.sort_by_key(|&i| {
                let route = &routes[i];
                std::cmp::Reverse((route.path_prefix.len(), route.matching.is_some()))
            })
        };
        exact.values_mut().for_each(longest_first);
        longest_first(&mut wildcard);
        longest_first(&mut any_host);
        RouteTable {
            routes,
            exact,
            wildcard,
            any_host,
        }
    }

    /// The route for a `GET` without header fields to `Host` (or authority)
    /// `host` and origin-form target `path` (query allowed), or `None`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.find(host, "GET", path, &Headers::new(b""))
    }

    /// The route for a parsed request, or `None` if none matches.
    pub fn route_request(&self, head: &RequestHead<'_>) -> Option<&Route> {
        self.find(head.host(), head.method(), head.path(), &head.headers())
    }

    fn find(
        &self,
        host: Option<&str>,
        method: &str,
        path: &str,
        headers: &Headers<'_>,
    ) -> Option<&Route> {
        let path = path.split_once('?').map_or(path, |(p, _)| p).as_bytes();
        let host = host.map(strip_port);
        let mut lower = [0u8; MAX_HOST_LEN];
        let exact_list = host
            .and_then(|h| ascii_lowercase_into(h, &mut lower))
            .and_then(|h| self.exact.get(h));

        let prefix_matches = |i: &usize| {
            let route = &self.routes[*i];
            path.starts_with(route.path_prefix.as_bytes())
                && route
                    .matching
                    .as_ref()
                    .is_none_or(|m| m.matches(method, path, headers))
        };
        let candidates = [
            exact_list.and_then(|list| list.iter().find(|i| prefix_matches(i))),
            host.and_then(|h| {
                self.wildcard.iter().find(|&&i| {
                    prefix_matches(&i) && self.routes[i].host.as_ref().is_some_and(|p| p.matches(h))
                })
            }),
            self.any_host.iter().find(|i| prefix_matches(i)),
        ];
        candidates
            .into_iter()
            .flatten()
            .copied()
            .max_by_key(|&i| self.rank(i))
            .map(|i| &self.routes[i])
    }

    /// Orders candidates: longer prefix, then more specific host, then
    /// conditions, then earlier in file.
    fn rank(&self, i: usize) -> (usize, HostRank, bool, std::cmp::Reverse<usize>) {
        let route = &self.routes[i];
        let host = match route.host {
            Some(HostPattern::Exact(_)) => HostRank::Exact,
            Some(HostPattern::Suffix(_)) => HostRank::Wildcard,
            None => HostRank::Any,
        };
        (
            route.path_prefix.len(),
            host,
            route.matching.is_some(),
            std::cmp::Reverse(i),
        )
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`; drops one
/// trailing dot (`example.com.`).
fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.split_once(':').map_or(host, |(name, _)| name)
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Lowercases `host` into `buf` without allocating; `None` if it does not fit.
fn ascii_lowercase_into<'b>(host: &str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let out = buf.get_mut(..host.len())?;
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    // ASCII lowercasing keeps UTF-8 valid, so this never fails.
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Routes in file order; upstream `uN` is index N (names sort that way).
    const ROUTES: &str = r#"
[server]
listen = ["127.0.0.1:1"]

[[routes]]            # 0 -> u0
upstream = "u0"

[[routes]]            # 1 -> u1
path_prefix = "/api"
upstream = "u1"

[[routes]]            # 2 -> u2
path_prefix = "/api"
host = "Example.com"
upstream = "u2"

[[routes]]            # 3 -> u3
path_prefix = "/api/v2/"
upstream = "u3"

[[routes]]            # 4 -> u4
host = "example.com"
upstream = "u4"

[[routes]]            # 5 -> u5
path_prefix = "/api"
host = "*.example.com"
upstream = "u5"

[[routes]]            # 6 -> u6
path_prefix = "/static"
host = "*.example.com"
upstream = "u6"

[[routes]]            # 7 -> u7
path_prefix = "/static"
host = "cdn.example.com"
upstream = "u7"

[[routes]]            # 8 -> u8
path_prefix = "/apx"
upstream = "u8"

[[routes]]            # 9 -> u9, same as 8 but later: never wins
path_prefix = "/apy"
host = "[::1]"
upstream = "u9"
"#;

    fn table() -> RouteTable {
        let mut src = ROUTES.to_owned();
        for n in 0..10 {
            src.push_str(&format!(
                "[upstreams.u{n}]\nbackends = [{{ addr = \"10.0.0.{n}:80\" }}]\n"
            ));
        }
        let config = Config::from_toml_str(&src, Path::new("routes.toml")).unwrap();
        RouteTable::from_config(&config)
    }

    #[test]
    fn table_driven() {
        let table = table();
        let cases: &[(Option<&str>, &str, Option<usize>)] = &[
            // No host: only host-less routes.
            (None, "/", Some(0)),
            (None, "/anything", Some(0)),
            (None, "/api", Some(1)),
            (None, "/apix", Some(1)),
            (None, "/api/v2", Some(1)),
            (None, "/api/v2/users", Some(3)),
            (None, "/apx/1", Some(8)),
            // Query is not part of the path.
            (None, "/?/api", Some(0)),
            (None, "/api/v2?x=/api/v2/", Some(1)),
            // Exact host beats host-less at equal prefix length.
            (Some("example.com"), "/api/x", Some(2)),
            (Some("EXAMPLE.COM:8080"), "/api", Some(2)),
            (Some("example.com."), "/api", Some(2)),
            // Longer prefix beats a more specific host.
            (Some("example.com"), "/api/v2/x", Some(3)),
            (Some("example.com"), "/other", Some(4)),
            // Wildcard: subdomains only, beats host-less, loses to exact.
            (Some("a.example.com"), "/api", Some(5)),
            (Some("a.b.Example.com:443"), "/api/1", Some(5)),
            (Some("a.example.com"), "/", Some(0)),
            (Some("a.example.com"), "/static/x", Some(6)),
            (Some("cdn.example.com"), "/static/x", Some(7)),
            (Some("example.com"), "/static", Some(4)),
            (Some("xexample.com"), "/api", Some(1)),
            // Unknown host falls back to host-less routes.
            (Some("other.org"), "/api", Some(1)),
            // IPv6 literal host.
            (Some("[::1]:8080"), "/apy", Some(9)),
            (Some("[::1]"), "/apy", Some(9)),
            (None, "/apy", Some(0)),
            // Over-long and non-ASCII hosts do not panic.
            (Some(&"a".repeat(300)), "/api", Some(1)),
            (Some("exämple.com"), "/api", Some(1)),
        ];
        for &(host, path, want) in cases {
            let got = table.route(host, path).and_then(|r| r.upstream);
            assert_eq!(got, want, "host {host:?} path {path:?}");
        }
    }

    #[test]
    fn equal_routes_first_in_file_wins_and_no_match_is_none() {
        let src = r#"
[server]
listen = ["127.0.0.1:1"]
[[routes]]
path_prefix = "/a"
upstream = "x"
[[routes]]
path_prefix = "/b"
host = "*.b.example"
upstream = "x"
[[routes]]
path_prefix = "/b"
host = "*.example"
upstream = "y"
[upstreams.x]
backends = [{ addr = "10.0.0.1:80" }]
[upstreams.y]
backends = [{ addr = "10.0.0.2:80" }]
"#;
        let config = Config::from_toml_str(src, Path::new("t.toml")).unwrap();
        let table = RouteTable::from_config(&config);
        assert_eq!(table.route(None, "/"), None);
        assert_eq!(
            table.route(Some("a.example"), "/a"),
            Some(&table.routes()[0])
        );
        // Both wildcards match with the same prefix: the earlier one wins.
        assert_eq!(
            table
                .route(Some("c.b.example"), "/b")
                .and_then(|r| r.upstream),
            Some(0)
        );
        assert_eq!(
            table
                .route(Some("c.example"), "/b")
                .and_then(|r| r.upstream),
            Some(1)
        );
        assert_eq!(table.route(None, "/b"), None);
    }

    /// Precedence with conditions: prefix length first, then host, then a
    /// route with conditions over one without, then file order.
    #[test]
    fn conditions_filter_and_rank_after_prefix_and_host() {
        let src = r#"
[server]
listen = ["127.0.0.1:1"]
[[routes]]                    # 0 -> u0: plain
path_prefix = "/api"
upstream = "u0"
[[routes]]                    # 1 -> u1: writes
path_prefix = "/api"
methods = ["POST", "PUT"]
upstream = "u1"
[[routes]]                    # 2 -> u2: canary header, any value
path_prefix = "/api"
headers = [{ name = "X-Canary" }]
upstream = "u2"
[[routes]]                    # 3 -> u3: numeric ids, shorter prefix
path_regex = "^/api/[0-9]+$"
upstream = "u3"
[[routes]]                    # 4 -> u4: exact host, plain
path_prefix = "/api"
host = "h.example"
upstream = "u4"
[[routes]]                    # 5 -> u5: header value by regex and exact
path_prefix = "/api/v"
headers = [{ name = "X-Ver", regex = "^v[2-9]$" }, { name = "X-Env", value = "blue" }]
upstream = "u5"
"#;
        let mut src = src.to_owned();
        for n in 0..6 {
            src.push_str(&format!(
                "[upstreams.u{n}]\nbackends = [{{ addr = \"10.0.0.{n}:80\" }}]\n"
            ));
        }
        let config = Config::from_toml_str(&src, Path::new("t.toml")).unwrap();
        let table = RouteTable::from_config(&config);
        let route = |raw: &str| {
            let raw = raw.replace('\n', "\r\n") + "\r\n";
            match crate::http::parse_request(raw.as_bytes(), &Default::default()).unwrap() {
                crate::http::Status::Complete(head) => {
                    table.route_request(&head).and_then(|r| r.upstream)
                }
                crate::http::Status::Partial => panic!("partial: {raw:?}"),
            }
        };
        let cases: &[(&str, Option<usize>)] = &[
            ("GET /api HTTP/1.1\nHost: a\n", Some(0)),
            // A condition beats a plain route at equal prefix and host.
            ("POST /api HTTP/1.1\nHost: a\nContent-Length: 0\n", Some(1)),
            ("GET /api/x HTTP/1.1\nHost: a\nX-Canary: 0\n", Some(2)),
            // Both conditioned routes hold: the earlier one wins.
            (
                "PUT /api HTTP/1.1\nHost: a\nX-Canary: 1\nContent-Length: 0\n",
                Some(1),
            ),
            // The longer prefix wins over conditions: `/api` (4) > `/` (1).
            ("GET /api/42 HTTP/1.1\nHost: a\n", Some(0)),
            // Only the regex route matches outside `/api`... none here.
            ("GET /other HTTP/1.1\nHost: a\n", None),
            // An exact host beats conditions at equal prefix.
            (
                "POST /api HTTP/1.1\nHost: h.example\nContent-Length: 0\n",
                Some(4),
            ),
            // All header conditions must hold.
            (
                "GET /api/v HTTP/1.1\nHost: a\nX-Ver: v2\nX-Env: blue\n",
                Some(5),
            ),
            (
                "GET /api/v HTTP/1.1\nHost: a\nX-Ver: v1\nX-Env: blue\n",
                Some(0),
            ),
            ("GET /api/v HTTP/1.1\nHost: a\nX-Ver: v3\n", Some(0)),
        ];
        for &(raw, want) in cases {
            assert_eq!(route(raw), want, "{raw:?}");
        }
        // The regex alone routes where no longer prefix competes.
        let src2 = src.replacen(
            "path_prefix = \"/api\"\nupstream = \"u0\"",
            "path_prefix = \"/x\"\nupstream = \"u0\"",
            1,
        );
        let table2 =
            RouteTable::from_config(&Config::from_toml_str(&src2, Path::new("t.toml")).unwrap());
        let raw = "GET /api/42?q=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let crate::http::Status::Complete(head) =
            crate::http::parse_request(raw.as_bytes(), &Default::default()).unwrap()
        else {
            panic!("partial")
        };
        // `/api` routes 1 and 2 do not hold; 3's regex does (query ignored).
        assert_eq!(
            table2.route_request(&head).and_then(|r| r.upstream),
            Some(3)
        );
    }

    #[test]
    fn same_prefix_with_different_conditions_is_not_a_duplicate() {
        let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [{ addr = \"10.0.0.1:80\" }]\n";
        let ok = format!("{base}[[routes]]\nupstream = \"a\"\n[[routes]]\nmethods = [\"GET\"]\nupstream = \"a\"\n");
        assert!(Config::from_toml_str(&ok, Path::new("t.toml")).is_ok());
        let dup = format!("{base}[[routes]]\nmethods = [\"GET\"]\nupstream = \"a\"\n[[routes]]\nmethods = [\"GET\"]\nupstream = \"a\"\n");
        let err = Config::from_toml_str(&dup, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("routes[1]"), "{err}");
    }

    #[test]
    fn strip_port_cases() {
        for (host, want) in [
            ("a.com", "a.com"),
            ("a.com:80", "a.com"),
            ("a.com.", "a.com"),
            ("a.com.:80", "a.com"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("[::1", "[::1"),
            ("", ""),
        ] {
            assert_eq!(strip_port(host), want, "{host:?}");
        }
    }
}
