//! Any bytes as a response head, answering a HEAD request or not: parsing
//! never panics, and a complete head can be rewritten for the client with
//! every relay framing; relayed as-is it parses back to the same framing,
//! compressed (`Recoded`) to chunked for HTTP/1.1 and until close for 1.0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::http::{
    parse_response, write_response_head, Limits, OutFraming, ResponseBody, ResponseContext, Status,
    Version, MAX_HEADERS_CAP,
};

const FRAMINGS: [OutFraming; 4] = [
    OutFraming::AsIs,
    OutFraming::ChunkEncoded,
    OutFraming::Dechunked,
    OutFraming::Recoded,
];

/// The combinations the proxy chooses (`http::plan_response`): chunk-encoding
/// only a close-delimited body, de-chunking only a chunked one, and never a
/// chunked body as-is to an HTTP/1.0 client. `write_response_head`
/// debug-asserts these.
fn proxy_may_use(framing: OutFraming, body: ResponseBody, client: Version) -> bool {
    match framing {
        OutFraming::AsIs => !(body == ResponseBody::Chunked && client == Version::Http10),
        OutFraming::ChunkEncoded => body == ResponseBody::CloseDelimited,
        OutFraming::Dechunked => body == ResponseBody::Chunked,
        // Compression: any body but none.
        OutFraming::Recoded => body != ResponseBody::Empty,
    }
}

fuzz_target!(|data: &[u8]| {
    for is_head in [false, true] {
        let head = match parse_response(data, &Limits::default(), is_head) {
            Ok(Status::Complete(head)) => head,
            Ok(Status::Partial) => continue,
            Err(e) => {
                assert_eq!(e.to_string(), e.reason());
                continue;
            }
        };
        assert!(head.head_len() <= data.len());
        assert!((100..=999).contains(&head.status()));
        let _ = (head.reason(), head.version(), head.keep_alive());
        let _ = (head.is_informational(), head.upgrade(), head.as_bytes());
        assert_eq!(head.info().head(data), head);
        assert!(!(head.keep_alive() && head.body() == ResponseBody::CloseDelimited));
        for (name, value) in head.headers() {
            assert!(!name.is_empty());
            assert_eq!(value.trim_ascii(), value);
        }
        for framing in FRAMINGS {
            for client in [Version::Http10, Version::Http11] {
                if !proxy_may_use(framing, head.body(), client) {
                    continue;
                }
                let recoded = framing == OutFraming::Recoded;
                for keep_alive in [false, true] {
                    let mut out = Vec::new();
                    let ctx = ResponseContext {
                        framing,
                        keep_alive,
                        client_version: client,
                        request_id: Some("fuzz-id"),
                        set_cookie: None,
                        content_coding: recoded.then_some("gzip"),
                        vary: recoded.then_some("Accept-Encoding"),
                    };
                    write_response_head(&head, &ctx, &mut out);
                    let limits = Limits {
                        max_head_bytes: out.len() + 1,
                        max_headers: MAX_HEADERS_CAP,
                    };
                    let again = match parse_response(&out, &limits, is_head) {
                        Ok(Status::Complete(again)) => again,
                        other => panic!(
                            "rewritten head does not parse: {other:?}\n{:?}",
                            String::from_utf8_lossy(&out)
                        ),
                    };
                    assert_eq!(again.head_len(), out.len());
                    assert_eq!(again.status(), head.status());
                    if framing == OutFraming::AsIs {
                        assert_eq!(again.body(), head.body());
                    }
                    if recoded {
                        // Chunked to 1.1, until close to 1.0, whatever came.
                        let want = match client {
                            Version::Http11 => ResponseBody::Chunked,
                            Version::Http10 => ResponseBody::CloseDelimited,
                        };
                        assert_eq!(again.body(), want);
                        let coded = again.headers().filter(|(n, _)| {
                            n.eq_ignore_ascii_case("content-encoding")
                        });
                        assert!(coded.count() >= 1);
                    }
                }
            }
        }
    }
});
