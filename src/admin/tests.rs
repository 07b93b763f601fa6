//! The admin endpoints over real loopback sockets, with recording hooks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;

use super::*;

struct Fixture {
    server: AdminServer,
    draining: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<String>>>,
}

fn start() -> Fixture {
    start_with(Limits::default())
}

fn start_with(limits: Limits) -> Fixture {
    let draining = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (c1, c2, c3) = (calls.clone(), calls.clone(), calls.clone());
    let hooks = AdminHooks {
        metrics_text: Box::new(|| "# TYPE ringlb_x counter\nringlb_x 1\n".to_owned()),
        status_json: Box::new(|| json!({ "workers": 2 })),
        draining: draining.clone(),
        set_backend_draining: Box::new(move |upstream, addr, drain| {
            c1.lock()
                .unwrap()
                .push(format!("{upstream} {addr} {drain}"));
            if upstream == "app" {
                Ok(())
            } else {
                Err(format!("no upstream {upstream:?}"))
            }
        }),
        reload: Some(Box::new(move || {
            let mut calls = c2.lock().unwrap();
            calls.push("reload".into());
            if calls.iter().filter(|c| *c == "reload").count() == 1 {
                Ok(())
            } else {
                Err("config.toml:1:1: bad".into())
            }
        })),
        purge_cache: Some(Box::new(move |zone, purge| {
            c3.lock().unwrap().push(format!("purge {zone} {purge:?}"));
            if zone == "main" {
                Ok(3)
            } else {
                Err(format!("no cache zone {zone:?}"))
            }
        })),
        counters: Arc::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = AdminServer::start_on(listener, hooks, Guard::open(), limits).unwrap();
    Fixture {
        server,
        draining,
        calls,
    }
}

/// Sends `raw` and returns the status, the head and the body.
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    let status = head[9..12].parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

fn post(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(
        addr,
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
}

#[test]
fn metrics_status_healthz() {
    let f = start();
    let addr = f.server.local_addr();
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert_eq!(body, "# TYPE ringlb_x counter\nringlb_x 1\n");

    let (status, head, body) = get(addr, "/status");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["workers"], 2);

    assert_eq!(get(addr, "/healthz").0, 200);
    f.draining.store(true, Ordering::Relaxed);
    let (status, _, body) = get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    status_page_is_served_self_contained(addr);
    f.server.stop();
}

/// Part of the test above (one admin server, not another: the io tests
/// count the process's descriptors).
fn status_page_is_served_self_contained(addr: SocketAddr) {
    let (status, head, body) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("Content-Security-Policy: default-src 'none'"),
        "{head}"
    );
    assert_eq!(body, STATUS_PAGE);
    // Nothing is loaded from elsewhere: no absolute URL, no external file.
    for needle in [
        "http:", "https:", "//cdn", "<link", "src=", "@import", "url(",
    ] {
        assert!(!body.contains(needle), "status page contains {needle:?}");
    }
    // It polls the two endpoints, and its buttons send the admin header.
    for needle in [
        "\"/status\"",
        "\"/metrics\"",
        "\"X-Ringlb-Admin\": \"1\"",
        "\"/backends/\"",
        "\"drain\"",
        "\"enable\"",
    ] {
        assert!(body.contains(needle), "status page lacks {needle:?}");
    }
    assert_eq!(get(addr, "/?refresh=1").0, 200);
    let (status, head, _) = post(addr, "/");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
}

#[test]
fn drain_enable_reload() {
    let f = start();
    let addr = f.server.local_addr();
    let (status, _, body) = post(addr, "/backends/app/127.0.0.1:9001/drain");
    assert_eq!(
        (status, body.as_str()),
        (200, "app 127.0.0.1:9001: drained\n")
    );
    let (status, _, body) = post(addr, "/backends/app/%5B%3A%3A1%5D:80/enable");
    assert_eq!((status, body.as_str()), (200, "app [::1]:80: enabled\n"));
    let (status, _, body) = post(addr, "/backends/nope/127.0.0.1:9001/drain");
    assert_eq!((status, body.as_str()), (404, "no upstream \"nope\"\n"));
    assert_eq!(post(addr, "/reload").0, 200);
    let (status, _, body) = post(addr, "/reload");
    assert_eq!(status, 500);
    assert!(body.contains("config.toml:1:1: bad"), "{body}");
    assert_eq!(
        *f.calls.lock().unwrap(),
        [
            "app 127.0.0.1:9001 true",
            "app [::1]:80 false",
            "nope 127.0.0.1:9001 true",
            "reload",
            "reload"
        ]
    );
}

#[test]
fn wrong_method_unknown_path_and_limits() {
    let f = start();
    let addr = f.server.local_addr();
    let (status, head, _) = get(addr, "/reload");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: POST"), "{head}");
    assert_eq!(post(addr, "/metrics").0, 405);
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(get(addr, "/backends/app/x/explode").0, 404);
    assert_eq!(exchange(addr, b"BLAH\r\n\r\n").0, 400);
    // A head that never ends within the limit.
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_HEAD_BYTES + 10, b'a');
    assert_eq!(exchange(addr, &big).0, 431);
    let huge = format!(
        "POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    assert_eq!(exchange(addr, huge.as_bytes()).0, 413);
    // The proxy's strict parser reads admin heads too: an HTTP/1.1 request
    // without Host, and a chunked body, are refused.
    assert_eq!(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").0, 400);
    assert_eq!(
        exchange(
            addr,
            b"POST /reload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .0,
        411
    );
    // A small body is read and ignored.
    let (status, _, _) = exchange(
        addr,
        b"POST /backends/app/1.2.3.4:5/drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(status, 200);
    // Still serving after all that.
    assert_eq!(get(addr, "/healthz").0, 200);
}

#[test]
fn a_silent_client_does_not_wedge_it_forever_and_panics_are_500() {
    let hooks = AdminHooks {
        metrics_text: Box::new(|| panic!("boom")),
        status_json: Box::new(|| json!({})),
        draining: Arc::new(AtomicBool::new(false)),
        set_backend_draining: Box::new(|_, _, _| Ok(())),
        reload: None,
        purge_cache: None,
        counters: Arc::default(),
    };
    let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), hooks, Guard::open()).unwrap();
    let addr = server.local_addr();
    // Half a head, then nothing: it does not hold up the next client.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /hea").unwrap();
    drop(idle);
    assert_eq!(get(addr, "/metrics").0, 500);
    assert_eq!(get(addr, "/healthz").0, 200);
    // No reload hook: 501.
    let (status, _, body) = post(addr, "/reload");
    assert_eq!(
        (status, body.as_str()),
        (501, "reload is not supported yet\n")
    );
    drop(server); // Drop stops and joins.
}

/// Silent clients each hold a slot, not the listener: a scrape is
/// answered while they are still open; past every slot `/healthz` is
/// still answered and anything else gets 429, never 503.
#[test]
fn silent_clients_do_not_hold_up_others_and_busy_is_429_not_503() {
    let limits = Limits {
        connections: 4,
        overflow: 2,
        request_timeout: Duration::from_secs(30),
        overflow_timeout: Duration::from_secs(30),
    };
    let fixture = start_with(limits);
    let addr = fixture.server.local_addr();
    let silent = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /hea").unwrap();
                s
            })
            .collect()
    };
    let still_open = |streams: &[TcpStream]| {
        streams.iter().all(|s| {
            s.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            let open =
                matches!((&*s).read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            open
        })
    };
    let holding = silent(limits.connections - 1);
    assert_eq!(get(addr, "/healthz").0, 200);
    // Answered while every silent connection was still open and unserved.
    assert!(still_open(&holding));
    // Every slot taken (accepts are in order, so these come after).
    let full = silent(1);
    assert_eq!(get(addr, "/healthz").0, 200, "health is answered when busy");
    let (status, head, _) = get(addr, "/metrics");
    assert_eq!(status, 429, "busy is 429, not 503");
    assert!(head.contains("Retry-After: 1"), "{head}");
    assert!(still_open(&holding) && still_open(&full));
    // Overflow taken too: refused at once.
    let overflow = silent(limits.overflow);
    let mut refused = TcpStream::connect(addr).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut out = Vec::new();
    let _ = refused.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    drop((holding, full, overflow));
    let answered = |path: &str| -> Option<u16> {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.get(9..12)?.parse().ok()
    };
    let mut ok = false;
    for _ in 0..500 {
        if answered("/metrics") == Some(200) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok, "slots are given back when clients leave");
}

/// The deadline is for the whole request, not for each read: a client
/// that trickles a byte at a time is cut off.
#[test]
fn a_trickling_client_gets_408_at_the_request_deadline() {
    let limits = Limits {
        request_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let fixture = start_with(limits);
    let addr = fixture.server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut out = Vec::new();
    for byte in head {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !out.is_empty() {
            break;
        }
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out:?}");
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%20b"), "a b");
    assert_eq!(percent_decode("%5B%3a%3A1%5D"), "[::1]");
    assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    assert_eq!(percent_decode("%4"), "%4");
}

struct View(bool, u8, u64);

impl BackendView for View {
    fn healthy(&self) -> bool {
        self.0
    }
    fn breaker_state(&self) -> u8 {
        self.1
    }
    fn in_flight(&self) -> u64 {
        self.2
    }
}

#[test]
fn status_document() {
    let src = "[server]\nlisten = [\"127.0.0.1:8080\"]\nworkers = 2\n[[routes]]\nupstream = \"app\"\n\
               [upstreams.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }, { addr = \"127.0.0.1:9002\", weight = 3 }]\n";
    let config = Config::from_toml_str(src, std::path::Path::new("ringlb.toml")).unwrap();
    let mut registry = metrics::Registry::new(metrics::Layout::from_config(&config));
    let shard = registry.new_shard();
    shard.request(Some(0), Some(1), 200, metrics::Method::Get, Duration::ZERO);
    shard.request(Some(0), Some(1), 502, metrics::Method::Post, Duration::ZERO);
    shard.requests.add(2);
    let info = StatusInfo {
        config_version: 3,
        config_loaded_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        workers: 2,
        draining: false,
        listening: Vec::new(),
        started_at: UNIX_EPOCH + Duration::from_secs(1_699_999_000),
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_090),
    };
    let views = vec![vec![View(true, 0, 0), View(false, 1, 4)]];
    let v = status_json(&config, info, &registry.snapshot(), &views);
    assert_eq!(v["config"]["version"], 3);
    assert_eq!(v["config"]["loaded_at_unix"], 1_700_000_000u64);
    assert_eq!(v["config"]["path"], "ringlb.toml");
    assert_eq!(v["workers"], 2);
    assert_eq!(v["listen"][0]["tls"], false);
    let app = &v["upstreams"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["requests"], 2);
    let b = &app["backends"][1];
    assert_eq!(b["addr"], "127.0.0.1:9002");
    assert_eq!(b["weight"], 3);
    assert_eq!(b["healthy"], false);
    assert_eq!(b["breaker"], "open");
    assert_eq!(b["in_flight"], 4);
    assert_eq!(b["requests"], 2);
    assert_eq!(app["backends"][0]["requests"], 0);
    assert_eq!(b["responses_5xx"], 1);
    assert_eq!(app["backends"][0]["responses_5xx"], 0);
    assert_eq!(v["started_at_unix"], 1_699_999_000u64);
    assert_eq!(v["uptime_secs"], 1_090);
    assert_eq!(v["now_unix"], 1_700_000_090u64);
    assert_eq!(v["counters"]["requests"], 2);
}

#[test]
fn cache_purge_takes_one_of_key_prefix_or_all() {
    let f = start();
    let addr = f.server.local_addr();
    let (status, _, body) = post(addr, "/cache/main/purge?prefix=/api/");
    assert_eq!((status, body.as_str()), (200, "main: purged 3 entries\n"));
    assert_eq!(post(addr, "/cache/main/purge?all").0, 200);
    assert_eq!(
        post(addr, "/cache/main/purge?key=http%3A%2F%2Fa%2Fx%3Fy%3D1").0,
        200
    );
    assert_eq!(post(addr, "/cache/main/purge?prefix=https://a/b").0, 200);
    // Unknown zone, bad or missing parameters, wrong method.
    assert_eq!(post(addr, "/cache/other/purge?all").0, 404);
    for bad in ["", "?key=/x", "?prefix=x", "?all&key=http://a/", "?what=1"] {
        assert_eq!(
            post(addr, &format!("/cache/main/purge{bad}")).0,
            400,
            "{bad}"
        );
    }
    assert_eq!(get(addr, "/cache/main/purge?all").0, 405);
    let calls = f.calls.lock().unwrap().clone();
    let purges: Vec<_> = calls.iter().filter(|c| c.starts_with("purge")).collect();
    assert_eq!(
        purges,
        [
            "purge main PathPrefix(\"/api/\")",
            "purge main All",
            "purge main Url(\"http://a/x?y=1\")",
            "purge main UrlPrefix(\"https://a/b\")",
            "purge other All",
        ]
    );
}
