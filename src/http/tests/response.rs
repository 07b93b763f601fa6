//! Response heads: the §6.3 framing table and connection reuse.

use super::{head_of_len, head_with_fields, parse_every_prefix};
use crate::http::{parse_response, Limits, ResponseBody, ResponseError, ResponseHead, Status};

use ResponseBody::{Chunked, CloseDelimited, Empty, Length};
use ResponseError as E;

fn parse<'b>(
    case: &str,
    input: &'b [u8],
    limits: &Limits,
    is_head: bool,
) -> Result<Status<ResponseHead<'b>>, ResponseError> {
    parse_every_prefix(case, input, |buf| parse_response(buf, limits, is_head))
}

struct Case {
    name: &'static str,
    input: &'static [u8],
    request_is_head: bool,
    /// Body framing and whether the upstream connection can be reused.
    want: Result<(ResponseBody, bool), ResponseError>,
}

const fn get(
    name: &'static str,
    input: &'static [u8],
    want: Result<(ResponseBody, bool), ResponseError>,
) -> Case {
    Case {
        name,
        input,
        request_is_head: false,
        want,
    }
}

const fn head(
    name: &'static str,
    input: &'static [u8],
    want: Result<(ResponseBody, bool), ResponseError>,
) -> Case {
    Case {
        name,
        input,
        request_is_head: true,
        want,
    }
}

fn run(cases: &[Case]) {
    for c in cases {
        let got = parse(c.name, c.input, &Limits::default(), c.request_is_head).map(|s| match s {
            Status::Complete(h) => (h.body(), h.keep_alive()),
            Status::Partial => panic!("case {:?}: incomplete input", c.name),
        });
        assert_eq!(got, c.want, "case {:?}", c.name);
    }
}

#[test]
fn framing_rules() {
    run(&[
        // Rule 1.
        head("head with cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Ok((Empty, true))),
        head("head with chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Ok((Empty, true))),
        head("head without framing", b"HTTP/1.1 200 OK\r\n\r\n", Ok((Empty, true))),
        get("100", b"HTTP/1.1 100 Continue\r\n\r\n", Ok((Empty, true))),
        get("103", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", Ok((Empty, true))),
        get("101", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", Ok((Empty, false))),
        get("204", b"HTTP/1.1 204 No Content\r\n\r\n", Ok((Empty, true))),
        get("304 with cl", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", Ok((Empty, true))),
        // Rule 3.
        get("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Ok((Chunked, true))),
        get("gzip chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Ok((Chunked, true))),
        get("gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Ok((CloseDelimited, false))),
        // Fuzz (response_head): relayed chunk-encoded, this became
        // "chunked, gzip, chunked", chunked applied twice.
        get("chunked then gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(E::ChunkedNotFinal)),
        get("chunked then gzip, two fields", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", Err(E::ChunkedNotFinal)),
        get("cl and te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Err(E::ContentLengthWithTransferEncoding)),
        get("te and cl", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Err(E::ContentLengthWithTransferEncoding)),
        get("te on 1.0", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Err(E::TransferEncodingOnHttp10)),
        get("chunked twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Err(E::ChunkedRepeated)),
        get("te quoted", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", Err(E::InvalidTransferEncoding)),
        // Rules 4 and 5.
        get("cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Ok((Length(5), true))),
        get("cl twice", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Err(E::DuplicateContentLength)),
        get("cl invalid", b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n", Err(E::InvalidContentLength)),
        get("cl overflow", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", Err(E::ContentLengthOverflow)),
        // Rule 7.
        get("close delimited", b"HTTP/1.1 200 OK\r\n\r\nbody until close", Ok((CloseDelimited, false))),
    ]);
}

#[test]
fn connection_reuse() {
    run(&[
        get(
            "1.1 close",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            Ok((Length(0), false)),
        ),
        get(
            "1.0 default",
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            Ok((Length(0), false)),
        ),
        get(
            "1.0 keep-alive",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            Ok((Length(0), true)),
        ),
        get(
            "1.0 keep-alive close delimited",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
            Ok((CloseDelimited, false)),
        ),
    ]);
}

#[test]
fn syntax() {
    run(&[
        get(
            "bare lf",
            b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
            Err(E::BareLineEnding),
        ),
        get(
            "bare lf end",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n",
            Err(E::BareLineEnding),
        ),
        get(
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            Err(E::ObsFold),
        ),
        get(
            "space before colon",
            b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
            Err(E::WhitespaceBeforeColon),
        ),
        get(
            "nul",
            b"HTTP/1.1 200 OK\r\nX: \0\r\n\r\n",
            Err(E::InvalidHeaderValue),
        ),
        get(
            "status 099",
            b"HTTP/1.1 099 X\r\n\r\n",
            Err(E::InvalidStatusLine),
        ),
        get(
            "status 4 digits",
            b"HTTP/1.1 2000 X\r\n\r\n",
            Err(E::InvalidStatusLine),
        ),
        get("http/2", b"HTTP/2.0 200 OK\r\n\r\n", Err(E::InvalidVersion)),
        get(
            "no reason",
            b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
            Ok((Length(0), true)),
        ),
    ]);
}

#[test]
fn accessors() {
    let input = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00";
    let Ok(Status::Complete(h)) = parse("101", input, &Limits::default(), false) else {
        panic!("101 did not parse");
    };
    assert_eq!((h.status(), h.reason()), (101, "Switching Protocols"));
    assert_eq!(h.head_len(), input.len() - 2);
    assert_eq!(h.upgrade(), Some(&b"websocket"[..]));
    assert!(!h.is_informational());
    assert_eq!(h.headers().count(), 2);
    for (status, informational) in [
        (100, true),
        (103, true),
        (199, true),
        (200, false),
        (204, false),
    ] {
        let text = format!("HTTP/1.1 {status} X\r\n\r\n");
        let h = parse_response(text.as_bytes(), &Limits::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(h.is_informational(), informational, "{status}");
        assert_eq!(h.upgrade(), None);
    }
}

#[test]
fn limits() {
    let start = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n";
    let max = 120;
    let limits = Limits {
        max_head_bytes: max,
        max_headers: 4,
    };
    assert!(matches!(
        parse("at limit", &head_of_len(start, max), &limits, false),
        Ok(Status::Complete(_))
    ));
    assert_eq!(
        parse("limit + 1", &head_of_len(start, max + 1), &limits, false),
        Err(E::HeadTooLarge)
    );
    let limits = Limits {
        max_headers: 4,
        ..Limits::default()
    };
    let at = head_with_fields("HTTP/1.1 204 No Content\r\n", "Server: x\r\n", 4);
    assert!(matches!(
        parse("4 fields", &at, &limits, false),
        Ok(Status::Complete(_))
    ));
    let over = head_with_fields("HTTP/1.1 204 No Content\r\n", "Server: x\r\n", 5);
    assert_eq!(
        parse("5 fields", &over, &limits, false),
        Err(E::TooManyHeaders)
    );
}
