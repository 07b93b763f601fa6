//! Request heads: framing and smuggling table, limits, accessors.

use super::{head_of_len, head_with_fields, parse_every_prefix};
use crate::http::{
    parse_request, BodyKind, Limits, RequestError, RequestHead, Status, Version, MAX_HEADERS_CAP,
};

use BodyKind::{Chunked, Empty, Length};
use RequestError as E;

fn parse<'b>(
    case: &str,
    input: &'b [u8],
    limits: &Limits,
) -> Result<Status<RequestHead<'b>>, RequestError> {
    parse_every_prefix(case, input, |buf| parse_request(buf, limits))
}

/// Parses a request that must be complete and valid.
fn head<'b>(input: &'b [u8]) -> RequestHead<'b> {
    let case = String::from_utf8_lossy(input);
    match parse(&case, input, &Limits::default()) {
        Ok(Status::Complete(head)) => head,
        other => panic!("case {case:?}: {other:?}"),
    }
}

struct Case {
    name: &'static str,
    input: &'static [u8],
    want: Result<BodyKind, RequestError>,
}

const fn case(
    name: &'static str,
    input: &'static [u8],
    want: Result<BodyKind, RequestError>,
) -> Case {
    Case { name, input, want }
}

fn run(cases: &[Case]) {
    for c in cases {
        let got = parse(c.name, c.input, &Limits::default()).map(|s| match s {
            Status::Complete(head) => head.body(),
            Status::Partial => panic!("case {:?}: incomplete input", c.name),
        });
        assert_eq!(got, c.want, "case {:?}", c.name);
    }
}

#[test]
fn framing() {
    run(&[
        case("get", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(Empty)),
        case(
            "leading empty line",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Ok(Empty),
        ),
        case(
            "cl",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            Ok(Length(5)),
        ),
        case(
            "cl zero",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            Ok(Length(0)),
        ),
        case(
            "cl u64 max",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
            Ok(Length(u64::MAX)),
        ),
        case(
            "cl 1.0",
            b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
            Ok(Length(2)),
        ),
        case(
            "chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            Ok(Chunked),
        ),
        case(
            "chunked upper",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
            Ok(Chunked),
        ),
        case(
            "te tab",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n",
            Ok(Chunked),
        ),
        case(
            "te trailing ows",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \t\r\n\r\n",
            Ok(Chunked),
        ),
    ]);
}

#[test]
fn smuggling_content_length() {
    run(&[
        case("cl then te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Err(E::ContentLengthWithTransferEncoding)),
        case("te then cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Err(E::ContentLengthWithTransferEncoding)),
        case("te gzip then cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n", Err(E::ContentLengthWithTransferEncoding)),
        case("cl twice same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Err(E::DuplicateContentLength)),
        case("cl twice differ", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Err(E::DuplicateContentLength)),
        case("cl list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", Err(E::DuplicateContentLength)),
        case("cl plus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Err(E::InvalidContentLength)),
        case("cl minus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Err(E::InvalidContentLength)),
        case("cl hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", Err(E::InvalidContentLength)),
        case("cl inner space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 5\r\n\r\n", Err(E::InvalidContentLength)),
        case("cl empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", Err(E::InvalidContentLength)),
        case("cl overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", Err(E::ContentLengthOverflow)),
    ]);
}

#[test]
fn smuggling_transfer_encoding() {
    run(&[
        case("xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", Err(E::UnsupportedTransferCoding)),
        case("chunked identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", Err(E::UnsupportedTransferCoding)),
        case("identity chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", Err(E::UnsupportedTransferCoding)),
        case("gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Err(E::UnsupportedTransferCoding)),
        case("chunked x", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, x\r\n\r\n", Err(E::UnsupportedTransferCoding)),
        case("te split headers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", Err(E::UnsupportedTransferCoding)),
        case("chunked twice list", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Err(E::ChunkedRepeated)),
        case("chunked twice headers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Err(E::ChunkedRepeated)),
        case("quoted", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", Err(E::InvalidTransferEncoding)),
        case("parameter", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", Err(E::InvalidTransferEncoding)),
        case("empty element", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", Err(E::InvalidTransferEncoding)),
        case("empty value", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", Err(E::InvalidTransferEncoding)),
        case("inner space", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n", Err(E::InvalidTransferEncoding)),
        case("space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", Err(E::WhitespaceBeforeColon)),
        case("obs-fold value", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", Err(E::ObsFold)),
        case("te on 1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(E::TransferEncodingOnHttp10)),
    ]);
}

#[test]
fn syntax() {
    run(&[
        case(
            "bare lf request line",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            Err(E::BareLineEnding),
        ),
        case(
            "bare lf field",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            Err(E::BareLineEnding),
        ),
        case(
            "bare lf last field",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            Err(E::BareLineEnding),
        ),
        case(
            "bare lf end",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            Err(E::BareLineEnding),
        ),
        case(
            "bare lf only",
            b"GET / HTTP/1.1\nHost: a\n\n",
            Err(E::BareLineEnding),
        ),
        case(
            "bare lf leading",
            b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::BareLineEnding),
        ),
        case(
            "bare cr end",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
            Err(E::BareLineEnding),
        ),
        case(
            "bare cr value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\rc\r\n\r\n",
            Err(E::InvalidHeaderValue),
        ),
        case(
            "nul value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\0c\r\n\r\n",
            Err(E::InvalidHeaderValue),
        ),
        case(
            "del value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n",
            Err(E::InvalidHeaderValue),
        ),
        case(
            "space before colon",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            Err(E::WhitespaceBeforeColon),
        ),
        case(
            "tab before colon",
            b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            Err(E::WhitespaceBeforeColon),
        ),
        case(
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n",
            Err(E::ObsFold),
        ),
        case(
            "obs-fold tab",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n",
            Err(E::ObsFold),
        ),
        case(
            "space before first field",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            Err(E::ObsFold),
        ),
        case(
            "name without colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n",
            Err(E::InvalidHeaderName),
        ),
        case(
            "empty name",
            b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
            Err(E::InvalidHeaderName),
        ),
        case(
            "bad method",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::InvalidRequestLine),
        ),
        case(
            "double space",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::InvalidRequestLine),
        ),
        case("http/0.9", b"GET /\r\n\r\n", Err(E::InvalidRequestLine)),
        case(
            "http/1.2",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            Err(E::InvalidVersion),
        ),
        case(
            "http/2.0",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            Err(E::InvalidVersion),
        ),
        case(
            "relative target",
            b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::InvalidTarget),
        ),
        case(
            "ftp target",
            b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::InvalidTarget),
        ),
        case(
            "userinfo target",
            b"GET http://u@a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::InvalidTarget),
        ),
        case(
            "empty authority",
            b"GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::InvalidTarget),
        ),
        case(
            "query without path",
            b"GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::InvalidTarget),
        ),
        case(
            "connect",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            Err(E::ConnectUnsupported),
        ),
    ]);
}

#[test]
fn host() {
    run(&[
        case(
            "missing 1.1",
            b"GET / HTTP/1.1\r\nX: a\r\n\r\n",
            Err(E::MissingHost),
        ),
        case(
            "missing absolute-form",
            b"GET http://a/ HTTP/1.1\r\n\r\n",
            Err(E::MissingHost),
        ),
        case("missing 1.0 ok", b"GET / HTTP/1.0\r\n\r\n", Ok(Empty)),
        case(
            "duplicate",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            Err(E::DuplicateHost),
        ),
        case(
            "duplicate 1.0",
            b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
            Err(E::DuplicateHost),
        ),
        case(
            "empty 1.1",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            Err(E::InvalidHost),
        ),
        case(
            "empty 1.0 ok",
            b"GET / HTTP/1.0\r\nHost:\r\n\r\n",
            Ok(Empty),
        ),
        case(
            "space",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            Err(E::InvalidHost),
        ),
        case(
            "userinfo",
            b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            Err(E::InvalidHost),
        ),
        case(
            "path",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            Err(E::InvalidHost),
        ),
        case(
            "port and ipv6",
            b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            Ok(Empty),
        ),
    ]);
}

/// `max_head_bytes`: a head of exactly the limit parses, one byte more is 431.
#[test]
fn head_size_limit() {
    let start = "GET / HTTP/1.1\r\nHost: a\r\n";
    for max in [100, Limits::DEFAULT_MAX_HEAD_BYTES] {
        let limits = Limits {
            max_head_bytes: max,
            ..Limits::default()
        };
        let at_limit = head_of_len(start, max);
        let got = parse("at limit", &at_limit, &limits);
        assert!(
            matches!(got, Ok(Status::Complete(ref h)) if h.head_len() == max),
            "{got:?}"
        );
        let mut with_body = at_limit.clone();
        with_body.extend_from_slice(b"pipelined");
        assert!(matches!(
            parse_request(&with_body, &limits),
            Ok(Status::Complete(_))
        ));
        let over = head_of_len(start, max + 1);
        assert_eq!(parse("limit + 1", &over, &limits), Err(E::HeadTooLarge));
        // The request line alone over the limit: 414, as nginx answers;
        // leading empty lines do not count as its end.
        let long_line = format!("\r\nGET /{} HTTP/1.1\r\n", "a".repeat(max));
        assert_eq!(
            parse_request(&long_line.as_bytes()[..max], &limits),
            Err(E::UriTooLong)
        );
    }
}

/// `max_headers`: exactly the limit parses, one more is 431; the limit is
/// clamped to `MAX_HEADERS_CAP`.
#[test]
fn header_count_limit() {
    let start = "GET / HTTP/1.1\r\n";
    for max in [1, 3, Limits::DEFAULT_MAX_HEADERS, MAX_HEADERS_CAP] {
        let limits = Limits {
            max_headers: max,
            max_head_bytes: 64 * 1024,
        };
        let at_limit = head_with_fields(start, "Host: a\r\n", max);
        assert!(
            matches!(
                parse("at limit", &at_limit, &limits),
                Ok(Status::Complete(_))
            ),
            "max {max}"
        );
        let over = head_with_fields(start, "Host: a\r\n", max + 1);
        assert_eq!(
            parse("limit + 1", &over, &limits),
            Err(E::TooManyHeaders),
            "max {max}"
        );
    }
    let limits = Limits {
        max_headers: 10 * MAX_HEADERS_CAP,
        max_head_bytes: 64 * 1024,
    };
    let over_cap = head_with_fields(start, "Host: a\r\n", MAX_HEADERS_CAP + 1);
    assert_eq!(parse_request(&over_cap, &limits), Err(E::TooManyHeaders));
}

#[test]
fn accessors_origin_form() {
    let input =
        b"GET /p?q=1 HTTP/1.1\r\nHost: Example.COM:80\r\nX-A:  1 \r\n\r\nGET / HTTP/1.1\r\n";
    let h = head(input);
    assert_eq!(h.method(), "GET");
    assert_eq!(h.target(), "/p?q=1");
    assert_eq!(h.path(), "/p?q=1");
    assert_eq!(h.host(), Some("Example.COM:80"));
    assert_eq!(h.version(), Version::Http11);
    assert_eq!(h.head_len(), input.len() - b"GET / HTTP/1.1\r\n".len());
    assert!(!h.is_head() && h.is_idempotent() && !h.is_absolute_form());
    let fields: Vec<_> = h.headers().collect();
    assert_eq!(fields, [("Host", &b"Example.COM:80"[..]), ("X-A", b"1")]);
}

#[test]
fn accessors_absolute_and_asterisk_form() {
    let h = head(b"GET http://b.example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!((h.path(), h.host()), ("/p?q", Some("b.example:8080")));
    assert!(h.is_absolute_form());
    let h = head(b"GET HTTPS://b.example HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!((h.path(), h.host()), ("/", Some("b.example")));
    let h = head(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((h.target(), h.path()), ("*", "*"));
    let h = head(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.host(), None);
    assert_eq!(h.headers().count(), 0);
}

#[test]
fn method_properties() {
    let cases: &[(&[u8], bool, bool)] = &[
        (b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", true, true),
        (b"PUT / HTTP/1.1\r\nHost: a\r\n\r\n", false, true),
        (b"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", false, true),
        (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", false, false),
        (b"PATCH / HTTP/1.1\r\nHost: a\r\n\r\n", false, false),
        (b"head / HTTP/1.1\r\nHost: a\r\n\r\n", false, false),
    ];
    for &(input, is_head, idempotent) in cases {
        let h = head(input);
        assert_eq!(
            (h.is_head(), h.is_idempotent()),
            (is_head, idempotent),
            "{}",
            h.method()
        );
    }
}

#[test]
fn connection_semantics() {
    // (name, input, keep_alive, expect_continue, upgrade)
    type Case = (
        &'static str,
        &'static [u8],
        bool,
        bool,
        Option<&'static [u8]>,
    );
    let cases: &[Case] = &[
        ("1.1 default", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, false, None),
        ("1.1 close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", false, false, None),
        ("1.1 close in list", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: keep-alive, close\r\n\r\n", false, false, None),
        ("1.0 default", b"GET / HTTP/1.0\r\n\r\n", false, false, None),
        ("1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true, false, None),
        ("1.0 keep-alive close", b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false, false, None),
        ("expect", b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n", true, true, None),
        ("expect other", b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continuex\r\n\r\n", true, false, None),
        ("expect 1.0", b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", false, false, None),
        ("upgrade", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true, false, Some(b"websocket")),
        ("upgrade no token", b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", true, false, None),
        ("upgrade 1.0", b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false, false, None),
    ];
    for &(name, input, keep_alive, expect_continue, upgrade) in cases {
        let h = head(input);
        assert_eq!(
            (h.keep_alive(), h.expect_continue(), h.upgrade()),
            (keep_alive, expect_continue, upgrade),
            "case {name:?}"
        );
    }
}

#[test]
fn error_status_and_reason() {
    assert_eq!(E::ContentLengthWithTransferEncoding.status(), 400);
    assert_eq!(
        E::ContentLengthWithTransferEncoding.reason(),
        "conflicting Content-Length and Transfer-Encoding"
    );
    assert_eq!(E::HeadTooLarge.status(), 431);
    assert_eq!(E::UriTooLong.status(), 414);
    assert_eq!(E::TooManyHeaders.status(), 431);
    assert_eq!(E::UnsupportedTransferCoding.status(), 501);
    assert_eq!(E::ChunkedRepeated.status(), 501);
    assert_eq!(E::BareLineEnding.to_string(), "line ending is not CRLF");
}

/// What backends read differently is not forwarded: a fragment, and dot
/// segments that climb above the root (also percent-encoded), as nginx.
#[test]
fn fragments_and_paths_above_the_root_are_rejected() {
    run(&[
        case(
            "fragment",
            b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::FragmentInTarget),
        ),
        case(
            "fragment after query",
            b"GET /a?q#f HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::FragmentInTarget),
        ),
        case(
            "climb",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::PathAboveRoot),
        ),
        case(
            "climb encoded",
            b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::PathAboveRoot),
        ),
        case(
            "climb mixed case",
            b"GET /a/.%2E/%2E./x HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::PathAboveRoot),
        ),
        case(
            "climb last",
            b"GET /a/../.. HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::PathAboveRoot),
        ),
        case(
            "climb absolute-form",
            b"GET http://a/../x HTTP/1.1\r\nHost: a\r\n\r\n",
            Err(E::PathAboveRoot),
        ),
        case(
            "dots within root",
            b"GET /a/b/../../c/./d HTTP/1.1\r\nHost: a\r\n\r\n",
            Ok(Empty),
        ),
        case(
            "dots in names",
            b"GET /a/.../..b/x..y/.well-known HTTP/1.1\r\nHost: a\r\n\r\n",
            Ok(Empty),
        ),
        case(
            "dots in query",
            b"GET /a?x=/../../.. HTTP/1.1\r\nHost: a\r\n\r\n",
            Ok(Empty),
        ),
        case(
            "trailing slash",
            b"GET /a/../ HTTP/1.1\r\nHost: a\r\n\r\n",
            Ok(Empty),
        ),
        case(
            "asterisk",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            Ok(Empty),
        ),
    ]);
    assert_eq!(E::FragmentInTarget.status(), 400);
    assert_eq!(E::PathAboveRoot.status(), 400);
}
