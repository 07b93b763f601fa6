//! A chunked body fed in random pieces, as reads from a socket would split
//! it. The first byte bounds the piece length, the second seeds the splits
//! (its top bit also picks tiny limits, so limit errors are reached).
//!
//! Invariants checked on every `decode` call: `consumed` never exceeds the
//! input, `data` lies within `input[..consumed]`, and `consumed == 0` only
//! on empty input or a finished body. Whatever the splits, the outcome
//! (the error or bytes consumed, the data, done-ness) is the one of
//! feeding the whole input at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::http::{ChunkedDecoder, ChunkedError, ChunkedLimits};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    result: Result<(), ChunkedError>,
    data: Vec<u8>,
    done: bool,
    consumed: usize,
}

/// Feeds `body` in pieces of the lengths `next_piece` gives, keeping the
/// unconsumed bytes and appending the next piece to them, like the proxy's
/// receive buffer.
fn feed(body: &[u8], limits: ChunkedLimits, mut next_piece: impl FnMut() -> usize) -> Outcome {
    let mut decoder = ChunkedDecoder::with_limits(limits);
    let mut out = Outcome {
        result: Ok(()),
        data: Vec::new(),
        done: false,
        consumed: 0,
    };
    let mut received = 0;
    while received < body.len() && !decoder.is_done() {
        received = (received + next_piece()).min(body.len());
        // Everything received and not yet consumed.
        let mut input = &body[out.consumed..received];
        loop {
            let step = match decoder.decode(input) {
                Ok(step) => step,
                Err(e) => {
                    // Bytes an erroring call read are not reported, so the
                    // count is only comparable for bodies without error.
                    out.result = Err(e);
                    out.consumed = 0;
                    return out;
                }
            };
            assert!(step.consumed <= input.len());
            let data_at = step.data.as_ptr() as usize - input.as_ptr() as usize;
            assert!(
                data_at + step.data.len() <= step.consumed,
                "data outside consumed"
            );
            out.data.extend_from_slice(step.data);
            out.consumed += step.consumed;
            input = &input[step.consumed..];
            if step.consumed == 0 {
                assert!(input.is_empty() || decoder.is_done(), "stalled");
                break;
            }
        }
    }
    out.done = decoder.is_done();
    out
}

fuzz_target!(|data: &[u8]| {
    let [max_piece, seed, body @ ..] = data else {
        return;
    };
    let limits = if seed & 0x80 != 0 {
        ChunkedLimits {
            max_extension_bytes: usize::from(seed & 0x0f),
            max_trailer_bytes: usize::from(seed >> 4 & 0x07) * 3,
        }
    } else {
        ChunkedLimits::default()
    };
    let whole = feed(body, limits, || body.len());
    let max_piece = u32::from(*max_piece) + 1;
    let mut state = u32::from(*seed) | 0x9e37_7900;
    let split = feed(body, limits, || {
        // xorshift32: a deterministic split pattern from the seed byte.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % max_piece) as usize + 1
    });
    assert_eq!(split, whole);
});
