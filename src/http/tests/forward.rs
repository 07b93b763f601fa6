//! Head rewriting for forwarding, checked on exact output.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::http::{
    parse_request, parse_response, put_after_request_line, put_backend_host, write_request_head,
    write_response_head, BodyKind, ForwardContext, Limits, OutFraming, ResponseContext, Status,
    Version,
};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn ctx() -> ForwardContext<'static> {
    ForwardContext {
        client_ip: CLIENT,
        keep_client_xff: true,
        proto: "https",
        host_fallback: None,
        request_id: None,
    }
}

/// Rewrites a request head, checks the result parses to the same framing,
/// and returns it as text.
fn forward_request(input: &str, ctx: &ForwardContext<'_>) -> String {
    let Ok(Status::Complete(head)) = parse_request(input.as_bytes(), &Limits::default()) else {
        panic!("{input:?} does not parse");
    };
    let mut out = Vec::new();
    write_request_head(&head, ctx, &mut out);
    let Ok(Status::Complete(again)) = parse_request(&out, &Limits::default()) else {
        panic!(
            "rewritten head does not parse: {:?}",
            String::from_utf8_lossy(&out)
        );
    };
    assert_eq!(again.body(), head.body());
    assert_eq!(again.head_len(), out.len());
    String::from_utf8(out).unwrap()
}

/// Rewrites a response head and returns it as text.
fn forward_response(input: &str, framing: OutFraming, keep_alive: bool, client: Version) -> String {
    let Ok(Status::Complete(head)) = parse_response(input.as_bytes(), &Limits::default(), false)
    else {
        panic!("{input:?} does not parse");
    };
    let mut out = Vec::new();
    let ctx = ResponseContext {
        framing,
        keep_alive,
        client_version: client,
        request_id: None,
        set_cookie: None,
        content_coding: None,
        vary: None,
    };
    write_response_head(&head, &ctx, &mut out);
    assert!(matches!(
        parse_response(&out, &Limits::default(), false),
        Ok(Status::Complete(_))
    ));
    String::from_utf8(out).unwrap()
}

#[test]
fn plain_get() {
    assert_eq!(
        forward_request(
            "GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
            &ctx()
        ),
        "GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\
         X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: example.com\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn connection_tokens_strip_fields_but_not_ours() {
    let out = forward_request(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For, close, foo\r\n\
         Connection: Content-Length, host\r\nFoo: 1\r\nFOO: 2\r\nBar: 3\r\n\
         X-Forwarded-For: 1.2.3.4\r\nContent-Length: 2\r\n\r\nhi",
        &ctx(),
    );
    assert_eq!(
        out,
        "GET / HTTP/1.1\r\nHost: a\r\nBar: 3\r\nContent-Length: 2\r\n\
         X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: a\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn hop_by_hop_removed_and_forwarded_fields_replaced() {
    let out = forward_request(
        "POST /u HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
         TE: trailers\r\nTrailer: X-Sum\r\nProxy-Authorization: Basic eA==\r\n\
         Upgrade: h2c\r\nTransfer-Encoding: chunked\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: evil\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\
         Accept: a\r\n\r\n",
        &ctx(),
    );
    assert_eq!(
        out,
        "POST /u HTTP/1.1\r\nHost: a\r\nAccept: a\r\nTransfer-Encoding: chunked\r\n\
         X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: a\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn absolute_form_becomes_origin_form() {
    let out = forward_request(
        "GET http://b.example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
        &ctx(),
    );
    assert_eq!(
        out,
        "GET /p?q HTTP/1.1\r\nHost: b.example:8080\r\nX-Forwarded-For: 10.0.0.1\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: b.example:8080\r\n\
         Connection: keep-alive\r\n\r\n"
    );
}

#[test]
fn http10_client_without_host_gets_fallback() {
    let ctx = ForwardContext {
        client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
        keep_client_xff: true,
        proto: "http",
        host_fallback: Some("default.example"),
        request_id: None,
    };
    let out = forward_request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &ctx);
    assert_eq!(
        out,
        "GET / HTTP/1.1\r\nHost: default.example\r\nX-Forwarded-For: ::1\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Host: default.example\r\n\
         Connection: keep-alive\r\n\r\n"
    );
}

#[test]
fn upgrade_is_forwarded() {
    let out = forward_request(
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: k\r\n\r\n",
        &ctx(),
    );
    assert_eq!(
        out,
        "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nX-Forwarded-For: 10.0.0.1\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\nConnection: upgrade\r\n\
         Upgrade: websocket\r\n\r\n"
    );
}

#[test]
fn request_framing_is_restated() {
    let out = forward_request(
        "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
        &ctx(),
    );
    assert!(out.contains("\r\nTransfer-Encoding: chunked\r\n"), "{out}");
    let parsed = parse_request(out.as_bytes(), &Limits::default());
    assert!(matches!(parsed, Ok(Status::Complete(h)) if h.body() == BodyKind::Chunked));
}

#[test]
fn response_rewrites() {
    use OutFraming::{AsIs, ChunkEncoded, Dechunked};
    use Version::{Http10, Http11};
    let hop = "Connection: foo\r\nKeep-Alive: timeout=5\r\nFoo: x\r\nServer: s\r\n";
    // (name, input, framing, keep_alive_to_client, client version, expected)
    let cases: &[(&str, String, OutFraming, bool, Version, String)] = &[
        (
            "length keep-alive 1.1",
            format!("HTTP/1.1 200 OK\r\n{hop}Content-Length: 2\r\n\r\n"),
            AsIs,
            true,
            Http11,
            "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\n".into(),
        ),
        (
            "length keep-alive 1.0",
            format!("HTTP/1.1 200 OK\r\n{hop}Content-Length: 2\r\n\r\n"),
            AsIs,
            true,
            Http10,
            "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
                .into(),
        ),
        (
            "length close",
            "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
            AsIs,
            false,
            Http11,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        ),
        (
            "chunked as is",
            format!("HTTP/1.1 200 OK\r\n{hop}Transfer-Encoding: chunked\r\n\r\n"),
            AsIs,
            true,
            Http11,
            "HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
        ),
        (
            "close delimited chunk-encoded",
            "HTTP/1.0 200 OK\r\nServer: s\r\n\r\n".into(),
            ChunkEncoded,
            true,
            Http11,
            "HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
        ),
        (
            "gzip close delimited chunk-encoded",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            ChunkEncoded,
            true,
            Http11,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(),
        ),
        (
            "dechunked for 1.0",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n".into(),
            Dechunked,
            false,
            Http10,
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(),
        ),
        (
            "switching protocols",
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: x\r\n\r\n"
                .into(),
            AsIs,
            true,
            Http11,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\
             Connection: upgrade\r\n\r\n"
                .into(),
        ),
        (
            "upgrade dropped outside 101",
            "HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n".into(),
            AsIs,
            true,
            Http11,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into(),
        ),
        (
            "informational",
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\nConnection: keep-alive\r\n\r\n".into(),
            AsIs,
            false,
            Http11,
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n".into(),
        ),
        (
            "empty reason",
            "HTTP/1.1 204\r\n\r\n".into(),
            AsIs,
            true,
            Http11,
            "HTTP/1.1 204 No Content\r\n\r\n".into(),
        ),
        (
            "connection cannot strip content-length",
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\n".into(),
            AsIs,
            true,
            Http11,
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n".into(),
        ),
    ];
    for (name, input, framing, keep_alive, client, want) in cases {
        assert_eq!(
            &forward_response(input, *framing, *keep_alive, *client),
            want,
            "case {name:?}"
        );
    }
}

/// Framing fields go to the client as one canonical line each: several
/// `Transfer-Encoding` lines are folded (downstream parsers disagree on
/// several), `Content-Length` loses leading zeros, and a 1xx or 204 carries
/// neither (RFC 9110 §8.6, RFC 9112 §6.1).
#[test]
fn response_framing_fields_are_canonical() {
    use OutFraming::{AsIs, ChunkEncoded};
    use Version::Http11;
    let cases: &[(&str, &str, OutFraming, &str)] = &[
        (
            "two TE lines folded",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n",
            AsIs,
            "HTTP/1.1 200 OK\r\nX: y\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ),
        (
            "two TE lines chunk-encoded",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: br\r\n\r\n",
            ChunkEncoded,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, br, chunked\r\n\r\n",
        ),
        (
            "content-length leading zeros",
            "HTTP/1.1 200 OK\r\nContent-Length: 00012\r\n\r\n",
            AsIs,
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
        ),
        (
            "204 with content-length",
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX: y\r\n\r\n",
            AsIs,
            "HTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
        ),
        (
            "204 with transfer-encoding",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            AsIs,
            "HTTP/1.1 204 No Content\r\n\r\n",
        ),
        (
            "103 with both",
            "HTTP/1.1 103 Early Hints\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nLink: </s>\r\n\r\n",
            AsIs,
            "HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n",
        ),
        (
            "304 keeps a valid content-length, canonical",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 0500\r\n\r\n",
            AsIs,
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 500\r\n\r\n",
        ),
        (
            "304 drops an invalid content-length",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5, 6\r\n\r\n",
            AsIs,
            "HTTP/1.1 304 Not Modified\r\n\r\n",
        ),
    ];
    for (name, input, framing, want) in cases {
        assert_eq!(
            &forward_response(input, *framing, true, Http11),
            want,
            "case {name:?}"
        );
    }
}

#[test]
fn request_content_length_is_canonical() {
    let out = forward_request(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000000000011\r\n\r\n",
        &ctx(),
    );
    assert!(out.contains("\r\nContent-Length: 11\r\n"), "{out:?}");
    assert!(!out.contains("0011"), "{out:?}");
}

/// An HTTP/1.0 request without Host goes upstream as HTTP/1.1 with exactly
/// one Host: the backend's, replaced when a retry picks another backend.
#[test]
fn request_without_host_gets_the_backends() {
    let mut out = Vec::new();
    let Ok(Status::Complete(head)) = parse_request(b"GET /x HTTP/1.0\r\n\r\n", &Limits::default())
    else {
        panic!("does not parse");
    };
    write_request_head(&head, &ctx(), &mut out);
    out.extend_from_slice(b"body");
    let first = put_backend_host(&mut out, 0, "127.0.0.1:8080".parse().unwrap());
    let second = put_backend_host(&mut out, first, "[::1]:9".parse().unwrap());
    assert_eq!(second, "Host: [::1]:9\r\n".len());
    let Ok(Status::Complete(again)) = parse_request(&out, &Limits::default()) else {
        panic!("does not parse: {:?}", String::from_utf8_lossy(&out));
    };
    assert_eq!(again.host(), Some("[::1]:9"));
    let hosts = again
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"));
    assert_eq!(hosts.count(), 1);
    assert!(out.starts_with(b"GET /x HTTP/1.1\r\nHost: [::1]:9\r\n"));
    assert!(out.ends_with(b"\r\n\r\nbody"));
}

/// Several per-attempt lines (Host and `$backend` fields) are replaced as
/// one block, longer or shorter, leaving the rest of the head and the
/// body as they were.
#[test]
fn per_attempt_lines_are_replaced_as_a_block() {
    let mut out = b"GET / HTTP/1.1\r\nA: 1\r\n\r\nbody".to_vec();
    let first = put_after_request_line(&mut out, 0, b"Host: 10.0.0.1:80\r\nX-B: 10.0.0.1:80\r\n");
    let second = put_after_request_line(&mut out, first, b"Host: [::1]:9\r\n");
    assert_eq!(out, b"GET / HTTP/1.1\r\nHost: [::1]:9\r\nA: 1\r\n\r\nbody");
    put_after_request_line(&mut out, second, b"");
    assert_eq!(out, b"GET / HTTP/1.1\r\nA: 1\r\n\r\nbody");
}

/// Fuzz (response_head): chunk-encoding a body that has a Content-Length
/// would send both framing fields. The proxy never asks for it; the writer
/// debug-asserts the contract.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "ChunkEncoded does not fit a Length(0) body")]
fn chunk_encoding_a_length_body_is_a_contract_error() {
    forward_response(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        OutFraming::ChunkEncoded,
        false,
        Version::Http11,
    );
}

#[test]
fn client_ip_text() {
    let ips: &[IpAddr] = &[
        IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
        IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 100, 9)),
        IpAddr::V4(Ipv4Addr::new(1, 20, 199, 250)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
    ];
    for &client_ip in ips {
        let ctx = ForwardContext { client_ip, ..ctx() };
        let out = forward_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx);
        assert!(
            out.contains(&format!("\r\nX-Forwarded-For: {client_ip}\r\n")),
            "{out:?}"
        );
    }
}

#[test]
fn generated_request_id_is_added_last() {
    let ctx = ForwardContext {
        request_id: Some("id-1"),
        ..ctx()
    };
    let out = forward_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &ctx);
    assert!(
        out.ends_with("Connection: keep-alive\r\nX-Request-ID: id-1\r\n\r\n"),
        "{out:?}"
    );
}

#[test]
fn response_gets_cookie_and_request_id_unless_it_has_one() {
    let write = |input: &str| {
        let Ok(Status::Complete(head)) =
            parse_response(input.as_bytes(), &Limits::default(), false)
        else {
            panic!("{input:?} does not parse");
        };
        let ctx = ResponseContext {
            framing: OutFraming::AsIs,
            keep_alive: false,
            client_version: Version::Http11,
            request_id: Some("id-1"),
            set_cookie: Some("lb=00ff; Path=/"),
            content_coding: None,
            vary: None,
        };
        let mut out = Vec::new();
        write_response_head(&head, &ctx, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\
         Set-Cookie: lb=00ff; Path=/\r\nX-Request-ID: id-1\r\n\r\n"
    );
    assert_eq!(
        write("HTTP/1.1 200 OK\r\nx-request-id: theirs\r\nContent-Length: 0\r\n\r\n"),
        "HTTP/1.1 200 OK\r\nx-request-id: theirs\r\nContent-Length: 0\r\n\
         Connection: close\r\nSet-Cookie: lb=00ff; Path=/\r\n\r\n"
    );
}

#[test]
fn an_untrusted_peers_x_forwarded_for_is_replaced() {
    let raw =
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\n\r\n";
    let kept = forward_request(raw, &ctx());
    assert!(
        kept.contains(&format!(
            "\r\nX-Forwarded-For: 6.6.6.6, 7.7.7.7, {CLIENT}\r\n"
        )),
        "{kept:?}"
    );
    let ctx = ForwardContext {
        keep_client_xff: false,
        ..ctx()
    };
    let replaced = forward_request(raw, &ctx);
    assert!(
        replaced.contains(&format!("\r\nX-Forwarded-For: {CLIENT}\r\n")),
        "{replaced:?}"
    );
    assert!(!replaced.contains("6.6.6.6") && !replaced.contains("7.7.7.7"));
}

/// A compressed response's head: the coding added, `Content-Length` and the
/// backend's framing dropped, chunked to HTTP/1.1 and nothing to HTTP/1.0,
/// a strong `ETag` weakened, `Vary` merged into one line.
#[test]
fn recoded_response_head() {
    let write = |input: &str, client: Version, coding: Option<&str>| {
        let input = input.replace('\n', "\r\n");
        let Ok(Status::Complete(head)) =
            parse_response(input.as_bytes(), &Limits::default(), false)
        else {
            panic!("{input:?} does not parse");
        };
        let ctx = ResponseContext {
            framing: if coding.is_some() {
                OutFraming::Recoded
            } else {
                OutFraming::AsIs
            },
            keep_alive: client == Version::Http11,
            client_version: client,
            request_id: None,
            set_cookie: None,
            content_coding: coding,
            vary: Some("Accept-Encoding"),
        };
        let mut out = Vec::new();
        write_response_head(&head, &ctx, &mut out);
        let Ok(Status::Complete(again)) = parse_response(&out, &Limits::default(), false) else {
            panic!("{:?} does not parse", String::from_utf8_lossy(&out));
        };
        assert_eq!(again.head_len(), out.len());
        String::from_utf8(out).unwrap().replace("\r\n", "\n")
    };
    let cases: &[(&str, &str, Version, Option<&str>, &str)] = &[
        (
            "length body to 1.1",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5000\nETag: \"v1\"\n\n",
            Version::Http11,
            Some("gzip"),
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nETag: W/\"v1\"\n\
             Transfer-Encoding: chunked\nContent-Encoding: gzip\nVary: Accept-Encoding\n\n",
        ),
        (
            "chunked body to 1.0",
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nETag: W/\"weak\"\nVary: Origin\n\n",
            Version::Http10,
            Some("br"),
            "HTTP/1.1 200 OK\nETag: W/\"weak\"\nContent-Encoding: br\n\
             Vary: Origin, Accept-Encoding\nConnection: close\n\n",
        ),
        (
            "two Vary lines merged",
            "HTTP/1.1 200 OK\nVary: Origin\nContent-Length: 5000\nvary: Cookie, \n\n",
            Version::Http11,
            Some("zstd"),
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Encoding: zstd\n\
             Vary: Origin, Cookie, Accept-Encoding\n\n",
        ),
        (
            "Vary lists it already",
            "HTTP/1.1 200 OK\nVary: accept-encoding\nContent-Length: 5000\n\n",
            Version::Http11,
            Some("gzip"),
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Encoding: gzip\n\
             Vary: accept-encoding\n\n",
        ),
        (
            "Vary star",
            "HTTP/1.1 200 OK\nVary: *\nContent-Length: 5000\n\n",
            Version::Http11,
            Some("gzip"),
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Encoding: gzip\nVary: *\n\n",
        ),
        (
            "not compressed: Vary only, ETag and length kept",
            "HTTP/1.1 200 OK\nContent-Length: 5000\nETag: \"v1\"\n\n",
            Version::Http11,
            None,
            "HTTP/1.1 200 OK\nETag: \"v1\"\nContent-Length: 5000\nVary: Accept-Encoding\n\n",
        ),
    ];
    for (name, input, client, coding, want) in cases {
        assert_eq!(write(input, *client, *coding), *want, "case {name:?}");
    }
}
