//! One body framer for both directions: finds where a message body ends in
//! the bytes as they arrive, and moves them on re-framed for the next hop.
//!
//! Why one: the request and the response relays walk the same states
//! (a length counting down, a chunked decoder, until close, done); the I/O
//! loops in the proxy only read, call [`BodyFramer::step`] and write.
//!
//! Invariants: a step never moves a byte past the framed end, so what
//! follows a body (a pipelined request, stray bytes from a backend) stays
//! at the front of the input; chunked bodies are validated by the decoder
//! and relayed verbatim unless de-chunked; `ChunkEncoded` applies to
//! close-delimited bodies only, `Dechunked` to chunked ones only.

use super::chunked::{write_chunk_header, ChunkedDecoder, ChunkedError, LAST_CHUNK};
use super::{BodyKind, OutFraming, ResponseBody};

/// Where a body stands.
#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A body being relayed: its framing as received and how it goes out.
#[derive(Debug)]
pub struct BodyFramer {
    state: State,
    out: OutFraming,
}

/// What one [`BodyFramer::step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stepped {
    /// Body data bytes seen (chunk data, not chunk lines) in a chunked body;
    /// the moved bytes for the other framings.
    pub data: u64,
}

/// Why a body ended wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The chunked framing is broken.
    Chunked(ChunkedError),
    /// End of stream before the framed end.
    Truncated,
}

impl BodyError {
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::Chunked(e) => e.reason(),
            BodyError::Truncated => "body ended before its framing said",
        }
    }
}

impl BodyFramer {
    /// A request body, forwarded as received (chunked bodies validated).
    pub fn request(kind: BodyKind) -> BodyFramer {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::Chunked(ChunkedDecoder::new()),
        };
        BodyFramer {
            state,
            out: OutFraming::AsIs,
        }
    }

    /// A response body framed as `body`, relayed as `out`.
    pub fn response(body: ResponseBody, out: OutFraming) -> BodyFramer {
        let state = match body {
            ResponseBody::Empty | ResponseBody::Length(0) => State::Done,
            ResponseBody::Length(n) => State::Length(n),
            ResponseBody::Chunked => State::Chunked(ChunkedDecoder::new()),
            ResponseBody::CloseDelimited => State::UntilClose,
        };
        debug_assert!(match out {
            OutFraming::AsIs => true,
            OutFraming::ChunkEncoded => matches!(state, State::UntilClose),
            OutFraming::Dechunked => matches!(state, State::Chunked(_)),
            // A re-coded body goes through `BodyFramer::data` and its coder.
            OutFraming::Recoded => false,
        });
        BodyFramer { state, out }
    }

    /// A response body framed as `body`, yielding only its data (no chunk
    /// lines, no trailers): the input of a transformation such as
    /// compression, which frames its own output.
    pub fn data(body: ResponseBody) -> BodyFramer {
        let mut framer = BodyFramer::response(body, OutFraming::AsIs);
        if matches!(framer.state, State::Chunked(_)) {
            framer.out = OutFraming::Dechunked;
        }
        framer
    }

    /// Body bytes still to come, where the framing says (a length); `None`
    /// when it does not (chunked, until close).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            State::Chunked(_) | State::UntilClose => None,
        }
    }

    /// The framed end was reached.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Moves the body bytes at the front of `buf` to the end of `out`,
    /// re-framed, leaving bytes after the body's end in `buf`. A step that
    /// moves nothing needs more input (a partial chunk line).
    pub fn step(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Stepped, BodyError> {
        match &mut self.state {
            State::Done => Ok(Stepped::default()),
            State::Length(remaining) => {
                let take = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= take as u64;
                move_front(buf, take, out);
                if *remaining == 0 {
                    self.state = State::Done;
                }
                Ok(Stepped { data: take as u64 })
            }
            State::Chunked(decoder) => {
                let dechunk = self.out == OutFraming::Dechunked;
                let (mut consumed, mut data) = (0, 0u64);
                while !decoder.is_done() {
                    let decoded = decoder
                        .decode(&buf[consumed..])
                        .map_err(BodyError::Chunked)?;
                    if decoded.consumed == 0 {
                        break;
                    }
                    if dechunk {
                        out.extend_from_slice(decoded.data);
                    }
                    data += decoded.data.len() as u64;
                    consumed += decoded.consumed;
                }
                if dechunk {
                    buf.drain(..consumed);
                } else {
                    move_front(buf, consumed, out);
                }
                if decoder.is_done() {
                    self.state = State::Done;
                }
                Ok(Stepped { data })
            }
            State::UntilClose => {
                let n = buf.len();
                if n > 0 && self.out == OutFraming::ChunkEncoded {
                    write_chunk_header(n, out);
                    out.extend_from_slice(buf);
                    out.extend_from_slice(b"\r\n");
                    buf.clear();
                } else {
                    move_front(buf, n, out);
                }
                Ok(Stepped { data: n as u64 })
            }
        }
    }

    /// The input ended (end of stream). A close-delimited body is then
    /// complete (its last chunk goes to `out` when chunk-encoding); any
    /// other unfinished body is truncated.
    pub fn end_of_input(&mut self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                if self.out == OutFraming::ChunkEncoded {
                    out.extend_from_slice(LAST_CHUNK);
                }
                self.state = State::Done;
                Ok(())
            }
            State::Length(_) | State::Chunked(_) => Err(BodyError::Truncated),
        }
    }
}

/// Moves `buf[..n]` to the end of `out`. When that is all of `buf` and
/// `out` is empty the two are swapped instead of copied.
fn move_front(buf: &mut Vec<u8>, n: usize, out: &mut Vec<u8>) {
    if n == 0 {
        return;
    }
    if n == buf.len() && out.is_empty() {
        std::mem::swap(buf, out);
        buf.clear();
    } else {
        out.extend_from_slice(&buf[..n]);
        buf.drain(..n);
    }
}
