//! Self-tests of the test tools: the client talks straight to the backend,
//! no proxy involved. When a proxy test fails, these passing shows the
//! failure is not in the harness.

use std::time::Duration;

use crate::backend::{Backend, Options, Reply, Resp};
use crate::client::{chunked, get, pattern, request, Client, Framing, Headers};
use crate::harness::{log_time, wait_until, Blackhole, WAIT};

#[test]
fn client_and_backend_agree_on_every_framing() {
    let backend = Backend::start(|req| match req.target.as_str() {
        "/chunked" => Resp::new(200)
            .chunked(&[b"ab", b"cd"], &[("X-T", "1")])
            .into(),
        "/close" => Resp::new(200).close_delimited("until close").into(),
        "/204" => Resp::new(204).no_body().into(),
        "/304" => Resp::new(304)
            .header("Content-Length", "9")
            .no_body()
            .into(),
        _ => Reply::echo(req),
    });
    let mut c = Client::connect(backend.addr);
    let r = c.roundtrip(&get("/chunked"));
    assert_eq!(
        (r.framing, r.body.as_slice()),
        (Framing::Chunked, &b"abcd"[..])
    );
    assert_eq!(r.trailers, vec![("X-T".to_string(), "1".to_string())]);
    assert_eq!(c.roundtrip(&get("/204")).status, 204);
    assert_eq!(c.roundtrip(&get("/304")).status, 304);
    let r = c.roundtrip(&request("HEAD", "/x", &[], b""));
    assert_eq!((r.framing, r.body.len()), (Framing::None, 0));
    let mut msg = request("POST", "/up", &[("Transfer-Encoding", "chunked")], b"");
    msg.extend(chunked(&[b"hello ", b"world"], &[("X-Sum", "9")]));
    let r = c.roundtrip(&msg);
    assert!(
        r.body_str().ends_with("\n\nhello world"),
        "{}",
        r.body_str()
    );
    let req = backend.last_request();
    assert!(req.chunked);
    assert_eq!(req.trailers, vec![("X-Sum".to_string(), "9".to_string())]);
    let r = c.roundtrip(&get("/close"));
    assert_eq!(
        (r.framing, r.body_str().as_str()),
        (Framing::Close, "until close")
    );
    assert_eq!(backend.connections(), 1);
}

#[test]
fn backend_sends_100_continue_and_records_connections() {
    let backend = Backend::echo();
    let mut c = Client::connect(backend.addr);
    c.send(&request(
        "POST",
        "/",
        &[("Expect", "100-continue"), ("Content-Length", "3")],
        b"",
    ));
    assert_eq!(c.read_response().status, 100);
    c.send(b"abc");
    assert_eq!(c.read_response().status, 200);
    assert_eq!(backend.continues_sent(), 1);
    let data = pattern(100_000);
    let r = c.roundtrip(&request("PUT", "/", &[], &data));
    assert!(r.body_str().contains("body-length 100000\n"));
    assert_eq!(backend.last_request().body, data);
    assert_eq!((backend.connections(), backend.request_count()), (1, 2));
}

#[test]
fn backend_closes_idle_connections_when_asked() {
    let backend = Backend::with_options(
        Options {
            idle_close: Some(Duration::from_millis(50)),
            ..Options::default()
        },
        Reply::echo,
    );
    let mut c = Client::connect(backend.addr);
    assert_eq!(c.roundtrip(&get("/")).status, 200);
    c.assert_closed();
    assert!(wait_until(WAIT, || backend.open_connections() == 0));
}

#[test]
fn backend_upgrade_echoes_and_reset_resets() {
    let backend = Backend::start(|req| {
        if req.target == "/reset" {
            Reply::Reset
        } else {
            Reply::Upgrade(vec![("Upgrade".into(), "x".into())])
        }
    });
    let mut c = Client::connect(backend.addr);
    assert_eq!(c.roundtrip(&get("/up")).status, 101);
    c.send(b"ping");
    assert_eq!(c.wire.read_exact_n(4).unwrap(), b"ping");
    let mut c = Client::connect(backend.addr);
    c.send(&get("/reset"));
    let err = c.try_read_response_to("GET").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn blackhole_makes_connects_hang() {
    let hole = Blackhole::new();
    let err = std::net::TcpStream::connect_timeout(&hole.addr, Duration::from_millis(200))
        .expect_err("connect to a blackhole succeeded");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn backend_kill_refuses_and_closes_then_restart_serves_on_the_same_port() {
    let backend = Backend::named("b");
    let mut open = Client::connect(backend.addr);
    let r = open.roundtrip(&get("/before"));
    assert_eq!(r.header("x-backend"), Some("b"));
    backend.kill();
    // The open connection sees the close; new connects are refused.
    open.assert_closed();
    let err = std::net::TcpStream::connect(backend.addr).expect_err("connect after kill");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    backend.restart();
    let r = Client::connect(backend.addr).roundtrip(&get("/after"));
    assert_eq!((r.status, r.body_str().as_str()), (200, "b"));
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/before", "/after"]);
    assert!(backend.requests()[0].at < backend.requests()[1].at);
}

#[test]
fn log_time_parses_the_proxy_log_timestamp() {
    use std::time::{Duration, UNIX_EPOCH};
    let line = "2024-02-29T23:59:58.123456Z  WARN ringlb::proxy: x";
    let t = log_time(line).expect("parsed");
    // 2024-02-29T00:00:00Z is 1709164800.
    let want = UNIX_EPOCH
        + Duration::from_secs(1_709_164_800 + 86_399 - 1)
        + Duration::from_micros(123_456);
    assert_eq!(t, want);
    assert_eq!(log_time("no timestamp here"), None);
}
