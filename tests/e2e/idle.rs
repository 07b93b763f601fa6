//! A connection idle between requests hands its buffers back and waits
//! for readability holding none (after 1 s). Whatever arrives after
//! that wait must be served exactly as on a busy connection: a request
//! head larger than the first small read, a pipelined pair, a body, and
//! the same over TLS; an idle client that closes is closed cleanly.

use std::thread::sleep;
use std::time::Duration;

use crate::admin::metric;
use crate::backend::Backend;
use crate::client::{get, pattern, request, Headers};
use crate::harness::{wait_until, Proxy, WAIT};

/// Longer than the proxy's idle grace, so the connection has shed its
/// buffers before the next request (a wait, not an assertion on time).
const PAST_GRACE: Duration = Duration::from_millis(1500);

#[test]
fn requests_after_idle_are_served_whole() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let resp = c.roundtrip(&get("/first"));
    assert_eq!(resp.status, 200);

    // A head of about 6 KiB: more than the first read after the wait.
    sleep(PAST_GRACE);
    let long = "v".repeat(6000);
    let resp = c.roundtrip(&request("GET", "/long", &[("X-Long", &long)], b""));
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert!(!resp.closes());
    assert_eq!(backend.last_request().header("x-long"), Some(long.as_str()));

    // Two pipelined requests with a body, sent in one write after a wait.
    sleep(PAST_GRACE);
    let body = pattern(20_000);
    let mut both = request("POST", "/a", &[], &body);
    both.extend_from_slice(&get("/b"));
    c.send(&both);
    let a = c.read_response();
    let b = c.read_response();
    assert_eq!((a.status, b.status), (200, 200));
    assert!(a.body_str().contains("target /a"), "{}", a.body_str());
    assert!(b.body_str().contains("target /b"), "{}", b.body_str());
    let posted = backend
        .requests()
        .into_iter()
        .find(|r| r.target == "/a")
        .expect("the POST reached the backend");
    assert_eq!(posted.body, body);

    // Byte by byte after a wait: the head arrives in many reads.
    sleep(PAST_GRACE);
    for byte in get("/slow") {
        c.send(&[byte]);
    }
    let resp = c.read_response();
    assert_eq!(resp.status, 200);
    assert!(resp.body_str().contains("target /slow"));
}

/// Connections idle past the grace are parked: no task waits for them
/// (the gauge counts them). Each one's next request starts a task again
/// and is served; then it parks again.
#[test]
fn connections_idle_past_the_grace_are_parked_and_served_on() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut clients: Vec<_> = (0..20).map(|_| proxy.client()).collect();
    for c in &mut clients {
        assert_eq!(c.roundtrip(&get("/")).status, 200);
    }
    let parked = || metric(&proxy, "ringlb_client_connections_parked");
    assert!(
        wait_until(WAIT, || parked() == 20.0),
        "parked connections: {}",
        parked()
    );
    for (i, c) in clients.iter_mut().enumerate() {
        let resp = c.roundtrip(&get(&format!("/again/{i}")));
        assert_eq!(resp.status, 200);
        assert!(resp.body_str().contains(&format!("target /again/{i}")));
        assert!(!resp.closes());
    }
    assert!(
        wait_until(WAIT, || parked() == 20.0),
        "parked again: {}",
        parked()
    );
    drop(clients);
    let open = || metric(&proxy, "ringlb_client_connections_open");
    assert!(
        wait_until(WAIT, || parked() == 0.0 && open() == 0.0),
        "parked {}, open {}",
        parked(),
        open()
    );
}

#[test]
fn idle_clients_that_close_are_closed_and_counted() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut clients: Vec<_> = (0..50).map(|_| proxy.client()).collect();
    for c in &mut clients {
        assert_eq!(c.roundtrip(&get("/")).status, 200);
    }
    sleep(PAST_GRACE);
    drop(clients);
    let open = || metric(&proxy, "ringlb_client_connections_open");
    assert!(
        wait_until(WAIT, || open() == 0.0),
        "open connections: {}",
        open()
    );
    // And the proxy still serves.
    assert_eq!(proxy.client().roundtrip(&get("/after")).status, 200);
}

/// A parked connection outlives a reload: its next request is served on
/// the new config (it moves to the newest worker as it wakes), and it
/// parks again there.
#[test]
fn a_parked_connection_is_served_on_the_new_config_after_a_reload() {
    let a = Backend::echo();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr], &[])
        .start();
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&get("/before")).status, 200);
    let parked = || metric(&proxy, "ringlb_client_connections_parked");
    assert!(wait_until(WAIT, || parked() == 1.0), "parked: {}", parked());

    crate::reload::rewrite(&proxy, |t| {
        t.replace(&a.addr.to_string(), &b.addr.to_string())
    });
    crate::reload::assert_reloaded(&proxy);
    // Each worker applies the update as a message: wait until a new
    // connection reaches the new backend.
    assert!(wait_until(WAIT, || {
        proxy.client().roundtrip(&get("/probe")).status == 200 && b.request_count() > 0
    }));
    assert!(wait_until(WAIT, || parked() == 1.0), "parked: {}", parked());

    let (a_before, b_before) = (a.request_count(), b.request_count());
    let resp = c.roundtrip(&get("/after"));
    assert_eq!(resp.status, 200);
    assert!(!resp.closes());
    assert!(
        resp.body_str().contains("target /after"),
        "{}",
        resp.body_str()
    );
    assert_eq!(b.request_count(), b_before + 1, "served by the new backend");
    assert_eq!(
        a.request_count(),
        a_before,
        "the old backend got nothing more"
    );
    assert!(
        wait_until(WAIT, || parked() == 1.0),
        "parked again: {}",
        parked()
    );
}
