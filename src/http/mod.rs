//! Sans-IO HTTP/1.1 codec: bytes in, `Complete`/`Partial` or a typed error out.
//!
//! Why: the proxy's correctness against request smuggling lives here, so it is
//! plain synchronous code over byte slices that tests and fuzzers drive
//! without sockets (shape of `httparse`: the caller owns the buffer, parsed
//! heads borrow it, `Status::Partial` means "read more", never an error).
//!
//! Invariants:
//! - A parsed head (`RequestHead`, `ResponseHead`) has passed every framing
//!   rule of `framing` (RFC 9112 §6.3); its `body()` is the only framing the
//!   proxy may use, and it is never ambiguous (CL+TE, differing CLs, TE on
//!   HTTP/1.0 and obfuscated codings are errors, not guesses).
//! - Every line of a parsed head ends in CRLF, no field is folded and no
//!   field name has whitespace before its colon; `headers()` relies on this.
//! - Feeding any prefix of a message gives `Partial` or the same answer as
//!   the whole message: parsing looks at most `Limits::max_head_bytes` bytes.
//! - Nothing here allocates while parsing; writers append to a caller `Vec`.
//!
//! Layout (the cut):
//! - [`request`] / [`response`]: head parsers, one per role.
//! - [`framing`]: the single RFC 9112 §6.3 body-length decision for both.
//! - [`chunked`]: streaming chunked decoder and encoder helpers.
//! - [`body`]: the one body framer both relays drive.
//! - [`plan`]: a final response's framing and keep-alive decision.
//! - [`accept_encoding`]: the `Accept-Encoding` negotiation (RFC 9110
//!   §12.5.3), for response compression.
//! - [`forward`]: head rewrite for forwarding (hop-by-hop, `X-Forwarded-*`,
//!   the request id and cookie the proxy adds).
//! - [`reply`]: every locally generated response, one enum.
//! - `headers`: shared field helpers (token lists, line-ending checks).
//!
//! Deviation from the hyper shape: request and response differ by a
//! `framing::Message` enum passed to one framing function rather than by a
//! `Role` trait with two zero-sized impls; httparse's two parser types made a
//! trait add more lifetimes than it removed branches.
//!
//! Choices the proxy should know about:
//! - `Status` is `httparse::Status` re-exported.
//! - CONNECT requests are rejected (`RequestError::ConnectUnsupported`,
//!   501): a reverse proxy does not open tunnels on request.
//! - `http://host?query` (absolute-form with an empty path and a query) is
//!   rejected as `InvalidTarget`: its origin-form needs a `/` that is not in
//!   the buffer to borrow.
//! - `Connection` can never strip `Host`, `Content-Length`,
//!   `Transfer-Encoding` or `X-Forwarded-*`; `Trailer` is treated as
//!   hop-by-hop on both sides (Go's `httputil` list).
//! - A chunk line with whitespace after the size but no extension (`5 \r\n`)
//!   and empty extensions (`5;\r\n`) are errors (hyper accepts them): we
//!   forward chunk lines verbatim, so we only pass on unambiguous ones.

pub mod accept_encoding;
pub mod body;
pub mod chunked;
pub mod forward;
mod framing;
mod headers;
pub mod plan;
pub mod reply;
pub mod request;
pub mod response;
pub mod stored;

pub use accept_encoding::{AcceptEncoding, Coding};
pub use body::{BodyError, BodyFramer, Stepped};
pub use chunked::{
    write_chunk, write_chunk_header, ChunkedDecoder, ChunkedError, ChunkedLimits, Decoded,
    LAST_CHUNK,
};
pub use forward::{
    put_after_request_line, put_backend_host, write_request_head, write_response_head,
    ForwardContext, OutFraming, ResponseContext,
};
pub use headers::Headers;
pub(crate) use headers::{eq_ci, is_tchar, list_elements, trim_ows};
pub use httparse::Status;
pub use plan::{plan_response, ClientSide, PlanError, ResponsePlan};
pub use reply::{LocalReply, ReplyParts, CONTINUE_100};
pub use request::{parse_request, RequestError, RequestHead};
pub use response::{parse_response, ResponseError, ResponseHead, ResponseInfo};

/// Upper bound on header slots kept on the stack while parsing one head.
/// `Limits::max_headers` above this is clamped to it.
pub const MAX_HEADERS_CAP: usize = 256;

/// Size limits applied while parsing a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted head, request/status line through the final CRLFCRLF
    /// (leading empty lines included). One byte more is `HeadTooLarge` (431).
    pub max_head_bytes: usize,
    /// Most header fields accepted; one more is `TooManyHeaders` (431).
    /// Clamped to [`MAX_HEADERS_CAP`].
    pub max_headers: usize,
}

impl Limits {
    /// Default for `max_head_bytes`: 16 KiB, like common edge proxies.
    pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
    /// Default for `max_headers`.
    pub const DEFAULT_MAX_HEADERS: usize = 100;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: Self::DEFAULT_MAX_HEAD_BYTES,
            max_headers: Self::DEFAULT_MAX_HEADERS,
        }
    }
}

/// The HTTP versions we speak; anything else is rejected while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// The version as written on the wire, e.g. `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    fn from_minor(minor: u8) -> Option<Version> {
        match minor {
            0 => Some(Version::Http10),
            1 => Some(Version::Http11),
            _ => None,
        }
    }
}

/// Request body framing, decided from the request head.
/// Requests are never close-delimited (RFC 9112 §6.3 rule 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
}

/// Response body framing, decided from the response head and the request
/// method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    Empty,
    Length(u64),
    Chunked,
    CloseDelimited,
}

#[cfg(test)]
mod tests;
