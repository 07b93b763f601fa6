//! Small protocol findings of the admin/upgrade review: an over-long
//! request line is 414 (as nginx answers), a connection whose request was
//! read whole is closed at once instead of lingering, and rejected
//! requests are logged at a bounded rate that names what is known of them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use crate::backend::Backend;
use crate::client::request;
use crate::harness::{Proxy, WAIT};

#[test]
fn a_request_line_over_the_head_limit_gets_414_and_long_fields_431() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("max_head_bytes = 1024")
        .upstream("app", &[backend.addr], &[])
        .start();
    let long_target = format!("/{}", "a".repeat(2000));
    let r = proxy
        .client()
        .roundtrip(&request("GET", &long_target, &[], b""));
    assert_eq!(r.status, 414, "{}", r.body_str());
    assert!(r.body_str().contains("request line too long"));
    let long_field = "b".repeat(2000);
    let r = proxy
        .client()
        .roundtrip(&request("GET", "/", &[("X-Long", &long_field)], b""));
    assert_eq!(r.status, 431);
}

/// Once the whole request was read and the answer said `Connection:
/// close`, nothing more can come: the proxy closes at once instead of
/// waiting a second for the client to close (a lingering close), which
/// held up a graceful stop: here the client keeps its side open, and the
/// stop right after must not run into a `shutdown_timeout` shorter than
/// that second.
#[test]
fn a_request_read_whole_is_closed_without_lingering() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("shutdown_timeout = \"500ms\"")
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200 "));
    // `s` stays open: a lingering proxy would wait for its close.
    proxy.signal("TERM");
    let status = proxy.wait_for_exit();
    assert!(status.success(), "{status}");
    assert!(
        proxy.log_events(&["shutdown_timeout reached"]).is_empty(),
        "the stop waited for a connection that was done:\n{}",
        proxy.stderr()
    );
    drop(s);
}

#[test]
fn rejected_requests_are_logged_at_a_bounded_rate_with_what_is_known() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let bad = b"GET /known-target HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n";
    let send_bad = || {
        let mut c = proxy.client();
        let r = c.roundtrip(bad);
        assert_eq!(r.status, 400);
    };
    const SENT: usize = 100;
    for _ in 0..SENT {
        send_bad();
    }
    // Past the one-second window of every worker, a few more (so each
    // worker gets one): their lines say how many were left out.
    thread::sleep(Duration::from_millis(1100));
    for _ in 0..10 {
        send_bad();
    }
    let lines = proxy.log_events(&["request failed"]);
    // 2 workers × 5 lines a second: 60 lines would take the burst 5 s.
    assert!(
        lines.len() < 60,
        "{} lines for {} rejects",
        lines.len(),
        SENT + 10
    );
    assert!(
        lines
            .iter()
            .any(|(_, l)| l.contains("suppressed=") && !l.contains("suppressed=0")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|(_, l)| l.contains("method=GET") && l.contains("target=/known-target")),
        "{lines:#?}"
    );
}
