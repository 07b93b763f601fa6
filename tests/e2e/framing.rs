//! Message framing both ways: Content-Length, chunked with trailers,
//! close-delimited responses, and the bodiless HEAD / 204 / 304.

use std::time::Duration;

use crate::backend::{Backend, Reply, Resp};
use crate::client::{checksum, chunked, get, pattern, request, Framing, Headers};
use crate::harness::Proxy;

#[test]
fn chunked_request_body_arrives_exactly() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let data = pattern(70_000);
    let (x, y) = data.split_at(30_000);
    let mut body = request("POST", "/c", &[("Transfer-Encoding", "chunked")], b"");
    body.extend(chunked(&[x, y], &[]));
    let resp = proxy.client().roundtrip(&body);
    assert_eq!(resp.status, 200);
    let req = backend.last_request();
    assert_eq!(req.body.len(), data.len());
    assert_eq!(checksum(&req.body), checksum(&data));
    assert_eq!(req.header("content-length").is_some(), !req.chunked);
}

#[test]
fn chunked_request_trailers_reach_backend() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut msg = request("POST", "/t", &[("Transfer-Encoding", "chunked")], b"");
    msg.extend(chunked(&[b"abc", b"defg"], &[("X-Checksum", "42")]));
    let resp = proxy.client().roundtrip(&msg);
    assert_eq!(resp.status, 200);
    let req = backend.last_request();
    assert_eq!(req.body, b"abcdefg");
    assert!(req.chunked, "a chunked request with trailers was re-framed");
    assert_eq!(
        req.trailers,
        vec![("X-Checksum".to_string(), "42".to_string())]
    );
}

#[test]
fn chunk_extensions_are_accepted() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut msg = request("POST", "/e", &[("Transfer-Encoding", "chunked")], b"");
    msg.extend_from_slice(b"3;name=value\r\nabc\r\n0\r\n\r\n");
    let resp = proxy.client().roundtrip(&msg);
    assert_eq!(resp.status, 200);
    assert_eq!(backend.last_request().body, b"abc");
}

#[test]
fn empty_bodies_content_length_zero_and_empty_chunked() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let resp = c.roundtrip(&request("POST", "/z", &[("Content-Length", "0")], b""));
    assert_eq!(resp.status, 200);
    assert_eq!(backend.last_request().body, b"");
    let mut msg = request("POST", "/z", &[("Transfer-Encoding", "chunked")], b"");
    msg.extend(chunked(&[], &[]));
    let resp = c.roundtrip(&msg);
    assert_eq!(resp.status, 200);
    assert_eq!(backend.last_request().body, b"");
    // The connection is still in sync.
    assert_eq!(c.roundtrip(&get("/after")).status, 200);
}

#[test]
fn content_length_response_passes_exactly() {
    let data = pattern(200_000);
    let backend = Backend::fixed(Resp::new(200).body(data.clone()));
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for _ in 0..3 {
        let resp = c.roundtrip(&get("/"));
        assert_eq!(resp.framing, Framing::Length);
        assert_eq!(resp.body.len(), data.len());
        assert_eq!(checksum(&resp.body), checksum(&data));
    }
}

#[test]
fn chunked_response_with_trailers_passes_to_http11_client() {
    let backend = Backend::fixed(
        Resp::new(200)
            .header("Trailer", "X-Digest")
            .chunked(&[b"first ", b"second ", b"third"], &[("X-Digest", "d1")]),
    );
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let resp = c.roundtrip(&request("GET", "/", &[("TE", "trailers")], b""));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"first second third");
    assert_eq!(resp.framing, Framing::Chunked);
    assert_eq!(
        resp.trailers,
        vec![("X-Digest".to_string(), "d1".to_string())]
    );
    assert_eq!(c.roundtrip(&get("/again")).status, 200);
}

#[test]
fn close_delimited_response_is_complete() {
    let data = pattern(100_000);
    let backend = Backend::fixed(Resp::new(200).close_delimited(data.clone()));
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let resp = c.roundtrip(&get("/"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), data.len());
    assert_eq!(checksum(&resp.body), checksum(&data));
    if resp.framing != Framing::Close {
        // Re-framed as chunked: the client connection may stay usable.
        assert_eq!(c.roundtrip(&get("/again")).body.len(), data.len());
    }
}

#[test]
fn head_response_has_no_body_and_connection_stays_usable() {
    let backend = Backend::fixed(Resp::new(200).body(pattern(1234)));
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for _ in 0..3 {
        let resp = c.roundtrip(&request("HEAD", "/", &[], b""));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-length"), Some("1234"));
        let resp = c.roundtrip(&get("/"));
        assert_eq!(resp.body, pattern(1234), "GET after HEAD out of sync");
    }
}

#[test]
fn status_204_has_no_body_and_connection_stays_usable() {
    let backend = Backend::start(|req| {
        if req.target == "/204" {
            Resp::new(204).no_body().into()
        } else {
            Reply::echo(req)
        }
    });
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for i in 0..3 {
        let resp = c.roundtrip(&get("/204"));
        assert_eq!(resp.status, 204);
        let resp = c.roundtrip(&get(&format!("/next{i}")));
        assert_eq!(resp.status, 200);
        assert!(resp.body_str().contains(&format!("target /next{i}\n")));
    }
}

#[test]
fn status_304_with_content_length_has_no_body() {
    // A 304 may carry the Content-Length of the representation; no body
    // follows, and the proxy must not wait for one.
    let backend = Backend::start(|req| {
        if req.target == "/304" {
            Resp::new(304)
                .header("Content-Length", "5000")
                .header("ETag", "\"v1\"")
                .no_body()
                .into()
        } else {
            Reply::echo(req)
        }
    });
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    for i in 0..3 {
        let resp = c.roundtrip(&request("GET", "/304", &[("If-None-Match", "\"v1\"")], b""));
        assert_eq!(resp.status, 304);
        assert_eq!(resp.header("etag"), Some("\"v1\""));
        let resp = c.roundtrip(&get(&format!("/next{i}")));
        assert_eq!(resp.status, 200);
        assert!(resp.body_str().contains(&format!("target /next{i}\n")));
    }
}

#[test]
fn head_to_chunked_backend_stays_in_sync() {
    let backend = Backend::fixed(Resp::new(200).chunked(&[b"abc"], &[]));
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let resp = c.roundtrip(&request("HEAD", "/", &[], b""));
    assert_eq!(resp.status, 200);
    assert_eq!(c.roundtrip(&get("/")).body, b"abc");
}

#[test]
fn many_headers_under_the_limit_pass() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let headers: Vec<(String, String)> = (0..60)
        .map(|i| (format!("X-H{i}"), format!("value-{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = proxy.client().roundtrip(&request("GET", "/", &refs, b""));
    assert_eq!(resp.status, 200);
    let req = backend.last_request();
    for (k, v) in &headers {
        assert_eq!(req.header(k), Some(v.as_str()));
    }
}

#[test]
fn response_body_pause_loses_no_bytes() {
    let data = pattern(300_000);
    let backend = Backend::fixed(
        Resp::new(200)
            .body(data.clone())
            .pause_at(100_000, Duration::from_millis(300)),
    );
    let proxy = Proxy::simple(&[backend.addr]);
    let resp = proxy.client().roundtrip(&get("/"));
    assert_eq!(resp.body.len(), data.len());
    assert_eq!(checksum(&resp.body), checksum(&data));
}

#[test]
fn http11_request_without_host_is_400_and_not_forwarded() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let resp = c.roundtrip(b"GET /nohost HTTP/1.1\r\nX: y\r\n\r\n");
    assert_eq!(resp.status, 400);
    assert!(
        resp.body_str().contains("missing Host"),
        "{}",
        resp.body_str()
    );
    assert_eq!(backend.proxied_count(), 0);
}

#[test]
fn http10_request_without_host_gets_the_backends_host() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    let resp = c.roundtrip(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200);
    let req = backend.last_request();
    assert_eq!(req.version, "HTTP/1.1");
    let want = backend.addr.to_string();
    assert_eq!(req.headers_named("host"), vec![want.as_str()]);
}

#[test]
fn response_with_several_transfer_encoding_lines_is_relayed_with_one() {
    let backend = Backend::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX-A: 1\r\n\
              Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
        )
    });
    let proxy = Proxy::simple(&[backend.addr]);
    let resp = proxy.client().roundtrip(&get("/te"));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.headers_named("transfer-encoding"),
        vec!["gzip, chunked"]
    );
    assert_eq!(resp.body, b"abc");
}

#[test]
fn status_204_and_1xx_lose_framing_fields() {
    let backend = Backend::start(|req| match req.target.as_str() {
        "/204" => Reply::Raw(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
        ),
        _ => Reply::Raw(
            b"HTTP/1.1 103 Early Hints\r\nContent-Length: 3\r\nLink: </s>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        ),
    });
    let proxy = Proxy::simple(&[backend.addr]);
    let resp = proxy.client().roundtrip(&get("/204"));
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("transfer-encoding"), None);
    let mut c = proxy.client();
    c.send(&get("/103"));
    let (interim, last) = c.read_final_response();
    assert_eq!(interim.len(), 1);
    assert_eq!(interim[0].status, 103);
    assert_eq!(interim[0].header("link"), Some("</s>"));
    assert_eq!(interim[0].header("content-length"), None);
    assert_eq!(last.status, 200);
    assert_eq!(last.body, b"ok");
}

#[test]
fn content_length_goes_upstream_in_canonical_form() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let msg = request(
        "POST",
        "/cl",
        &[("Content-Length", "00000000000000000000000011")],
        b"hello world",
    );
    let resp = proxy.client().roundtrip(&msg);
    assert_eq!(resp.status, 200);
    let req = backend.last_request();
    assert_eq!(req.headers_named("content-length"), vec!["11"]);
    assert_eq!(req.body, b"hello world");
}

#[test]
fn fragments_and_paths_above_the_root_are_400() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    for (target, reason) in [
        ("/a#frag", "fragment in request target"),
        ("/../../etc/passwd", "path climbs above the root"),
        ("/%2e%2e/%2E%2e/etc/passwd", "path climbs above the root"),
    ] {
        let resp = proxy.client().roundtrip(&get(target));
        assert_eq!(resp.status, 400, "{target}");
        assert!(
            resp.body_str().contains(reason),
            "{target}: {}",
            resp.body_str()
        );
    }
    // Dot segments that stay below the root go through as they came.
    let resp = proxy.client().roundtrip(&get("/a/../b"));
    assert_eq!(resp.status, 200);
    assert_eq!(backend.proxied_count(), 1);
    assert_eq!(backend.last_request().target, "/a/../b");
}
