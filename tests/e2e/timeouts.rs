//! Timeouts: each one closes what it should, leaks no fds, and loses no
//! bytes when activity resumes shortly before it would fire.
//!
//! Leak checks: warm up, take the settled fd count of the proxy as the
//! baseline, trigger the timeout on 20 connections at once, wait until
//! every client saw its connection end, then wait (up to 10 s) for the fd
//! count to return to the baseline. "No lost bytes" checks pause at 0.6 of
//! a 2 s timeout and compare exact lengths and checksums.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::backend::{Backend, Reply, Resp};
use crate::client::{checksum, get, pattern, request, Client};
use crate::harness::{wait_until, Blackhole, Proxy, ProxyBuilder, WAIT};

/// Timeout used where the test waits for it to fire.
const SHORT: &str = "\"1s\"";
/// Timeout used where the test resumes before it fires, and the pause.
const LONG: &str = "\"2s\"";
const PAUSE: Duration = Duration::from_millis(1200);

/// A backend that answers and asks to close, so no upstream connection is
/// pooled and the proxy's fd count reflects client connections only.
fn closing_echo() -> Backend {
    Backend::start(|req| {
        let Reply::Http(r) = Reply::echo(req) else {
            unreachable!()
        };
        r.header("Connection", "close").into()
    })
}

fn proxy_with(backend: &Backend, server: &str, upstream: &[&str]) -> Proxy {
    builder(backend, server, upstream).start()
}

fn builder(backend: &Backend, server: &str, upstream: &[&str]) -> ProxyBuilder {
    Proxy::builder()
        .server(server)
        .upstream("app", &[backend.addr], upstream)
}

/// Runs `scenario` twice to warm up, takes the baseline, runs it on 20
/// threads at once, and asserts the fd count returns to the baseline.
/// The count must also visibly rise meanwhile, or the check proves nothing.
fn assert_no_fd_leak(proxy: &Proxy, what: &str, scenario: impl Fn() + Sync) {
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(&scenario);
        }
    });
    let baseline = proxy.settled_fd_count();
    let peak = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(proxy.fd_count(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(10));
            }
        });
        thread::scope(|s| {
            for _ in 0..20 {
                s.spawn(&scenario);
            }
        });
        done.store(true, Ordering::SeqCst);
    });
    let peak = peak.into_inner();
    assert!(
        peak >= baseline + 10,
        "{what}: fd count peaked at {peak} over a baseline of {baseline}; \
         the 20 connections were not seen"
    );
    proxy.assert_fds_return_to(baseline, what);
}

/// Waits for the proxy to close; the only bytes it may send first are an
/// optional 408 response.
fn expect_close_maybe_408(c: &mut Client) {
    let rest = c.read_until_closed();
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "unexpected bytes before close: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn head_timeout_closes_a_partial_head() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("head_timeout = {SHORT}"), &[]);
    let mut c = proxy.client();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    expect_close_maybe_408(&mut c);
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn head_timeout_closes_an_idle_new_connection() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("head_timeout = {SHORT}"), &[]);
    let mut c = proxy.client();
    expect_close_maybe_408(&mut c);
}

#[test]
fn head_timeout_closes_a_slowloris_drip() {
    // One header byte every 100 ms keeps every read short, but the head as
    // a whole never completes: the proxy must close within WAIT.
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("head_timeout = {SHORT}"), &[]);
    let mut c = proxy.client();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    c.wire
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let drip = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut i = 0;
    let closed = wait_until(WAIT, || {
        if c.try_send(&drip[i % drip.len()..][..1]).is_err() {
            return true;
        }
        i += 1;
        let mut b = [0u8; 1024];
        match c.wire.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => b.starts_with(b"HTTP/1.1 408"),
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    });
    assert!(closed, "a dripping head was kept open for {WAIT:?}");
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn head_timeout_leaks_no_fds() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("head_timeout = {SHORT}"), &[]);
    assert_no_fd_leak(&proxy, "head_timeout", || {
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
        expect_close_maybe_408(&mut c);
    });
}

#[test]
fn head_completed_just_before_head_timeout_is_served() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("head_timeout = {LONG}"), &[]);
    let mut c = proxy.client();
    c.send(b"GET /split HTTP/1.1\r\nHo");
    thread::sleep(PAUSE);
    c.send(b"st: a\r\nX-Second: half\r\n\r\n");
    let resp = c.read_response();
    assert_eq!(resp.status, 200);
    let req = backend.last_request();
    assert_eq!(req.target, "/split");
    assert_eq!(
        crate::client::Headers::header(&req, "x-second"),
        Some("half")
    );
}

#[test]
fn keepalive_timeout_closes_an_idle_client() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("keepalive_timeout = {SHORT}"), &[]);
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&get("/")).status, 200);
    expect_close_maybe_408(&mut c);
}

#[test]
fn keepalive_timeout_leaks_no_fds() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("keepalive_timeout = {SHORT}"), &[]);
    assert_no_fd_leak(&proxy, "keepalive_timeout", || {
        let mut c = proxy.client();
        assert_eq!(c.roundtrip(&get("/")).status, 200);
        expect_close_maybe_408(&mut c);
    });
}

/// Past the 1 s idle grace the connection is parked (no task waits for
/// it); the keep-alive timeout still closes it, and leaks nothing.
#[test]
fn keepalive_timeout_closes_a_parked_client_and_leaks_no_fds() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("keepalive_timeout = {LONG}"), &[]);
    assert_no_fd_leak(&proxy, "keepalive_timeout past the idle grace", || {
        let mut c = proxy.client();
        assert_eq!(c.roundtrip(&get("/")).status, 200);
        expect_close_maybe_408(&mut c);
    });
}

#[test]
fn request_just_before_keepalive_timeout_is_served_whole() {
    let data = pattern(100_000);
    let backend = Backend::fixed(Resp::new(200).body(data.clone()));
    let proxy = proxy_with(&backend, &format!("keepalive_timeout = {LONG}"), &[]);
    let mut c = proxy.client();
    for _ in 0..3 {
        let resp = c.roundtrip(&get("/"));
        assert_eq!(resp.status, 200);
        assert_eq!(checksum(&resp.body), checksum(&data));
        thread::sleep(PAUSE);
    }
}

/// Sends a head announcing 1000 bytes and only 100 of them.
fn stall_request_body(c: &mut Client) {
    c.send(&request("POST", "/", &[("Content-Length", "1000")], b""));
    c.send(&[b'a'; 100]);
}

#[test]
fn body_timeout_closes_a_stalled_request_body() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("body_timeout = {SHORT}"), &[]);
    let mut c = proxy.client();
    stall_request_body(&mut c);
    // The proxy may send an error (408 or similar) before closing.
    let rest = c.read_until_closed();
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 "),
        "{rest:?}"
    );
    assert_eq!(backend.request_count(), 0, "a truncated body was completed");
    assert!(
        wait_until(WAIT, || backend.open_connections() == 0),
        "the upstream connection of the stalled request stayed open"
    );
}

#[test]
fn body_timeout_on_request_side_leaks_no_fds() {
    let backend = closing_echo();
    let proxy = proxy_with(&backend, &format!("body_timeout = {SHORT}"), &[]);
    assert_no_fd_leak(&proxy, "request body_timeout", || {
        let mut c = proxy.client();
        stall_request_body(&mut c);
        let _ = c.read_until_closed();
    });
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn request_body_paused_before_body_timeout_arrives_exactly() {
    let backend = Backend::echo();
    let proxy = proxy_with(&backend, &format!("body_timeout = {LONG}"), &[]);
    let data = pattern(128 * 1024);
    let mut c = proxy.client();
    c.send(&request(
        "POST",
        "/",
        &[("Content-Length", &data.len().to_string())],
        b"",
    ));
    c.send(&data[..64 * 1024]);
    thread::sleep(PAUSE);
    c.send(&data[64 * 1024..]);
    let resp = c.read_response();
    assert_eq!(resp.status, 200);
    let req = backend.last_request();
    assert_eq!(req.body.len(), data.len());
    assert_eq!(checksum(&req.body), checksum(&data));
}

/// Reads a response whose body the backend stalls; the proxy must end the
/// connection, so reading fails with EOF (or reset), not a read timeout.
fn expect_truncated_then_closed(c: &mut Client) {
    match c.try_read_response_to("GET") {
        Ok(r) => panic!(
            "a stalled body completed: {} {} bytes",
            r.status,
            r.body.len()
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ),
            "connection not closed after a stalled response body: {e}"
        ),
    }
}

#[test]
fn body_timeout_closes_a_stalled_response_body() {
    let backend = Backend::fixed(Resp::new(200).body(vec![b'x'; 1000]).stall_after(100));
    let proxy = proxy_with(&backend, &format!("body_timeout = {SHORT}"), &[]);
    let mut c = proxy.client();
    c.send(&get("/"));
    expect_truncated_then_closed(&mut c);
    assert!(
        wait_until(WAIT, || backend.open_connections() == 0),
        "the stalled upstream connection stayed open"
    );
}

#[test]
fn body_timeout_on_response_side_leaks_no_fds() {
    let backend = Backend::fixed(Resp::new(200).body(vec![b'x'; 1000]).stall_after(100));
    let proxy = proxy_with(&backend, &format!("body_timeout = {SHORT}"), &[]);
    assert_no_fd_leak(&proxy, "response body_timeout", || {
        let mut c = proxy.client();
        c.send(&get("/"));
        expect_truncated_then_closed(&mut c);
    });
    assert!(wait_until(WAIT, || backend.open_connections() == 0));
}

#[test]
fn response_body_paused_before_body_timeout_arrives_exactly() {
    let data = pattern(256 * 1024);
    let backend = Backend::fixed(Resp::new(200).body(data.clone()).pause_at(64 * 1024, PAUSE));
    let proxy = proxy_with(&backend, &format!("body_timeout = {LONG}"), &[]);
    let resp = proxy.client().roundtrip(&get("/"));
    assert_eq!(resp.body.len(), data.len());
    assert_eq!(checksum(&resp.body), checksum(&data));
}

#[test]
fn chunked_response_paused_before_body_timeout_arrives_exactly() {
    let data = pattern(100_000);
    let (x, y) = data.split_at(50_000);
    let backend = Backend::fixed(Resp::new(200).chunked(&[x, y], &[]).pause_at(50_010, PAUSE));
    let proxy = proxy_with(&backend, &format!("body_timeout = {LONG}"), &[]);
    let resp = proxy.client().roundtrip(&get("/"));
    assert_eq!(checksum(&resp.body), checksum(&data));
}

#[test]
fn response_timeout_gives_504_and_leaks_no_fds() {
    let backend = Backend::start(|_| Reply::Hang);
    let proxy = proxy_with(&backend, "", &["response_timeout = \"500ms\""]);
    assert_no_fd_leak(&proxy, "response_timeout", || {
        let mut c = proxy.client();
        let resp = c.roundtrip(&get("/"));
        assert_eq!(resp.status, 504);
        let _ = c.read_until_closed();
    });
    assert!(
        wait_until(WAIT, || backend.open_connections() == 0),
        "{} upstream connections to the hanging backend stayed open",
        backend.open_connections()
    );
}

/// A `response_timeout` equal to the proxy's 1 s 100-continue wait is a
/// response timeout like any other (it once read as "no 100 yet" and
/// became a 502).
#[test]
fn a_one_second_response_timeout_gives_504() {
    let backend = Backend::start(|_| Reply::Hang);
    let proxy = proxy_with(&backend, "", &["response_timeout = \"1s\""]);
    let resp = proxy.client().roundtrip(&get("/"));
    assert_eq!(
        (resp.status, resp.body_str().as_str()),
        (504, "504 Gateway Timeout: upstream response timed out\n")
    );
}

#[test]
fn response_just_inside_response_timeout_is_served() {
    let backend = Backend::fixed(Resp::new(200).body("on time").delay(PAUSE));
    let proxy = proxy_with(&backend, "", &[&format!("response_timeout = {LONG}")]);
    let resp = proxy.client().roundtrip(&get("/"));
    assert_eq!((resp.status, resp.body_str().as_str()), (200, "on time"));
}

/// A true connect hang on loopback: see [`Blackhole`]. Which 5xx a
/// connect timeout maps to is not specified; 502, 503 or 504 are accepted.
#[test]
fn connect_timeout_gives_gateway_error_and_leaks_no_fds() {
    let hole = Blackhole::new();
    let proxy = Proxy::builder()
        .upstream("app", &[hole.addr], &["connect_timeout = \"300ms\""])
        .start();
    assert_no_fd_leak(&proxy, "connect_timeout", || {
        let mut c = proxy.client();
        let resp = c.roundtrip(&get("/"));
        assert!(
            [502, 503, 504].contains(&resp.status),
            "connect timeout answered {} {}",
            resp.status,
            resp.body_str()
        );
        let _ = c.read_until_closed();
    });
}

#[test]
fn timeouts_do_not_hurt_a_healthy_backend_after_failures() {
    // A hanging backend next to a healthy one: after the hanging one timed
    // out, requests still succeed (round-robin or passive health).
    let hang = Backend::start(|_| Reply::Hang);
    let ok = Backend::echo();
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[hang.addr, ok.addr],
            &["response_timeout = \"500ms\""],
        )
        .start();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(proxy.client().roundtrip(&get("/")).status);
    }
    assert!(
        statuses.iter().all(|s| [200, 504].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(ok.request_count() > 0);
}
