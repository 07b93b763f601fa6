//! `plan_response`: framing and keep-alive for a final response, as a table.

use crate::http::{
    parse_response, plan_response, ClientSide, Limits, OutFraming, PlanError, ResponseBody,
    ResponseInfo, ResponsePlan, Status, Version,
};

fn info(head: &str) -> ResponseInfo {
    match parse_response(head.as_bytes(), &Limits::default(), false) {
        Ok(Status::Complete(h)) => h.info(),
        other => panic!("{head:?}: {other:?}"),
    }
}

const LEN: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
const CLOSE: &str = "HTTP/1.1 200 OK\r\n\r\n";
const LEN_CLOSE: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n";
const OLD_LEN: &str = "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n";
const SWITCH: &str =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\n\r\n";

const V11: Version = Version::Http11;
const V10: Version = Version::Http10;

fn client(version: Version, keep_alive: bool, upgrade: bool, complete: bool) -> ClientSide {
    ClientSide {
        version,
        keep_alive,
        upgrade,
        request_complete: complete,
    }
}

fn plan(body: ResponseBody, out: OutFraming, keep: bool, reuse: bool) -> ResponsePlan {
    ResponsePlan {
        body,
        out,
        keep_alive: keep,
        reuse_upstream: reuse,
        tunnel: false,
    }
}

#[test]
fn table() {
    use OutFraming::*;
    use ResponseBody::*;
    let cases: &[(&str, &str, ClientSide, Result<ResponsePlan, PlanError>)] = &[
        (
            "length, 1.1, keep-alive",
            LEN,
            client(V11, true, false, true),
            Ok(plan(Length(5), AsIs, true, true)),
        ),
        (
            "length, client asked to close",
            LEN,
            client(V11, false, false, true),
            Ok(plan(Length(5), AsIs, false, true)),
        ),
        (
            "length, request body not sent whole",
            LEN,
            client(V11, true, false, false),
            Ok(plan(Length(5), AsIs, false, false)),
        ),
        (
            "length, backend says close",
            LEN_CLOSE,
            client(V11, true, false, true),
            Ok(plan(Length(5), AsIs, true, false)),
        ),
        (
            "length from an HTTP/1.0 backend without keep-alive",
            OLD_LEN,
            client(V11, true, false, true),
            Ok(plan(Length(5), AsIs, true, false)),
        ),
        (
            "chunked to 1.1: as is",
            CHUNKED,
            client(V11, true, false, true),
            Ok(plan(Chunked, AsIs, true, true)),
        ),
        (
            "chunked to 1.0: de-chunked, ends by close",
            CHUNKED,
            client(V10, true, false, true),
            Ok(plan(Chunked, Dechunked, false, true)),
        ),
        (
            "until close to 1.1: chunk-encoded, client kept",
            CLOSE,
            client(V11, true, false, true),
            Ok(plan(CloseDelimited, ChunkEncoded, true, false)),
        ),
        (
            "until close to 1.0: as is, ends by close",
            CLOSE,
            client(V10, true, false, true),
            Ok(plan(CloseDelimited, AsIs, false, false)),
        ),
        (
            "no content",
            NO_CONTENT,
            client(V10, true, false, true),
            Ok(plan(Empty, AsIs, true, true)),
        ),
        (
            "101 to an upgrade request: a tunnel",
            SWITCH,
            client(V11, true, true, true),
            Ok(ResponsePlan {
                tunnel: true,
                ..plan(Empty, AsIs, false, false)
            }),
        ),
        (
            "101 unasked",
            SWITCH,
            client(V11, true, false, true),
            Err(PlanError::UnaskedSwitch),
        ),
    ];
    for (name, head, side, want) in cases {
        assert_eq!(plan_response(&info(head), *side), *want, "case {name:?}");
    }
}

#[test]
fn info_lends_the_head_back() {
    let raw = "HTTP/1.1 404 Gone Fishing\r\nX-Request-ID: r1\r\nContent-Length: 0\r\n\r\nrest";
    let Ok(Status::Complete(head)) = parse_response(raw.as_bytes(), &Limits::default(), false)
    else {
        panic!("does not parse");
    };
    let info = head.info();
    assert_eq!(info.status, 404);
    assert_eq!(info.head_len, raw.len() - 4);
    assert!(info.has_request_id);
    assert!(info.keep_alive);
    assert_eq!(info.head(raw.as_bytes()), head);
    // No reason phrase at all.
    let raw = b"HTTP/1.1 200 \r\n\r\n";
    let Ok(Status::Complete(head)) = parse_response(raw, &Limits::default(), true) else {
        panic!("does not parse");
    };
    assert_eq!(head.info().head(raw), head);
    assert!(!head.has_request_id());
}

/// A compressed body: chunked to HTTP/1.1 (the connection stays as
/// planned), until close to HTTP/1.0; the upstream side unchanged.
#[test]
fn recoded_plans() {
    use OutFraming::Recoded;
    use ResponseBody::*;
    let cases: &[(&str, &str, ClientSide, ResponsePlan)] = &[
        (
            "length to 1.1",
            LEN,
            client(V11, true, false, true),
            plan(Length(5), Recoded, true, true),
        ),
        (
            "chunked to 1.1",
            CHUNKED,
            client(V11, true, false, true),
            plan(Chunked, Recoded, true, true),
        ),
        (
            "close-delimited to 1.1",
            CLOSE,
            client(V11, true, false, true),
            plan(CloseDelimited, Recoded, true, false),
        ),
        (
            "length to 1.0 keep-alive: ends by close",
            LEN,
            client(V10, true, false, true),
            plan(Length(5), Recoded, false, true),
        ),
        (
            "chunked to 1.0",
            CHUNKED,
            client(V10, true, false, true),
            plan(Chunked, Recoded, false, true),
        ),
        (
            "client asked to close",
            LEN,
            client(V11, false, false, true),
            plan(Length(5), Recoded, false, true),
        ),
    ];
    for (name, head, side, want) in cases {
        let planned = plan_response(&info(head), *side).unwrap();
        assert_eq!(planned.recoded(*side), *want, "case {name:?}");
    }
}
