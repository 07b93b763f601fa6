//! Upstream connection pool: idle keep-alive connections are reused, a
//! pooled connection the backend closed is retried once on a fresh one
//! (never twice, never for a request already sent that is not safe to
//! repeat), and `max_idle` / `idle_timeout` bound what is kept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::backend::{Backend, Options, Reply, Resp};
use crate::client::{get, request};
use crate::harness::{wait_closes_seen_from, wait_until, Proxy, WAIT};

#[test]
fn sequential_requests_on_one_client_reuse_one_upstream_connection() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for _ in 0..20 {
        assert_eq!(c.roundtrip(&get("/")).status, 200);
    }
    assert_eq!(backend.request_count(), 20);
    assert!(
        backend.connections() < 20,
        "no reuse: {} upstream connections for 20 requests",
        backend.connections()
    );
    assert_eq!(
        backend.connections(),
        1,
        "one client, one worker, one pooled connection"
    );
}

#[test]
fn sequential_client_connections_share_a_pooled_upstream_connection() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .workers(1)
        .upstream("app", &[backend.addr], &[])
        .start();
    for _ in 0..20 {
        let mut c = proxy.client();
        let resp = c.roundtrip(&request("GET", "/", &[("Connection", "close")], b""));
        assert_eq!(resp.status, 200);
        c.assert_closed();
    }
    // One would do; allow a second in case the pool takes the connection
    // back only after the client connection is closed.
    assert!(
        backend.connections() <= 2,
        "{} upstream connections for 20 sequential requests on one worker",
        backend.connections()
    );
}

fn idle_closing_backend() -> Backend {
    Backend::with_options(
        Options {
            idle_close: Some(Duration::from_millis(100)),
            ..Options::default()
        },
        Reply::echo,
    )
}

#[test]
fn pooled_connection_closed_by_backend_is_retried_for_get() {
    let backend = idle_closing_backend();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for i in 0..5 {
        let resp = c.roundtrip(&get(&format!("/{i}")));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.body_str());
        // The backend silently closes the now idle pooled connection.
        assert!(wait_until(WAIT, || backend.open_connections() == 0));
        wait_closes_seen_from(backend.addr);
    }
    assert_eq!(backend.request_count(), 5);
}

#[test]
fn pooled_connection_closed_by_backend_is_retried_for_post_not_yet_sent() {
    // The backend closed the idle connection long before the POST: nothing
    // of the POST can have been sent on it, so the retry is transparent.
    let backend = idle_closing_backend();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for i in 0..5 {
        let body = format!("body number {i}");
        let resp = c.roundtrip(&request("POST", "/p", &[], body.as_bytes()));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.body_str());
        assert!(resp.body_str().ends_with(&body));
        // The backend closed; wait until the proxy's kernel has the FIN
        // too, or the close and the POST would race (and a POST already
        // written must not be retried: 502 would then be right).
        assert!(wait_until(WAIT, || backend.open_connections() == 0));
        wait_closes_seen_from(backend.addr);
    }
    assert_eq!(backend.request_count(), 5, "a POST was delivered twice");
}

#[test]
fn backend_closing_after_every_response_silently_is_survived() {
    let backend = Backend::with_options(
        Options {
            close_after_response: true,
            ..Options::default()
        },
        Reply::echo,
    );
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for i in 0..20 {
        let resp = c.roundtrip(&get(&format!("/{i}")));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.body_str());
    }
    assert_eq!(backend.request_count(), 20);
}

/// Serves the very first request, then closes every connection right after
/// reading a request, without answering.
fn first_then_drop() -> Backend {
    let served = AtomicUsize::new(0);
    Backend::start(move |req| {
        if served.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::echo(req)
        } else {
            Reply::Close
        }
    })
}

#[test]
fn retry_happens_at_most_once() {
    let backend = first_then_drop();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&get("/first")).status, 200);
    let resp = c.roundtrip(&get("/second"));
    assert_eq!(resp.status, 502, "{}", resp.body_str());
    let seconds = backend
        .requests()
        .iter()
        .filter(|r| r.target == "/second")
        .count();
    assert!(
        (1..=2).contains(&seconds),
        "GET /second reached the backend {seconds} times"
    );
    assert!(
        backend.connections() <= 2,
        "{} connections",
        backend.connections()
    );
}

#[test]
fn sent_post_is_not_retried() {
    let backend = first_then_drop();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&get("/first")).status, 200);
    let resp = c.roundtrip(&request("POST", "/pay", &[], b"once"));
    assert_eq!(resp.status, 502, "{}", resp.body_str());
    let posts = backend
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "a POST the backend fully received was sent again");
}

#[test]
fn max_idle_bounds_pooled_connections() {
    let backend = Backend::fixed(Resp::new(200).body("ok").delay(Duration::from_millis(300)));
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &["max_idle = 2"])
        .start();
    thread::scope(|s| {
        for _ in 0..12 {
            s.spawn(|| assert_eq!(proxy.client().roundtrip(&get("/")).status, 200));
        }
    });
    // Two workers, at most two idle connections each.
    assert!(
        wait_until(WAIT, || backend.open_connections() <= 4),
        "{} upstream connections left open with max_idle = 2",
        backend.open_connections()
    );
}

#[test]
fn idle_timeout_closes_pooled_connections() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &["idle_timeout = \"500ms\""])
        .start();
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&get("/")).status, 200);
    assert!(
        wait_until(WAIT, || backend.open_connections() == 0),
        "pooled connection outlived idle_timeout"
    );
    // And a later request works on a fresh connection.
    assert_eq!(c.roundtrip(&get("/")).status, 200);
    assert_eq!(backend.connections(), 2);
}

/// `max_connections = 1`: concurrent requests take turns on one upstream
/// connection instead of opening more, and every one is answered.
#[test]
fn max_connections_queues_requests_on_the_allowed_connections() {
    let backend = Backend::fixed(Resp::new(200).body("ok").delay(Duration::from_millis(150)));
    let proxy = Proxy::builder()
        .workers(1)
        .upstream("app", &[backend.addr], &["max_connections = 1"])
        .start();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut c = proxy.client();
            thread::spawn(move || c.roundtrip(&get("/")).status)
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert_eq!(backend.request_count(), 4);
    assert_eq!(
        backend.connections(),
        1,
        "max_connections = 1 opened more than one upstream connection"
    );
}

/// A request that waits past `queue_timeout` gets a 503 naming why, and
/// its place is not lost: the next request is served on the connection.
#[test]
fn a_request_queued_past_queue_timeout_gets_503_and_loses_no_place() {
    let backend = Backend::fixed(Resp::new(200).body("ok").delay(Duration::from_millis(1500)));
    let proxy = Proxy::builder()
        .workers(1)
        .upstream(
            "app",
            &[backend.addr],
            &["max_connections = 1", "queue_timeout = \"100ms\""],
        )
        .start();
    let mut first = proxy.client();
    let first = thread::spawn(move || first.roundtrip(&get("/")).status);
    assert!(wait_until(WAIT, || backend.request_count() == 1));
    let resp = proxy.client().roundtrip(&get("/"));
    assert_eq!(resp.status, 503);
    let body = String::from_utf8_lossy(&resp.body);
    assert!(body.contains("queue_timeout"), "503 body: {body}");
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    assert_eq!(backend.request_count(), 2, "the 503 reached the backend");
    assert_eq!(backend.connections(), 1);
}
