//! What a route changes in or answers instead of the backend's response
//! (issue 12), end to end with the real proxy and real backends on
//! 127.0.0.1: `response_headers`, `$backend`, `host_rewrite = "backend"`
//! across a retry, `redirect` and `https_redirect`, `error_pages` and
//! `intercept_errors`; their `ringlb check` errors and their reload.

use std::io::Write as _;

use crate::admin::admin;
use crate::backend::{Backend, Reply, Resp};
use crate::client::{get, request, Headers, Response};
use crate::harness::{check_rejects, run_bin, wait_until, Proxy, TempDir, WAIT};
use crate::reload::rewrite;

/// Retries only, three attempts, no backoff, a budget that never refuses.
const RETRY_ELSEWHERE: &[&str] = &[
    "passive_fall = 0",
    "[upstreams.app.retry]",
    "attempts = 3",
    "budget = 1.0",
    "backoff = \"0s\"",
];

fn reload_ok(proxy: &Proxy) {
    let r = admin(proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
}

fn reload_refused(proxy: &Proxy, key: &str) {
    let r = admin(proxy, "POST", "/reload");
    assert_ne!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().contains(key), "{key} not in {}", r.body_str());
}

/// `ringlb check` on `text` fails naming `want` (file:line:col: key: ...).
fn check_fails(dir: &TempDir, text: &str, want: &str) {
    check_rejects(dir, text, want);
}

const BASE: &str = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.app]\n\
                    backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\n";

// ---------------------------------------------------------------- headers

#[test]
fn response_headers_are_set_added_and_removed_with_variables() {
    let backend = Backend::fixed(
        Resp::new(200)
            .header("Server", "backend/1.0")
            .header("X-Powered-By", "php")
            .header("X-Tag", "from-backend")
            .body("hello"),
    );
    let proxy = Proxy::with_route(backend.addr, &["response_headers = { set = { Server = \"ringlb\", X-Served-By = \"$backend\", X-Info = \"r$route/$upstream/$scheme/$host/$client_ip/$request_id\" }, add = { X-Tag = \"gw\" }, remove = [\"X-Powered-By\"] }"])
        .start();
    for method in ["GET", "HEAD"] {
        let resp = proxy.client().roundtrip(&request(
            method,
            "/",
            &[("Host", "h.example"), ("X-Request-ID", "rid-7")],
            b"",
        ));
        assert_eq!(resp.status, 200, "{method}");
        let backend_addr = backend.addr.to_string();
        assert_eq!(resp.header("server"), Some("ringlb"), "{method}");
        assert_eq!(resp.header("x-served-by"), Some(backend_addr.as_str()));
        assert_eq!(
            resp.header("x-info"),
            Some("r0/app/http/h.example/127.0.0.1/rid-7")
        );
        assert_eq!(resp.headers_named("x-tag"), ["from-backend", "gw"]);
        assert_eq!(resp.header("x-powered-by"), None);
        // Framing is the proxy's: untouched by the edits.
        assert_eq!(resp.header("content-length"), Some("5"), "{method}");
        if method == "GET" {
            assert_eq!(resp.body_str(), "hello");
        }
    }
}

#[test]
fn response_headers_are_reloaded() {
    let backend = Backend::named("a");
    let proxy = Proxy::with_route(
        backend.addr,
        &["response_headers = { set = { X-Stage = \"one\" } }"],
    )
    .admin()
    .start();
    let stage = || {
        let resp = proxy.client().roundtrip(&get("/"));
        resp.header("x-stage").unwrap_or("").to_string()
    };
    assert_eq!(stage(), "one");
    rewrite(&proxy, |t| t.replace("\"one\"", "\"two $backend\""));
    reload_ok(&proxy);
    let want = format!("two {}", backend.addr);
    assert!(wait_until(WAIT, || (0..4).all(|_| stage() == want)));
    // A framing field is refused and the running edits stay.
    rewrite(&proxy, |t| t.replace("X-Stage", "Transfer-Encoding"));
    reload_refused(&proxy, "routes[0].response_headers.set.Transfer-Encoding");
    assert_eq!(stage(), want);
}

/// `host_rewrite = "backend"` and a `$backend` request header name the
/// backend of each attempt: a retry on another backend replaces both.
#[test]
fn backend_host_and_variable_follow_a_retry() {
    const N: usize = 12;
    let failing = Backend::fixed(Resp::new(502).body("a"));
    let echo = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("app", &[failing.addr, echo.addr], RETRY_ELSEWHERE)
        .route_with(
            "/",
            None,
            "app",
            &[
                "host_rewrite = \"backend\"",
                "request_headers = { set = { X-To = \"at $backend of $upstream\" } }",
                "response_headers = { set = { X-Served-By = \"$backend\" } }",
            ],
        )
        .start();
    for i in 0..N {
        let resp = proxy.client().roundtrip(&request(
            "GET",
            &format!("/r{i}"),
            &[("Host", "public.example"), ("X-To", "spoofed")],
            b"",
        ));
        let body = resp.body_str();
        assert_eq!(resp.status, 200, "{body}");
        for want in [
            format!("header host: {}\n", echo.addr),
            format!("header x-to: at {} of app\n", echo.addr),
            "header x-forwarded-host: public.example\n".to_string(),
        ] {
            assert!(body.contains(&want), "no {want:?} in:\n{body}");
        }
        assert_eq!(body.matches("header host:").count(), 1, "{body}");
        assert!(!body.contains("spoofed"), "{body}");
        let echo_addr = echo.addr.to_string();
        assert_eq!(resp.header("x-served-by"), Some(echo_addr.as_str()));
    }
    let first_attempts = failing.proxied();
    assert!(
        !first_attempts.is_empty(),
        "the failing backend never got a first attempt: nothing was retried"
    );
    let failing_addr = failing.addr.to_string();
    for r in &first_attempts {
        assert_eq!(r.header("host"), Some(failing_addr.as_str()), "{r:?}");
        assert_eq!(
            r.headers_named("x-to"),
            [format!("at {failing_addr} of app").as_str()]
        );
    }
    assert_eq!(echo.proxied_count(), N);
}

/// An HTTP/1.0 request without Host still gets its backend's (the same
/// per-attempt fields), and a plain route keeps the client's Host.
#[test]
fn host_is_kept_by_default_and_named_for_http10_without_host() {
    let echo = Backend::echo();
    let proxy = Proxy::with_route(
        echo.addr,
        &["request_headers = { add = { X-B = \"$backend\" } }"],
    )
    .start();
    let mut c = proxy.client();
    c.send(b"GET /ten HTTP/1.0\r\n\r\n");
    let body = c.read_response().body_str();
    assert!(
        body.contains(&format!("header host: {}\n", echo.addr)),
        "{body}"
    );
    assert!(
        body.contains(&format!("header x-b: {}\n", echo.addr)),
        "{body}"
    );
    let body = proxy
        .client()
        .roundtrip(&request("GET", "/", &[("Host", "kept.example")], b""))
        .body_str();
    assert!(body.contains("header host: kept.example\n"), "{body}");
}

// -------------------------------------------------------------- redirects

fn location(resp: &Response) -> String {
    resp.header("location").unwrap_or("").to_string()
}

#[test]
fn routes_answer_redirects_without_a_backend() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .tls_listener(crate::tls::SERVER_TLS)
        .upstream("app", &[backend.addr], &[])
        // A rewrite and a redirect on one route: the redirect sees the
        // rewritten path.
        .route_with(
            "/old/",
            None,
            "",
            &[
                "strip_prefix = \"/old\"",
                "add_prefix = \"/v2\"",
                "redirect = { to = \"$scheme://new.example$path$query\", status = 301 }",
            ],
        )
        .route_with("/tmp", None, "", &["redirect = { to = \"/elsewhere\" }"])
        .route_with("/secure/", None, "app", &["https_redirect = true"])
        .route("/", None, "app")
        .start();
    let ask = |method: &str, target: &str| {
        proxy
            .client()
            .roundtrip(&request(method, target, &[("Host", "h.example:8080")], b""))
    };
    let r = ask("GET", "/old/a/b?x=1&y");
    assert_eq!(r.status, 301, "{}", r.body_str());
    assert_eq!(location(&r), "http://new.example/v2/a/b?x=1&y");
    // Nothing of a keep-alive GET is left to read: the connection stays.
    assert!(!r.closes());
    let r = ask("GET", "/tmpfile");
    assert_eq!((r.status, location(&r)), (302, "/elsewhere".to_string()));
    // https_redirect keeps the path and query, drops the port (443).
    let r = ask("POST", "/secure/form?id=3");
    assert_eq!(r.status, 308, "{}", r.body_str());
    assert_eq!(location(&r), "https://h.example/secure/form?id=3");
    // HEAD: the same head, no body.
    let mut c = proxy.client();
    c.send(&request("HEAD", "/old/x", &[("Host", "h")], b""));
    let r = c.read_response_to("HEAD");
    assert_eq!(
        (r.status, location(&r)),
        (301, "http://new.example/v2/x".into())
    );
    // The connection stays, and the next response follows the head at
    // once: a body after a HEAD reply would be read as its start.
    c.send(&request("GET", "/plain", &[("Host", "h")], b""));
    assert_eq!(c.read_response_to("GET").status, 200);
    // Plain paths still reach the backend; no redirect did.
    assert_eq!(backend.proxied_count(), 1);
    assert_eq!(ask("GET", "/plain").status, 200);
    assert_eq!(backend.proxied_count(), 2);

    // Over TLS, https_redirect passes and the route forwards.
    let mut tls = crate::tls::connect(proxy.tls_addr.unwrap(), "localhost");
    tls.write_all(&get("/secure/x")).unwrap();
    let (status, head, body) = crate::tls::read_response(&mut tls).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("target /secure/x"));
    // ... and a redirect route answers there too, with its scheme.
    tls.write_all(&request("GET", "/old/y", &[("Host", "h")], b""))
        .unwrap();
    let (status, head, _) = crate::tls::read_response(&mut tls).unwrap();
    assert_eq!(status, 301, "{head}");
    assert!(
        head.contains("Location: https://new.example/v2/y\r\n"),
        "{head}"
    );
}

/// `https_redirect` on a plain listener answers every request on it
/// before routing; set by a reload, and refused on a TLS listener.
#[test]
fn listener_https_redirect_is_reloaded() {
    let backend = Backend::named("a");
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route("/api/", None, "app")
        .start();
    let ask = |target: &str| {
        proxy
            .client()
            .roundtrip(&request("GET", target, &[("Host", "example.com")], b""))
    };
    assert_eq!(ask("/api/x").status, 200);
    let port = proxy.addr.port();
    rewrite(&proxy, |t| {
        t.replace(
            &format!("listen = [\"127.0.0.1:{port}\"]"),
            &format!("listen = [{{ addr = \"127.0.0.1:{port}\", https_redirect = true }}]"),
        )
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || ask("/api/x").status == 308));
    // Before routing: a path no route has is redirected too.
    for target in ["/api/x?q=1", "/nowhere"] {
        let r = ask(target);
        assert_eq!(r.status, 308);
        assert_eq!(location(&r), format!("https://example.com{target}"));
    }
    // HTTP/1.0 without Host: no name to send it to.
    let mut c = proxy.client();
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400, "{}", r.body_str());
    assert!(r.body_str().contains("no Host"), "{}", r.body_str());
    let before = backend.proxied_count();
    rewrite(&proxy, |t| {
        t.replace("https_redirect = true", "https_redirect = false")
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || ask("/api/x").status == 200));
    assert!(backend.proxied_count() > before);
}

/// `host_rewrite = "backend"`, a route's `https_redirect` and `redirect`
/// each come and go by reload; a bad redirect is refused and the running
/// one stays.
#[test]
fn host_rewrite_and_redirects_are_reloaded() {
    let echo = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[echo.addr], &[])
        .route_with("/r/", None, "app", &["host_rewrite = \"name.example\""])
        .start();
    let ask = |target: &str| {
        proxy
            .client()
            .roundtrip(&request("GET", target, &[("Host", "client.example")], b""))
    };
    let host_seen = || {
        let body = ask("/r/x").body_str();
        body.lines()
            .find_map(|l| l.strip_prefix("header host: "))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(host_seen(), "name.example");
    rewrite(&proxy, |t| t.replace("\"name.example\"", "\"backend\""));
    reload_ok(&proxy);
    let backend_host = echo.addr.to_string();
    assert!(wait_until(WAIT, || (0..4).all(|_| host_seen() == backend_host)));

    rewrite(&proxy, |t| {
        t.replace("host_rewrite = \"backend\"", "https_redirect = true")
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || (0..4).all(|_| ask("/r/x").status == 308)));
    assert_eq!(location(&ask("/r/x?a")), "https://client.example/r/x?a");

    rewrite(&proxy, |t| {
        t.replace(
            "upstream = \"app\"\nhttps_redirect = true",
            "redirect = { to = \"/new$path\" }",
        )
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || (0..4).all(|_| ask("/r/x").status == 302)));
    assert_eq!(location(&ask("/r/x?a")), "/new/r/x");
    rewrite(&proxy, |t| {
        t.replace("\"/new$path\" }", "\"/new$path\", status = 303 }")
    });
    reload_refused(&proxy, "routes[0].redirect.status");
    assert_eq!(location(&ask("/r/y")), "/new/r/y");
}

#[test]
fn check_reports_bad_redirects() {
    let dir = TempDir::new();
    for (route, want) in [
        (
            "upstream = \"app\"\nredirect = { to = \"/x\" }\n",
            ":6:12: routes[0].upstream: a route with `redirect` answers itself",
        ),
        (
            "redirect = { to = \"/x\", status = 303 }\n",
            ":6:34: routes[0].redirect.status: 303 is not a redirect status",
        ),
        (
            "redirect = { to = \"ftp://x\" }\n",
            ":6:19: routes[0].redirect.to: ",
        ),
        (
            "redirect = { to = \"/$backend\" }\n",
            ":6:19: routes[0].redirect.to: unknown variable $backend",
        ),
        (
            "redirect = { to = \"/x\" }\nhttps_redirect = true\n",
            ":7:18: routes[0].https_redirect: ",
        ),
        (
            "redirect = { to = \"/x\" }\nresponse_headers = { set = { A = \"b\" } }\n",
            ":7:20: routes[0].response_headers: ",
        ),
        (
            "path_prefix = \"/\"\n",
            ":5:1: routes[0].upstream: missing field",
        ),
    ] {
        check_fails(&dir, &format!("{BASE}{route}"), want);
    }
    check_fails(
        &dir,
        &(BASE.replace(
            "listen = [\"127.0.0.1:1\"]",
            "listen = [{ addr = \"127.0.0.1:1\", https_redirect = true, tls = { cert = \"c\", key = \"k\" } }]",
        ) + "upstream = \"app\"\n"),
        ":2:52: server.listen[0].https_redirect: https_redirect is for a plain HTTP listener",
    );
    // A redirect route without upstream checks, and `check` says so.
    let good = dir.write(
        "good.toml",
        &format!("{BASE}redirect = {{ to = \"/x\" }}\n"),
    );
    let out = run_bin(&["check", "--config", good.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("path / -> redirect 302"), "{text}");
    let listener = dir.write(
        "listener.toml",
        &(BASE.replace(
            "listen = [\"127.0.0.1:1\"]",
            "listen = [{ addr = \"127.0.0.1:1\", https_redirect = true }]",
        ) + "upstream = \"app\"\nhttps_redirect = true\n"),
    );
    let out = run_bin(&["check", "--config", listener.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("listen: 127.0.0.1:1 (https_redirect)"),
        "{text}"
    );
    assert!(text.contains("path / (https_redirect) -> app"), "{text}");
}

// ------------------------------------------------------------ error pages

const JSON_503: &str = "{\"error\":\"service unavailable\",\"status\":$status,\"request_id\":\"$request_id\",\"reason\":\"$reason\"}";

/// Server pages for replies made before and after routing, a route's page
/// over the server's, `HEAD` without a body.
#[test]
fn error_pages_replace_the_proxys_own_replies() {
    let pages = TempDir::new();
    let page_502 = pages.write("502.html", "<h1>$status: down for a moment</h1>\n");
    let refused = crate::harness::Refused::new();
    let proxy = Proxy::builder()
        .server(&format!(
            "error_pages = [{{ status = [404, 400], text = '{{\"error\":\"$reason\",\"status\":$status,\"request_id\":\"$request_id\"}}', content_type = \"application/json\" }}, {{ status = [502, 504], file = \"{}\", content_type = \"text/html\" }}]",
            page_502.display()
        ))
        .upstream("app", &[refused.addr], &[])
        .upstream("other", &[refused.addr], &[])
        .route("/down/", None, "app")
        .route_with(
            "/own/",
            None,
            "other",
            &[&format!(
                "error_pages = [{{ status = [502, 503], text = '{JSON_503}', content_type = \"application/json\" }}]"
            )],
        )
        .start();
    // 404 (no route): the server's JSON with the request id.
    let r = proxy.client().roundtrip(&request(
        "GET",
        "/nothing",
        &[("X-Request-ID", "abc-1")],
        b"",
    ));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.body_str(),
        "{\"error\":\"no route for this host and path\",\"status\":404,\"request_id\":\"abc-1\"}"
    );
    assert_eq!(r.header("x-request-id"), Some("abc-1"));
    // 400 on a bad head, before any route: the server's page.
    let r = proxy
        .client()
        .roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(
        r.body_str().starts_with("{\"error\":\""),
        "{}",
        r.body_str()
    );
    assert!(r.body_str().contains("\"status\":400"), "{}", r.body_str());
    // 502 from the upstream: the server's file.
    let r = proxy.client().roundtrip(&get("/down/x"));
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.body_str(), "<h1>502: down for a moment</h1>\n");
    // The route's page beats the server's.
    let r = proxy
        .client()
        .roundtrip(&request("GET", "/own/x", &[("X-Request-ID", "r-9")], b""));
    assert_eq!(r.status, 502);
    assert_eq!(
        r.body_str(),
        "{\"error\":\"service unavailable\",\"status\":502,\"request_id\":\"r-9\",\"reason\":\"upstream connect failed\"}"
    );
    let get_len = r.body.len();
    // HEAD: the head says the length, no body follows.
    let mut c = proxy.client();
    c.send(&request("HEAD", "/own/x", &[("X-Request-ID", "r-9")], b""));
    let r = c.read_response_to("HEAD");
    assert_eq!(r.status, 502);
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, get_len, "the GET body's length");
    assert!(
        c.read_until_closed().is_empty(),
        "a body after a HEAD reply"
    );
    // A status without a page keeps the standard text.
    let r = proxy
        .client()
        .roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(r.status, 501);
    assert!(
        r.body_str().starts_with("501 Not Implemented: "),
        "{}",
        r.body_str()
    );
}

/// A backend's own error with an intercepted status is replaced by the
/// page, its body discarded with its connection (never pooled); other
/// statuses pass through.
#[test]
fn intercepted_backend_errors_get_the_page_and_a_fresh_connection() {
    let backend = Backend::start(|req| {
        let status = match req.target.as_str() {
            "/fail" => 500,
            "/missing" => 404,
            _ => 200,
        };
        Reply::from(
            Resp::new(status)
                .header("X-Secret", "stack")
                .body(format!("backend body {status} {}", "x".repeat(5000))),
        )
    });
    let proxy = Proxy::builder()
        .workers(1)
        .upstream("app", &[backend.addr], &[])
        .route_with(
            "/",
            None,
            "app",
            &[
                "intercept_errors = [500]",
                "error_pages = [{ status = [500], text = 'sorry ($status, $request_id)' }]",
            ],
        )
        .start();
    let r = proxy.client().roundtrip(&get("/ok"));
    assert_eq!(r.status, 200);
    let r = proxy
        .client()
        .roundtrip(&request("GET", "/fail", &[("X-Request-ID", "q1")], b""));
    assert_eq!(r.status, 500);
    assert_eq!(r.body_str(), "sorry (500, q1)");
    assert_eq!(r.header("x-secret"), None);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // Not intercepted: relayed as it came.
    let r = proxy.client().roundtrip(&get("/missing"));
    assert_eq!(r.status, 404);
    assert!(r.body_str().starts_with("backend body 404"));
    assert_eq!(r.header("x-secret"), Some("stack"));
    let r = proxy.client().roundtrip(&get("/ok"));
    assert_eq!(r.status, 200);
    // The connection that carried the intercepted 500 was not reused.
    let seen = backend.proxied();
    let conn_of = |target: &str| -> Vec<usize> {
        seen.iter()
            .filter(|r| r.target == target)
            .map(|r| r.conn)
            .collect()
    };
    let fail_conn = conn_of("/fail")[0];
    let after: Vec<usize> = seen
        .iter()
        .skip_while(|r| r.target != "/fail")
        .skip(1)
        .map(|r| r.conn)
        .collect();
    assert_eq!(after.len(), 2, "{seen:?}");
    assert!(
        after.iter().all(|c| *c != fail_conn),
        "the intercepted response's connection was reused: {seen:?}"
    );
    // The 404's connection went back to the pool as usual.
    assert_eq!(conn_of("/missing"), [after[1]].to_vec());
}

#[test]
fn error_pages_are_reloaded_and_a_missing_file_is_refused() {
    let pages = TempDir::new();
    let page = pages.write("404.txt", "first $status\n");
    let backend = Backend::start(|req| {
        let status = if req.target.ends_with("/fail") {
            500
        } else {
            200
        };
        Reply::text(status, &format!("backend {status}"))
    });
    let proxy = Proxy::builder()
        .admin()
        .server(&format!(
            "error_pages = [{{ status = [404], file = \"{}\" }}]",
            page.display()
        ))
        // Its 500s must not eject it (passive health counts them).
        .upstream("app", &[backend.addr], &["passive_fall = 0"])
        .route("/app/", None, "app")
        .start();
    let body = || proxy.client().roundtrip(&get("/none")).body_str();
    assert_eq!(body(), "first 404\n");
    // The file is read at load: a change shows after a reload.
    std::fs::write(&page, "second $status\n").unwrap();
    assert_eq!(body(), "first 404\n");
    // Touch the config so the reload is not a no-op on its text.
    rewrite(&proxy, |t| t + "\n# reloaded\n");
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || (0..4).all(|_| body() == "second 404\n")));
    // A route's own page and intercept, by reload.
    let fail = || proxy.client().roundtrip(&get("/app/fail")).body_str();
    assert_eq!(fail(), "backend 500");
    rewrite(&proxy, |t| {
        t.replace(
            "path_prefix = \"/app/\"",
            "path_prefix = \"/app/\"\nerror_pages = [{ status = [500], text = \"route page\" }]\nintercept_errors = [500]",
        )
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || (0..4).all(|_| fail() == "route page")));
    // A missing file is refused, naming the key; the running pages stay.
    rewrite(&proxy, |t| t.replace("404.txt", "gone.txt"));
    reload_refused(&proxy, "server.error_pages[0].file");
    assert_eq!(body(), "second 404\n");
}

#[test]
fn check_reports_bad_error_pages() {
    let dir = TempDir::new();
    let big = dir.write("big.html", &"x".repeat(64 * 1024 + 1));
    for (route, want) in [
        (
            "upstream = \"app\"\nerror_pages = [{ status = [404], file = \"missing.html\" }]\n",
            ":7:41: routes[0].error_pages[0].file: cannot read ",
        ),
        (
            &format!(
                "upstream = \"app\"\nerror_pages = [{{ status = [404], file = \"{}\" }}]\n",
                big.display()
            ),
            ":7:41: routes[0].error_pages[0].file: ",
        ),
        (
            "upstream = \"app\"\nerror_pages = [{ status = [200], text = \"x\" }]\n",
            ":7:28: routes[0].error_pages[0].status[0]: 200 has no page",
        ),
        (
            "upstream = \"app\"\nerror_pages = [{ status = [404], text = \"x\", file = \"y\" }]\n",
            ":7:41: routes[0].error_pages[0].text: give `file` or `text`, not both",
        ),
        (
            "upstream = \"app\"\nerror_pages = [{ status = [404], text = \"$client_ip\" }]\n",
            ":7:41: routes[0].error_pages[0].text: unknown variable $client_ip",
        ),
        (
            "upstream = \"app\"\nerror_pages = [{ status = [404, 404], text = \"x\" }]\n",
            ":7:33: routes[0].error_pages[0].status[1]: a second page for 404",
        ),
        (
            "upstream = \"app\"\nintercept_errors = [500]\n",
            ":7:21: routes[0].intercept_errors[0]: no error page for 500",
        ),
        (
            "upstream = \"app\"\nintercept_errors = [302]\n",
            ":7:21: routes[0].intercept_errors[0]: 302 is not an error status",
        ),
        (
            "upstream = \"app\"\nresponse_headers = { add = { Connection = \"x\" } }\n",
            ":7:43: routes[0].response_headers.add.Connection: Connection carries framing",
        ),
    ] {
        check_fails(&dir, &format!("{BASE}{route}"), want);
    }
    check_fails(
        &dir,
        &(BASE.replace(
            "listen = [\"127.0.0.1:1\"]",
            "listen = [\"127.0.0.1:1\"]\nerror_pages = [{ status = [503], text = \"x\", content_type = \"a\\nb\" }]",
        ) + "upstream = \"app\"\n"),
        ":3:61: server.error_pages[0].content_type: ",
    );
    // A server page serves a route's intercept.
    let good = dir.write(
        "good.toml",
        &(BASE.replace(
            "listen = [\"127.0.0.1:1\"]",
            "listen = [\"127.0.0.1:1\"]\nerror_pages = [{ status = [503], text = \"x\" }]",
        ) + "upstream = \"app\"\nintercept_errors = [503]\n"),
    );
    let out = run_bin(&["check", "--config", good.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
