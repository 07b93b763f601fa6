//! Config loading: the documented example, defaults, and one test per error
//! kind asserting file:line:col and key path.

use super::*;

const FILE: &str = "config.toml";

/// The example from the task; external tests rely on exactly these keys.
const EXAMPLE: &str = r#"[server]
listen = ["127.0.0.1:8080"]
workers = 2

[[routes]]
path_prefix = "/"
upstream = "app"

[upstreams.app]
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 2 }]
"#;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(src, Path::new(FILE))
}

/// Asserts that `src` is rejected with a message that starts with `prefix`
/// (file:line:col: key:) and contains `detail`.
#[track_caller]
fn assert_rejected(src: &str, prefix: &str, detail: &str) -> ConfigError {
    let err = parse(src).expect_err("config should be rejected");
    let shown = err.to_string();
    assert!(
        shown.starts_with(prefix),
        "{shown:?} should start with {prefix:?}"
    );
    assert!(
        shown.contains(detail),
        "{shown:?} should contain {detail:?}"
    );
    err
}

/// A valid config with `server_extra` appended to `[server]` and
/// `upstream_extra` to `[upstreams.app]`. Line 1 is `[server]`, line 2 the
/// listen line, line 3 the first line of `server_extra`, line 8
/// the first line of `upstream_extra`.
fn with(server_extra: &str, upstream_extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n{server_extra}\n\
         [[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\nbackends = [{{ addr = \"127.0.0.1:9001\" }}]\n{upstream_extra}\n"
    )
}

#[test]
fn example_parses_exactly() {
    let config = parse(EXAMPLE).unwrap();
    let s = &config.server;
    assert_eq!(
        s.listen,
        vec![ListenConfig {
            addr: "127.0.0.1:8080".parse().unwrap(),
            tls: None,
            https_redirect: false,
            access: None,
            max_connections_per_ip: None,
            proxy_protocol: None,
        }]
    );
    assert_eq!(s.workers.get(), 2);
    assert_eq!(config.upstreams.len(), 1);
    let app = &config.upstreams[0];
    assert_eq!(app.name, "app");
    assert_eq!(app.strategy, Strategy::RoundRobin);
    let backends: Vec<(String, u16)> = app
        .backends
        .iter()
        .map(|b| (b.addr.to_string(), b.weight.get()))
        .collect();
    assert_eq!(
        backends,
        [
            ("127.0.0.1:9001".to_owned(), 1),
            ("127.0.0.1:9002".to_owned(), 2)
        ]
    );
    assert_eq!(
        config.routes,
        vec![RouteConfig {
            path_prefix: "/".into(),
            host: None,
            upstream: Some(0),
            matching: None,
            rewrite: None,
            request_headers: None,
            response_headers: None,
            redirect: None,
            https_redirect: false,
            error_pages: None,
            cache: None,
            access: None,
            rate_limit: None,
            cors: None,
            compress: None,
        }]
    );
    assert_eq!(config.source_path, Path::new(FILE));
}

#[test]
fn defaults() {
    let src = "[server]\nlisten = [\"0.0.0.0:80\"]\n[[routes]]\nupstream = \"a\"\n\
               [upstreams.a]\nbackends = [{ addr = \"10.0.0.1:80\" }]\n";
    let config = parse(src).unwrap();
    let s = &config.server;
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(1024);
    assert_eq!(s.workers.get(), cores);
    assert!(!s.pin_workers);
    assert_eq!(s.backlog.get(), 1024);
    assert_eq!(s.max_connections.get(), 10_000);
    assert_eq!(s.max_head_bytes, 16_384);
    assert_eq!(s.max_headers.get(), 100);
    assert_eq!(s.buffer_size, 16_384);
    assert_eq!(s.max_request_body.map(|n| n.get()), Some(1 << 30));
    assert_eq!(s.head_timeout, Duration::from_secs(10));
    assert_eq!(s.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(s.body_timeout, Duration::from_secs(60));
    assert_eq!(s.tunnel_timeout, Duration::from_secs(3600));
    assert_eq!(s.send_timeout, Duration::from_secs(60));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
    let u = &config.upstreams[0];
    assert_eq!(u.strategy, Strategy::RoundRobin);
    assert_eq!(u.connect_timeout, Duration::from_secs(3));
    assert_eq!(u.response_timeout, Duration::from_secs(60));
    assert_eq!(u.max_idle, 32);
    assert_eq!(u.idle_timeout, Duration::from_secs(30));
    assert_eq!(u.max_connections, None);
    assert_eq!(u.queue_timeout, Duration::from_secs(5));
    assert_eq!(u.backends[0].weight.get(), 1);
    assert_eq!(config.routes[0].path_prefix, "/");
    assert_eq!(config.routes[0].host, None);
}

#[test]
fn every_key_set() {
    let src = with(
        "workers = 3\npin_workers = true\nbacklog = 10\nmax_connections = 5\n\
         max_head_bytes = 1024\nmax_headers = 256\nbuffer_size = 4096\nmax_request_body = 0\n\
         head_timeout = \"1s\"\nkeepalive_timeout = \"2s\"\nbody_timeout = \"3s\"\n\
         tunnel_timeout = \"1h 30m\"\nsend_timeout = \"250ms\"\nshutdown_timeout = \"5s\"",
        "strategy = \"round_robin\"\nconnect_timeout = \"1s\"\nresponse_timeout = \"2s\"\n\
         max_idle = 0\nidle_timeout = \"5s\"\nmax_connections = 7\nqueue_timeout = \"750ms\"",
    );
    let config = parse(&src).unwrap();
    let s = &config.server;
    assert_eq!(
        (
            s.workers.get(),
            s.pin_workers,
            s.backlog.get(),
            s.max_connections.get()
        ),
        (3, true, 10, 5)
    );
    assert_eq!(
        (s.max_head_bytes, s.max_headers.get(), s.buffer_size),
        (1024, 256, 4096)
    );
    assert_eq!(s.max_request_body, None, "0 means unlimited");
    assert_eq!(s.tunnel_timeout, Duration::from_secs(5400));
    assert_eq!(s.send_timeout, Duration::from_millis(250));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    let u = &config.upstreams[0];
    assert_eq!((u.max_idle, u.idle_timeout), (0, Duration::from_secs(5)));
    assert_eq!(u.response_timeout, Duration::from_secs(2));
    assert_eq!(
        (u.max_connections, u.queue_timeout),
        (Some(7), Duration::from_millis(750))
    );
}

#[test]
fn upstream_max_connections_out_of_range_names_its_key() {
    let src = with("", "max_connections = 0");
    let err = parse(&src).unwrap_err().to_string();
    assert!(err.contains("max_connections"), "{err}");
}

#[test]
fn listen_table_form_without_tls() {
    let src = r#"[server]
listen = ["127.0.0.1:1", { addr = "[::1]:2" }]
[[routes]]
upstream = "a"
[upstreams.a]
backends = [{ addr = "10.0.0.1:80" }]
"#;
    let config = parse(src).unwrap();
    let addrs: Vec<String> = config
        .server
        .listen
        .iter()
        .map(|l| l.addr.to_string())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:1", "[::1]:2"]);
}

#[test]
fn backends_as_array_of_tables_and_localhost() {
    let src = r#"[server]
listen = ["127.0.0.1:1"]
[[routes]]
upstream = "a"
[[upstreams.a.backends]]
addr = "localhost:9000"
weight = 1000
"#;
    let config = parse(src).unwrap();
    let backend = config.upstreams[0].backends[0];
    assert!(backend.addr.ip().is_loopback());
    assert_eq!(backend.addr.port(), 9000);
    assert_eq!(backend.weight.get(), 1000);
}

#[test]
fn upstreams_are_indexed_in_name_order() {
    let src = r#"[server]
listen = ["127.0.0.1:1"]
[[routes]]
upstream = "zeta"
[[routes]]
path_prefix = "/a"
host = "Example.COM"
upstream = "alpha"
[[routes]]
path_prefix = "/a"
host = "*.example.com"
upstream = "alpha"
[upstreams.zeta]
backends = [{ addr = "10.0.0.1:80" }]
[upstreams.alpha]
backends = [{ addr = "10.0.0.2:80" }]
"#;
    let config = parse(src).unwrap();
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    let upstreams: Vec<usize> = config.routes.iter().filter_map(|r| r.upstream).collect();
    assert_eq!(upstreams, [1, 0, 0]);
    assert_eq!(
        config.routes[1].host,
        Some(HostPattern::Exact("example.com".into()))
    );
    assert_eq!(
        config.routes[2].host,
        Some(HostPattern::Suffix(".example.com".into()))
    );
}

#[test]
fn summary_lists_everything() {
    let summary = parse(EXAMPLE).unwrap().summary();
    for needle in [
        "config.toml",
        "listen: 127.0.0.1:8080",
        "workers: 2",
        "app (round_robin)",
        "127.0.0.1:9001 weight 1",
        "127.0.0.1:9002 weight 2",
        "host * path / -> app",
    ] {
        assert!(
            summary.contains(needle),
            "{summary} should contain {needle:?}"
        );
    }
}

// ---- errors: one per kind ------------------------------------------------

#[test]
fn error_syntax() {
    let src = "[server]\nlisten = [\"127.0.0.1:1\"\nworkers = 2\n";
    let err = parse(src).unwrap_err();
    assert!(matches!(err.kind(), ConfigErrorKind::Syntax(_)), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("config.toml:3:1: server.listen"),
        "{shown}"
    );
}

#[test]
fn error_wrong_type() {
    let err = assert_rejected(
        &with("workers = \"two\"", ""),
        "config.toml:3:11: server.workers: ",
        "invalid type: string \"two\"",
    );
    assert!(matches!(err.kind(), ConfigErrorKind::InvalidValue(_)));
}

#[test]
fn error_negative_number() {
    assert_rejected(
        &with("backlog = -1", ""),
        "config.toml:3:11: server.backlog: ",
        "-1",
    );
}

#[test]
fn error_bad_duration() {
    assert_rejected(
        &with("head_timeout = \"5 parsecs\"", ""),
        "config.toml:3:16: server.head_timeout: ",
        "unknown time unit",
    );
}

#[test]
fn listen_proxy_protocol_accept() {
    let src = r#"[server]
listen = ["127.0.0.1:1", { addr = "127.0.0.1:2", proxy_protocol = { accept = true, trusted = ["10.0.0.0/8", "::1"], timeout = "1s" } }, { addr = "127.0.0.1:3", proxy_protocol = { accept = false } }]
[[routes]]
upstream = "a"
[upstreams.a]
backends = [{ addr = "10.0.0.1:80" }]
"#;
    let config = parse(src).unwrap();
    let listen = &config.server.listen;
    assert_eq!(listen[0].proxy_protocol, None);
    let accept = listen[1].proxy_protocol.as_ref().unwrap();
    assert_eq!(accept.timeout, std::time::Duration::from_secs(1));
    assert!(accept.trusts("10.1.2.3".parse().unwrap()));
    assert!(accept.trusts("::ffff:10.1.2.3".parse().unwrap()));
    assert!(accept.trusts("::1".parse().unwrap()));
    assert!(!accept.trusts("127.0.0.1".parse().unwrap()));
    assert_eq!(listen[2].proxy_protocol, None);
    let default = parse(&src.replace(", timeout = \"1s\"", "")).unwrap();
    assert_eq!(
        default.server.listen[1]
            .proxy_protocol
            .as_ref()
            .unwrap()
            .timeout,
        DEFAULT_PROXY_HEADER_TIMEOUT
    );
}

#[test]
fn error_proxy_protocol_without_trusted_or_with_a_bad_network() {
    let src = |table: &str| {
        format!(
            "[server]\nlisten = [{{ addr = \"127.0.0.1:2\", proxy_protocol = {table} }}]\n\
             [[routes]]\nupstream = \"a\"\n[upstreams.a]\nbackends = [{{ addr = \"10.0.0.1:80\" }}]\n"
        )
    };
    assert_rejected(
        &src("{ accept = true }"),
        "config.toml:2:63: server.listen[0].proxy_protocol.trusted: ",
        "needs a non-empty `trusted` list",
    );
    assert_rejected(
        &src("{ accept = true, trusted = [] }"),
        "config.toml:2:79: server.listen[0].proxy_protocol.trusted: ",
        "needs a non-empty",
    );
    assert_rejected(
        &src("{ accept = true, trusted = [\"10.0.0.1/8\"] }"),
        "config.toml:2:80: server.listen[0].proxy_protocol.trusted[0]: ",
        "host bits",
    );
    assert_rejected(
        &src("{ accept = true, trusted = [\"10.0.0.0/8\"], timeout = \"0s\" }"),
        "config.toml:2:",
        "server.listen[0].proxy_protocol.timeout",
    );
    assert_rejected(&src("{ acept = true }"), "config.toml:2:", "acept");
}

#[test]
fn send_proxy_protocol_values() {
    let v2 = parse(&with("", "send_proxy_protocol = \"v2\"\nhealth = {}")).unwrap();
    let up = &v2.upstreams[0];
    assert_eq!(
        up.send_proxy_protocol,
        Some(crate::proxy_protocol::Version::V2)
    );
    assert_eq!(
        up.health.as_ref().unwrap().send_proxy_protocol,
        Some(crate::proxy_protocol::Version::V2)
    );
    assert_eq!(
        parse(&with("", "")).unwrap().upstreams[0].send_proxy_protocol,
        None
    );
    assert_rejected(
        &with("", "send_proxy_protocol = \"v3\""),
        "config.toml:8:23: upstreams.app.send_proxy_protocol: ",
        "expected \"v1\" or \"v2\"",
    );
}

#[test]
fn error_zero_duration() {
    assert_rejected(
        &with("", "connect_timeout = \"0s\""),
        "config.toml:8:19: upstreams.app.connect_timeout: ",
        "greater than zero",
    );
}

#[test]
fn error_unknown_key() {
    let err = assert_rejected(
        &with("worker = 2", ""),
        "config.toml:3:1: server.worker: ",
        "unknown field `worker`",
    );
    assert!(matches!(err.kind(), ConfigErrorKind::UnknownKey(_)));
}

#[test]
fn error_unknown_key_in_inline_backend() {
    let src = "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
               [upstreams.a]\nbackends = [{ addr = \"10.0.0.1:80\" }, { addr = \"10.0.0.2:80\", wieght = 2 }]\n";
    assert_rejected(
        src,
        "config.toml:6:63: upstreams.a.backends[1].wieght: ",
        "unknown field `wieght`",
    );
}

#[test]
fn error_unknown_section_rejected() {
    let src = format!("{}[metrics]\nlisten = \"127.0.0.1:9\"\n", with("", ""));
    assert_rejected(
        &src,
        "config.toml:9:2: metrics: ",
        "unknown field `metrics`",
    );
}

#[test]
fn error_missing_upstream() {
    let src = with("", "").replace("upstream = \"app\"", "upstream = \"nope\"");
    let err = assert_rejected(
        &src,
        "config.toml:5:12: routes[0].upstream: ",
        "upstream \"nope\" is not defined (defined: app)",
    );
    assert!(matches!(
        err.kind(),
        ConfigErrorKind::UnknownUpstream { .. }
    ));
}

#[test]
fn error_route_without_upstream_key() {
    let src = with("", "").replace("upstream = \"app\"", "path_prefix = \"/\"");
    let err = assert_rejected(
        &src,
        "config.toml:4:1: routes[0].upstream: ",
        "missing field",
    );
    assert!(matches!(err.kind(), ConfigErrorKind::MissingKey(_)));
}

#[test]
fn error_empty_backends() {
    let src = with("", "").replace("[{ addr = \"127.0.0.1:9001\" }]", "[]");
    assert_rejected(
        &src,
        "config.toml:7:12: upstreams.app.backends: ",
        "empty backend list",
    );
}

#[test]
fn error_bad_backend_address() {
    let src = "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n\
               [upstreams.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }, { addr = \"127.0.0.1:99999\" }]\n";
    let err = assert_rejected(
        src,
        "config.toml:6:51: upstreams.app.backends[1].addr: ",
        "invalid socket address \"127.0.0.1:99999\"",
    );
    assert_eq!(
        err.location(),
        Some(Location {
            line: 6,
            column: 51
        })
    );
    assert_eq!(err.key(), "upstreams.app.backends[1].addr");
    assert_eq!(err.file(), Path::new(FILE));
}

#[test]
fn error_backend_host_name_not_localhost() {
    let src = with("", "").replace("127.0.0.1:9001", "example.com:80");
    assert_rejected(
        &src,
        "config.toml:7:22: upstreams.app.backends[0].addr: ",
        "invalid socket address \"example.com:80\"",
    );
}

#[test]
fn error_backend_port_zero() {
    let src = with("", "").replace("127.0.0.1:9001", "127.0.0.1:0");
    assert_rejected(
        &src,
        "config.toml:7:22: upstreams.app.backends[0].addr: ",
        "port 0",
    );
}

#[test]
fn error_duplicate_backend() {
    let src = with("", "").replace(
        "[{ addr = \"127.0.0.1:9001\" }]",
        "[{ addr = \"127.0.0.1:9001\" }, { addr = \"127.0.0.1:9001\" }]",
    );
    assert_rejected(
        &src,
        "config.toml:7:51: upstreams.app.backends[1].addr: ",
        "duplicate address 127.0.0.1:9001",
    );
}

#[test]
fn error_bad_listen_address() {
    let src = with("", "").replace("127.0.0.1:8080", "localhost:8080");
    assert_rejected(
        &src,
        "config.toml:2:11: server.listen[0]: ",
        "invalid socket address \"localhost:8080\"",
    );
}

#[test]
fn error_listen_entry_wrong_shape() {
    let src = with("", "").replace("[\"127.0.0.1:8080\"]", "[8080]");
    assert_rejected(
        &src,
        "config.toml:2:11: server.listen[0]: ",
        "expected an address string",
    );
}

#[test]
fn error_out_of_range() {
    for (line, want) in [
        (
            "workers = 0",
            "config.toml:3:11: server.workers: 0 is out of range, expected 1..=1024",
        ),
        (
            "workers = 1025",
            "config.toml:3:11: server.workers: 1025 is out of range",
        ),
        (
            "max_head_bytes = 1023",
            "config.toml:3:18: server.max_head_bytes: 1023 is out",
        ),
        (
            "max_head_bytes = 1048577",
            "config.toml:3:18: server.max_head_bytes: 1048577 is out",
        ),
        (
            "max_headers = 257",
            "config.toml:3:15: server.max_headers: 257 is out",
        ),
        (
            "buffer_size = 4095",
            "config.toml:3:15: server.buffer_size: 4095 is out",
        ),
        ("backlog = 0", "config.toml:3:11: server.backlog: 0 is out"),
        (
            "max_connections = 0",
            "config.toml:3:19: server.max_connections: 0 is out",
        ),
    ] {
        assert_rejected(&with(line, ""), want, "");
    }
    // The limits themselves are accepted.
    for line in [
        "workers = 1024",
        "max_head_bytes = 1048576",
        "buffer_size = 1048576",
    ] {
        parse(&with(line, "")).unwrap();
    }
    let src = with("", "").replace("9001\" }", "9001\", weight = 1001 }");
    assert_rejected(
        &src,
        "config.toml:7:49: upstreams.app.backends[0].weight: ",
        "1001 is out of range, expected 1..=1000",
    );
}

#[test]
fn error_unknown_strategy_names_valid_ones() {
    assert_rejected(
        &with("", "strategy = \"least_conn\""),
        "config.toml:8:12: upstreams.app.strategy: ",
        "expected one of `round_robin`, `weighted_round_robin`, `random`",
    );
}

#[test]
fn error_no_routes() {
    let src = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [{ addr = \"10.0.0.1:80\" }]\n";
    let err = assert_rejected(src, "config.toml: routes: ", "no routes");
    assert!(matches!(err.kind(), ConfigErrorKind::NoRoutes));
    let src = format!("routes = []\n{src}");
    assert_rejected(&src, "config.toml:1:10: routes: ", "no routes");
}

#[test]
fn error_no_listen() {
    let src = with("", "").replace("[\"127.0.0.1:8080\"]", "[]");
    let err = assert_rejected(
        &src,
        "config.toml:2:10: server.listen: ",
        "no listen address",
    );
    assert!(matches!(err.kind(), ConfigErrorKind::NoListen));
    let src = with("", "").replace("listen = [\"127.0.0.1:8080\"]", "");
    assert_rejected(
        &src,
        "config.toml:1:1: server.listen: ",
        "missing field `listen`",
    );
}

#[test]
fn error_duplicate_listen() {
    let src = with("", "").replace(
        "[\"127.0.0.1:8080\"]",
        "[\"127.0.0.1:8080\", \"127.0.0.1:8080\"]",
    );
    assert_rejected(
        &src,
        "config.toml:2:29: server.listen[1]: ",
        "duplicate address",
    );
}

#[test]
fn error_no_server_section() {
    let src =
        "[[routes]]\nupstream = \"a\"\n[upstreams.a]\nbackends = [{ addr = \"10.0.0.1:80\" }]\n";
    let err = assert_rejected(src, "config.toml: server: ", "missing [server] table");
    assert!(matches!(err.kind(), ConfigErrorKind::MissingKey(_)));
}

#[test]
fn error_no_upstreams() {
    let src = "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n";
    assert_rejected(src, "config.toml: upstreams: ", "no upstreams");
}

#[test]
fn error_bad_path_prefix() {
    let src = with("", "").replace(
        "upstream = \"app\"",
        "upstream = \"app\"\npath_prefix = \"api\"",
    );
    assert_rejected(
        &src,
        "config.toml:6:15: routes[0].path_prefix: ",
        "must start with \"/\"",
    );
}

#[test]
fn error_bad_host() {
    let src = with("", "").replace(
        "upstream = \"app\"",
        "upstream = \"app\"\nhost = \"example.com:80\"",
    );
    assert_rejected(
        &src,
        "config.toml:6:8: routes[0].host: ",
        "invalid host \"example.com:80\"",
    );
}

#[test]
fn error_duplicate_route() {
    let src = with("", "").replace(
        "[[routes]]\nupstream = \"app\"",
        "[[routes]]\nupstream = \"app\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"app\"",
    );
    assert_rejected(
        &src,
        "config.toml:6:1: routes[1]: ",
        "same host, path_prefix and conditions as routes[0]",
    );
}

#[test]
fn error_io_names_the_file() {
    let path = Path::new("/nonexistent/ringlb-test/config.toml");
    let err = Config::load(path).unwrap_err();
    assert!(matches!(err.kind(), ConfigErrorKind::Io(_)));
    let shown = err.to_string();
    assert!(
        shown.starts_with("/nonexistent/ringlb-test/config.toml: cannot read"),
        "{shown}"
    );
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("ringlb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.source_path, path);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backend_down_flag() {
    let src = with("", "").replace(
        "9001\" }",
        "9001\", down = true }, { addr = \"127.0.0.1:9002\" }",
    );
    let config = parse(&src).unwrap();
    let backends = &config.upstreams[0].backends;
    assert!(backends[0].down);
    assert!(!backends[1].down);
    assert!(config.summary().contains("(down)"));
}

#[test]
fn resilience_defaults() {
    let u = &parse(&with("", "")).unwrap().upstreams[0];
    assert_eq!(u.hash_key, HashKeySource::ClientIp);
    assert_eq!(u.sticky_cookie, StickyCookieConfig::default());
    assert_eq!(u.sticky_cookie.name, "ringlb_backend");
    assert!(!u.panic_mode);
    assert_eq!(u.passive_fall, 3);
    assert_eq!(u.passive_cooldown, Duration::from_secs(10));
    assert_eq!((u.health.as_ref(), u.breaker), (None, None));
    assert_eq!(u.retry, RetryConfig::disabled());
    assert_eq!(u.retry.attempts.get(), 1);
}

#[test]
fn resilience_sections_with_defaults() {
    let src = with(
        "",
        "[upstreams.app.health]\n[upstreams.app.breaker]\n[upstreams.app.retry]",
    );
    let u = &parse(&src).unwrap().upstreams[0];
    let h = u.health.as_ref().unwrap();
    assert_eq!(h.kind, CheckKind::Http);
    assert_eq!(h.path, "/health");
    assert_eq!(
        (h.interval, h.timeout),
        (Duration::from_secs(5), Duration::from_secs(1))
    );
    assert!(h.expect_status.contains(200) && h.expect_status.contains(399));
    assert!(!h.expect_status.contains(400) && !h.expect_status.contains(199));
    assert_eq!((h.rise.get(), h.fall.get()), (2, 3));
    assert_eq!(h.start, StartState::Healthy);
    assert_eq!(u.breaker, Some(BreakerConfig::default()));
    let b = u.breaker.unwrap();
    assert_eq!(
        (
            b.failures.get(),
            b.successes.get(),
            b.half_open_probes.get()
        ),
        (5, 3, 1)
    );
    assert_eq!(b.open_for, Duration::from_secs(30));
    let r = u.retry;
    assert_eq!(r.attempts.get(), 3);
    assert_eq!(
        (r.backoff, r.max_backoff),
        (Duration::from_millis(25), Duration::from_secs(1))
    );
    assert!(r.jitter);
    assert!(r.on.connect() && r.on.reset() && !r.on.timeout());
    assert!(r.on.status(502) && r.on.status(503) && r.on.status(504) && !r.on.status(500));
    assert_eq!(r.budget.get(), 0.2);
    assert_eq!(r.retry_buffer, 65_536);
}

#[test]
fn resilience_every_key_set() {
    let src = with(
        "",
        "strategy = \"consistent_hash\"\nhash_key = \"header:X-User\"\npanic_mode = true\n\
         passive_fall = 0\npassive_cooldown = \"2s\"\n\
         [upstreams.app.health]\ntype = \"tcp\"\npath = \"/ready\"\ninterval = \"1s\"\n\
         timeout = \"200ms\"\nexpect_status = \"200,204,300-308\"\nrise = 1\nfall = 1000\n\
         start = \"unhealthy\"\n\
         [upstreams.app.breaker]\nfailures = 1\nsuccesses = 1000\nopen_for = \"5s\"\n\
         half_open_probes = 4\n\
         [upstreams.app.retry]\nattempts = 10\nbackoff = \"0s\"\nmax_backoff = \"0s\"\n\
         jitter = false\non = [\"timeout\", \"500\"]\nbudget = 1.0\nretry_buffer = 0",
    );
    let u = &parse(&src).unwrap().upstreams[0];
    assert_eq!(u.strategy, Strategy::ConsistentHash);
    assert_eq!(u.hash_key, HashKeySource::Header("x-user".into()));
    assert!(u.panic_mode);
    assert_eq!(
        (u.passive_fall, u.passive_cooldown),
        (0, Duration::from_secs(2))
    );
    let h = u.health.as_ref().unwrap();
    assert_eq!((h.kind, h.path.as_str()), (CheckKind::Tcp, "/ready"));
    assert!(h.expect_status.contains(204) && h.expect_status.contains(308));
    assert!(!h.expect_status.contains(201));
    assert_eq!(
        (h.rise.get(), h.fall.get(), h.start),
        (1, 1000, StartState::Unhealthy)
    );
    let b = u.breaker.unwrap();
    assert_eq!(b.half_open_probes.get(), 4);
    let r = u.retry;
    assert_eq!(
        (r.attempts.get(), r.backoff, r.jitter),
        (10, Duration::ZERO, false)
    );
    assert!(r.on.timeout() && r.on.status(500) && !r.on.connect() && !r.on.status(502));
    assert_eq!((r.budget.get(), r.retry_buffer), (1.0, 0));
}

#[test]
fn strategies_and_their_options() {
    for name in [
        "round_robin",
        "weighted_round_robin",
        "random",
        "least_connections",
        "p2c",
        "p2c_ewma",
        "consistent_hash",
        "ip_hash",
        "sticky_cookie",
    ] {
        let u = &parse(&with("", &format!("strategy = \"{name}\"")))
            .unwrap()
            .upstreams[0];
        assert_eq!(u.strategy.name(), name);
    }
    let src = with(
        "",
        "strategy = \"consistent_hash\"\nhash_key = \"cookie:sid\"",
    );
    let u = &parse(&src).unwrap().upstreams[0];
    assert_eq!(u.hash_key, HashKeySource::Cookie("sid".into()));
    let src = with(
        "",
        "strategy = \"sticky_cookie\"\nsticky_cookie = { name = \"lb\", max_age = \"1h\" }",
    );
    let u = &parse(&src).unwrap().upstreams[0];
    assert_eq!(u.sticky_cookie.name, "lb");
    assert_eq!(u.sticky_cookie.max_age, Some(Duration::from_secs(3600)));
}

#[test]
fn error_resilience_values() {
    for (extra, want, detail) in [
        (
            "hash_key = \"client_ip\"",
            "config.toml:8:12: upstreams.app.hash_key: ",
            "only applies to strategy \"consistent_hash\"",
        ),
        (
            "strategy = \"consistent_hash\"\nhash_key = \"header:\"",
            "config.toml:9:12: upstreams.app.hash_key: ",
            "invalid hash_key",
        ),
        (
            "strategy = \"random\"\nsticky_cookie = { name = \"x\" }",
            "config.toml:8:12: upstreams.app.sticky_cookie: ",
            "only applies to strategy \"sticky_cookie\"",
        ),
        (
            "strategy = \"sticky_cookie\"\nsticky_cookie = { name = \"a b\" }",
            "config.toml:9:26: upstreams.app.sticky_cookie.name: ",
            "must be a token",
        ),
        (
            "passive_fall = 1001",
            "config.toml:8:16: upstreams.app.passive_fall: ",
            "1001 is out of range",
        ),
        (
            "[upstreams.app.health]\nexpect_status = \"200-600\"",
            "config.toml:9:17: upstreams.app.health.expect_status: ",
            "invalid expect_status",
        ),
        (
            "[upstreams.app.health]\npath = \"health\"",
            "config.toml:9:8: upstreams.app.health.path: ",
            "invalid health path",
        ),
        (
            "[upstreams.app.health]\ntype = \"icmp\"",
            "config.toml:9:8: upstreams.app.health.type: ",
            "expected `http` or `tcp`",
        ),
        (
            "[upstreams.app.health]\nrise = 0",
            "config.toml:9:8: upstreams.app.health.rise: ",
            "0 is out of range, expected 1..=1000",
        ),
        (
            "[upstreams.app.health]\ninterval = \"0s\"",
            "config.toml:9:12: upstreams.app.health.interval: ",
            "greater than zero",
        ),
        (
            "[upstreams.app.breaker]\nhalf_open_probes = 1001",
            "config.toml:9:20: upstreams.app.breaker.half_open_probes: ",
            "1001 is out of range",
        ),
        (
            "[upstreams.app.retry]\nattempts = 11",
            "config.toml:9:12: upstreams.app.retry.attempts: ",
            "11 is out of range, expected 1..=10",
        ),
        (
            "[upstreams.app.retry]\non = [\"connect\", \"404\"]",
            "config.toml:9:18: upstreams.app.retry.on[1]: ",
            "unknown retry condition \"404\"",
        ),
        (
            "[upstreams.app.retry]\nbudget = 1.5",
            "config.toml:9:10: upstreams.app.retry.budget: ",
            "out of range, expected 0.0..=1.0",
        ),
        (
            "[upstreams.app.retry]\nbackoff = \"2s\"\nmax_backoff = \"1s\"",
            "config.toml:10:15: upstreams.app.retry.max_backoff: ",
            "less than backoff",
        ),
        (
            "[upstreams.app.retry]\nretry_buffer = 16777217",
            "config.toml:9:16: upstreams.app.retry.retry_buffer: ",
            "out of range",
        ),
        (
            "[upstreams.app.breaker]\nfailure = 3",
            "config.toml:9:1: upstreams.app.breaker.failure: ",
            "unknown field `failure`",
        ),
    ] {
        assert_rejected(&with("", extra), want, detail);
    }
}

// ---- TLS, admin, access log ---------------------------------------------

/// `file:line:col` of the first `needle` in `src`, as errors print it.
fn at(src: &str, needle: &str) -> String {
    let Location { line, column } =
        super::locate::line_col(src, src.find(needle).expect("needle in source"));
    format!("{FILE}:{line}:{column}")
}

/// The listen line of `with()` replaced by `listen`.
fn with_listen(listen: &str) -> String {
    with("", "").replace("listen = [\"127.0.0.1:8080\"]", listen)
}

#[test]
fn listen_tls_exactly_as_documented() {
    let src = with_listen(
        r#"listen = ["127.0.0.1:8080", { addr = "127.0.0.1:8443", tls = { cert = "certs/server.pem", key = "certs/server.key" } }]"#,
    );
    let config = parse(&src).unwrap();
    let listen = &config.server.listen;
    assert_eq!(listen.len(), 2);
    assert_eq!(listen[0].tls, None);
    assert_eq!(listen[1].addr, "127.0.0.1:8443".parse().unwrap());
    // Relative to the config file's directory ("config.toml" has none).
    let tls = listen[1].tls.as_ref().unwrap();
    assert_eq!(tls.default.cert, Path::new("certs/server.pem"));
    assert_eq!(tls.default.key, Path::new("certs/server.key"));
    assert!(tls.sni.is_empty());
    assert!(config
        .summary()
        .contains("127.0.0.1:8443 (tls, 1 certificates)"));
    crate::tls::load_server_config(tls).unwrap();
}

#[test]
fn listen_tls_with_sni_and_paths_relative_to_the_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = with_listen(
        r#"listen = [{ addr = "127.0.0.1:8443", tls = { cert = "certs/server.pem", key = "certs/server.key", sni = [{ cert = "certs/other.pem", key = "certs/other.key" }] } }]"#,
    );
    let config = Config::from_toml_str(&src, &dir.join("ringlb.toml")).unwrap();
    let tls = config.server.listen[0].tls.as_ref().unwrap();
    assert_eq!(tls.default.cert, dir.join("certs/server.pem"));
    assert_eq!(
        tls.sni,
        [CertKeyPaths {
            cert: dir.join("certs/other.pem"),
            key: dir.join("certs/other.key"),
        }]
    );
}

#[test]
fn error_listen_tls_missing_cert_names_file_and_key() {
    let src = with_listen(
        r#"listen = [{ addr = "127.0.0.1:8443", tls = { cert = "certs/nope.pem", key = "certs/server.key" } }]"#,
    );
    let err = assert_rejected(
        &src,
        &format!(
            "{}: server.listen[0].tls.cert: ",
            at(&src, "\"certs/nope.pem")
        ),
        "cannot read certs/nope.pem",
    );
    assert!(matches!(err.kind(), ConfigErrorKind::Tls(_)));
}

#[test]
fn error_listen_tls_key_mismatch_in_sni_entry() {
    let src = with_listen(
        r#"listen = [{ addr = "127.0.0.1:8443", tls = { cert = "certs/server.pem", key = "certs/server.key", sni = [{ cert = "certs/other.pem", key = "certs/ca.key" }] } }]"#,
    );
    assert_rejected(
        &src,
        &format!(
            "{}: server.listen[0].tls.sni[0].key: ",
            at(&src, "\"certs/ca.key")
        ),
        "certs/ca.key: private key does not match the certificate certs/other.pem",
    );
}

#[test]
fn error_listen_tls_unparsable_cert() {
    // A key file where the certificate should be: no CERTIFICATE block.
    let src = with_listen(
        r#"listen = [{ addr = "127.0.0.1:8443", tls = { cert = "certs/server.key", key = "certs/server.key" } }]"#,
    );
    assert_rejected(
        &src,
        &format!(
            "{}: server.listen[0].tls.cert: ",
            at(&src, "\"certs/server.key")
        ),
        "certs/server.key: no CERTIFICATE block",
    );
}

#[test]
fn error_listen_tls_unknown_key() {
    let src = with_listen(
        r#"listen = [{ addr = "127.0.0.1:8443", tls = { cert = "a", key = "b", chain = "c" } }]"#,
    );
    assert_rejected(&src, "config.toml:2:", "unknown field `chain`");
}

#[test]
fn upstream_tls() {
    let src = with(
        "",
        "tls = true\ntls_ca = \"certs/ca.pem\"\ntls_server_name = \"localhost\"",
    );
    let config = parse(&src).unwrap();
    let tls = config.upstreams[0].tls.as_ref().unwrap();
    assert_eq!(tls.ca, Path::new("certs/ca.pem"));
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));
    assert!(config.summary().contains("app (round_robin, tls)"));

    let src = with("", "tls = true\ntls_ca = \"certs/ca.pem\"");
    let tls = parse(&src).unwrap().upstreams[0].tls.clone().unwrap();
    assert_eq!(tls.server_name, None);

    let src = with("", "tls = false");
    assert_eq!(parse(&src).unwrap().upstreams[0].tls, None);
}

#[test]
fn error_upstream_tls_keys() {
    let src = with("", "tls_ca = \"certs/ca.pem\"");
    assert_rejected(
        &src,
        "config.toml:8:10: upstreams.app.tls_ca: ",
        "tls_ca is set but tls is not true",
    );
    let src = with("", "tls = true");
    assert_rejected(
        &src,
        "config.toml:8:7: upstreams.app.tls_ca: ",
        "tls = true needs tls_ca",
    );
    let src = with("", "tls = true\ntls_ca = \"certs/missing-ca.pem\"");
    assert_rejected(
        &src,
        "config.toml:9:10: upstreams.app.tls_ca: ",
        "cannot read certs/missing-ca.pem",
    );
    let src = with(
        "",
        "tls = true\ntls_ca = \"certs/ca.pem\"\ntls_server_name = \"bad name!\"",
    );
    assert_rejected(
        &src,
        "config.toml:10:19: upstreams.app.tls_server_name: ",
        "invalid TLS server name \"bad name!\"",
    );
}

#[test]
fn admin_section() {
    let src = format!("{}[admin]\nlisten = \"127.0.0.1:9090\"\n", with("", ""));
    let config = parse(&src).unwrap();
    assert_eq!(
        config.admin,
        Some(AdminConfig::plain("127.0.0.1:9090".parse().unwrap()))
    );
    assert!(config.summary().contains("admin: 127.0.0.1:9090"));
    assert_eq!(parse(&with("", "")).unwrap().admin, None);
}

#[test]
fn error_admin() {
    let src = format!("{}[admin]\nlisten = \"nope\"\n", with("", ""));
    assert_rejected(
        &src,
        "config.toml:10:10: admin.listen: ",
        "invalid socket address \"nope\"",
    );
    let src = format!("{}[admin]\nlisten = \"127.0.0.1:8080\"\n", with("", ""));
    assert_rejected(
        &src,
        "config.toml:10:10: admin.listen: ",
        "duplicate address 127.0.0.1:8080",
    );
    let src = format!("{}[admin]\n", with("", ""));
    assert_rejected(&src, "config.toml:", "missing field `listen`");
}

#[test]
fn admin_off_loopback_needs_credentials_or_an_explicit_opt_out() {
    let src = format!("{}[admin]\nlisten = \"0.0.0.0:9090\"\n", with("", ""));
    assert_rejected(
        &src,
        "config.toml:10:10: admin.listen: ",
        "0.0.0.0:9090 is not a loopback address and [admin] has no credentials",
    );
    let err = parse(&src).unwrap_err().to_string();
    assert!(err.contains("admin.users_file") && err.contains("insecure_no_auth = true"));
    let src = format!(
        "{}[admin]\nlisten = \"0.0.0.0:9090\"\ninsecure_no_auth = true\n",
        with("", "")
    );
    let admin = parse(&src).unwrap().admin.unwrap();
    assert!(admin.insecure_no_auth);
    assert_eq!(admin.auth, AdminAuth::Off);
    // Loopback, IPv6 too, needs nothing.
    let src = format!("{}[admin]\nlisten = \"[::1]:9090\"\n", with("", ""));
    assert!(parse(&src).is_ok());
}

#[test]
fn admin_credentials_allow_and_hosts() {
    let dir = std::env::temp_dir().join(format!("ringlb-config-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(dir.join("users"), format!("ops:{hash}\n")).unwrap();
    std::fs::write(dir.join("token"), "s3cret\n").unwrap();
    std::fs::write(dir.join("md5"), "ops:$apr1$x$y\n").unwrap();
    let file = dir.join("ringlb.toml");
    let load = |admin: &str| {
        let src = format!("{}[admin]\n{admin}\n", with("", ""));
        Config::from_toml_str(&src, &file)
    };
    let config = load(
        "listen = \"0.0.0.0:9090\"\nusers_file = \"users\"\ntoken_file = \"token\"\n\
         allow = [\"10.0.0.0/8\", \"127.0.0.1\"]\nhosts = [\"Admin.Example.\"]",
    )
    .unwrap();
    assert!(config
        .summary()
        .contains("admin: 0.0.0.0:9090 (credentials for writes; allow 10.0.0.0/8, 127.0.0.1/32)"));
    let admin = config.admin.unwrap();
    assert_eq!(admin.auth, AdminAuth::Writes);
    assert_eq!(admin.users[0].name, "ops");
    assert_eq!(admin.token, Some(AdminToken("s3cret".into())));
    assert!(
        !format!("{admin:?}").contains("s3cret"),
        "the token is never printed"
    );
    assert_eq!(admin.allow.len(), 2);
    assert_eq!(admin.hosts, ["admin.example"]);
    let all = load("listen = \"127.0.0.1:9090\"\ntoken_file = \"token\"\nauth = \"all\"");
    assert_eq!(all.unwrap().admin.unwrap().auth, AdminAuth::All);

    let err = |admin: &str| load(admin).unwrap_err().to_string();
    let e = err("listen = \"127.0.0.1:9090\"\nusers_file = \"md5\"");
    assert!(
        e.contains(":11:14: admin.users_file: ") && e.contains("htpasswd -B"),
        "{e}"
    );
    let e = err("listen = \"127.0.0.1:9090\"\ntoken_file = \"missing\"");
    assert!(e.contains(":11:14: admin.token_file: cannot read "), "{e}");
    let e = err("listen = \"127.0.0.1:9090\"\nauth = \"all\"");
    assert!(
        e.contains(":11:8: admin.auth: auth needs credentials"),
        "{e}"
    );
    let e = err("listen = \"127.0.0.1:9090\"\ntoken_file = \"token\"\nauth = \"some\"");
    assert!(e.contains("admin.auth: unknown auth \"some\""), "{e}");
    let e = err("listen = \"127.0.0.1:9090\"\nallow = [\"10.0.0.0/8\", \"10.1.2.3/8\"]");
    assert!(e.contains(":11:24: admin.allow[1]: "), "{e}");
    let e = err("listen = \"127.0.0.1:9090\"\nhosts = [\"a b\"]");
    assert!(e.contains("admin.hosts[0]: invalid host"), "{e}");
    let e = err("listen = \"127.0.0.1:9090\"\ntoken_file = \"token\"\ninsecure_no_auth = true");
    assert!(e.contains("admin.insecure_no_auth: "), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn upgrade_socket_is_relative_to_the_config_file() {
    let src = with("upgrade_socket = \"run/ringlb.sock\"", "");
    let config = parse(&src).unwrap();
    assert_eq!(
        config.server.upgrade_socket.as_deref(),
        Some(Path::new("run/ringlb.sock"))
    );
    assert_eq!(parse(&with("", "")).unwrap().server.upgrade_socket, None);
}

#[test]
fn access_log_keys() {
    assert_eq!(parse(&with("", "")).unwrap().server.access_log, None);
    let src = with("access_log = { path = \"logs/access.log\" }", "");
    let log = parse(&src).unwrap().server.access_log.unwrap();
    assert_eq!(log.path, Path::new("logs/access.log"));
    assert_eq!(log.format, AccessLogFormat::Combined);

    let dir = Path::new("/etc/ringlb");
    let src = with(
        "access_log = { path = \"access.log\", format = \"json\" }",
        "",
    );
    let config = Config::from_toml_str(&src, &dir.join("ringlb.toml")).unwrap();
    let log = config.server.access_log.as_ref().unwrap();
    assert_eq!(log.path, dir.join("access.log"));
    assert_eq!(log.format, AccessLogFormat::Json);
    assert!(config
        .summary()
        .contains("access log: /etc/ringlb/access.log (json)"));
}

#[test]
fn error_access_log() {
    let src = with("access_log = { path = \"a.log\", format = \"clf\" }", "");
    assert_rejected(
        &src,
        "config.toml:3:",
        "unknown variant `clf`, expected `combined` or `json`",
    );
    let src = with("access_log = { path = \"\" }", "");
    assert_rejected(
        &src,
        "config.toml:3:23: server.access_log.path: ",
        "empty access log path",
    );
}

#[test]
fn load_accepts_tls_listeners_and_tls_upstreams_with_http_checks() {
    let dir = std::env::temp_dir().join(format!("ringlb-tls-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tls_listen = format!(
        "listen = [{{ addr = \"127.0.0.1:8443\", tls = {{ cert = {:?}, key = {:?} }} }}]",
        manifest.join("certs/server.pem").display().to_string(),
        manifest.join("certs/server.key").display().to_string()
    );
    let src = with_listen(&tls_listen).replace(
        "[upstreams.app]",
        &format!(
            "[upstreams.app]\ntls = true\ntls_ca = {:?}",
            manifest.join("certs/ca.pem").display().to_string()
        ),
    ) + "[upstreams.app.health]\ntype = \"http\"\n";
    let path = dir.join("config.toml");
    std::fs::write(&path, &src).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{src}"));
    assert!(config.server.listen[0].tls.is_some());
    assert!(config.upstreams[0].tls.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `with("", "")` with `line` added after the route's `upstream` (line 6).
fn with_route_line(line: &str) -> String {
    with("", "").replace("upstream = \"app\"", &format!("upstream = \"app\"\n{line}"))
}

#[test]
fn route_conditions_parse() {
    let src = with_route_line(
        "methods = [\"GET\", \"POST\"]\npath_regex = \"^/u/[0-9]+$\"\n\
         headers = [{ name = \"X-A\" }, { name = \"X-B\", value = \"1\" }, { name = \"X-C\", regex = \"^c\" }]",
    );
    let config = parse(&src).unwrap();
    let m = config.routes[0].matching.as_deref().unwrap();
    assert_eq!(m.methods, ["GET", "POST"]);
    assert_eq!(m.path_regex.as_ref().unwrap().as_str(), "^/u/[0-9]+$");
    assert_eq!(m.headers.len(), 3);
    // A route without conditions carries none.
    assert!(parse(&with("", "")).unwrap().routes[0].matching.is_none());
}

#[test]
fn error_bad_path_regex() {
    assert_rejected(
        &with_route_line("path_regex = \"(\""),
        "config.toml:6:14: routes[0].path_regex: ",
        "invalid regex \"(\"",
    );
}

#[test]
fn error_bad_method() {
    assert_rejected(
        &with_route_line("methods = [\"GET\", \"B AD\"]"),
        "config.toml:6:19: routes[0].methods[1]: ",
        "is not an HTTP method token",
    );
    assert_rejected(
        &with_route_line("methods = []"),
        "config.toml:6:11: routes[0].methods: ",
        "give 1 to 32 methods",
    );
}

#[test]
fn error_bad_header_condition() {
    assert_rejected(
        &with_route_line("headers = [{ name = \"X\", value = \"a\", regex = \"b\" }]"),
        "config.toml:6:47: routes[0].headers[0].regex: ",
        "not both",
    );
    assert_rejected(
        &with_route_line("headers = [{ name = \"X:Y\" }]"),
        "config.toml:6:21: routes[0].headers[0].name: ",
        "not a header field name",
    );
    assert_rejected(
        &with_route_line("headers = [{ name = \"X\", regex = \"[\" }]"),
        "config.toml:6:34: routes[0].headers[0].regex: ",
        "invalid regex",
    );
}

#[test]
fn route_rewrites_parse() {
    let src = with_route_line(
        "strip_prefix = \"/api\"\nadd_prefix = \"/v2\"\nhost_rewrite = \"[::1]:81\"\n\
         replace_prefix = { from = \"/a/\", to = \"/b/\" }\n\
         regex_rewrite = { pattern = \"^/x/(.*)\", substitution = \"/y/$1\" }",
    );
    let config = parse(&src).unwrap();
    let r = config.routes[0].rewrite.as_deref().unwrap();
    assert_eq!(r.strip_prefix.as_deref(), Some("/api"));
    assert_eq!(r.add_prefix.as_deref(), Some("/v2"));
    assert_eq!(r.host.as_ref().and_then(|h| h.name()), Some("[::1]:81"));
    assert_eq!(
        r.target("/api/a/x/1?q").unwrap().as_deref(),
        Some("/v2/b/x/1?q")
    );
    assert!(parse(&with("", "")).unwrap().routes[0].rewrite.is_none());
    assert_rejected(
        &with_route_line("host_rewrite = \"a:99999\""),
        "config.toml:6:16: routes[0].host_rewrite: ",
        "not a host name",
    );
}

#[test]
fn overload_mode() {
    let config = parse(&with("", "")).unwrap();
    assert_eq!(config.server.overload, super::Overload::Reject);
    let config = parse(&with("overload = \"queue\"", "")).unwrap();
    assert_eq!(config.server.overload, super::Overload::Queue);
    assert_rejected(
        &with("overload = \"drop\"", ""),
        "config.toml:3:12: server.overload",
        "unknown variant `drop`, expected `queue` or `reject`",
    );
}

#[test]
fn route_replies_parse() {
    let src = with_route_line(
        "response_headers = { set = { X-Served-By = \"$backend\" }, remove = [\"Server\"] }\n\
         host_rewrite = \"backend\"\n\
         https_redirect = true\n\
         intercept_errors = [502, 502]\n\
         error_pages = [{ status = [502, 503], text = \"down $status\", content_type = \"text/html\" }]",
    );
    let config = parse(&src).unwrap();
    let r = &config.routes[0];
    assert_eq!(
        r.rewrite.as_deref().unwrap().host,
        Some(crate::gateway::HostRewrite::Backend)
    );
    assert!(r.https_redirect);
    let edits = r.response_headers.as_deref().unwrap();
    assert!(edits.uses_backend());
    assert_eq!(edits.remove, ["Server"]);
    let pages = r.error_pages.as_deref().unwrap();
    assert_eq!(pages.intercept, [502], "listed twice, kept once");
    assert_eq!(pages.get(503).unwrap().content_type, "text/html");
    assert!(pages.get(504).is_none());
    assert!(config.server.error_pages.is_empty());
}

#[test]
fn redirect_routes_have_no_upstream() {
    let src = with("", "").replace(
        "upstream = \"app\"",
        "redirect = { to = \"https://$host$path\", status = 308 }",
    );
    let config = parse(&src).unwrap();
    let r = &config.routes[0];
    assert_eq!(r.upstream, None);
    let redirect = r.redirect.as_deref().unwrap();
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.location("http", "h", "/a?b").unwrap(),
        "https://h/a"
    );
}

/// The edge keys parse into their types with their defaults.
#[test]
fn edge_keys_and_defaults() {
    use crate::gateway::cors::OriginPattern;
    use crate::gateway::rate_limit::RateKey;
    let src = r#"
[server]
listen = [{ addr = "127.0.0.1:8080", deny = ["192.0.2.0/24"], max_connections_per_ip = 8 }, "127.0.0.1:8081"]
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
max_connections_per_ip = 100
[upstreams.app]
backends = [{ addr = "127.0.0.1:9001" }]
[[routes]]
upstream = "app"
allow = ["127.0.0.1"]
rate_limit = { rate = "10/s" }
cors = { allow_origins = ["*"] }
[[routes]]
path_prefix = "/k"
upstream = "app"
rate_limit = { rate = "5/m", burst = 20, key = "header:X-Key" }
"#;
    let config = parse(src).unwrap();
    let s = &config.server;
    assert_eq!(s.trusted_proxies.0.len(), 2);
    assert!(s.trusted_proxies.contains("10.9.9.9".parse().unwrap()));
    assert_eq!(s.max_connections_per_ip.map(|n| n.get()), Some(100));
    assert_eq!(s.listen[0].max_connections_per_ip.map(|n| n.get()), Some(8));
    let rules = s.listen[0].access.as_deref().unwrap();
    assert!(!rules.permits("192.0.2.1".parse().unwrap()));
    assert!(rules.permits("127.0.0.1".parse().unwrap()));
    assert_eq!(s.listen[1].access, None);
    assert_eq!(s.listen[1].max_connections_per_ip, None);
    let r0 = &config.routes[0];
    assert!(r0
        .access
        .as_deref()
        .unwrap()
        .permits("127.0.0.1".parse().unwrap()));
    let limit = r0.rate_limit.as_deref().unwrap();
    assert_eq!((limit.interval, limit.burst), (100_000_000, 1));
    assert_eq!(limit.key, RateKey::ClientIp);
    let cors = r0.cors.as_deref().unwrap();
    assert_eq!(cors.allow_origins, [OriginPattern::Any]);
    assert_eq!(cors.allow_methods, "GET, HEAD, POST");
    assert_eq!((cors.allow_credentials, cors.max_age), (false, None));
    let limit = config.routes[1].rate_limit.as_deref().unwrap();
    assert_eq!((limit.interval, limit.burst), (12_000_000_000, 20));
    assert_eq!(limit.key, RateKey::Header("x-key".into()));
    assert_ne!(limit.identity, r0.rate_limit.as_deref().unwrap().identity);
    let summary = config.summary();
    assert!(
        summary.contains("path / (allow/deny) (rate limited) (cors) -> app"),
        "{summary}"
    );
}

/// `[upstreams.app]` with these lines and no `backends` (line 6 is the
/// first of `lines`).
fn discovery_only(lines: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\n{lines}\n"
    )
}

#[test]
fn discovery_exactly_as_documented() {
    let src = discovery_only(
        r#"discovery = { dns = "app.internal", port = 8080, interval = "10s", min_interval = "2s", resolvers = ["127.0.0.1:8600", "10.0.0.2"], allow_empty = true }"#,
    );
    let config = parse(&src).unwrap();
    let app = &config.upstreams[0];
    assert!(app.backends.is_empty());
    assert_eq!(app.static_backends, 0);
    let d = app.discovery.as_ref().unwrap();
    assert_eq!(d.dns, "app.internal");
    assert_eq!(
        d.records,
        DiscoveryRecords::Address {
            port: NonZeroU16::new(8080).unwrap()
        }
    );
    assert_eq!(d.interval, Duration::from_secs(10));
    assert_eq!(d.min_interval, Duration::from_secs(2));
    assert_eq!(
        d.resolvers,
        vec![
            "127.0.0.1:8600".parse::<SocketAddr>().unwrap(),
            "10.0.0.2:53".parse().unwrap()
        ]
    );
    assert!(d.allow_empty);

    // SRV without port; defaults; a trailing dot is dropped.
    let config = parse(&discovery_only(
        r#"discovery = { dns = "web.service.consul." }"#,
    ))
    .unwrap();
    let d = config.upstreams[0].discovery.as_ref().unwrap();
    assert_eq!(d.dns, "web.service.consul");
    assert_eq!(d.records, DiscoveryRecords::Srv);
    assert_eq!(d.interval, DEFAULT_DISCOVERY_INTERVAL);
    assert_eq!(d.min_interval, DEFAULT_DISCOVERY_MIN_INTERVAL);
    assert!(d.resolvers.is_empty() && !d.allow_empty);
    // Static backends besides discovery.
    let src = with("", r#"discovery = { dns = "app.internal", port = 80 }"#);
    let config = parse(&src).unwrap();
    assert_eq!(config.upstreams[0].static_backends, 1);
}

#[test]
fn error_discovery_keys() {
    let cases = [
        (
            "",
            "config.toml:5:12: upstreams.app.backends: ",
            "missing backends (need a list of { addr = \"ip:port\" }, or discovery)",
        ),
        (
            "discovery = { port = 80 }",
            "config.toml:5:12: upstreams.app.discovery.dns: ",
            "discovery needs dns",
        ),
        (
            r#"discovery = { dns = "not a name", port = 80 }"#,
            "config.toml:6:21: upstreams.app.discovery.dns: ",
            "invalid dns \"not a name\"",
        ),
        (
            r#"discovery = { dns = "10.0.0.1", port = 80 }"#,
            "config.toml:6:21: upstreams.app.discovery.dns: ",
            "expected a DNS name",
        ),
        (
            r#"discovery = { dns = "_http._tcp.app", port = 80 }"#,
            "config.toml:6:46: upstreams.app.discovery.port: ",
            "is an SRV name, whose records carry their ports",
        ),
        (
            r#"discovery = { dns = "app", port = 0 }"#,
            "config.toml:6:35: upstreams.app.discovery.port: ",
            "0 is out of range, expected 1..=65535",
        ),
        (
            r#"discovery = { dns = "app", interval = "1s", min_interval = "2s" }"#,
            "config.toml:6:60: upstreams.app.discovery.min_interval: ",
            "min_interval 2s is longer than interval 1s",
        ),
        (
            r#"discovery = { dns = "app", interval = "0s" }"#,
            "config.toml:6:39: upstreams.app.discovery.interval: ",
            "greater than zero",
        ),
        (
            r#"discovery = { dns = "app", resolvers = ["dns.example:53"] }"#,
            "config.toml:6:41: upstreams.app.discovery.resolvers[0]: ",
            "invalid socket address \"dns.example:53\"",
        ),
        (
            r#"discovery = { dns = "app", resolvers = ["1.1.1.1","1.1.1.2","1.1.1.3","1.1.1.4","1.1.1.5","1.1.1.6","1.1.1.7","1.1.1.8","1.1.1.9"] }"#,
            "config.toml:6:40: upstreams.app.discovery.resolvers: ",
            "9 resolvers, at most 8",
        ),
        (
            r#"discovery = { dns = "app", srv = true }"#,
            "config.toml:6:",
            "unknown field `srv`",
        ),
    ];
    for (lines, prefix, detail) in cases {
        assert_rejected(&discovery_only(lines), prefix, detail);
    }
}
