//! The body framer: each case run whole and fed one byte at a time.

use crate::http::{
    BodyError, BodyFramer, BodyKind, ChunkedDecoder, ChunkedError, OutFraming, ResponseBody,
};

/// Runs `framer` over `input`, all at once or in `step`-byte reads, then
/// (with `eof`) ends the input. Returns what went out, what stayed behind,
/// and the data bytes counted.
fn run(
    mut framer: BodyFramer,
    input: &[u8],
    step: usize,
    eof: bool,
) -> Result<(Vec<u8>, Vec<u8>, u64, bool), BodyError> {
    let (mut buf, mut out, mut data, mut fed) = (Vec::new(), Vec::new(), 0, 0);
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        data += framer.step(&mut buf, &mut out)?.data;
        if framer.is_done() {
            break;
        }
    }
    // What follows the framed end stays unread by the framer.
    let mut rest = buf;
    rest.extend_from_slice(&input[fed..]);
    if eof {
        framer.end_of_input(&mut out)?;
    }
    Ok((out, rest, data, framer.is_done()))
}

#[test]
fn table() {
    type Case = (
        &'static str,
        fn() -> BodyFramer,
        &'static [u8],
        bool,
        Result<(&'static [u8], &'static [u8], u64, bool), BodyError>,
    );
    let cases: &[Case] = &[
        (
            "empty request",
            || BodyFramer::request(BodyKind::Empty),
            b"GET / HTTP/1.1\r\n",
            false,
            Ok((b"", b"GET / HTTP/1.1\r\n", 0, true)),
        ),
        (
            "length leaves the next request",
            || BodyFramer::request(BodyKind::Length(5)),
            b"helloGET",
            false,
            Ok((b"hello", b"GET", 5, true)),
        ),
        (
            "length short at end of stream",
            || BodyFramer::request(BodyKind::Length(5)),
            b"hel",
            true,
            Err(BodyError::Truncated),
        ),
        (
            "chunked passed through, data counted",
            || BodyFramer::request(BodyKind::Chunked),
            b"5\r\nhello\r\n0\r\n\r\nNEXT",
            false,
            Ok((b"5\r\nhello\r\n0\r\n\r\n", b"NEXT", 5, true)),
        ),
        (
            "chunked, bad size line",
            || BodyFramer::request(BodyKind::Chunked),
            b"zz\r\n",
            false,
            Err(BodyError::Chunked(ChunkedError::InvalidChunkSize)),
        ),
        (
            "response chunked, de-chunked",
            || BodyFramer::response(ResponseBody::Chunked, OutFraming::Dechunked),
            b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n",
            false,
            Ok((b"hello!", b"", 6, true)),
        ),
        (
            "response until close, as is",
            || BodyFramer::response(ResponseBody::CloseDelimited, OutFraming::AsIs),
            b"all of it",
            true,
            Ok((b"all of it", b"", 9, true)),
        ),
        (
            "response until close, not yet closed",
            || BodyFramer::response(ResponseBody::CloseDelimited, OutFraming::AsIs),
            b"so far",
            false,
            Ok((b"so far", b"", 6, false)),
        ),
        (
            "response length, stray bytes after",
            || BodyFramer::response(ResponseBody::Length(2), OutFraming::AsIs),
            b"okXX",
            false,
            Ok((b"ok", b"XX", 2, true)),
        ),
    ];
    for (name, framer, input, eof, want) in cases {
        let want = want.map(|(o, r, d, done)| (o.to_vec(), r.to_vec(), d, done));
        assert_eq!(run(framer(), input, input.len(), *eof), want, "{name}");
        assert_eq!(run(framer(), input, 1, *eof), want, "{name}, byte by byte");
    }
}

#[test]
fn chunk_encoding_a_close_delimited_body() {
    for step in [1, 3, 64] {
        let framer = BodyFramer::response(ResponseBody::CloseDelimited, OutFraming::ChunkEncoded);
        let (out, rest, _, done) = run(framer, b"hello, world", step, true).unwrap();
        assert!(rest.is_empty() && done);
        assert!(out.ends_with(b"0\r\n\r\n"), "step {step}");
        // The chunks decode back to the body.
        let (mut decoder, mut body, mut at) = (ChunkedDecoder::new(), Vec::new(), 0);
        while !decoder.is_done() {
            let d = decoder.decode(&out[at..]).unwrap();
            body.extend_from_slice(d.data);
            at += d.consumed;
        }
        assert_eq!((body.as_slice(), at), (&b"hello, world"[..], out.len()));
    }
}
