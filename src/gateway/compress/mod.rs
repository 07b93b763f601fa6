//! Response compression (issue 13): a route's `compress` policy, what it
//! decides about each response, and the streaming pieces that apply it.
//!
//! Why here: the decision is plain data (the route's policy, the request's
//! `Accept-Encoding`, the response head) in, an answer out, tested as a
//! table; the relay only builds a [`CompressedBody`] when told to.
//!
//! The request side ([`Compress::negotiate`]) picks the coding from
//! `Accept-Encoding` ([`crate::http::AcceptEncoding`]). The response side
//! ([`Compress::decide`]) leaves a response alone, in this order, when:
//! 1. it has no body (a HEAD request, 1xx, 204, 304);
//! 2. it is partial: a 206, or any response with `Content-Range`;
//! 3. it has `Content-Encoding` already (even `identity`);
//! 4. `Cache-Control` says `no-transform` (RFC 9110 §7.7);
//! 5. it has a transfer coding other than `chunked` (never seen in
//!    practice; the proxy would have to undo it first);
//! 6. its `Content-Type` is missing or not in the route's `types`;
//! 7. its `Content-Length` is below `min_length` (an unknown length is
//!    compressed).
//!
//! A response that passes them all varies by `Accept-Encoding`, so it gets
//! `Vary: Accept-Encoding` whether or not this client took a coding; it is
//! compressed when the request negotiated one.
//!
//! Invariants: the choice is one of the route's `algorithms`; a level is
//! always within its coding's range (checked at load, [`Level`]).

pub mod body;
pub mod encoder;

pub use body::{CompressError, CompressedBody};
pub use encoder::{sweep_spare_encoders, EncodeError, Encoder};

use crate::http::{eq_ci, list_elements, trim_ows};
use crate::http::{AcceptEncoding, Coding, RequestHead, ResponseBody, ResponseHead};

/// The `Vary` field name a compressed (or compressible) response adds.
pub const VARY_ACCEPT_ENCODING: &str = "Accept-Encoding";

/// A coding's level range and default.
pub struct Level;

impl Level {
    /// The levels a coding accepts: gzip and deflate 1-9, brotli 0-11,
    /// zstd 1-19 (the fast negative levels and 20-22 are left out: the
    /// latter need a large window per response).
    pub fn range(coding: Coding) -> std::ops::RangeInclusive<u32> {
        match coding {
            Coding::Gzip | Coding::Deflate => 1..=9,
            Coding::Br => 0..=11,
            Coding::Zstd => 1..=19,
        }
    }

    /// Defaults: a 64 KiB JSON response costs well under a millisecond of
    /// CPU at these (benches/compress.rs), and each is where its coding's
    /// ratio curve flattens: gzip 5 (zlib's own default is 6), brotli 4 (5
    /// and up switch to a slower matcher), zstd 3 (its default).
    pub fn default_for(coding: Coding) -> u32 {
        match coding {
            Coding::Gzip | Coding::Deflate => 5,
            Coding::Br => 4,
            Coding::Zstd => 3,
        }
    }
}

/// A `types` entry: `type/subtype`, `type/*` or `*/*`, lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaRange {
    Any,
    /// `text/*`: the type, without the slash.
    Type(String),
    /// `application/json`.
    Exact(String),
}

impl MediaRange {
    /// Parses a `types` entry; `None` unless it is `token/token`,
    /// `token/*` or `*/*` (no parameters).
    pub fn parse(text: &str) -> Option<MediaRange> {
        let lower = text.to_ascii_lowercase();
        let (ty, sub) = lower.split_once('/')?;
        let token = |s: &str| !s.is_empty() && s.bytes().all(crate::http::is_tchar);
        match (ty, sub) {
            ("*", "*") => Some(MediaRange::Any),
            ("*", _) => None,
            (ty, "*") if token(ty) => Some(MediaRange::Type(ty.to_owned())),
            (ty, sub) if token(ty) && token(sub) => Some(MediaRange::Exact(lower)),
            _ => None,
        }
    }

    /// Whether a `Content-Type` media type (`type/subtype`, no parameters,
    /// any case) is in this range.
    pub fn matches(&self, media_type: &[u8]) -> bool {
        match self {
            MediaRange::Any => true,
            MediaRange::Exact(t) => eq_ci(media_type, t.as_bytes()),
            MediaRange::Type(t) => {
                media_type.len() > t.len()
                    && media_type[t.len()] == b'/'
                    && eq_ci(&media_type[..t.len()], t.as_bytes())
            }
        }
    }
}

/// A route's `compress` policy, checked at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compress {
    /// The codings offered, in preference order (ties in `Accept-Encoding`
    /// go to the earlier), each with its level.
    pub algorithms: Vec<(Coding, u32)>,
    codings: Vec<Coding>,
    /// Bodies with a known length below this are not compressed.
    pub min_length: u64,
    /// The media types compressed.
    pub types: Vec<MediaRange>,
}

/// Why a response is left as the backend sent it (the rules above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    NoBody,
    Partial,
    Encoded,
    NoTransform,
    TransferCoded,
    Type,
    TooShort,
}

/// What happens to one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Relayed as it is.
    Leave(Leave),
    /// Relayed as it is, with `Vary: Accept-Encoding`: the client took no
    /// coding, another might.
    Vary,
    /// Compressed with the coding at the level.
    Compress(Coding, u32),
}

impl Compress {
    pub const DEFAULT_MIN_LENGTH: u64 = 1024;
    /// Default `algorithms`: what browsers accept, best ratio first.
    pub const DEFAULT_ALGORITHMS: [Coding; 2] = [Coding::Br, Coding::Gzip];
    /// Default `types`: text and the common text-based formats.
    pub const DEFAULT_TYPES: [&'static str; 6] = [
        "text/*",
        "application/json",
        "application/javascript",
        "application/xml",
        "application/wasm",
        "image/svg+xml",
    ];

    pub fn new(algorithms: Vec<(Coding, u32)>, min_length: u64, types: Vec<MediaRange>) -> Self {
        let codings = algorithms.iter().map(|&(c, _)| c).collect();
        Compress {
            algorithms,
            codings,
            min_length,
            types,
        }
    }

    /// The coding this request accepts among the route's, if any.
    pub fn negotiate(&self, head: &RequestHead<'_>) -> Option<Coding> {
        let values = head
            .headers()
            .filter(|(name, _)| name.eq_ignore_ascii_case("accept-encoding"))
            .map(|(_, value)| value);
        AcceptEncoding::parse(values).choose(&self.codings)
    }

    /// What to do with the response `head`, given the coding the request
    /// negotiated ([`Compress::negotiate`]). A response to HEAD has an
    /// `Empty` body (rule 1).
    pub fn decide(&self, head: &ResponseHead<'_>, chosen: Option<Coding>) -> Decision {
        match self.leave(head) {
            Some(why) => Decision::Leave(why),
            None => match chosen {
                Some(coding) => Decision::Compress(coding, self.level(coding)),
                None => Decision::Vary,
            },
        }
    }

    fn level(&self, coding: Coding) -> u32 {
        self.algorithms
            .iter()
            .find(|(c, _)| *c == coding)
            .map_or_else(|| Level::default_for(coding), |&(_, l)| l)
    }

    fn leave(&self, head: &ResponseHead<'_>) -> Option<Leave> {
        // 1.
        if head.body() == ResponseBody::Empty {
            return Some(Leave::NoBody);
        }
        // 2.
        if head.status() == 206 {
            return Some(Leave::Partial);
        }
        let mut content_type = None;
        for (name, value) in head.headers() {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("content-range") {
                return Some(Leave::Partial);
            } else if is("content-encoding") {
                // 3.
                return Some(Leave::Encoded);
            } else if is("cache-control") {
                // 4. Directive names are case-insensitive; a value after
                // `=` would be a different directive.
                if list_elements(value).any(|d| eq_ci(d, b"no-transform")) {
                    return Some(Leave::NoTransform);
                }
            } else if is("transfer-encoding") {
                // 5.
                if list_elements(value).any(|c| !c.is_empty() && !eq_ci(c, b"chunked")) {
                    return Some(Leave::TransferCoded);
                }
            } else if is("content-type") && content_type.is_none() {
                let media = value.split(|&b| b == b';').next().unwrap_or(value);
                content_type = Some(trim_ows(media));
            }
        }
        // 6.
        match content_type {
            Some(t) if self.types.iter().any(|r| r.matches(t)) => {}
            _ => return Some(Leave::Type),
        }
        // 7.
        match head.body() {
            ResponseBody::Length(n) if n < self.min_length => Some(Leave::TooShort),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
