//! The compression decision as tables: negotiation on a request head, and
//! each rule of what is left alone on a response head.

use super::*;
use crate::http::{parse_request, parse_response, Limits, Status};

fn policy() -> Compress {
    Compress::new(
        vec![(Coding::Br, 4), (Coding::Gzip, 6)],
        1024,
        ["text/*", "application/json"]
            .iter()
            .filter_map(|t| MediaRange::parse(t))
            .collect(),
    )
}

fn decide(head: &str, is_head: bool, chosen: Option<Coding>) -> Decision {
    let raw = head.replace('\n', "\r\n");
    match parse_response(raw.as_bytes(), &Limits::default(), is_head) {
        Ok(Status::Complete(h)) => policy().decide(&h, chosen),
        other => panic!("test head does not parse: {other:?}"),
    }
}

const OK_JSON: &str = "HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 5000\n\n";

#[test]
fn what_is_left_alone() {
    let gz = Some(Coding::Gzip);
    let cases: &[(&str, &str, bool, Decision)] = &[
        ("compressed", OK_JSON, false, Decision::Compress(Coding::Gzip, 6)),
        (
            "1 HEAD",
            OK_JSON,
            true,
            Decision::Leave(Leave::NoBody),
        ),
        (
            "1 204",
            "HTTP/1.1 204 No Content\nContent-Type: text/plain\n\n",
            false,
            Decision::Leave(Leave::NoBody),
        ),
        (
            "1 304",
            "HTTP/1.1 304 Not Modified\nContent-Type: text/plain\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::NoBody),
        ),
        (
            "2 206",
            "HTTP/1.1 206 Partial Content\nContent-Type: text/plain\nContent-Range: bytes 0-4999/9000\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::Partial),
        ),
        (
            "2 Content-Range on a 200",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Range: bytes 0-4999/5000\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::Partial),
        ),
        (
            "3 Content-Encoding",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Encoding: gzip\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::Encoded),
        ),
        (
            "3 Content-Encoding identity",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\ncontent-encoding: identity\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::Encoded),
        ),
        (
            "4 no-transform",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nCache-Control: public, No-Transform\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::NoTransform),
        ),
        (
            "4 other directives",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nCache-Control: max-age=60, no-transformx\nContent-Length: 5000\n\n",
            false,
            Decision::Compress(Coding::Gzip, 6),
        ),
        (
            "5 transfer coding",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: gzip, chunked\n\n",
            false,
            Decision::Leave(Leave::TransferCoded),
        ),
        (
            "5 chunked alone",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\n\n",
            false,
            Decision::Compress(Coding::Gzip, 6),
        ),
        (
            "6 no type",
            "HTTP/1.1 200 OK\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::Type),
        ),
        (
            "6 other type",
            "HTTP/1.1 200 OK\nContent-Type: image/png\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::Type),
        ),
        (
            "6 type with parameters, any case",
            "HTTP/1.1 200 OK\nContent-Type: Text/HTML ; charset=utf-8\nContent-Length: 5000\n\n",
            false,
            Decision::Compress(Coding::Gzip, 6),
        ),
        (
            "6 prefix is not a type",
            "HTTP/1.1 200 OK\nContent-Type: textual/plain\nContent-Length: 5000\n\n",
            false,
            Decision::Leave(Leave::Type),
        ),
        (
            "7 below min_length",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 1023\n\n",
            false,
            Decision::Leave(Leave::TooShort),
        ),
        (
            "7 at min_length",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 1024\n\n",
            false,
            Decision::Compress(Coding::Gzip, 6),
        ),
        (
            "7 unknown length",
            "HTTP/1.1 200 OK\nContent-Type: text/plain\n\n",
            false,
            Decision::Compress(Coding::Gzip, 6),
        ),
        (
            "error statuses too",
            "HTTP/1.1 404 Not Found\nContent-Type: text/html\nContent-Length: 5000\n\n",
            false,
            Decision::Compress(Coding::Gzip, 6),
        ),
    ];
    for (name, head, is_head, want) in cases {
        assert_eq!(decide(head, *is_head, gz), *want, "case {name:?}");
    }
}

/// A response that could be compressed varies even when this client took
/// no coding.
#[test]
fn vary_without_a_coding() {
    assert_eq!(decide(OK_JSON, false, None), Decision::Vary);
    assert_eq!(
        decide(OK_JSON, false, Some(Coding::Br)),
        Decision::Compress(Coding::Br, 4)
    );
}

#[test]
fn negotiate_on_request_heads() {
    let cases: &[(&str, Option<Coding>)] = &[
        ("GET / HTTP/1.1\nHost: a\n\n", None),
        (
            "GET / HTTP/1.1\nHost: a\nAccept-Encoding: gzip, br\n\n",
            Some(Coding::Br),
        ),
        (
            "GET / HTTP/1.1\nHost: a\naccept-encoding: zstd, deflate\n\n",
            None,
        ),
        (
            "GET / HTTP/1.1\nHost: a\nAccept-Encoding: br;q=0.1\nAccept-Encoding: gzip\n\n",
            Some(Coding::Gzip),
        ),
    ];
    for (head, want) in cases {
        let raw = head.replace('\n', "\r\n");
        let Ok(Status::Complete(h)) = parse_request(raw.as_bytes(), &Limits::default()) else {
            panic!("test head does not parse");
        };
        assert_eq!(policy().negotiate(&h), *want, "{head:?}");
    }
}

#[test]
fn media_ranges() {
    let cases: &[(&str, Option<MediaRange>)] = &[
        ("*/*", Some(MediaRange::Any)),
        ("Text/*", Some(MediaRange::Type("text".into()))),
        (
            "application/JSON",
            Some(MediaRange::Exact("application/json".into())),
        ),
        (
            "image/svg+xml",
            Some(MediaRange::Exact("image/svg+xml".into())),
        ),
        ("*/json", None),
        ("text", None),
        ("text/", None),
        ("/json", None),
        ("text/html; charset=utf-8", None),
        ("te xt/html", None),
    ];
    for (text, want) in cases {
        assert_eq!(MediaRange::parse(text), *want, "{text:?}");
    }
    assert!(MediaRange::Type("text".into()).matches(b"TEXT/plain"));
    assert!(!MediaRange::Type("text".into()).matches(b"text"));
    assert!(MediaRange::Any.matches(b"x/y"));
}
