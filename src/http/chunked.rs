//! Streaming chunked transfer coding (RFC 9112 §7.1): a decoder that never
//! buffers, and the few bytes an encoder needs.
//!
//! Why: the proxy relays chunked bodies either verbatim (to an HTTP/1.1
//! peer, forwarding the consumed bytes) or as bare data (to an HTTP/1.0
//! peer, forwarding only `Decoded::data`). Both need the exact point where
//! the body ends and a strict reading of every framing byte, so that we
//! never pass on framing a later parser would read differently.
//!
//! Invariants:
//! - The decoder is a flat `State` enum; each framing byte is handled by one
//!   small `read_*` fn returning the next state. It keeps only counters,
//!   never input bytes, so any split of the input gives the same result.
//! - `decode` returns `consumed == 0` only when the input is empty or the
//!   body is done; `data` is always a sub-slice of `input[..consumed]`.
//! - Limits are named consts, overridable via `ChunkedLimits`; exceeding one
//!   is an error, never a silent truncation.
//! - After an error the decoder must not be used again.

use std::fmt;

use super::headers::is_tchar;

/// The last-chunk plus the empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Most bytes of chunk extensions on one chunk line (everything between the
/// size digits and the CRLF). Extensions are forwarded, not interpreted.
pub const MAX_EXTENSION_BYTES: usize = 4096;

/// Most bytes of trailer field lines (CRLFs included, the final empty line
/// not) after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Hex digits in a chunk size: 16 is all of a u64, more is an overflow
/// (leading zeros included; nobody needs them).
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// Per-decoder limits; `Default` uses the consts above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedLimits {
    pub max_extension_bytes: usize,
    pub max_trailer_bytes: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        ChunkedLimits {
            max_extension_bytes: MAX_EXTENSION_BYTES,
            max_trailer_bytes: MAX_TRAILER_BYTES,
        }
    }
}

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkedError {
    /// No hex digit, or a byte that is not hex, where the size belongs.
    InvalidChunkSize,
    /// More than `MAX_CHUNK_SIZE_DIGITS` hex digits.
    ChunkSizeOverflow,
    InvalidExtension,
    ExtensionTooLong,
    /// Chunk data not followed by exactly CRLF.
    MissingCrlfAfterData,
    /// LF without CR, or CR without LF, on a chunk or trailer line.
    BareLineEnding,
    InvalidTrailer,
    ObsFoldInTrailer,
    TrailersTooLarge,
}

impl ChunkedError {
    pub fn reason(&self) -> &'static str {
        use ChunkedError::*;
        match self {
            InvalidChunkSize => "invalid chunk size",
            ChunkSizeOverflow => "chunk size overflow",
            InvalidExtension => "invalid chunk extension",
            ExtensionTooLong => "chunk extension too long",
            MissingCrlfAfterData => "missing CRLF after chunk data",
            BareLineEnding => "chunk line ending is not CRLF",
            InvalidTrailer => "invalid trailer field",
            ObsFoldInTrailer => "obsolete line folding in trailer",
            TrailersTooLarge => "trailers too large",
        }
    }
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ChunkedError {}

/// What one `decode` call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Input bytes consumed: framing and `data`. Forward exactly these to
    /// relay the body verbatim.
    pub consumed: usize,
    /// Body data found in this call (possibly empty), a sub-slice of
    /// `input[..consumed]`.
    pub data: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size.
    Size,
    /// Whitespace after the size: only allowed before an extension.
    SizeBws,
    /// After `;`, before an extension name.
    ExtBws,
    ExtName,
    /// Whitespace after an extension name.
    ExtNameBws,
    /// After `=`, before the value.
    ExtValueBws,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// After a value: whitespace, `;` or CR.
    ExtAfterValue,
    /// CR of the chunk line seen; LF must follow.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// CR of the final empty line seen; LF must follow.
    EndLf,
    Done,
}

impl State {
    fn is_extension(self) -> bool {
        use State::*;
        matches!(
            self,
            SizeBws
                | ExtBws
                | ExtName
                | ExtNameBws
                | ExtValueBws
                | ExtToken
                | ExtQuoted
                | ExtQuotedEscape
                | ExtAfterValue
        )
    }

    fn is_trailer_field(self) -> bool {
        matches!(
            self,
            State::TrailerName | State::TrailerValue | State::TrailerLf
        )
    }
}

/// Streaming decoder of one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// While reading the size line: the size so far. In `Data`: bytes left.
    size: u64,
    size_digits: u8,
    extension_bytes: usize,
    trailer_bytes: usize,
    limits: ChunkedLimits,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::with_limits(ChunkedLimits::default())
    }

    pub fn with_limits(limits: ChunkedLimits) -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            size_digits: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            limits,
        }
    }

    /// True once the last chunk, the trailers and the final CRLF are read.
    /// Bytes after that belong to the next message.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing bytes and at most one contiguous piece of data.
    /// Call again with `input[consumed..]` (plus newly read bytes).
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, ChunkedError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let len = self.size.min((input.len() - at) as u64) as usize;
                    self.size -= len as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: at + len,
                        data: &input[at..at + len],
                    });
                }
                _ => {
                    self.state = self.step(input[at])?;
                    at += 1;
                }
            }
        }
        Ok(Decoded {
            consumed: at,
            data: &input[at..at],
        })
    }

    /// One framing byte: dispatch to the reader of the current state, then
    /// account the byte against the limit of the section it belongs to.
    fn step(&mut self, b: u8) -> Result<State, ChunkedError> {
        use State::*;
        let next = match self.state {
            Size => self.read_size(b),
            SizeBws => read_size_bws(b),
            ExtBws => read_ext_bws(b),
            ExtName => read_ext_name(b),
            ExtNameBws => read_ext_name_bws(b),
            ExtValueBws => read_ext_value_bws(b),
            ExtToken => read_ext_token(b),
            ExtQuoted => read_ext_quoted(b),
            ExtQuotedEscape => read_ext_quoted_escape(b),
            ExtAfterValue => read_ext_after_value(b),
            SizeLf => self.read_size_lf(b),
            DataCr => read_data_cr(b),
            DataLf => read_data_lf(b),
            TrailerStart => read_trailer_start(b),
            TrailerName => read_trailer_name(b),
            TrailerValue => read_trailer_value(b),
            TrailerLf => read_trailer_lf(b),
            EndLf => read_end_lf(b),
            Data | Done => unreachable!("decode handles data and done"),
        }?;
        if next.is_extension() {
            self.extension_bytes += 1;
            if self.extension_bytes > self.limits.max_extension_bytes {
                return Err(ChunkedError::ExtensionTooLong);
            }
        }
        if next.is_trailer_field() || (self.state == TrailerLf && next == TrailerStart) {
            self.trailer_bytes += 1;
            if self.trailer_bytes > self.limits.max_trailer_bytes {
                return Err(ChunkedError::TrailersTooLarge);
            }
        }
        Ok(next)
    }

    fn read_size(&mut self, b: u8) -> Result<State, ChunkedError> {
        let has_digits = self.size_digits > 0;
        match b {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                self.size_digits += 1;
                if self.size_digits > MAX_CHUNK_SIZE_DIGITS {
                    return Err(ChunkedError::ChunkSizeOverflow);
                }
                // Cannot overflow: at most 16 digits of 4 bits.
                self.size = (self.size << 4) | u64::from(hex_value(b));
                Ok(State::Size)
            }
            b';' if has_digits => Ok(State::ExtBws),
            b' ' | b'\t' if has_digits => Ok(State::SizeBws),
            b'\r' if has_digits => Ok(State::SizeLf),
            b'\n' => Err(ChunkedError::BareLineEnding),
            _ => Err(ChunkedError::InvalidChunkSize),
        }
    }

    fn read_size_lf(&mut self, b: u8) -> Result<State, ChunkedError> {
        if b != b'\n' {
            return Err(ChunkedError::BareLineEnding);
        }
        self.size_digits = 0;
        self.extension_bytes = 0;
        Ok(if self.size == 0 {
            State::TrailerStart
        } else {
            State::Data
        })
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Error for an unexpected byte inside a chunk extension.
fn ext_error(b: u8) -> ChunkedError {
    if b == b'\n' {
        ChunkedError::BareLineEnding
    } else {
        ChunkedError::InvalidExtension
    }
}

fn read_size_bws(b: u8) -> Result<State, ChunkedError> {
    match b {
        b' ' | b'\t' => Ok(State::SizeBws),
        b';' => Ok(State::ExtBws),
        b'\n' => Err(ChunkedError::BareLineEnding),
        // "5 \r\n": whitespace is only allowed before an extension.
        _ => Err(ChunkedError::InvalidChunkSize),
    }
}

fn read_ext_bws(b: u8) -> Result<State, ChunkedError> {
    match b {
        b' ' | b'\t' => Ok(State::ExtBws),
        _ if is_tchar(b) => Ok(State::ExtName),
        _ => Err(ext_error(b)),
    }
}

fn read_ext_name(b: u8) -> Result<State, ChunkedError> {
    match b {
        _ if is_tchar(b) => Ok(State::ExtName),
        b' ' | b'\t' => Ok(State::ExtNameBws),
        b'=' => Ok(State::ExtValueBws),
        b';' => Ok(State::ExtBws),
        b'\r' => Ok(State::SizeLf),
        _ => Err(ext_error(b)),
    }
}

fn read_ext_name_bws(b: u8) -> Result<State, ChunkedError> {
    match b {
        b' ' | b'\t' => Ok(State::ExtNameBws),
        b'=' => Ok(State::ExtValueBws),
        b';' => Ok(State::ExtBws),
        b'\r' => Ok(State::SizeLf),
        _ => Err(ext_error(b)),
    }
}

fn read_ext_value_bws(b: u8) -> Result<State, ChunkedError> {
    match b {
        b' ' | b'\t' => Ok(State::ExtValueBws),
        b'"' => Ok(State::ExtQuoted),
        _ if is_tchar(b) => Ok(State::ExtToken),
        _ => Err(ext_error(b)),
    }
}

fn read_ext_token(b: u8) -> Result<State, ChunkedError> {
    match b {
        _ if is_tchar(b) => Ok(State::ExtToken),
        b' ' | b'\t' => Ok(State::ExtAfterValue),
        b';' => Ok(State::ExtBws),
        b'\r' => Ok(State::SizeLf),
        _ => Err(ext_error(b)),
    }
}

fn read_ext_quoted(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'"' => Ok(State::ExtAfterValue),
        b'\\' => Ok(State::ExtQuotedEscape),
        // qdtext: HTAB, SP, VCHAR except `"` and `\`, obs-text.
        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Ok(State::ExtQuoted),
        _ => Err(ext_error(b)),
    }
}

fn read_ext_quoted_escape(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Ok(State::ExtQuoted),
        _ => Err(ext_error(b)),
    }
}

fn read_ext_after_value(b: u8) -> Result<State, ChunkedError> {
    match b {
        b' ' | b'\t' => Ok(State::ExtAfterValue),
        b';' => Ok(State::ExtBws),
        b'\r' => Ok(State::SizeLf),
        _ => Err(ext_error(b)),
    }
}

fn read_data_cr(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'\r' => Ok(State::DataLf),
        b'\n' => Err(ChunkedError::BareLineEnding),
        _ => Err(ChunkedError::MissingCrlfAfterData),
    }
}

fn read_data_lf(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'\n' => Ok(State::Size),
        _ => Err(ChunkedError::MissingCrlfAfterData),
    }
}

fn read_trailer_start(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'\r' => Ok(State::EndLf),
        _ if is_tchar(b) => Ok(State::TrailerName),
        b' ' | b'\t' => Err(ChunkedError::ObsFoldInTrailer),
        b'\n' => Err(ChunkedError::BareLineEnding),
        _ => Err(ChunkedError::InvalidTrailer),
    }
}

fn read_trailer_name(b: u8) -> Result<State, ChunkedError> {
    match b {
        _ if is_tchar(b) => Ok(State::TrailerName),
        b':' => Ok(State::TrailerValue),
        _ => Err(ChunkedError::InvalidTrailer),
    }
}

fn read_trailer_value(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'\r' => Ok(State::TrailerLf),
        b'\n' => Err(ChunkedError::BareLineEnding),
        // field-vchar, SP, HTAB, obs-text.
        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Ok(State::TrailerValue),
        _ => Err(ChunkedError::InvalidTrailer),
    }
}

fn read_trailer_lf(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'\n' => Ok(State::TrailerStart),
        _ => Err(ChunkedError::BareLineEnding),
    }
}

fn read_end_lf(b: u8) -> Result<State, ChunkedError> {
    match b {
        b'\n' => Ok(State::Done),
        _ => Err(ChunkedError::BareLineEnding),
    }
}

/// Appends a chunk-size line for `len` data bytes: lowercase hex and CRLF.
/// `len` must not be 0 (that is the last chunk: use [`LAST_CHUNK`]).
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a zero-size chunk is the last chunk");
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len as u64;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends one whole chunk (size line, `data`, CRLF). Empty `data` writes
/// nothing, so it can never end the body by accident.
pub fn write_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    write_chunk_header(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
