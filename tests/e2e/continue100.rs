//! `Expect: 100-continue` end to end: the client gets `100 Continue`, then
//! the final response, and the body arrives intact; an early final answer
//! reaches a client that has not sent its body.

use crate::backend::{Backend, Options, Reply};
use crate::client::{pattern, request};
use crate::harness::Proxy;

fn expect_head(len: usize) -> Vec<u8> {
    request(
        "POST",
        "/upload",
        &[
            ("Expect", "100-continue"),
            ("Content-Length", &len.to_string()),
        ],
        b"",
    )
}

#[test]
fn client_gets_100_continue_then_final_response() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let body = pattern(20_000);
    let mut c = proxy.client();
    c.send(&expect_head(body.len()));
    // The client waits for 100 before sending anything else.
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "expected 100 Continue first");
    c.send(&body);
    // Further 1xx responses are legal; skip them.
    let (_more, fin) = c.read_final_response();
    assert_eq!(fin.status, 200);
    let req = backend.last_request();
    assert_eq!(req.body, body);
    assert_eq!(
        backend.continues_sent(),
        1,
        "Expect did not reach the backend"
    );
    assert!(c.roundtrip(&request("GET", "/after", &[], b"")).status == 200);
}

#[test]
fn body_sent_without_waiting_for_100_still_works() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let body = pattern(5000);
    let mut c = proxy.client();
    let mut msg = expect_head(body.len());
    msg.extend_from_slice(&body);
    c.send(&msg);
    let (_interim, fin) = c.read_final_response();
    assert_eq!(fin.status, 200);
    assert_eq!(backend.last_request().body, body);
}

#[test]
fn backend_that_ignores_expect_still_gets_the_body() {
    // The backend never sends 100; the proxy may send its own, or the client
    // sends its body anyway after waiting (here: right away after the head).
    let backend = Backend::with_options(
        Options {
            send_continue: false,
            ..Options::default()
        },
        Reply::echo,
    );
    let proxy = Proxy::simple(&[backend.addr]);
    let body = pattern(3000);
    let mut c = proxy.client();
    c.send(&expect_head(body.len()));
    std::thread::sleep(std::time::Duration::from_millis(200));
    c.send(&body);
    let (_interim, fin) = c.read_final_response();
    assert_eq!(fin.status, 200);
    assert_eq!(backend.last_request().body, body);
}

#[test]
fn early_final_response_reaches_client_that_withheld_its_body() {
    let backend = Backend::with_options(
        Options {
            send_continue: false,
            reply_before_body: true,
            ..Options::default()
        },
        |_| Reply::text(403, "no uploads here"),
    );
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    c.send(&expect_head(1_000_000));
    // A 100 Continue before the 403 would be legal (if wasteful).
    let (_interim, fin) = c.read_final_response();
    assert_eq!(fin.status, 403);
    assert_eq!(fin.body_str(), "no uploads here");
    // Having announced a body, the client cannot reuse the connection
    // without sending it, so nothing more is asserted here.
}
