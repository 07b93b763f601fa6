//! Graceful shutdown: SIGTERM and SIGQUIT turn `/healthz` to 503 at once,
//! stop accepting, close idle keep-alive connections, let in-flight
//! requests finish (answered with `Connection: close`) up to
//! `server.shutdown_timeout`, flush the access log, and exit 0.

use std::fs;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use crate::admin::admin;
use crate::backend::{Backend, Reply, Resp};
use crate::client::{get, Client};
use crate::harness::{wait_until, Proxy, WAIT};

const SLOW_BODY: usize = 100_000;

fn slow_backend(delay: Duration) -> Backend {
    Backend::start(move |req| {
        if req.target == "/slow" {
            Resp::new(200)
                .body(vec![b'x'; SLOW_BODY])
                .delay(delay)
                .into()
        } else {
            Reply::echo(req)
        }
    })
}

#[test]
fn sigterm_finishes_in_flight_requests_closes_idle_ones_and_exits_zero() {
    let backend = slow_backend(Duration::from_millis(800));
    let proxy = Proxy::builder()
        .admin()
        .server("access_log = { path = \"access.log\" }")
        .upstream("app", &[backend.addr], &[])
        .start();
    assert_eq!(admin(&proxy, "GET", "/healthz").status, 200);

    // An idle keep-alive connection, waiting for its next request.
    let mut idle = proxy.client();
    let r = idle.roundtrip(&get("/fast"));
    assert!(r.status == 200 && !r.closes());

    // Eight requests in flight on their own connections.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = proxy.addr;
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.roundtrip(&get("/slow"));
                (r.status, r.body.len(), r.closes())
            })
        })
        .collect();
    assert!(wait_until(WAIT, || backend.request_count() >= 9));

    proxy.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(2), || admin(&proxy, "GET", "/healthz")
            .status
            == 503),
        "/healthz did not turn 503"
    );
    // No new connection is accepted.
    assert!(
        wait_until(Duration::from_secs(2), || TcpStream::connect(proxy.addr)
            .is_err()),
        "still accepting after SIGTERM"
    );
    // The idle connection is closed without a response.
    idle.assert_closed();
    // ...before the requests in flight (800 ms at the backend) finished:
    // it was not left to wait for them.
    assert!(
        clients.iter().all(|c| !c.is_finished()),
        "the idle connection closed only after the in-flight requests"
    );

    for c in clients {
        let (status, len, closes) = c.join().unwrap();
        assert_eq!(
            (status, len),
            (200, SLOW_BODY),
            "an in-flight request was cut"
        );
        assert!(
            closes,
            "a response during the drain must say Connection: close"
        );
    }
    let status = proxy.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{status}\n{}", proxy.stderr());
    assert_eq!(
        backend.request_count(),
        9,
        "a request arrived after the signal"
    );

    // The access log has every request, flushed before exit.
    let log = fs::read_to_string(proxy.dir().join("access.log")).unwrap();
    assert_eq!(log.lines().count(), 9, "{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"GET /slow HTTP/1.1\" 200 "))
            .count(),
        8
    );
}

/// A connection idle past the idle grace is parked (no task, no buffer,
/// a readiness poll in the ring); a graceful stop must end that wait too,
/// not leave it to the shutdown timeout.
#[test]
fn sigterm_closes_a_connection_idle_past_the_idle_grace() {
    let backend = slow_backend(Duration::from_millis(800));
    let proxy = Proxy::builder()
        // Longer than the client's wait for the close: only the stop
        // itself can close the connection in time.
        .server("shutdown_timeout = \"120s\"\nkeepalive_timeout = \"120s\"")
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut idle = proxy.client();
    let r = idle.roundtrip(&get("/fast"));
    assert!(r.status == 200 && !r.closes());
    // Past the proxy's 1 s idle grace.
    thread::sleep(Duration::from_millis(1500));

    proxy.signal("TERM");
    idle.assert_closed();
    let status = proxy.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{status}\n{}", proxy.stderr());
}

#[test]
fn sigquit_stops_waiting_at_shutdown_timeout() {
    let backend = slow_backend(Duration::from_secs(6));
    let proxy = Proxy::builder()
        .server("shutdown_timeout = \"300ms\"")
        .upstream("app", &[backend.addr], &[])
        .start();
    let addr = proxy.addr;
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(&get("/slow"));
        c.wire.read_to_eof().map(|rest| rest.len())
    });
    assert!(wait_until(WAIT, || backend.request_count() >= 1));
    proxy.signal("QUIT");
    let status = proxy.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{status}\n{}", proxy.stderr());
    // The cut request's connection ends with the process, before the
    // backend (6 s) answered: no response reached the client.
    assert_eq!(client.join().unwrap().ok(), Some(0));
    assert!(proxy.stderr().contains("shutdown_timeout reached"));
}

#[test]
fn sigint_still_exits_at_once() {
    let backend = slow_backend(Duration::from_secs(6));
    let proxy = Proxy::simple(&[backend.addr]);
    let addr = proxy.addr;
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(&get("/slow"));
        c.wire.read_to_eof().map(|rest| rest.len())
    });
    assert!(wait_until(WAIT, || backend.request_count() >= 1));
    proxy.signal("INT");
    assert_eq!(proxy.wait_for_exit().code(), Some(0));
    // Cut at once: the backend (6 s) had not answered.
    assert_eq!(client.join().unwrap().ok(), Some(0));
}

#[test]
fn drain_delay_keeps_accepting_while_healthz_says_503() {
    let backend = slow_backend(Duration::from_millis(10));
    let proxy = Proxy::builder()
        .admin()
        .server("drain_delay = \"3s\"")
        .upstream("app", &[backend.addr], &[])
        .start();
    proxy.signal("TERM");
    assert!(
        wait_until(WAIT, || admin(&proxy, "GET", "/healthz").status == 503),
        "/healthz did not turn 503"
    );
    // The balancer in front is told; new connections are still served.
    let r = Client::connect(proxy.addr).roundtrip(&get("/fast"));
    assert_eq!(r.status, 200);
    assert!(proxy.try_status().is_none());
    // Then the stop proper.
    assert!(
        wait_until(WAIT, || TcpStream::connect(proxy.addr).is_err()),
        "still accepting after the drain delay"
    );
    assert_eq!(proxy.wait_for_exit().code(), Some(0));
    assert!(proxy.stderr().contains("still accepting for drain_delay"));
}
