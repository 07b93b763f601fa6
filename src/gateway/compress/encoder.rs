//! One streaming compressor over byte chunks, whatever the coding.
//!
//! Why a type of its own: the relay feeds it the body's data as it arrives
//! and writes what comes out, and a later response cache can feed it a
//! stored body the same way (one encoder per coding it stores); it does no
//! I/O, so tests drive it with plain slices.
//!
//! Invariants: every call appends only what the coding produced so far to
//! `out` and keeps nothing else between calls beyond the compressor's own
//! state (bounded by its window, see [`BROTLI_WINDOW_BITS`] and
//! [`ZSTD_WINDOW_LOG`]), so memory does not grow with the body. The libraries
//! write into a `Vec`, which cannot fail; an error would be a library
//! fault, reported as [`EncodeError`], never a panic.

use std::cell::RefCell;
use std::io::Write;

use crate::http::Coding;
use crate::io::SpareList;

/// The brotli window: 2^19 = 512 KiB (nginx's brotli module default).
/// The library's default, 2^22, would hold 4 MiB per response in flight.
pub const BROTLI_WINDOW_BITS: u32 = 19;

/// The zstd window: 2^19 = 512 KiB. Level 3 would use 2 MiB, and higher
/// levels more (browsers decode at most 8 MiB); with this cap a stream at
/// level 3 holds about 1.3 MiB.
pub const ZSTD_WINDOW_LOG: u32 = 19;

/// The brotli writer's output buffer.
const BROTLI_BUFFER: usize = 4096;

/// A compressor failed (a library fault: its output is a `Vec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeError;

impl EncodeError {
    pub fn reason(self) -> &'static str {
        "the compressor failed"
    }
}

impl From<std::io::Error> for EncodeError {
    fn from(_: std::io::Error) -> Self {
        EncodeError
    }
}

/// Spare deflate states kept per worker thread, per level. A state is
/// about 270 KiB that zlib allocates and clears for every stream; reusing
/// it (`Compress::reset`) saves that per response.
const SPARE_DEFLATERS_PER_LEVEL: usize = 8;

thread_local! {
    /// This thread's spare deflate states by level (0-9).
    static SPARE_DEFLATERS: RefCell<[SpareList<flate2::Compress>; 10]> =
        RefCell::new(std::array::from_fn(|_| SpareList::new(SPARE_DEFLATERS_PER_LEVEL)));
}

/// Frees this thread's spare deflate states that a whole sweep interval
/// did not need; returns about how many bytes that gave back.
pub fn sweep_spare_encoders() -> usize {
    SPARE_DEFLATERS.with(|spare| {
        let mut freed = 0;
        for list in spare.borrow_mut().iter_mut() {
            freed += list.sweep(false).count();
            list.shrink();
        }
        freed * DEFLATE_STATE_BYTES
    })
}

/// About what zlib allocates for one deflate stream at the default
/// window and memory level.
const DEFLATE_STATE_BYTES: usize = 270 * 1024;

/// A gzip stream (RFC 1952) over a reused raw deflate state: the header,
/// the deflate data, then the CRC-32 and length of the input.
struct Gzip {
    deflate: Option<flate2::Compress>,
    level: u32,
    crc: flate2::Crc,
    header_written: bool,
}

impl Gzip {
    fn new(level: u32) -> Gzip {
        let level = level.min(9);
        let spare = SPARE_DEFLATERS.with(|spare| spare.borrow_mut()[level as usize].take());
        let deflate =
            spare.unwrap_or_else(|| flate2::Compress::new(flate2::Compression::new(level), false));
        Gzip {
            deflate: Some(deflate),
            level,
            crc: flate2::Crc::new(),
            header_written: false,
        }
    }

    fn header(&mut self, out: &mut Vec<u8>) {
        if !self.header_written {
            self.header_written = true;
            // No name, no time, OS unknown; XFL as zlib sets it.
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
        }
    }

    fn deflate(
        &mut self,
        mut data: &[u8],
        out: &mut Vec<u8>,
        flush: flate2::FlushCompress,
    ) -> Result<(), EncodeError> {
        self.header(out);
        self.crc.update(data);
        let deflate = self.deflate.as_mut().ok_or(EncodeError)?;
        loop {
            out.reserve(data.len() / 2 + 64);
            let before = deflate.total_in();
            let status = deflate
                .compress_vec(data, out, flush)
                .map_err(|_| EncodeError)?;
            let used = (deflate.total_in() - before) as usize;
            data = &data[used..];
            let full = out.len() == out.capacity();
            match status {
                flate2::Status::StreamEnd => return Ok(()),
                // More to do while input is left or the output filled up
                // (a flush or finish may hold more).
                _ if !data.is_empty() || full => continue,
                _ if matches!(flush, flate2::FlushCompress::Finish) => continue,
                _ => return Ok(()),
            }
        }
    }

    fn finish(mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.deflate(&[], out, flate2::FlushCompress::Finish)?;
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
        Ok(())
    }
}

impl Drop for Gzip {
    /// Puts the deflate state back for the next response of this thread.
    fn drop(&mut self) {
        let Some(mut deflate) = self.deflate.take() else {
            return;
        };
        deflate.reset();
        let _ = SPARE_DEFLATERS.try_with(|spare| {
            // A full list hands the state back; it is freed here.
            drop(spare.borrow_mut()[self.level as usize].keep(deflate));
        });
    }
}

enum Inner {
    Gzip(Gzip),
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// A streaming compressor for one body.
pub struct Encoder {
    inner: Inner,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoder")
    }
}

impl Encoder {
    /// A compressor for `coding` at `level`, which the config checked to be
    /// in the coding's range (`Level::range`).
    pub fn new(coding: Coding, level: u32) -> Result<Encoder, EncodeError> {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(Gzip::new(level)),
            Coding::Deflate => Inner::Deflate(flate2::write::ZlibEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            )),
            Coding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                level,
                BROTLI_WINDOW_BITS,
            ))),
            Coding::Zstd => {
                let level = i32::try_from(level).map_err(|_| EncodeError)?;
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), level)?;
                e.window_log(ZSTD_WINDOW_LOG)?;
                Inner::Zstd(e)
            }
        };
        Ok(Encoder { inner })
    }

    /// Compresses `data`, appending what the compressor emits to `out`
    /// (often nothing: it keeps input until a block is worth writing).
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.inner {
            Inner::Gzip(g) => return g.deflate(data, out, flate2::FlushCompress::None),
            Inner::Deflate(e) => e.write_all(data)?,
            Inner::Br(e) => e.write_all(data)?,
            Inner::Zstd(e) => e.write_all(data)?,
        }
        self.take_output(out);
        Ok(())
    }

    /// Emits everything given so far, so the client can decode it now
    /// (a sync flush: the stream goes on; costs a few bytes each time).
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match &mut self.inner {
            Inner::Gzip(g) => return g.deflate(&[], out, flate2::FlushCompress::Sync),
            Inner::Deflate(e) => e.flush()?,
            Inner::Br(e) => e.flush()?,
            Inner::Zstd(e) => e.flush()?,
        }
        self.take_output(out);
        Ok(())
    }

    /// Ends the stream, appending the rest and the coding's trailer.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut rest = match self.inner {
            Inner::Gzip(g) => return g.finish(out),
            Inner::Deflate(e) => e.finish()?,
            Inner::Br(e) => e.into_inner(),
            Inner::Zstd(e) => e.finish()?,
        };
        out.append(&mut rest);
        Ok(())
    }

    fn take_output(&mut self, out: &mut Vec<u8>) {
        let produced = match &mut self.inner {
            Inner::Gzip(_) => return,
            Inner::Deflate(e) => e.get_mut(),
            Inner::Br(e) => e.get_mut(),
            Inner::Zstd(e) => e.get_mut(),
        };
        out.append(produced);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    pub(crate) fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut plain)
                .map(drop),
            Coding::Deflate => flate2::read::ZlibDecoder::new(bytes)
                .read_to_end(&mut plain)
                .map(drop),
            Coding::Br => brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut plain)
                .map(drop),
            Coding::Zstd => zstd::stream::read::Decoder::new(bytes)
                .and_then(|mut d| d.read_to_end(&mut plain))
                .map(drop),
        }
        .expect("the output decodes");
        plain
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..len)
            .map(|i| {
                if i % 7 == 0 {
                    rng.alphanumeric() as u8
                } else {
                    b"{\"id\":1}"[i % 8]
                }
            })
            .collect()
    }

    /// Every coding round-trips, fed whole, in pieces, and with a flush
    /// between pieces; and the output is smaller than the input.
    #[test]
    fn round_trips_every_coding() {
        let input = sample(200_000);
        for coding in Coding::ALL {
            for piece in [input.len(), 4096, 1] {
                for flush in [false, true] {
                    // Byte by byte: a short body is enough (and fast).
                    let input = if piece == 1 {
                        &input[..3000]
                    } else {
                        &input[..]
                    };
                    let mut e = Encoder::new(coding, 5).unwrap();
                    let mut out = Vec::new();
                    for part in input.chunks(piece) {
                        e.write(part, &mut out).unwrap();
                        if flush {
                            e.flush(&mut out).unwrap();
                        }
                    }
                    e.finish(&mut out).unwrap();
                    if piece > 1 {
                        assert!(out.len() < input.len() / 2, "{coding:?} compresses");
                    }
                    assert_eq!(decode(coding, &out), input, "{coding:?} piece {piece}");
                }
            }
        }
    }

    /// A flush makes everything written so far decodable before the end.
    #[test]
    fn flush_emits_what_was_written() {
        for coding in [Coding::Gzip, Coding::Deflate] {
            let mut e = Encoder::new(coding, 5).unwrap();
            let mut out = Vec::new();
            e.write(b"hello, streaming world", &mut out).unwrap();
            e.flush(&mut out).unwrap();
            let mut partial = Vec::new();
            let mut d = flate2::write::ZlibDecoder::new(Vec::new());
            if coding == Coding::Gzip {
                let mut g = flate2::write::GzDecoder::new(Vec::new());
                g.write_all(&out).unwrap();
                g.flush().unwrap();
                partial = g.get_ref().clone();
            } else {
                d.write_all(&out).unwrap();
                d.flush().unwrap();
                partial.extend_from_slice(d.get_ref());
            }
            assert_eq!(partial, b"hello, streaming world", "{coding:?}");
        }
    }

    /// An empty body still gives a valid, empty stream.
    #[test]
    fn empty_body() {
        for coding in Coding::ALL {
            let mut out = Vec::new();
            Encoder::new(coding, 1).unwrap().finish(&mut out).unwrap();
            assert!(!out.is_empty());
            assert_eq!(decode(coding, &out), b"", "{coding:?}");
        }
    }
}

#[cfg(test)]
mod spare_tests {
    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
        out
    }

    fn spare_at(level: usize) -> usize {
        SPARE_DEFLATERS.with(|s| s.borrow()[level].len())
    }

    /// A reused deflate state starts a clean stream: each body decodes to
    /// itself, whether its state was new or the previous response's.
    #[test]
    fn a_reused_deflate_state_makes_a_whole_new_stream() {
        let bodies: [&[u8]; 3] = [b"first body, first body, first body", b"", b"third"];
        for (i, body) in bodies.iter().enumerate() {
            let mut e = Encoder::new(Coding::Gzip, 6).unwrap();
            let mut out = Vec::new();
            e.write(body, &mut out).unwrap();
            e.flush(&mut out).unwrap();
            e.write(body, &mut out).unwrap();
            e.finish(&mut out).unwrap();
            let twice = [*body, *body].concat();
            assert_eq!(gunzip(&out), twice, "body {i}");
            assert_eq!(spare_at(6), 1, "the state went back for the next one");
        }
    }

    /// A dropped encoder (a response cut short) gives its state back too,
    /// and a sweep frees the states a whole interval did not take.
    #[test]
    fn spare_states_are_bounded_and_swept() {
        let many: Vec<_> = (0..SPARE_DEFLATERS_PER_LEVEL + 3)
            .map(|_| Encoder::new(Coding::Gzip, 2).unwrap())
            .collect();
        drop(many);
        assert_eq!(spare_at(2), SPARE_DEFLATERS_PER_LEVEL);
        // The first sweep marks; nothing was taken since, so the second
        // frees them all.
        sweep_spare_encoders();
        assert!(sweep_spare_encoders() >= SPARE_DEFLATERS_PER_LEVEL * DEFLATE_STATE_BYTES);
        assert_eq!(spare_at(2), 0);
    }
}
