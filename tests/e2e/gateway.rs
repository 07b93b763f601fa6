//! Gateway features of a route (issue 12), end to end: the real proxy and
//! real backends on 127.0.0.1. Matching by `methods`, `headers` and
//! `path_regex`, their precedence, `ringlb check` errors, and reload.

use crate::admin::admin;
use crate::backend::{Backend, Reply};
use crate::client::{get, request};
use crate::harness::{check_rejects, run_bin, wait_until, Proxy, TempDir, WAIT};
use crate::reload::rewrite;

fn named(name: &'static str) -> Backend {
    Backend::start(move |_| Reply::text(200, name))
}

/// The body (a backend's name) and status of one request on a new connection.
fn ask(proxy: &Proxy, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let body: &[u8] = b"";
    let mut h = headers.to_vec();
    if method == "POST" || method == "PUT" {
        h.push(("Content-Length", "0"));
    }
    let resp = proxy.client().roundtrip(&request(method, target, &h, body));
    (resp.status, resp.body_str())
}

/// Method, target, headers, then the status and backend wanted.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
    &'static str,
);

#[test]
fn routes_match_on_methods_headers_and_path_regex() {
    let (plain, writes, canary, ids, beta) = (
        named("plain"),
        named("writes"),
        named("canary"),
        named("ids"),
        named("beta"),
    );
    let proxy = Proxy::builder()
        .upstream("plain", &[plain.addr], &[])
        .upstream("writes", &[writes.addr], &[])
        .upstream("canary", &[canary.addr], &[])
        .upstream("ids", &[ids.addr], &[])
        .upstream("beta", &[beta.addr], &[])
        .route("/api", None, "plain")
        .route_with("/api", None, "writes", &["methods = [\"POST\", \"PUT\"]"])
        .route_with("/api", None, "canary", &["headers = [{ name = \"X-Canary\" }]"])
        .route_with(
            "/",
            None,
            "ids",
            &["path_regex = \"^/users/[0-9]+$\""],
        )
        .route_with(
            "/api",
            None,
            "beta",
            &["headers = [{ name = \"X-Env\", value = \"beta\" }, { name = \"X-Ver\", regex = \"^v[2-9]$\" }]"],
        )
        .start();
    let cases: &[Case] = &[
        ("GET", "/api/x", &[], 200, "plain"),
        ("POST", "/api/x", &[], 200, "writes"),
        ("PUT", "/api", &[], 200, "writes"),
        ("DELETE", "/api", &[], 200, "plain"),
        ("GET", "/api/x", &[("X-Canary", "")], 200, "canary"),
        // Two conditioned routes hold: the earlier in the file wins.
        ("POST", "/api/x", &[("X-Canary", "1")], 200, "writes"),
        ("GET", "/users/42?full=1", &[], 200, "ids"),
        ("GET", "/users/abc", &[], 404, ""),
        (
            "GET",
            "/api",
            &[("X-Env", "beta"), ("X-Ver", "v3")],
            200,
            "beta",
        ),
        (
            "GET",
            "/api",
            &[("X-Env", "beta"), ("X-Ver", "v1")],
            200,
            "plain",
        ),
        (
            "GET",
            "/api",
            &[("X-Env", "Beta"), ("X-Ver", "v3")],
            200,
            "plain",
        ),
    ];
    for &(method, target, headers, status, body) in cases {
        let (got_status, got_body) = ask(&proxy, method, target, headers);
        assert_eq!(
            got_status, status,
            "{method} {target} {headers:?}: {got_body}"
        );
        if status == 200 {
            assert_eq!(got_body, body, "{method} {target} {headers:?}");
        }
    }
    assert_eq!(ids.request_count(), 1, "the regex route's backend");
}

#[test]
fn route_conditions_are_reloaded() {
    let (a, b) = (named("a"), named("b"));
    let proxy = Proxy::builder()
        .admin()
        .upstream("a", &[a.addr], &[])
        .upstream("b", &[b.addr], &[])
        .route("/", None, "a")
        .route_with("/", None, "b", &["methods = [\"DELETE\"]"])
        .start();
    assert_eq!(ask(&proxy, "DELETE", "/x", &[]), (200, "b".into()));
    assert_eq!(ask(&proxy, "GET", "/v/7", &[]), (200, "a".into()));
    rewrite(&proxy, |t| {
        t.replace("methods = [\"DELETE\"]", "path_regex = \"^/v/[0-9]$\"")
    });
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(wait_until(WAIT, || {
        (0..4).all(|_| ask(&proxy, "GET", "/v/7", &[]) == (200, "b".into()))
    }));
    assert_eq!(ask(&proxy, "DELETE", "/x", &[]), (200, "a".into()));
    // A bad pattern is refused and the running config stays.
    rewrite(&proxy, |t| t.replace("^/v/[0-9]$", "(/v"));
    let r = admin(&proxy, "POST", "/reload");
    assert_ne!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().contains("path_regex"), "{}", r.body_str());
    assert_eq!(ask(&proxy, "GET", "/v/7", &[]), (200, "b".into()));
}

/// `ringlb check` names file, line, column and key for each bad condition.
#[test]
fn check_reports_bad_route_conditions() {
    let dir = TempDir::new();
    let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.app]\n\
                backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"app\"\n";
    for (line, want) in [
        (
            "path_regex = \"a(\"",
            ":7:14: routes[0].path_regex: invalid regex",
        ),
        ("methods = [\"G T\"]", ":7:12: routes[0].methods[0]: "),
        (
            "headers = [{ name = \"X\", value = \"1\", regex = \"1\" }]",
            ":7:47: routes[0].headers[0].regex: ",
        ),
        ("headers = [{ nam = \"X\" }]", ":7:"),
    ] {
        check_rejects(&dir, &format!("{base}{line}\n"), want);
    }
    let good = dir.write(
        "good.toml",
        &format!("{base}methods = [\"GET\"]\npath_regex = \"^/a\"\n"),
    );
    let out = run_bin(&["check", "--config", good.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("path / methods GET path_regex \"^/a\" -> app"),
        "{text}"
    );
}

/// What the echo backend saw: its `target` and `host` lines.
fn echoed(proxy: &Proxy, target: &str, host: &str) -> (u16, String, String) {
    let resp = proxy
        .client()
        .roundtrip(&request("GET", target, &[("Host", host)], b""));
    let body = resp.body_str();
    let line = |key: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .to_string()
    };
    (resp.status, line("target "), line("header host: "))
}

#[test]
fn path_and_host_rewrites_reach_the_backend() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route_with(
            "/api/",
            None,
            "app",
            &[
                "strip_prefix = \"/api\"",
                "replace_prefix = { from = \"/v1/\", to = \"/legacy/\" }",
                "add_prefix = \"/svc\"",
                "host_rewrite = \"internal.svc:8080\"",
            ],
        )
        .route_with(
            "/users/",
            None,
            "app",
            &["regex_rewrite = { pattern = '^/users/(?P<id>[0-9]+)/(\\w+)$', substitution = '/profile/$2/${id}' }"],
        )
        .route_with(
            "/big/",
            None,
            "app",
            &["regex_rewrite = { pattern = '^(.*)$', substitution = '/$1$1$1$1$1$1$1$1' }"],
        )
        .route("/", None, "app")
        .start();
    let cases = [
        (
            "/api/v1/a?q=1&r",
            "/svc/legacy/a?q=1&r",
            "internal.svc:8080",
        ),
        ("/api/v2/b", "/svc/v2/b", "internal.svc:8080"),
        (
            "/users/42/posts?page=2",
            "/profile/posts/42?page=2",
            "public.example",
        ),
        ("/users/x/posts", "/users/x/posts", "public.example"),
        ("/plain?x", "/plain?x", "public.example"),
    ];
    for (target, want_target, want_host) in cases {
        let (status, got_target, got_host) = echoed(&proxy, target, "public.example");
        assert_eq!(
            (status, got_target.as_str(), got_host.as_str()),
            (200, want_target, want_host),
            "{target}"
        );
    }
    // A result longer than the proxy forwards: 500, the backend not asked.
    let before = backend.request_count();
    let long = format!("/big/{}", "a".repeat(2000));
    let resp = proxy
        .client()
        .roundtrip(&request("GET", &long, &[("Host", "h")], b""));
    assert_eq!(resp.status, 500, "{}", resp.body_str());
    assert!(
        resp.body_str().contains("path rewrite"),
        "{}",
        resp.body_str()
    );
    assert_eq!(backend.request_count(), before);

    // Reload: the rewrite changes for the next request.
    rewrite(&proxy, |t| {
        t.replace("add_prefix = \"/svc\"", "add_prefix = \"/svc2\"")
    });
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(wait_until(WAIT, || {
        (0..4).all(|_| echoed(&proxy, "/api/v2/b", "h").1 == "/svc2/v2/b")
    }));
}

#[test]
fn check_reports_bad_rewrites() {
    let dir = TempDir::new();
    let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.app]\n\
                backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"app\"\n";
    for (line, want) in [
        ("strip_prefix = \"api\"", ":7:16: routes[0].strip_prefix: "),
        ("add_prefix = \"/a b\"", ":7:14: routes[0].add_prefix: "),
        (
            "replace_prefix = { from = \"/a\", to = \"/b?x\" }",
            ":7:38: routes[0].replace_prefix.to: ",
        ),
        (
            "regex_rewrite = { pattern = \"(\", substitution = \"/x\" }",
            ":7:29: routes[0].regex_rewrite.pattern: invalid regex",
        ),
        (
            "regex_rewrite = { pattern = \"^/(.*)\", substitution = \"$1\" }",
            ":7:54: routes[0].regex_rewrite.substitution: ",
        ),
        ("host_rewrite = \"a b\"", ":7:16: routes[0].host_rewrite: "),
    ] {
        check_rejects(&dir, &format!("{base}{line}\n"), want);
    }
}

#[test]
fn request_headers_are_set_added_and_removed_with_variables() {
    let backend = Backend::echo();
    let proxy = Proxy::with_route(backend.addr, &["request_headers = { set = { X-Client = \"$client_ip\", X-Route = \"r$route/$upstream/$scheme/$host\" }, add = { X-Tag = \"gw\" }, remove = [\"X-Secret\", \"X-Forwarded-Proto\"] }"])
        .start();
    let resp = proxy.client().roundtrip(&request(
        "GET",
        "/",
        &[
            ("Host", "h.example"),
            ("X-Secret", "s"),
            ("X-Client", "spoofed"),
            ("X-Tag", "client"),
            ("X-Request-ID", "rid-1"),
        ],
        b"",
    ));
    let body = resp.body_str();
    assert_eq!(resp.status, 200, "{body}");
    for want in [
        "header x-client: 127.0.0.1\n",
        "header x-route: r0/app/http/h.example\n",
        "header x-tag: client\n",
        "header x-tag: gw\n",
    ] {
        assert!(body.contains(want), "no {want:?} in:\n{body}");
    }
    for gone in ["x-secret", "spoofed", "x-forwarded-proto"] {
        assert!(!body.contains(gone), "{gone:?} still in:\n{body}");
    }
}

#[test]
fn check_reports_bad_request_headers() {
    let dir = TempDir::new();
    let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.app]\n\
                backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"app\"\n";
    for (line, want) in [
        (
            "request_headers = { set = { Content-Length = \"1\" } }",
            "routes[0].request_headers.set.Content-Length: Content-Length carries framing",
        ),
        (
            "request_headers = { add = { host = \"x\" } }",
            "routes[0].request_headers.add.host: host carries framing or hop-by-hop meaning and cannot be changed (use host_rewrite)",
        ),
        (
            "request_headers = { remove = [\"Transfer-Encoding\"] }",
            "routes[0].request_headers.remove[0]: ",
        ),
        (
            "request_headers = { set = { X-B = \"$backends\" } }",
            "routes[0].request_headers.set.X-B: unknown variable $backends",
        ),
    ] {
        let text = check_rejects(&dir, &format!("{base}{line}\n"), ":7:");
        assert!(text.contains(want), "{line}: want {want:?} in:\n{text}");
    }
}

#[test]
fn request_headers_are_reloaded() {
    let backend = Backend::echo();
    let proxy = Proxy::with_route(
        backend.addr,
        &["request_headers = { set = { X-Stage = \"one\" } }"],
    )
    .admin()
    .start();
    let stage = || {
        let body = proxy.client().roundtrip(&get("/")).body_str();
        body.lines()
            .find_map(|l| l.strip_prefix("header x-stage: "))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(stage(), "one");
    rewrite(&proxy, |t| t.replace("\"one\"", "\"two-$scheme\""));
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(wait_until(WAIT, || (0..4).all(|_| stage() == "two-http")));
    // A forbidden name is refused and the running edits stay.
    rewrite(&proxy, |t| t.replace("X-Stage", "Connection"));
    let r = admin(&proxy, "POST", "/reload");
    assert_ne!(r.status, 200, "{}", r.body_str());
    assert_eq!(stage(), "two-http");
}
