//! Chunked decoding fed whole, split at every byte, byte by byte and at
//! pseudo-random points; chunked encoding round trips.

use crate::http::chunked::{MAX_EXTENSION_BYTES, MAX_TRAILER_BYTES};
use crate::http::{
    write_chunk, write_chunk_header, ChunkedDecoder, ChunkedError, ChunkedLimits, LAST_CHUNK,
};

use ChunkedError as E;

/// What decoding a whole body gives: the data, and how many input bytes the
/// body took (the rest belongs to the next message).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    body_len: usize,
}

/// `Ok(None)`: the input ended before the body did.
type Want = Result<Option<Outcome>, ChunkedError>;

/// Decodes `input` arriving in pieces that end at `cuts`, the way the proxy
/// reads: unconsumed bytes stay in its buffer and more are appended. Also
/// checks that the consumed bytes are exactly the body prefix (passthrough)
/// and that `data` lies within them. `Ok(None)`: input ended first.
fn decode_in_pieces(decoder: &mut ChunkedDecoder, input: &[u8], cuts: &[usize]) -> Want {
    let mut data = Vec::new();
    let mut start = 0; // first unconsumed byte
    let mut received = 0;
    let mut cuts = cuts.iter().copied().chain([input.len()]);
    loop {
        let decoded = decoder.decode(&input[start..received])?;
        let consumed = &input[start..start + decoded.consumed];
        assert!(
            consumed.as_ptr_range().start <= decoded.data.as_ptr_range().start
                && decoded.data.as_ptr_range().end <= consumed.as_ptr_range().end,
            "data must lie within the consumed bytes"
        );
        data.extend_from_slice(decoded.data);
        start += decoded.consumed;
        if decoder.is_done() {
            return Ok(Some(Outcome {
                data,
                body_len: start,
            }));
        }
        if decoded.consumed == 0 {
            assert_eq!(start, received, "consumed 0 with input left and not done");
            match cuts.find(|&c| c > received) {
                Some(next) => received = next,
                None => return Ok(None),
            }
        }
    }
}

/// Decodes `input` whole and split in every way we try; all must agree.
fn decode_all_ways(case: &str, input: &[u8], limits: ChunkedLimits) -> Want {
    let decode =
        |cuts: &[usize]| decode_in_pieces(&mut ChunkedDecoder::with_limits(limits), input, cuts);
    let whole = decode(&[]);
    for cut in 1..input.len() {
        assert_eq!(decode(&[cut]), whole, "case {case:?}: split at {cut}");
    }
    let every_byte: Vec<usize> = (1..input.len()).collect();
    assert_eq!(decode(&every_byte), whole, "case {case:?}: byte by byte");
    for seed in 1..8u32 {
        let cuts = random_cuts(seed, input.len());
        assert_eq!(decode(&cuts), whole, "case {case:?}: cuts {cuts:?}");
    }
    whole
}

/// Deterministic pseudo-random increasing cut points (a small LCG).
fn random_cuts(seed: u32, len: usize) -> Vec<usize> {
    let mut state = seed;
    let mut at = 0;
    let mut cuts = Vec::new();
    loop {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        at += 1 + (state >> 16) as usize % 7;
        if at >= len {
            return cuts;
        }
        cuts.push(at);
    }
}

fn ok(data: &str, body_len: usize) -> Want {
    Ok(Some(Outcome {
        data: data.as_bytes().to_vec(),
        body_len,
    }))
}

/// `body_len` placeholder: the whole input is the body.
const ALL: usize = usize::MAX;

const INCOMPLETE: Want = Ok(None);

fn run(cases: &[(&str, &[u8], Want)]) {
    for (name, input, want) in cases {
        let want = match want {
            Ok(Some(o)) if o.body_len == ALL => {
                ok(std::str::from_utf8(&o.data).unwrap(), input.len())
            }
            Ok(Some(o)) => ok(std::str::from_utf8(&o.data).unwrap(), o.body_len),
            Ok(None) => INCOMPLETE,
            Err(e) => Err(*e),
        };
        assert_eq!(
            decode_all_ways(name, input, ChunkedLimits::default()),
            want,
            "case {name:?}"
        );
    }
}

#[test]
fn valid_bodies() {
    run(&[
        ("simple", b"5\r\nhello\r\n0\r\n\r\n", ok("hello", ALL)),
        (
            "two chunks",
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            ok("abcdefg", ALL),
        ),
        ("empty body", b"0\r\n\r\n", ok("", ALL)),
        ("pipelined after", b"0\r\n\r\nGET / HTTP/1.1\r\n", ok("", 5)),
        (
            "upper hex",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            ok("0123456789", ALL),
        ),
        (
            "mixed hex",
            b"a\r\n0123456789\r\nF\r\n0123456789abcde\r\n0\r\n\r\n",
            ok("01234567890123456789abcde", ALL),
        ),
        (
            "leading zeros",
            b"0005\r\nhello\r\n000\r\n\r\n",
            ok("hello", ALL),
        ),
        (
            "16 digits",
            b"0000000000000001\r\nx\r\n0\r\n\r\n",
            ok("x", ALL),
        ),
        (
            "extension",
            b"5;foo=bar\r\nhello\r\n0\r\n\r\n",
            ok("hello", ALL),
        ),
        (
            "extensions",
            b"5;a;b=c;d=\"e f\"\r\nhello\r\n0;last\r\n\r\n",
            ok("hello", ALL),
        ),
        (
            "quoted escape",
            b"5;a=\"\\\"x\\\\\"\r\nhello\r\n0\r\n\r\n",
            ok("hello", ALL),
        ),
        (
            "extension bws",
            b"5 ; a = b ; c\r\nhello\r\n0\r\n\r\n",
            ok("hello", ALL),
        ),
        (
            "trailers",
            b"0\r\nExpires: never\r\nX-Sum:\tabc \r\n\r\n",
            ok("", ALL),
        ),
        ("trailer empty value", b"0\r\nX:\r\n\r\n", ok("", ALL)),
        (
            "data with crlf inside",
            b"4\r\n\r\n\r\n\r\n0\r\n\r\n",
            ok("\r\n\r\n", ALL),
        ),
    ]);
}

#[test]
fn incomplete_bodies() {
    run(&[
        ("nothing", b"", INCOMPLETE),
        ("size only", b"5", INCOMPLETE),
        ("size line", b"5\r\n", INCOMPLETE),
        ("part of data", b"5\r\nhel", INCOMPLETE),
        ("data without crlf", b"5\r\nhello", INCOMPLETE),
        ("last chunk without end", b"0\r\n", INCOMPLETE),
        ("in trailer", b"0\r\nX: y\r\n", INCOMPLETE),
        ("16 f digits", b"ffffffffffffffff\r\n", INCOMPLETE),
    ]);
}

#[test]
fn invalid_sizes() {
    run(&[
        ("no digits", b"\r\n", Err(E::InvalidChunkSize)),
        ("not hex", b"x\r\n", Err(E::InvalidChunkSize)),
        ("hex then junk", b"1x\r\n", Err(E::InvalidChunkSize)),
        ("minus", b"-1\r\n", Err(E::InvalidChunkSize)),
        ("0x prefix", b"0x5\r\n", Err(E::InvalidChunkSize)),
        ("plus", b"+5\r\n", Err(E::InvalidChunkSize)),
        ("leading space", b" 5\r\n", Err(E::InvalidChunkSize)),
        (
            "trailing space",
            b"5 \r\nhello\r\n0\r\n\r\n",
            Err(E::InvalidChunkSize),
        ),
        ("space between digits", b"1 A\r\n", Err(E::InvalidChunkSize)),
        (
            "overflow 18 f",
            b"ffffffffffffffffff\r\n",
            Err(E::ChunkSizeOverflow),
        ),
        (
            "overflow 17 digits",
            b"10000000000000000\r\n",
            Err(E::ChunkSizeOverflow),
        ),
        (
            "overflow leading zeros",
            b"00000000000000001\r\n",
            Err(E::ChunkSizeOverflow),
        ),
    ]);
}

#[test]
fn invalid_line_endings() {
    run(&[
        (
            "bare lf size",
            b"5\nhello\r\n0\r\n\r\n",
            Err(E::BareLineEnding),
        ),
        ("bare lf no digits", b"\n", Err(E::BareLineEnding)),
        ("bare cr size", b"5\rhello", Err(E::BareLineEnding)),
        ("bare lf extension", b"5;a=b\nhello", Err(E::BareLineEnding)),
        (
            "bare lf after data",
            b"5\r\nhello\n0\r\n\r\n",
            Err(E::BareLineEnding),
        ),
        (
            "junk after data",
            b"5\r\nhelloX\r\n",
            Err(E::MissingCrlfAfterData),
        ),
        (
            "cr junk after data",
            b"5\r\nhello\rX",
            Err(E::MissingCrlfAfterData),
        ),
        (
            "data too long",
            b"3\r\nhello\r\n",
            Err(E::MissingCrlfAfterData),
        ),
        ("bare lf last chunk", b"0\n\r\n", Err(E::BareLineEnding)),
        ("bare lf end", b"0\r\n\n", Err(E::BareLineEnding)),
        ("bare cr end", b"0\r\n\rX", Err(E::BareLineEnding)),
        (
            "bare lf trailer",
            b"0\r\nX: y\n\r\n",
            Err(E::BareLineEnding),
        ),
    ]);
}

#[test]
fn invalid_extensions_and_trailers() {
    run(&[
        ("empty extension", b"5;\r\nhello", Err(E::InvalidExtension)),
        ("double semicolon", b"5;;a\r\n", Err(E::InvalidExtension)),
        ("missing value", b"5;a=\r\n", Err(E::InvalidExtension)),
        (
            "unterminated quote",
            b"5;a=\"b\r\nhello",
            Err(E::InvalidExtension),
        ),
        ("nul in extension", b"5;a\0\r\n", Err(E::InvalidExtension)),
        ("space in name", b"5;a b\r\n", Err(E::InvalidExtension)),
        (
            "value then junk",
            b"5;a=\"b\"c\r\n",
            Err(E::InvalidExtension),
        ),
        (
            "trailer obs-fold",
            b"0\r\nX: a\r\n b\r\n\r\n",
            Err(E::ObsFoldInTrailer),
        ),
        (
            "trailer space before colon",
            b"0\r\nX : a\r\n\r\n",
            Err(E::InvalidTrailer),
        ),
        (
            "trailer no colon",
            b"0\r\nX\r\n\r\n",
            Err(E::InvalidTrailer),
        ),
        (
            "trailer nul",
            b"0\r\nX: a\0\r\n\r\n",
            Err(E::InvalidTrailer),
        ),
    ]);
}

/// Cases from hyper's `test_read_chunk_size`, with our stricter verdicts
/// where they differ (hyper accepts trailing whitespace and empty or
/// free-form extensions; we forward chunk lines verbatim, so we do not).
#[test]
fn hyper_chunk_size_cases() {
    let cases: &[(&str, Result<u64, E>)] = &[
        ("1", Ok(1)),
        ("01", Ok(1)),
        ("0", Ok(0)),
        ("00", Ok(0)),
        ("A", Ok(10)),
        ("a", Ok(10)),
        ("Ff", Ok(255)),
        ("1;extension", Ok(1)),
        ("a;ext-name=value", Ok(10)),
        ("1;extension;extension2", Ok(1)),
        ("1;extension=\"value with spaces\"", Ok(1)),
        ("Ff   ", Err(E::InvalidChunkSize)),
        ("1;;;  ;", Err(E::InvalidExtension)),
        ("a;ext name=value", Err(E::InvalidExtension)),
        ("1 invalid extension", Err(E::InvalidChunkSize)),
        ("1 A", Err(E::InvalidChunkSize)),
        ("1 ;", Err(E::InvalidExtension)),
        ("X", Err(E::InvalidChunkSize)),
        ("1X", Err(E::InvalidChunkSize)),
        ("-", Err(E::InvalidChunkSize)),
        ("-1", Err(E::InvalidChunkSize)),
        ("f0000000000000003", Err(E::ChunkSizeOverflow)),
    ];
    for (line, want) in cases {
        let mut decoder = ChunkedDecoder::new();
        let input = format!("{line}\r\n");
        let got = decoder
            .decode(input.as_bytes())
            .map(|d| (d.consumed, d.data.len()));
        match want {
            Ok(size) => {
                assert_eq!(got, Ok((input.len(), 0)), "line {line:?}");
                // One byte more than the size: only the size is data.
                let data = vec![b'z'; *size as usize + 1];
                let data_len = decoder.decode(&data).map(|d| d.data.len() as u64);
                assert_eq!(data_len, Ok(*size), "line {line:?}");
            }
            Err(e) => assert_eq!(got, Err(*e), "line {line:?}"),
        }
    }
}

/// Extension bytes per chunk line: exactly the limit is fine, one more is
/// an error; both for the default const and a configured limit.
#[test]
fn extension_limit() {
    for max in [MAX_EXTENSION_BYTES, 10] {
        let limits = ChunkedLimits {
            max_extension_bytes: max,
            ..ChunkedLimits::default()
        };
        let line = |ext_len: usize| format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(ext_len - 1));
        let at = line(max);
        let got = decode_in_pieces(&mut ChunkedDecoder::with_limits(limits), at.as_bytes(), &[]);
        assert_eq!(got, ok("x", at.len()), "max {max}");
        let over = line(max + 1);
        let got = decode_in_pieces(
            &mut ChunkedDecoder::with_limits(limits),
            over.as_bytes(),
            &[],
        );
        assert_eq!(got, Err(E::ExtensionTooLong), "max {max}");
    }
    // The budget is per chunk line, not per body.
    let two = format!("1;{e}\r\nx\r\n1;{e}\r\ny\r\n0\r\n\r\n", e = "e".repeat(9));
    let limits = ChunkedLimits {
        max_extension_bytes: 10,
        ..ChunkedLimits::default()
    };
    assert_eq!(
        decode_all_ways("two lines", two.as_bytes(), limits),
        ok("xy", two.len())
    );
}

/// Trailer field bytes (CRLFs included): exactly the limit, and one more.
#[test]
fn trailer_limit() {
    for max in [MAX_TRAILER_BYTES, 20] {
        let limits = ChunkedLimits {
            max_trailer_bytes: max,
            ..ChunkedLimits::default()
        };
        // "X: " + value + "\r\n" is max bytes.
        let body = |len: usize| format!("0\r\nX: {}\r\n\r\n", "v".repeat(len - 5));
        let at = body(max);
        let got = decode_in_pieces(&mut ChunkedDecoder::with_limits(limits), at.as_bytes(), &[]);
        assert_eq!(got, ok("", at.len()), "max {max}");
        let over = body(max + 1);
        let got = decode_in_pieces(
            &mut ChunkedDecoder::with_limits(limits),
            over.as_bytes(),
            &[],
        );
        assert_eq!(got, Err(E::TrailersTooLarge), "max {max}");
    }
    let limits = ChunkedLimits {
        max_trailer_bytes: 12,
        ..ChunkedLimits::default()
    };
    let two = b"0\r\nA: b\r\nC: d\r\n\r\n"; // 2 lines of 6 bytes
    assert_eq!(
        decode_all_ways("two trailers", two, limits),
        ok("", two.len())
    );
}

#[test]
fn done_consumes_nothing_more() {
    let mut decoder = ChunkedDecoder::new();
    let d = decoder.decode(b"0\r\n\r\nrest").unwrap();
    assert_eq!((d.consumed, decoder.is_done()), (5, true));
    assert_eq!(decoder.decode(b"rest").unwrap().consumed, 0);
}

#[test]
fn chunk_header_encoding() {
    let cases: &[(usize, &[u8])] = &[
        (1, b"1\r\n"),
        (15, b"f\r\n"),
        (255, b"ff\r\n"),
        (4096, b"1000\r\n"),
        (usize::MAX, b"ffffffffffffffff\r\n"),
    ];
    for (len, want) in cases {
        let mut out = b"x".to_vec();
        write_chunk_header(*len, &mut out);
        assert_eq!(&out[1..], *want, "len {len}");
    }
}

/// Encoding any data in chunks of any sizes and decoding it gives it back.
#[test]
fn encode_decode_round_trip() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    for seed in 1..6u32 {
        let mut encoded = Vec::new();
        let mut start = 0;
        for cut in random_cuts(seed, data.len())
            .into_iter()
            .chain([data.len()])
        {
            write_chunk(&data[start..cut], &mut encoded);
            start = cut;
        }
        write_chunk(b"", &mut encoded);
        encoded.extend_from_slice(LAST_CHUNK);
        let got = decode_in_pieces(
            &mut ChunkedDecoder::new(),
            &encoded,
            &random_cuts(seed + 10, encoded.len()),
        );
        assert_eq!(
            got,
            Ok(Some(Outcome {
                data: data.clone(),
                body_len: encoded.len()
            }))
        );
    }
}
