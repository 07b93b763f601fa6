//! Error responses. Malformed requests get 400 (431, 413, 501 for the
//! specific cases) and never reach the backend; upstream failures get 502,
//! 503 (every backend `down`) or 504. Every error is a short text/plain body with
//! `Connection: close`, and the proxy then closes the connection.
//! Smuggling payloads must never reach the backend as two requests.

use std::time::Duration;

use crate::backend::{Backend, Reply, Resp};
use crate::client::{get, request, Client, Headers, Response};
use crate::harness::{BackendSpec, Proxy, Refused};

/// Checks the common shape of an error response and that the connection
/// is closed after it.
fn assert_error_shape(c: &mut Client, resp: &Response, sent: &[u8]) {
    let ctx = || {
        format!(
            "sent {:?}, got {} {:?} body {:?}",
            String::from_utf8_lossy(sent),
            resp.status,
            resp.head.headers,
            resp.body_str()
        )
    };
    assert!(
        resp.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "error without text/plain: {}",
        ctx()
    );
    assert!(!resp.body.is_empty(), "error without a reason: {}", ctx());
    assert!(resp.closes(), "error without Connection: close: {}", ctx());
    let rest = c.read_until_closed();
    assert!(
        rest.is_empty(),
        "bytes after the error response: {:?}; {}",
        String::from_utf8_lossy(&rest),
        ctx()
    );
}

/// Sends `raw` on a fresh connection, expects one of `statuses` as an
/// error response, then proves (with a canary request on another
/// connection) that nothing but the canary reached the backend.
fn assert_rejected_with(proxy: &Proxy, backend: &Backend, raw: &[u8], statuses: &[u16]) {
    let before = backend.request_count();
    let mut c = proxy.client();
    // The proxy may answer and close before reading everything; a failed
    // write is fine as long as the response arrives.
    let _ = c.try_send(raw);
    let resp = c.try_read_response_to("GET").unwrap_or_else(|e| {
        panic!(
            "no error response to {:?}: {e}",
            String::from_utf8_lossy(raw)
        )
    });
    assert!(
        statuses.contains(&resp.status),
        "sent {:?}: expected one of {statuses:?}, got {} {:?}",
        String::from_utf8_lossy(raw),
        resp.status,
        resp.body_str()
    );
    assert_error_shape(&mut c, &resp, raw);
    assert_canary_only(proxy, backend, before, raw);
}

/// Sends a canary and checks it is the only request since `before`.
fn assert_canary_only(proxy: &Proxy, backend: &Backend, before: usize, raw: &[u8]) {
    let canary = proxy.client().roundtrip(&get("/canary"));
    assert_eq!(canary.status, 200, "the proxy broke after an error");
    let seen: Vec<String> = backend.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        seen,
        ["GET /canary"],
        "requests reached the backend after sending {:?}",
        String::from_utf8_lossy(raw)
    );
}

fn rejected(raw: &[u8], statuses: &[u16]) {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    assert_rejected_with(&proxy, &backend, raw, statuses);
}

#[test]
fn content_length_and_transfer_encoding_is_400() {
    rejected(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &[400],
    );
}

#[test]
fn differing_duplicate_content_length_is_400() {
    rejected(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        &[400],
    );
}

#[test]
fn content_length_list_with_different_values_is_400() {
    rejected(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
        &[400],
    );
}

#[test]
fn non_digit_content_lengths_are_400() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    for cl in [
        "+5",
        "-5",
        "0x5",
        "5 5",
        "5a",
        "",
        "1e1",
        "99999999999999999999999",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\nhello");
        assert_rejected_with(&proxy, &backend, raw.as_bytes(), &[400]);
    }
}

#[test]
fn unsupported_transfer_coding_is_501() {
    rejected(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
        &[501],
    );
}

#[test]
fn chunked_not_last_is_rejected() {
    // RFC 9112 6.3: a request whose final coding is not chunked cannot be
    // framed; the design allows 501 or 400.
    rejected(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        &[400, 501],
    );
}

#[test]
fn malformed_transfer_encodings_are_rejected() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    for te in [
        "\x0bchunked",
        "chunked\x0b",
        "xchunked",
        "chunk",
        "chunked, chunked",
        "\"chunked\"",
        ",",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        assert_rejected_with(&proxy, &backend, raw.as_bytes(), &[400, 501]);
    }
}

#[test]
fn transfer_encoding_on_http10_is_400() {
    rejected(
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &[400],
    );
}

#[test]
fn bare_lf_line_endings_are_400() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    for raw in [
        &b"GET / HTTP/1.1\nHost: a\n\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\n",
    ] {
        assert_rejected_with(&proxy, &backend, raw, &[400]);
    }
}

#[test]
fn whitespace_before_colon_is_400() {
    rejected(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", &[400]);
}

#[test]
fn missing_host_on_http11_is_400() {
    rejected(b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", &[400]);
}

#[test]
fn duplicate_host_is_400() {
    rejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &[400]);
}

#[test]
fn obs_fold_is_400() {
    rejected(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        &[400],
    );
}

#[test]
fn nul_or_cr_in_header_value_is_400() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
    ] {
        assert_rejected_with(&proxy, &backend, raw, &[400]);
    }
}

#[test]
fn garbage_request_line_is_400() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    for raw in [
        &b"HELLO\r\n\r\n"[..],
        b"GET\r\nHost: a\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        // Not "GET  / HTTP/1.1": RFC 9112 3 lets a recipient split the
        // request line on runs of whitespace.
    ] {
        assert_rejected_with(&proxy, &backend, raw, &[400, 505]);
    }
}

#[test]
fn invalid_chunk_sizes_are_400() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\n0\n\n",
    ] {
        let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(body);
        assert_rejected_with(&proxy, &backend, &raw, &[400]);
    }
}

#[test]
fn head_too_large_is_431() {
    let big = "x".repeat(20_000);
    let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    rejected(raw.as_bytes(), &[431]);
}

#[test]
fn head_over_configured_limit_is_431() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("max_head_bytes = 2048")
        .upstream("app", &[backend.addr], &[])
        .start();
    let ok = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Fits: {}\r\n\r\n",
        "y".repeat(1500)
    );
    assert_eq!(proxy.client().roundtrip(ok.as_bytes()).status, 200);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(3000)
    );
    assert_rejected_with(&proxy, &backend, big.as_bytes(), &[431]);
}

fn with_n_headers(n: usize) -> Vec<u8> {
    let hs: Vec<(String, String)> = (0..n).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    request("GET", "/", &refs, b"")
}

#[test]
fn too_many_headers_is_431() {
    rejected(&with_n_headers(150), &[431]);
}

#[test]
fn too_many_headers_over_configured_limit_is_431() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("max_headers = 10")
        .upstream("app", &[backend.addr], &[])
        .start();
    // Host plus 5 fits.
    assert_eq!(proxy.client().roundtrip(&with_n_headers(5)).status, 200);
    assert_rejected_with(&proxy, &backend, &with_n_headers(20), &[431]);
}

#[test]
fn body_over_max_request_body_is_413() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("max_request_body = 1000")
        .upstream("app", &[backend.addr], &[])
        .start();
    let ok = request("POST", "/", &[], &[b'a'; 1000]);
    assert_eq!(proxy.client().roundtrip(&ok).status, 200);
    let raw = request("POST", "/", &[], &[b'a'; 1001]);
    assert_rejected_with(&proxy, &backend, &raw, &[413]);
}

/// Sends a GET and expects `status` as an error response from the proxy.
fn assert_gateway_error(proxy: &Proxy, status: u16) -> Response {
    let mut c = proxy.client();
    let raw = get("/");
    let resp = c.roundtrip(&raw);
    assert_eq!(resp.status, status, "body: {:?}", resp.body_str());
    assert_error_shape(&mut c, &resp, &raw);
    resp
}

#[test]
fn backend_connect_refused_is_502() {
    let refused = Refused::new();
    let proxy = Proxy::simple(&[refused.addr]);
    for _ in 0..3 {
        assert_gateway_error(&proxy, 502);
    }
}

#[test]
fn backend_reset_is_502() {
    let backend = Backend::start(|_| Reply::Reset);
    let proxy = Proxy::simple(&[backend.addr]);
    assert_gateway_error(&proxy, 502);
}

#[test]
fn backend_closing_without_response_is_502() {
    let backend = Backend::start(|_| Reply::Close);
    let proxy = Proxy::simple(&[backend.addr]);
    assert_gateway_error(&proxy, 502);
}

#[test]
fn malformed_backend_responses_are_502() {
    for raw in [
        &b"HELLO WORLD\r\n\r\n"[..],
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let backend = Backend::start(move |_| Reply::Raw(raw.to_vec()));
        let proxy = Proxy::simple(&[backend.addr]);
        let resp = proxy.client().roundtrip(&get("/"));
        assert_eq!(
            resp.status,
            502,
            "backend sent {:?}, client got {} {:?}",
            String::from_utf8_lossy(raw),
            resp.status,
            resp.body_str()
        );
    }
}

#[test]
fn upstream_with_every_backend_down_is_503() {
    // `backends = []` is a config error (see config_errors); `down = true`
    // keeps a backend listed but unusable.
    let backend = Backend::echo();
    let down = BackendSpec {
        down: true,
        ..BackendSpec::from(backend.addr)
    };
    let proxy = Proxy::builder().upstream("app", &[down], &[]).start();
    assert_gateway_error(&proxy, 503);
    assert_eq!(backend.connections(), 0, "a down backend was contacted");
}

#[test]
fn down_backend_is_skipped_by_round_robin() {
    let up = Backend::echo();
    let down = Backend::echo();
    let specs = [
        BackendSpec::from(up.addr),
        BackendSpec {
            down: true,
            ..BackendSpec::from(down.addr)
        },
    ];
    let proxy = Proxy::builder().upstream("app", &specs, &[]).start();
    let mut c = proxy.client();
    for _ in 0..6 {
        assert_eq!(c.roundtrip(&get("/")).status, 200);
    }
    assert_eq!((up.request_count(), down.connections()), (6, 0));
}

#[test]
fn backend_slower_than_response_timeout_is_504() {
    let backend = Backend::fixed(Resp::new(200).body("late").delay(Duration::from_secs(5)));
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &["response_timeout = \"500ms\""])
        .start();
    assert_gateway_error(&proxy, 504);
}

#[test]
fn smuggling_payloads_never_reach_backend_as_two_requests() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let payloads = [
        // CL.TE
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // TE.CL
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{smuggled}"),
        // TE with whitespace before the colon, plus CL
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // Two TE headers, the last not chunked
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"),
        // Duplicate CL
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\n{smuggled}"),
        // CL with a sign
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +37\r\n\r\n{smuggled}"),
        // Obfuscated TE with vertical tab, plus CL
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // Obs-fold hiding a TE value
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // Bare LF separating a hidden header
        format!("POST / HTTP/1.1\r\nHost: a\r\nX-A: b\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"),
        // Chunk size with a bogus prefix
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n{smuggled}"),
        // TE on HTTP/1.0 with CL
        format!("POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
    ];
    for p in &payloads {
        let before = backend.request_count();
        let mut c = proxy.client();
        let _ = c.try_send(p.as_bytes());
        // Any answer is acceptable as long as it is an error and the
        // connection ends; what matters is what the backend saw.
        if let Ok(resp) = c.try_read_response_to("POST") {
            assert!(
                resp.status >= 400,
                "payload {p:?} accepted with {}: {}",
                resp.status,
                resp.body_str()
            );
        }
        let _ = c.wire.read_to_eof();
        assert_canary_only(&proxy, &backend, before, p.as_bytes());
    }
    assert!(backend.requests().iter().all(|r| r.target != "/smuggled"));
}

/// `overload = "reject"` (the default): over `max_connections` a new client
/// is accepted and answered 503 at once instead of waiting in the kernel's
/// accept queue; once a slot frees, clients are served again.
#[test]
fn over_max_connections_new_clients_get_503() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .workers(1)
        .admin()
        .server("max_connections = 2")
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut held: Vec<Client> = (0..2).map(|_| proxy.client()).collect();
    for c in &mut held {
        assert_eq!(c.roundtrip(&get("/hold")).status, 200);
    }
    for i in 0..3 {
        let mut c = proxy.client();
        let resp = c.roundtrip(&get(&format!("/over{i}")));
        assert_eq!(resp.status, 503, "{}", resp.body_str());
        assert!(
            resp.body_str().contains("max_connections"),
            "{}",
            resp.body_str()
        );
        assert!(resp.closes());
        c.assert_closed();
    }
    assert_eq!(
        crate::admin::metric(&proxy, "ringlb_overload_rejections_total"),
        3.0
    );
    drop(held.pop());
    let served = crate::harness::wait_until(crate::harness::WAIT, || {
        proxy.client().roundtrip(&get("/again")).status == 200
    });
    assert!(served, "no client served after a slot freed");
}
