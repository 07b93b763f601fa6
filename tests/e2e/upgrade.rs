//! Upgrade: a 101 from the backend turns the connection into a byte tunnel
//! both ways; a 200 to an Upgrade request keeps HTTP, so the bytes after
//! it are further requests, not tunnel data.

use std::io::Write;
use std::thread;

use crate::backend::{Backend, Reply};
use crate::client::{checksum, get, pattern, request, Client, Headers};
use crate::harness::{wait_until, Proxy, WAIT};

fn upgrade_request() -> Vec<u8> {
    request(
        "GET",
        "/ws",
        &[("Connection", "Upgrade"), ("Upgrade", "echo-proto")],
        b"",
    )
}

fn tunnel_backend() -> Backend {
    Backend::start(|_| {
        Reply::Upgrade(vec![
            ("Connection".into(), "Upgrade".into()),
            ("Upgrade".into(), "echo-proto".into()),
        ])
    })
}

/// Connects and upgrades; returns the client positioned in the tunnel.
fn open_tunnel(proxy: &Proxy) -> Client {
    let mut c = proxy.client();
    let resp = c.roundtrip(&upgrade_request());
    assert_eq!(resp.status, 101, "{:?}", resp.head);
    assert!(resp.has_token("upgrade", "echo-proto"), "{:?}", resp.head);
    assert!(resp.has_token("connection", "upgrade"), "{:?}", resp.head);
    c
}

fn read_exactly(c: &mut Client, n: usize) -> Vec<u8> {
    c.wire
        .read_exact_n(n)
        .unwrap_or_else(|e| panic!("reading {n} tunnelled bytes: {e}"))
}

#[test]
fn backend_101_turns_connection_into_tunnel() {
    let backend = tunnel_backend();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = open_tunnel(&proxy);
    // Upgrade and Connection: upgrade must reach the backend when upgrading.
    let req = backend.last_request();
    assert_eq!(req.header("upgrade"), Some("echo-proto"));
    assert!(
        req.has_token("connection", "upgrade"),
        "{:?}",
        req.head.headers
    );
    for msg in [
        &b"hello"[..],
        b"not http at all\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        c.send(msg);
        assert_eq!(read_exactly(&mut c, msg.len()), msg);
    }
}

#[test]
fn tunnel_carries_a_megabyte_each_way() {
    let backend = tunnel_backend();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = open_tunnel(&proxy);
    let data = pattern(1024 * 1024);
    let mut writer = c.wire.stream.try_clone().unwrap();
    let echoed = thread::scope(|s| {
        s.spawn(|| {
            for piece in data.chunks(32 * 1024) {
                writer.write_all(piece).unwrap();
            }
        });
        read_exactly(&mut c, data.len())
    });
    assert_eq!(checksum(&echoed), checksum(&data));
}

/// Tunnel payload counts in the byte metrics, once the tunnel ends.
#[test]
fn tunnel_bytes_are_counted_in_the_byte_metrics() {
    let backend = tunnel_backend();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    let counters = || {
        [
            "ringlb_client_bytes_received_total",
            "ringlb_client_bytes_sent_total",
            "ringlb_upstream_bytes_sent_total",
            "ringlb_upstream_bytes_received_total",
        ]
        .map(|name| crate::admin::metric(&proxy, name))
    };
    let mut c = open_tunnel(&proxy);
    let before = counters();
    let data = pattern(256 * 1024);
    c.send(&data);
    assert_eq!(checksum(&read_exactly(&mut c, data.len())), checksum(&data));
    drop(c);
    let n = data.len() as f64;
    let mut last = before;
    // Exactly the payload each way; bytes to the client also include the
    // 101 head, counted when the exchange (the tunnel) ends.
    let moved = |now: [f64; 4]| {
        let d: Vec<f64> = now.iter().zip(before).map(|(a, b)| a - b).collect();
        d[0] == n && d[2] == n && d[3] == n && d[1] >= n && d[1] < n + 512.0
    };
    assert!(
        wait_until(WAIT, || {
            last = counters();
            moved(last)
        }),
        "byte counters before {before:?}, after {last:?}, want +{n} each"
    );
}

#[test]
fn closing_the_client_closes_the_tunnel_upstream() {
    let backend = tunnel_backend();
    let proxy = Proxy::simple(&[backend.addr]);
    let baseline = {
        // Warm up once so lazily created resources are in the baseline.
        let mut c = open_tunnel(&proxy);
        c.send(b"x");
        read_exactly(&mut c, 1);
        drop(c);
        assert!(wait_until(WAIT, || backend.open_connections() == 0));
        proxy.settled_fd_count()
    };
    let mut clients: Vec<Client> = (0..10).map(|_| open_tunnel(&proxy)).collect();
    for c in &mut clients {
        c.send(b"ping");
        assert_eq!(read_exactly(c, 4), b"ping");
    }
    drop(clients);
    assert!(
        wait_until(WAIT, || backend.open_connections() == 0),
        "{} tunnels still open upstream after the clients left",
        backend.open_connections()
    );
    proxy.assert_fds_return_to(baseline, "closing tunnels");
}

#[test]
fn backend_closing_the_tunnel_closes_the_client() {
    let backend = Backend::start(|_| {
        Reply::Raw(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\nbye".to_vec())
    });
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = open_tunnel(&proxy);
    let rest = c.read_until_closed();
    assert_eq!(rest, b"bye");
}

#[test]
fn idle_tunnel_is_closed_after_tunnel_timeout() {
    let backend = tunnel_backend();
    let proxy = Proxy::builder()
        .server("tunnel_timeout = \"1s\"")
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut c = open_tunnel(&proxy);
    c.send(b"abc");
    assert_eq!(read_exactly(&mut c, 3), b"abc");
    let rest = c.read_until_closed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(wait_until(WAIT, || backend.open_connections() == 0));
}

#[test]
fn upgrade_answered_with_200_keeps_http() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let mut both = upgrade_request();
    both.extend(get("/after-upgrade"));
    c.send(&both);
    let first = c.read_response();
    assert_eq!(first.status, 200);
    assert!(first.body_str().contains("target /ws\n"));
    let second = c.read_response();
    assert_eq!(second.status, 200);
    assert!(
        second.body_str().contains("target /after-upgrade\n"),
        "bytes after a refused upgrade were not treated as a request: {}",
        second.body_str()
    );
    let targets: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/ws", "/after-upgrade"]);
}

#[test]
fn non_http_bytes_after_refused_upgrade_are_not_tunnelled() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let mut both = upgrade_request();
    both.extend_from_slice(b"\x00\x01binary-frame\r\n\r\n");
    c.send(&both);
    let first = c.read_response();
    assert_eq!(first.status, 200);
    // The junk is parsed as a request: an error and a close, and the
    // backend never sees it.
    let rest = c.read_until_closed();
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(backend.request_count(), 1);
}
