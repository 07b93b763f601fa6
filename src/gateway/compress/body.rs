//! A response body compressed on its way to the client: the backend's
//! framing read by a [`BodyFramer`], its data through an [`Encoder`], the
//! output framed again as chunks (HTTP/1.1) or until close (HTTP/1.0).
//!
//! Why sans-IO: the relay only reads, calls [`CompressedBody::step`] and
//! writes, as for a plain body; the framing and compression are tested
//! here with plain buffers, split at every byte.
//!
//! Invariants: nothing is held back beyond the encoder's own state, so a
//! body of any size goes through in bounded memory; a step never moves a
//! byte past the backend's framed end; [`CompressedBody::is_done`] only
//! once the encoder's trailer (and the last chunk) went to `out`; an empty
//! chunk is never written before the end (it would end the body).

use crate::http::{write_chunk, BodyError, BodyFramer, ResponseBody, Stepped, LAST_CHUNK};

use super::encoder::{EncodeError, Encoder};

/// Compressed output of a body that is not streaming (it has a
/// `Content-Length`) is held until this much is ready, or the body ends:
/// fewer, larger writes to the client (a 64 KiB JSON response goes out in
/// one write with its head instead of four or five).
pub const HOLD_OUTPUT: usize = 16 * 1024;

/// Why a compressed relay stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressError {
    /// The backend's body was framed wrong or cut short.
    Body(BodyError),
    Encode(EncodeError),
}

impl From<BodyError> for CompressError {
    fn from(e: BodyError) -> Self {
        CompressError::Body(e)
    }
}

impl From<EncodeError> for CompressError {
    fn from(e: EncodeError) -> Self {
        CompressError::Encode(e)
    }
}

/// A response body being compressed.
#[derive(Debug)]
pub struct CompressedBody {
    framer: BodyFramer,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Frame the output as chunks (HTTP/1.1 client); else it ends by close.
    chunked: bool,
    /// Flush the encoder after each step that took data: the backend frames
    /// by chunks or by close, so it may be streaming (events, progress) and
    /// the client should see each piece when it arrives. A body with a
    /// `Content-Length` is read as fast as it comes and not flushed, which
    /// compresses better.
    flush_each_step: bool,
    data: Vec<u8>,
    produced: Vec<u8>,
}

impl CompressedBody {
    /// `body`: the backend's framing; `chunked`: how the output goes out.
    pub fn new(body: ResponseBody, encoder: Encoder, chunked: bool) -> CompressedBody {
        CompressedBody {
            framer: BodyFramer::data(body),
            encoder: Some(encoder),
            chunked,
            flush_each_step: matches!(body, ResponseBody::Chunked | ResponseBody::CloseDelimited),
            data: Vec::new(),
            produced: Vec::new(),
        }
    }

    /// Body bytes still to come as input, where its framing says.
    pub fn input_remaining(&self) -> Option<u64> {
        self.framer.remaining()
    }

    /// The whole compressed body went to `out`.
    pub fn is_done(&self) -> bool {
        self.encoder.is_none()
    }

    /// The backend may be streaming (chunked or close-delimited): each
    /// step's output goes out at once, and the head need not wait for it.
    /// Otherwise output is held up to [`HOLD_OUTPUT`] bytes.
    pub fn streams(&self) -> bool {
        self.flush_each_step
    }

    /// Compresses the body bytes at the front of `buf` and appends the
    /// framed output to `out`, leaving bytes after the body's end in `buf`.
    /// At the body's end the stream is finished (trailer, last chunk).
    pub fn step(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Stepped, CompressError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(Stepped::default());
        };
        self.data.clear();
        let stepped = self.framer.step(buf, &mut self.data)?;
        encoder.write(&self.data, &mut self.produced)?;
        let took_data = !self.data.is_empty();
        self.data.clear();
        // The framer moves a whole buffer by swapping it into `data`: give
        // the relay its (pooled, full-size) buffer back.
        if buf.is_empty() && buf.capacity() < self.data.capacity() {
            std::mem::swap(buf, &mut self.data);
        }
        if self.framer.is_done() {
            self.finish(out)?;
        } else {
            if self.flush_each_step && took_data {
                encoder.flush(&mut self.produced)?;
            }
            if self.flush_each_step || self.produced.len() >= HOLD_OUTPUT {
                self.emit(out);
            }
        }
        Ok(stepped)
    }

    /// The backend's input ended (end of stream): a close-delimited body is
    /// then complete and the stream finished; any other is truncated.
    pub fn end_of_input(&mut self, out: &mut Vec<u8>) -> Result<(), CompressError> {
        if self.encoder.is_none() {
            return Ok(());
        }
        self.data.clear();
        self.framer.end_of_input(&mut self.data)?;
        self.finish(out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CompressError> {
        if let Some(encoder) = self.encoder.take() {
            encoder.finish(&mut self.produced)?;
        }
        self.emit(out);
        if self.chunked {
            out.extend_from_slice(LAST_CHUNK);
        }
        Ok(())
    }

    fn emit(&mut self, out: &mut Vec<u8>) {
        if self.chunked {
            write_chunk(&self.produced, out);
        } else {
            out.extend_from_slice(&self.produced);
        }
        self.produced.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::encoder::tests::decode;
    use super::*;
    use crate::http::{ChunkedDecoder, Coding};

    fn body_text(len: usize) -> Vec<u8> {
        let unit = b"[{\"name\":\"ringlb\",\"n\":12345}]";
        (0..len).map(|i| unit[i % unit.len()]).collect()
    }

    /// The backend's bytes for `data` framed as `body`.
    fn framed(body: ResponseBody, data: &[u8]) -> Vec<u8> {
        match body {
            ResponseBody::Chunked => {
                let mut out = Vec::new();
                for piece in data.chunks(777) {
                    write_chunk(piece, &mut out);
                }
                out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
                out
            }
            _ => data.to_vec(),
        }
    }

    /// Strips the output's chunk framing (checking it), or takes it as is.
    fn unframe(chunked: bool, out: &[u8]) -> Vec<u8> {
        if !chunked {
            return out.to_vec();
        }
        let mut decoder = ChunkedDecoder::new();
        let (mut data, mut at) = (Vec::new(), 0);
        while !decoder.is_done() {
            let d = decoder.decode(&out[at..]).expect("valid chunked output");
            assert!(d.consumed > 0, "chunked output ends early");
            data.extend_from_slice(d.data);
            at += d.consumed;
        }
        assert_eq!(at, out.len(), "nothing after the last chunk");
        data
    }

    /// Feeds `input` in pieces of `piece` bytes with `tail` after the body,
    /// as the relay does; returns the output and what was left in the buffer.
    fn run(
        body: ResponseBody,
        coding: Coding,
        chunked: bool,
        input: &[u8],
        piece: usize,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut c = CompressedBody::new(body, Encoder::new(coding, 4).unwrap(), chunked);
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for part in input.chunks(piece.max(1)) {
            buf.extend_from_slice(part);
            c.step(&mut buf, &mut out).unwrap();
            if c.is_done() {
                break;
            }
        }
        if !c.is_done() {
            c.end_of_input(&mut out).unwrap();
        }
        assert!(c.is_done());
        (out, buf)
    }

    /// Every framing in, both framings out, every coding: the output
    /// decodes to the body's data, and bytes after a framed body stay.
    #[test]
    fn round_trips() {
        let data = body_text(20_000);
        for body in [
            ResponseBody::Length(data.len() as u64),
            ResponseBody::Chunked,
            ResponseBody::CloseDelimited,
        ] {
            let mut input = framed(body, &data);
            let tail: &[u8] = if body == ResponseBody::CloseDelimited {
                b""
            } else {
                b"HTTP/1.1 200 OK\r\n"
            };
            input.extend_from_slice(tail);
            for coding in Coding::ALL {
                for chunked in [true, false] {
                    for piece in [input.len(), 1000, 13] {
                        let (out, left) = run(body, coding, chunked, &input, piece);
                        let compressed = unframe(chunked, &out);
                        assert_eq!(
                            decode(coding, &compressed),
                            data,
                            "{body:?} {coding:?} chunked {chunked} piece {piece}"
                        );
                        if piece == input.len() {
                            assert_eq!(left, tail, "{body:?}: bytes after the body stay");
                        }
                    }
                }
            }
        }
    }

    /// A small body split at every byte.
    #[test]
    fn split_at_every_byte() {
        let data = body_text(300);
        let input = framed(ResponseBody::Chunked, &data);
        for at in 0..=input.len() {
            let mut c = CompressedBody::new(
                ResponseBody::Chunked,
                Encoder::new(Coding::Gzip, 5).unwrap(),
                true,
            );
            let (mut buf, mut out) = (input[..at].to_vec(), Vec::new());
            c.step(&mut buf, &mut out).unwrap();
            buf.extend_from_slice(&input[at..]);
            c.step(&mut buf, &mut out).unwrap();
            assert!(c.is_done(), "split at {at}");
            assert_eq!(decode(Coding::Gzip, &unframe(true, &out)), data);
        }
    }

    /// A length body that ends early is truncated, not finished.
    #[test]
    fn truncated_length_body() {
        let mut c = CompressedBody::new(
            ResponseBody::Length(100),
            Encoder::new(Coding::Gzip, 5).unwrap(),
            true,
        );
        let (mut buf, mut out) = (b"short".to_vec(), Vec::new());
        c.step(&mut buf, &mut out).unwrap();
        assert_eq!(
            c.end_of_input(&mut out),
            Err(CompressError::Body(BodyError::Truncated))
        );
        assert!(!out.ends_with(LAST_CHUNK));
    }

    /// A zero-length body still gets a whole (empty) stream.
    #[test]
    fn empty_length_body() {
        let (out, _) = run(ResponseBody::Length(0), Coding::Br, true, b"", 1);
        assert_eq!(decode(Coding::Br, &unframe(true, &out)), b"");
    }

    /// A Content-Length body's output is held (up to `HOLD_OUTPUT`) and
    /// goes out whole at the end; a chunked one's goes out at each step.
    #[test]
    fn output_is_held_unless_streaming() {
        let data = body_text(40_000);
        let mut c = CompressedBody::new(
            ResponseBody::Length(data.len() as u64),
            Encoder::new(Coding::Gzip, 5).unwrap(),
            true,
        );
        assert!(!c.streams());
        let mut out = Vec::new();
        c.step(&mut data[..20_000].to_vec(), &mut out).unwrap();
        assert!(out.is_empty(), "held: {} bytes out", out.len());
        c.step(&mut data[20_000..].to_vec(), &mut out).unwrap();
        assert!(c.is_done());
        assert_eq!(decode(Coding::Gzip, &unframe(true, &out)), data);
        let c = CompressedBody::new(
            ResponseBody::Chunked,
            Encoder::new(Coding::Gzip, 5).unwrap(),
            true,
        );
        assert!(c.streams());
    }

    /// The relay's buffer stays with the relay (it goes back to the
    /// worker's pool), though the framer moves whole buffers by swapping.
    #[test]
    fn relay_buffer_is_kept() {
        for body in [ResponseBody::Length(3000), ResponseBody::CloseDelimited] {
            let mut c = CompressedBody::new(body, Encoder::new(Coding::Gzip, 5).unwrap(), true);
            let mut buf = Vec::with_capacity(16 * 1024);
            buf.extend_from_slice(&body_text(1000));
            let mut out = Vec::new();
            c.step(&mut buf, &mut out).unwrap();
            assert!(buf.is_empty());
            assert!(buf.capacity() >= 16 * 1024, "{body:?}: {}", buf.capacity());
        }
    }

    /// A streaming (chunked) body is flushed at each step, so what arrived
    /// is decodable before the end.
    #[test]
    fn chunked_input_is_flushed_each_step() {
        let mut c = CompressedBody::new(
            ResponseBody::Chunked,
            Encoder::new(Coding::Gzip, 5).unwrap(),
            false,
        );
        let (mut buf, mut out) = (b"5\r\nhello\r\n".to_vec(), Vec::new());
        c.step(&mut buf, &mut out).unwrap();
        let mut d = flate2::write::GzDecoder::new(Vec::new());
        std::io::Write::write_all(&mut d, &out).unwrap();
        std::io::Write::flush(&mut d).unwrap();
        assert_eq!(d.get_ref(), b"hello");
    }
}
