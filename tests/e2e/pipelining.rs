//! Pipelined requests: answered in order, with bodies of every framing,
//! across backends of different speed, and nothing after `Connection: close`
//! is forwarded.

use std::time::Duration;

use crate::backend::{Backend, Reply, Resp};
use crate::client::{chunked, get, request};
use crate::harness::Proxy;

#[test]
fn pipelined_gets_are_answered_in_order() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let all: Vec<u8> = (0..20).flat_map(|i| get(&format!("/p/{i}"))).collect();
    c.send(&all);
    for i in 0..20 {
        let resp = c.read_response();
        assert_eq!(resp.status, 200);
        assert!(
            resp.body_str().contains(&format!("target /p/{i}\n")),
            "response {i} out of order: {}",
            resp.body_str()
        );
    }
}

#[test]
fn pipelined_requests_with_bodies_stay_framed() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let mut all = request("POST", "/a", &[], b"first body");
    let mut ch = request("POST", "/b", &[("Transfer-Encoding", "chunked")], b"");
    ch.extend(chunked(&[b"second", b" body"], &[]));
    all.extend(ch);
    all.extend(request("HEAD", "/c", &[], b""));
    all.extend(request("PUT", "/d", &[], b"fourth"));
    all.extend(get("/e"));
    c.send(&all);
    for (method, target, body) in [
        ("POST", "/a", "first body"),
        ("POST", "/b", "second body"),
        ("HEAD", "/c", ""),
        ("PUT", "/d", "fourth"),
        ("GET", "/e", ""),
    ] {
        let resp = c.read_response_to(method);
        assert_eq!(resp.status, 200, "{method} {target}");
        if method != "HEAD" {
            let text = resp.body_str();
            assert!(text.contains(&format!("target {target}\n")), "{text}");
            assert!(text.ends_with(&format!("\n\n{body}")), "{text}");
        }
    }
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(seen, ["/a", "/b", "/c", "/d", "/e"]);
}

#[test]
fn pipelined_order_holds_across_slow_and_fast_backends() {
    let slow = Backend::start(|req| {
        Reply::Http(
            Resp::new(200)
                .body(format!("slow {}", req.target))
                .delay(Duration::from_millis(200)),
        )
    });
    let fast = Backend::start(|req| Reply::text(200, &format!("fast {}", req.target)));
    let proxy = Proxy::simple(&[slow.addr, fast.addr]);
    let mut c = proxy.client();
    let all: Vec<u8> = (0..8).flat_map(|i| get(&format!("/{i}"))).collect();
    c.send(&all);
    for i in 0..8 {
        let resp = c.read_response();
        assert!(
            resp.body_str().ends_with(&format!(" /{i}")),
            "response {i}: {}",
            resp.body_str()
        );
    }
    assert_eq!(slow.request_count() + fast.request_count(), 8);
}

#[test]
fn nothing_after_connection_close_is_forwarded() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let mut all = get("/one");
    all.extend(request("GET", "/two", &[("Connection", "close")], b""));
    all.extend(get("/three"));
    c.send(&all);
    assert!(c.read_response().body_str().contains("target /one\n"));
    let second = c.read_response();
    assert!(second.body_str().contains("target /two\n"));
    // Announcing the close in the response is only a SHOULD (RFC 9112
    // 9.6); the close itself is a MUST.
    c.assert_closed();
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(seen, ["/one", "/two"]);
}

#[test]
fn pipelined_requests_sent_byte_by_byte() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let mut all = request("POST", "/x", &[], b"0123456789");
    all.extend(get("/y"));
    for b in &all {
        c.send(std::slice::from_ref(b));
    }
    assert!(c.read_response().body_str().ends_with("\n\n0123456789"));
    assert!(c.read_response().body_str().contains("target /y\n"));
}
