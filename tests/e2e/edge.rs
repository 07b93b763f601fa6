//! Edge defence of issue 12, end to end (real proxy, real backends on
//! 127.0.0.0/8): `trusted_proxies`, `allow`/`deny` on routes and
//! listeners, `rate_limit` held across workers, `max_connections_per_ip`,
//! and CORS; each with its reload and its `ringlb check` errors.
//!
//! Clients from another address than 127.0.0.1 bind 127.0.0.2 before
//! connecting (all of 127.0.0.0/8 is loopback on Linux).

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use crate::admin::{admin, metric};
use crate::backend::{Backend, Reply, Resp};
use crate::client::{get, request, Client, Headers, Response, Wire};
use crate::harness::{check_rejects, wait_until, Proxy, Refused, TempDir, WAIT};
use crate::reload::rewrite;

/// A client connected to `to` from `from` (any port).
fn client_from(from: [u8; 4], to: SocketAddr) -> Client {
    try_client_from(from, to).unwrap_or_else(|e| panic!("connect {to} from {from:?}: {e}"))
}

fn try_client_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<Client> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect(&to.into())?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(Client {
        wire: Wire::new(stream),
    })
}

/// One GET with `headers` on a new connection from 127.0.0.1.
fn ask(proxy: &Proxy, target: &str, headers: &[(&str, &str)]) -> Response {
    proxy
        .client()
        .roundtrip(&request("GET", target, headers, b""))
}

/// The value of `header NAME: ` in the echo backend's body.
fn echoed(resp: &Response, name: &str) -> String {
    let key = format!("header {name}: ");
    resp.body_str()
        .lines()
        .filter_map(|l| l.strip_prefix(&key))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Runs `ringlb check` on each `base + line` and wants exit 1 and `want`
/// (after `FILE`) in its output.
fn check_errors(base: &str, cases: &[(&str, &str)]) {
    let dir = TempDir::new();
    for (line, want) in cases {
        check_rejects(&dir, &base.replace("LINE", line), want);
    }
}

fn reload_ok(proxy: &Proxy) {
    let r = admin(proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
}

// ---- trusted_proxies ----

#[test]
fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .server("trusted_proxies = [\"10.0.0.0/8\"]")
        .upstream("app", &[backend.addr], &[])
        .route_with(
            "/",
            None,
            "app",
            &["request_headers = { set = { X-Client = \"$client_ip\" } }"],
        )
        .route_with(
            "/private",
            None,
            "app",
            &["deny = [\"203.0.113.0/24\", \"2001:db8::/32\"]"],
        )
        .start();
    let spoof = [("X-Forwarded-For", "203.0.113.9")];
    // 127.0.0.1 is not trusted: its header is replaced, and it is the client.
    let r = ask(&proxy, "/", &spoof);
    assert_eq!(r.status, 200);
    assert_eq!(echoed(&r, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(echoed(&r, "x-client"), "127.0.0.1");
    assert_eq!(ask(&proxy, "/private", &spoof).status, 200);

    // Reload: loopback becomes a trusted proxy; the header now names the
    // client, for rules as for variables, and is appended to.
    rewrite(&proxy, |t| {
        t.replace("\"10.0.0.0/8\"", "\"10.0.0.0/8\", \"127.0.0.0/8\"")
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || {
        (0..4).all(|_| echoed(&ask(&proxy, "/", &spoof), "x-client") == "203.0.113.9")
    }));
    let r = ask(
        &proxy,
        "/",
        &[("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.1.1")],
    );
    assert_eq!(
        echoed(&r, "x-client"),
        "203.0.113.9",
        "trusted hops skipped"
    );
    assert_eq!(
        echoed(&r, "x-forwarded-for"),
        "198.51.100.1, 203.0.113.9, 10.1.1.1, 127.0.0.1"
    );
    let denied = ask(&proxy, "/private", &spoof);
    assert_eq!(denied.status, 403, "{}", denied.body_str());
    let v6 = ask(&proxy, "/private", &[("X-Forwarded-For", "2001:db8::7")]);
    assert_eq!(v6.status, 403, "{}", v6.body_str());
    assert_eq!(
        ask(&proxy, "/private", &[("X-Forwarded-For", "2001:db9::7")]).status,
        200
    );
    // The access log line and the warning name the chosen client.
    assert!(
        wait_until(WAIT, || proxy.stderr().contains("client=203.0.113.9")),
        "{}",
        proxy.stderr()
    );
}

// ---- allow / deny ----

#[test]
fn route_allow_and_deny_answer_403_and_reload() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route_with(
            "/internal",
            None,
            "app",
            &["allow = [\"10.0.0.0/8\", \"127.0.0.2\"]"],
        )
        .route_with(
            "/open",
            None,
            "app",
            &["deny = [\"127.0.0.2\"]", "allow = [\"127.0.0.0/8\"]"],
        )
        .route("/", None, "app")
        .start();
    let from = |ip: [u8; 4], target: &str| client_from(ip, proxy.addr).roundtrip(&get(target));
    let before = backend.proxied_count();
    let r = from([127, 0, 0, 1], "/internal/x");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body_str(),
        "403 Forbidden: client address denied by the route's access rules\n"
    );
    assert_eq!(
        backend.proxied_count(),
        before,
        "a denied request is not forwarded"
    );
    assert_eq!(from([127, 0, 0, 2], "/internal/x").status, 200);
    // Longest prefix wins: 127.0.0.2/32 denied inside an allowed /8.
    assert_eq!(from([127, 0, 0, 1], "/open").status, 200);
    assert_eq!(from([127, 0, 0, 2], "/open").status, 403);
    assert_eq!(from([127, 0, 0, 2], "/").status, 200);
    assert!(
        wait_until(WAIT, || proxy
            .stderr()
            .contains("denied by the route's access rules")),
        "the refusal is logged"
    );

    rewrite(&proxy, |t| {
        t.replace("\"10.0.0.0/8\", \"127.0.0.2\"", "\"127.0.0.1\"")
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || from([127, 0, 0, 1], "/internal")
        .status
        == 200));
    assert_eq!(from([127, 0, 0, 2], "/internal").status, 403);
    // A bad block is refused and the running rules stay.
    rewrite(&proxy, |t| {
        t.replace("[\"127.0.0.1\"]", "[\"127.0.0.1/8\"]")
    });
    let r = admin(&proxy, "POST", "/reload");
    assert_ne!(r.status, 200, "{}", r.body_str());
    assert!(
        r.body_str().contains("routes[0].allow[0]"),
        "{}",
        r.body_str()
    );
    assert_eq!(from([127, 0, 0, 2], "/internal").status, 403);
    assert_eq!(from([127, 0, 0, 1], "/internal").status, 200);
}

#[test]
fn listener_deny_closes_connections_at_once_and_reloads() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .listen_options("deny = [\"127.0.0.2\"]")
        .upstream("app", &[backend.addr], &[])
        .start();
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    let mut refused = client_from([127, 0, 0, 2], proxy.addr);
    // The request may or may not be written before the close; no answer.
    let _ = refused.try_send(&get("/"));
    assert!(refused.try_read_response_to("GET").is_err());
    assert_eq!(metric(&proxy, "ringlb_connections_denied_total"), 1.0);
    assert_eq!(backend.proxied_count(), 1);

    rewrite(&proxy, |t| {
        t.replace("deny = [\"127.0.0.2\"]", "allow = [\"127.0.0.2\"]")
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || {
        try_client_from([127, 0, 0, 2], proxy.addr)
            .and_then(|mut c| c.try_read_response_after(&get("/")))
            .is_ok_and(|r| r.status == 200)
    }));
    let mut now_refused = proxy.client();
    let _ = now_refused.try_send(&get("/"));
    assert!(now_refused.try_read_response_to("GET").is_err());
}

// ---- rate_limit ----

/// Statuses of `n` GETs, each on a new connection (so that both workers
/// take some: the kernel spreads connections over the `SO_REUSEPORT`
/// sockets by a hash of their ports).
fn statuses(proxy: &Proxy, n: usize, target: &str, headers: &[(&str, &str)]) -> Vec<Response> {
    (0..n).map(|_| ask(proxy, target, headers)).collect()
}

fn accepted(responses: &[Response]) -> usize {
    responses.iter().filter(|r| r.status == 200).count()
}

/// 2 workers, `rate = "1/m"`, `burst = 10`: the first 10 of 30 requests
/// pass and the other 20 get 429. Per-worker limits would let up to 20
/// through. Tolerance: one more per full minute the test took (the rate's
/// refill), so the bound holds on any machine speed.
#[test]
fn rate_limit_holds_for_the_process_not_per_worker() {
    const BURST: usize = 10;
    let backend = Backend::echo();
    let started = Instant::now();
    let proxy = Proxy::builder()
        .admin()
        .workers(2)
        .upstream("app", &[backend.addr], &[])
        .route_with(
            "/",
            None,
            "app",
            &["rate_limit = { rate = \"1/m\", burst = 10 }"],
        )
        .start();
    let responses = statuses(&proxy, 3 * BURST, "/", &[]);
    let slack = (started.elapsed().as_secs() / 60) as usize;
    let ok = accepted(&responses);
    assert!(
        (BURST..=BURST + slack).contains(&ok),
        "{ok} accepted, want {BURST} (+{slack})"
    );
    assert_eq!(backend.proxied_count(), ok);
    for r in responses.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429);
        assert_eq!(
            r.body_str(),
            "429 Too Many Requests: the route's rate limit is exceeded\n"
        );
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    let limited = metric(&proxy, "ringlb_rate_limited_total") as usize;
    assert_eq!(limited, 3 * BURST - ok);
    let text = admin(&proxy, "GET", "/metrics").body_str();
    assert!(
        text.contains(&format!(
            "ringlb_rate_limited_total{{route=\"0\"}} {limited}\n"
        )),
        "{text}"
    );
    assert!(proxy.stderr().contains("rate limit is exceeded"), "logged");
}

#[test]
fn rate_limit_by_header_keeps_keys_apart_and_survives_reload() {
    let backend = Backend::echo();
    let proxy = Proxy::with_route(
        backend.addr,
        &["rate_limit = { rate = \"1/h\", burst = 3, key = \"header:X-API-Key\" }"],
    )
    .admin()
    .start();
    let a = [("X-API-Key", "a")];
    assert_eq!(accepted(&statuses(&proxy, 5, "/", &a)), 3);
    assert_eq!(
        accepted(&statuses(&proxy, 5, "/", &[("X-API-Key", "b")])),
        3
    );
    // Without the field the client address is the key: its own budget.
    assert_eq!(accepted(&statuses(&proxy, 5, "/", &[])), 3);

    // A reload that keeps the route keeps its state: no new burst.
    rewrite(&proxy, |t| t.replace("burst = 3,", "burst = 3, "));
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || { crate::reload::version(&proxy) == 2 }));
    assert_eq!(accepted(&statuses(&proxy, 3, "/", &a)), 0);
    // A larger burst applies at once, from the kept state: 5 - 3 more.
    rewrite(&proxy, |t| t.replace("burst = 3, ", "burst = 5,"));
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || crate::reload::version(&proxy) == 3));
    assert_eq!(accepted(&statuses(&proxy, 5, "/", &a)), 2);
}

/// A request retried on another backend is one request for the limit.
#[test]
fn rate_limit_counts_a_retried_request_once() {
    let busy = Backend::fixed(Resp::new(503).body("busy"));
    let good = Backend::start(|_| Reply::text(200, "good"));
    let proxy = Proxy::builder()
        .admin()
        .upstream(
            "app",
            &[busy.addr, good.addr],
            &[
                "passive_fall = 0",
                "[upstreams.app.retry]",
                "attempts = 2",
                "on = [\"503\"]",
                "budget = 1.0",
                "backoff = \"0s\"",
            ],
        )
        .route_with(
            "/",
            None,
            "app",
            &["rate_limit = { rate = \"1/h\", burst = 6 }"],
        )
        .start();
    let responses = statuses(&proxy, 6, "/", &[]);
    assert!(
        responses
            .iter()
            .all(|r| r.status == 200 && r.body_str() == "good"),
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(busy.proxied_count() >= 1, "some requests were retried");
    assert!(metric(&proxy, "ringlb_retries_total") >= 1.0);
    assert_eq!(ask(&proxy, "/", &[]).status, 429);
}

#[test]
fn check_reports_bad_edge_keys() {
    let route_base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.app]\n\
                      backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"app\"\nLINE\n";
    check_errors(
        route_base,
        &[
            ("allow = [\"10.0.0.1/8\"]", ":7:10: routes[0].allow[0]: "),
            ("deny = [\"::1\", \"nope\"]", ":7:16: routes[0].deny[1]: "),
            (
                "rate_limit = { rate = \"10/d\" }",
                ":7:23: routes[0].rate_limit.rate: ",
            ),
            (
                "rate_limit = { rate = \"10/s\", burst = 0 }",
                ":7:39: routes[0].rate_limit.burst: ",
            ),
            (
                "rate_limit = { rate = \"10/s\", key = \"cookie:x\" }",
                ":7:37: routes[0].rate_limit.key: ",
            ),
            (
                "cors = { allow_origins = [\"*\"], allow_credentials = true }",
                ":7:27: routes[0].cors.allow_origins[0]: \"*\" cannot be used with allow_credentials",
            ),
            (
                "cors = { allow_origins = [\"https://a.example/\"] }",
                ":7:27: routes[0].cors.allow_origins[0]: ",
            ),
            (
                "cors = { allow_origins = [\"*\"], allow_methods = [\"G T\"] }",
                ":7:50: routes[0].cors.allow_methods[0]: ",
            ),
            (
                "cors = { allow_origins = [\"*\"], max_age = 9999999 }",
                ":7:43: routes[0].cors.max_age: ",
            ),
        ],
    );
    let server_base = "[server]\nlisten = [\"127.0.0.1:1\"]\nLINE\n[upstreams.app]\n\
                       backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"app\"\n";
    check_errors(
        server_base,
        &[
            (
                "trusted_proxies = [\"10.0.0.0/33\"]",
                ":3:20: server.trusted_proxies[0]: ",
            ),
            (
                "max_connections_per_ip = 0",
                ":3:26: server.max_connections_per_ip: ",
            ),
        ],
    );
    let listen_base = "[server]\nlisten = [{ addr = \"127.0.0.1:1\", LINE }]\n[upstreams.app]\n\
                       backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"app\"\n";
    check_errors(
        listen_base,
        &[
            ("allow = [\"x\"]", ":2:44: server.listen[0].allow[0]: "),
            (
                "max_connections_per_ip = 0",
                ":2:60: server.listen[0].max_connections_per_ip: ",
            ),
        ],
    );
}

// ---- max_connections_per_ip ----

/// Whether a new connection from `from` is served (a 200 comes back).
fn served_from(from: [u8; 4], proxy: &Proxy) -> bool {
    try_client_from(from, proxy.addr)
        .and_then(|mut c| c.try_read_response_after(&get("/")))
        .is_ok_and(|r| r.status == 200)
}

#[test]
fn connections_per_ip_are_limited_process_wide_and_given_back() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .workers(2)
        .server("max_connections_per_ip = 2")
        .upstream("app", &[backend.addr], &[])
        .start();
    // Two kept-alive connections, each served (so counted).
    let mut held: Vec<Client> = (0..2).map(|_| proxy.client()).collect();
    for c in &mut held {
        assert_eq!(c.roundtrip(&get("/")).status, 200);
    }
    // Every further one is closed at once, whichever worker takes it.
    for _ in 0..10 {
        assert!(!served_from([127, 0, 0, 1], &proxy));
    }
    assert_eq!(
        metric(&proxy, "ringlb_connections_per_ip_rejected_total"),
        10.0
    );
    assert!(proxy.stderr().contains("max_connections_per_ip"), "logged");
    // Another address has its own count.
    assert!(served_from([127, 0, 0, 2], &proxy));
    // A closed connection gives its slot back (no leak): one new fits, and
    // once all are closed, two do again.
    held.pop();
    assert!(wait_until(WAIT, || served_from([127, 0, 0, 1], &proxy)));
    held.clear();
    assert!(wait_until(WAIT, || {
        let mut two: Vec<Client> = (0..2).map(|_| proxy.client()).collect();
        two.iter_mut().all(|c| {
            c.try_read_response_after(&get("/"))
                .is_ok_and(|r| r.status == 200)
        })
    }));

    // Reload: a third connection fits under the new limit.
    rewrite(&proxy, |t| {
        t.replace("max_connections_per_ip = 2", "max_connections_per_ip = 3")
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || {
        let mut three: Vec<Client> = (0..3).map(|_| proxy.client()).collect();
        three.iter_mut().all(|c| {
            c.try_read_response_after(&get("/"))
                .is_ok_and(|r| r.status == 200)
        })
    }));
}

#[test]
fn a_listeners_connection_limit_counts_for_that_listener() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .listen_options("max_connections_per_ip = 1")
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut one = proxy.client();
    assert_eq!(one.roundtrip(&get("/")).status, 200);
    assert!(!served_from([127, 0, 0, 1], &proxy));
    assert!(served_from([127, 0, 0, 2], &proxy));
    assert_eq!(
        metric(&proxy, "ringlb_connections_per_ip_rejected_total"),
        1.0
    );
    // Polled: until the proxy saw the close, a new one is still refused.
    drop(one);
    assert!(wait_until(WAIT, || served_from([127, 0, 0, 1], &proxy)));
    // Reload: two fit now.
    rewrite(&proxy, |t| {
        t.replace("max_connections_per_ip = 1", "max_connections_per_ip = 2")
    });
    reload_ok(&proxy);
    let mut one = proxy.client();
    assert_eq!(one.roundtrip(&get("/")).status, 200);
    assert!(wait_until(WAIT, || served_from([127, 0, 0, 1], &proxy)));
}

// ---- CORS ----

const CORS: &str = "cors = { allow_origins = [\"https://app.example.com\", \"*.example.org\"], \
                    allow_methods = [\"GET\", \"PUT\"], allow_headers = [\"Content-Type\", \"X-Token\"], \
                    expose_headers = [\"X-Total\"], allow_credentials = true, max_age = 600 }";

fn preflight(proxy: &Proxy, target: &str, origin: &str) -> Response {
    proxy.client().roundtrip(&request(
        "OPTIONS",
        target,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "x-token"),
        ],
        b"",
    ))
}

#[test]
fn cors_preflights_are_answered_and_responses_marked() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route_with("/api", None, "app", &[CORS])
        .route("/", None, "app")
        .start();
    let r = preflight(&proxy, "/api/items", "https://app.example.com");
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    for (name, value) in [
        ("access-control-allow-origin", "https://app.example.com"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET, PUT"),
        ("access-control-allow-headers", "Content-Type, X-Token"),
        ("access-control-max-age", "600"),
        ("vary", "Origin"),
    ] {
        assert_eq!(r.header(name), Some(value), "{name} in {:?}", r.head);
    }
    // Wildcard origin, with a port.
    let r = preflight(&proxy, "/api", "http://a.b.example.org:8080");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://a.b.example.org:8080")
    );
    // Not allowed: answered, without CORS fields.
    let r = preflight(&proxy, "/api", "https://example.org");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(backend.proxied_count(), 0, "preflights are not forwarded");

    let r = ask(
        &proxy,
        "/api/items",
        &[("Origin", "https://app.example.com")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("X-Total"));
    assert_eq!(r.header("access-control-allow-methods"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(backend.proxied_count(), 1);
    let r = ask(&proxy, "/api/items", &[("Origin", "https://evil.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
    // Another route: untouched, and its OPTIONS goes to the backend.
    let r = preflight(&proxy, "/other", "https://app.example.com");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Reload: the allowed origins change.
    rewrite(&proxy, |t| {
        t.replace("https://app.example.com", "https://new.example.com")
    });
    reload_ok(&proxy);
    assert!(wait_until(WAIT, || {
        preflight(&proxy, "/api", "https://new.example.com")
            .header("access-control-allow-origin")
            .is_some()
    }));
    let r = preflight(&proxy, "/api", "https://app.example.com");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

/// The proxy's own error replies on a CORS route carry the CORS fields,
/// so that a page can read them: a 502 (backend refused) and a 429.
#[test]
fn cors_fields_are_on_the_proxys_error_replies() {
    let dead = Refused::new();
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("dead", &[dead.addr], &[])
        .upstream("app", &[backend.addr], &[])
        .route_with("/down", None, "dead", &[CORS])
        .route_with(
            "/limited",
            None,
            "app",
            &[CORS, "rate_limit = { rate = \"1/h\", burst = 1 }"],
        )
        .start();
    let origin = [("Origin", "https://app.example.com")];
    let r = ask(&proxy, "/down", &origin);
    assert!(matches!(r.status, 502 | 503), "{}", r.status);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = ask(&proxy, "/down", &[("Origin", "https://evil.example")]);
    assert_eq!(r.header("access-control-allow-origin"), None);

    assert_eq!(ask(&proxy, "/limited", &origin).status, 200);
    let r = ask(&proxy, "/limited", &origin);
    assert_eq!(r.status, 429);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r.header("retry-after").is_some());
    // A preflight is answered before the limit and does not count.
    assert_eq!(
        preflight(&proxy, "/limited", "https://app.example.com").status,
        204
    );
}

/// A filter's refusal of a keep-alive request without a body (a preflight,
/// a 403, a 429) leaves the connection open; one with a body closes it.
#[test]
fn refusals_of_bodyless_requests_keep_the_connection() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &[])
        .route_with("/api", None, "app", &[CORS])
        .route_with("/internal", None, "app", &["allow = [\"10.0.0.0/8\"]"])
        .route_with(
            "/limited",
            None,
            "app",
            &["rate_limit = { rate = \"1/h\", burst = 1 }"],
        )
        .route("/", None, "app")
        .start();
    let mut c = proxy.client();
    let origin = ("Origin", "https://app.example.com");
    let pre = request(
        "OPTIONS",
        "/api/items",
        &[origin, ("Access-Control-Request-Method", "PUT")],
        b"",
    );
    let r = c.roundtrip(&pre);
    assert_eq!((r.status, r.closes()), (204, false));
    // The actual request follows on the same connection.
    let r = c.roundtrip(&request("PUT", "/api/items", &[origin], b"x"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = c.roundtrip(&get("/internal/a"));
    assert_eq!((r.status, r.closes()), (403, false));
    assert_eq!(c.roundtrip(&get("/limited")).status, 200);
    let r = c.roundtrip(&get("/limited"));
    assert_eq!((r.status, r.closes()), (429, false));
    assert_eq!(c.roundtrip(&get("/")).status, 200);
    // Pipelined: the refused request and the next one in one write.
    let mut two = get("/internal/b");
    two.extend_from_slice(&get("/"));
    c.send(&two);
    assert_eq!(c.read_response().status, 403);
    assert_eq!(c.read_response().status, 200);
    // With a body (never read), the refusal closes.
    let r = c.roundtrip(&request("POST", "/internal/c", &[], b"body"));
    assert_eq!((r.status, r.closes()), (403, true));
    c.assert_closed();
    assert_eq!(backend.proxied_count(), 4);
}

/// On a CORS route the route's policy answers: the backend's own
/// `Access-Control-*` fields are dropped, its other fields kept.
#[test]
fn cors_replaces_the_backends_own_cors_fields() {
    let backend = Backend::fixed(
        Resp::new(200)
            .header("Access-Control-Allow-Origin", "*")
            .header("access-control-expose-headers", "X-Secret")
            .header("Vary", "Accept-Encoding")
            .body("ok"),
    );
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &[])
        .route_with("/api", None, "app", &[CORS])
        .route("/", None, "app")
        .start();
    let r = ask(&proxy, "/api", &[("Origin", "https://app.example.com")]);
    assert_eq!(
        r.headers_named("access-control-allow-origin"),
        ["https://app.example.com"]
    );
    assert_eq!(
        r.headers_named("access-control-expose-headers"),
        ["X-Total"]
    );
    assert_eq!(r.headers_named("vary"), ["Accept-Encoding", "Origin"]);
    let r = ask(&proxy, "/api", &[("Origin", "https://evil.example")]);
    assert!(r.headers_named("access-control-allow-origin").is_empty());
    // Another route: the backend's fields as they came.
    let r = ask(&proxy, "/", &[("Origin", "https://evil.example")]);
    assert_eq!(r.headers_named("access-control-allow-origin"), ["*"]);
}
