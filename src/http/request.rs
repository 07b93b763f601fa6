//! Request head parsing: httparse for syntax, then our stricter rules.
//!
//! Why: this is the proxy's front door; every framing rule (see
//! `framing.rs`, RFC 9112 §6.3) is enforced here so the rest of the proxy
//! can trust `RequestHead`.
//!
//! Invariants: a `RequestHead` borrows exactly the head bytes (its
//! `head_len()` is where body or pipelined bytes start); it has a known
//! version, a valid `body()`, at most one `Host` (exactly one, non-empty, on
//! HTTP/1.1), and its target is origin-form, absolute-form (http/https) or
//! `*`. Parsing is a single pass over the field slots and does not allocate.

use std::fmt;
use std::mem::MaybeUninit;

use super::framing::{body_framing, Framing, FramingError, Message};
use super::headers::{
    crlf_only, diagnose_name_error, find_any, find_byte, offset_in, within_limit, ConnectionTokens,
    FieldScan, Headers, NameProblem, Singleton,
};
use super::{BodyKind, Limits, Status, Version, MAX_HEADERS_CAP};

/// Why a request head was rejected. Each variant is one rule; `status()` is
/// the answer the proxy sends before closing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Method or request-target has an invalid byte or shape (httparse).
    InvalidRequestLine,
    /// Target is neither origin-form, absolute http(s) URI, nor `*`.
    InvalidTarget,
    /// The target has a `#fragment`, which is never part of a request target.
    FragmentInTarget,
    /// The path's dot segments (`..`, also as `%2e%2e`) climb above the root.
    PathAboveRoot,
    /// Not HTTP/1.0 or HTTP/1.1.
    InvalidVersion,
    /// CONNECT is not something a reverse proxy forwards.
    ConnectUnsupported,
    InvalidHeaderName,
    WhitespaceBeforeColon,
    ObsFold,
    /// NUL, CR, or another control byte in a field value.
    InvalidHeaderValue,
    /// A line ends in bare LF (or CR without LF) where CRLF is required.
    BareLineEnding,
    TooManyHeaders,
    HeadTooLarge,
    /// The request line alone exceeds the head limit (nginx: 414).
    UriTooLong,
    MissingHost,
    DuplicateHost,
    InvalidHost,
    ContentLengthWithTransferEncoding,
    DuplicateContentLength,
    InvalidContentLength,
    ContentLengthOverflow,
    TransferEncodingOnHttp10,
    InvalidTransferEncoding,
    ChunkedRepeated,
    UnsupportedTransferCoding,
}

impl RequestError {
    /// The status code to answer with: 400, 414, 431 or 501.
    pub fn status(&self) -> u16 {
        use RequestError::*;
        match self {
            TooManyHeaders | HeadTooLarge => 431,
            UriTooLong => 414,
            ConnectUnsupported | ChunkedRepeated | UnsupportedTransferCoding => 501,
            _ => 400,
        }
    }

    /// Short human text for logs and the error body.
    pub fn reason(&self) -> &'static str {
        use RequestError::*;
        match self {
            InvalidRequestLine => "invalid request line",
            InvalidTarget => "invalid request target",
            FragmentInTarget => "fragment in request target",
            PathAboveRoot => "path climbs above the root",
            InvalidVersion => "unsupported HTTP version",
            ConnectUnsupported => "CONNECT is not supported",
            InvalidHeaderName => "invalid header name",
            WhitespaceBeforeColon => "whitespace in or after header name",
            ObsFold => "obsolete line folding",
            InvalidHeaderValue => "invalid byte in header value",
            BareLineEnding => "line ending is not CRLF",
            TooManyHeaders => "too many headers",
            HeadTooLarge => "request head too large",
            UriTooLong => "request line too long",
            MissingHost => "missing Host",
            DuplicateHost => "more than one Host",
            InvalidHost => "invalid Host",
            ContentLengthWithTransferEncoding => "conflicting Content-Length and Transfer-Encoding",
            DuplicateContentLength => "more than one Content-Length",
            InvalidContentLength => "invalid Content-Length",
            ContentLengthOverflow => "Content-Length too large",
            TransferEncodingOnHttp10 => "Transfer-Encoding on HTTP/1.0",
            InvalidTransferEncoding => "malformed Transfer-Encoding",
            ChunkedRepeated => "chunked applied more than once",
            UnsupportedTransferCoding => "unsupported transfer coding",
        }
    }

    fn from_httparse(e: httparse::Error, head: &[u8]) -> RequestError {
        match e {
            httparse::Error::HeaderName => match diagnose_name_error(head) {
                NameProblem::ObsFold => RequestError::ObsFold,
                NameProblem::WhitespaceBeforeColon => RequestError::WhitespaceBeforeColon,
                NameProblem::Other => RequestError::InvalidHeaderName,
            },
            httparse::Error::HeaderValue => RequestError::InvalidHeaderValue,
            httparse::Error::NewLine => RequestError::BareLineEnding,
            httparse::Error::TooManyHeaders => RequestError::TooManyHeaders,
            httparse::Error::Version => RequestError::InvalidVersion,
            httparse::Error::Status | httparse::Error::Token => RequestError::InvalidRequestLine,
        }
    }
}

impl From<FramingError> for RequestError {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::ContentLengthWithTransferEncoding => {
                RequestError::ContentLengthWithTransferEncoding
            }
            FramingError::TransferEncodingOnHttp10 => RequestError::TransferEncodingOnHttp10,
            FramingError::InvalidTransferEncoding => RequestError::InvalidTransferEncoding,
            FramingError::ChunkedRepeated => RequestError::ChunkedRepeated,
            // Not reached: any coding besides chunked is unsupported first.
            FramingError::ChunkedNotFinal => RequestError::UnsupportedTransferCoding,
            FramingError::UnsupportedTransferCoding => RequestError::UnsupportedTransferCoding,
            FramingError::DuplicateContentLength => RequestError::DuplicateContentLength,
            FramingError::InvalidContentLength => RequestError::InvalidContentLength,
            FramingError::ContentLengthOverflow => RequestError::ContentLengthOverflow,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for RequestError {}

/// A validated request head borrowing the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead<'b> {
    /// The head bytes, start line through the final CRLFCRLF.
    head: &'b [u8],
    /// Offset in `head` of the first field line (or of the final CRLF).
    fields_start: usize,
    method: &'b str,
    target: &'b str,
    path: &'b str,
    host: Option<&'b str>,
    upgrade: Option<&'b [u8]>,
    version: Version,
    body: BodyKind,
    connection: ConnectionTokens,
    expect_continue: bool,
    absolute_form: bool,
    request_id: Option<&'b [u8]>,
}

impl<'b> RequestHead<'b> {
    pub fn method(&self) -> &'b str {
        self.method
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// GET HEAD OPTIONS TRACE PUT DELETE (RFC 9110 §9.2.2): safe to retry.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }

    /// The request-target as received.
    pub fn target(&self) -> &'b str {
        self.target
    }

    /// Origin-form path and query to send upstream: the target itself, or
    /// for absolute-form its path (`/` if empty); `*` stays `*`.
    pub fn path(&self) -> &'b str {
        self.path
    }

    /// Whether the target was absolute-form (`http://authority/...`).
    pub fn is_absolute_form(&self) -> bool {
        self.absolute_form
    }

    /// The authority: from an absolute-form target if present (RFC 9112
    /// §3.2.2), else the Host field. `None` only on HTTP/1.0 without Host.
    pub fn host(&self) -> Option<&'b str> {
        self.host
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The value of the first `X-Request-ID` field, if any.
    pub fn request_id(&self) -> Option<&'b [u8]> {
        self.request_id
    }

    /// Bytes of the head including the final CRLFCRLF.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    /// The raw head bytes.
    pub fn as_bytes(&self) -> &'b [u8] {
        self.head
    }

    pub fn body(&self) -> BodyKind {
        self.body
    }

    /// Whether the client wants the connection kept open after this
    /// exchange: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        !self.connection.close && (self.version == Version::Http11 || self.connection.keep_alive)
    }

    /// `Expect: 100-continue` on HTTP/1.1 (HTTP/1.0 clients cannot get 1xx).
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }

    /// The Upgrade field value, when `Connection` has the `upgrade` token and
    /// the request is HTTP/1.1.
    pub fn upgrade(&self) -> Option<&'b [u8]> {
        self.upgrade
    }

    /// The fields as `(name, value)`, values OWS-trimmed, in received order.
    pub fn headers(&self) -> Headers<'b> {
        Headers::new(&self.head[self.fields_start..self.head.len() - 2])
    }

    /// Whether `Connection` lists tokens other than close / keep-alive /
    /// upgrade, i.e. names fields that forwarding must drop.
    pub(crate) fn connection_names_other_fields(&self) -> bool {
        self.connection.names_other_fields
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(Status::Partial)` means "read more"; once `buf` holds
/// `limits.max_head_bytes` bytes without a complete head, the answer is
/// `HeadTooLarge`. Bytes after the head are not looked at.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &Limits,
) -> Result<Status<RequestHead<'b>>, RequestError> {
    let buf = within_limit(buf, limits.max_head_bytes);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            // Leading empty lines are allowed before the request line.
            let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'));
            let line_ended = start.is_some_and(|i| buf[i..].contains(&b'\n'));
            return Err(if line_ended {
                RequestError::HeadTooLarge
            } else {
                RequestError::UriTooLong
            });
        }
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(e) => return Err(RequestError::from_httparse(e, buf)),
    };
    let head = &buf[..head_len];
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::InvalidRequestLine);
    };
    let fields = FieldScan::scan(head, req.headers);
    if !crlf_only(head, offset_in(head, method.as_bytes()), &fields) {
        return Err(RequestError::BareLineEnding);
    }
    let version = Version::from_minor(minor).ok_or(RequestError::InvalidVersion)?;
    if method == "CONNECT" {
        return Err(RequestError::ConnectUnsupported);
    }
    let target_form = TargetForm::parse(target)?;
    let host = checked_host(fields.host, version)?;
    let framing = body_framing(
        Message::Request { version },
        fields.content_length,
        fields.transfer_encoding,
    )?;
    let body = match framing {
        Framing::Empty => BodyKind::Empty,
        Framing::Length(n) => BodyKind::Length(n),
        Framing::Chunked => BodyKind::Chunked,
        // Rule 6 never yields this for a request.
        Framing::CloseDelimited => unreachable!("requests are never close-delimited"),
    };
    let fields_start = match req.headers.first() {
        Some(h) => offset_in(head, h.name.as_bytes()),
        None => head_len - 2,
    };
    let http11 = version == Version::Http11;
    let (path, host, absolute_form) = match target_form {
        TargetForm::Origin => (target, host, false),
        TargetForm::Absolute { authority, path } => (path, Some(authority), true),
    };
    check_target_path(path)?;
    Ok(Status::Complete(RequestHead {
        head,
        fields_start,
        method,
        target,
        path,
        host,
        upgrade: fields
            .upgrade
            .filter(|_| http11 && fields.connection.upgrade),
        version,
        body,
        connection: fields.connection,
        expect_continue: http11 && fields.expect_continue,
        absolute_form,
        request_id: fields.request_id,
    }))
}

/// The request-target forms we accept (RFC 9112 §3.2).
enum TargetForm<'b> {
    /// `/path?query`, or `*` (asterisk-form is treated the same way).
    Origin,
    /// `http://authority/path?query`.
    Absolute { authority: &'b str, path: &'b str },
}

impl<'b> TargetForm<'b> {
    fn parse(target: &'b str) -> Result<TargetForm<'b>, RequestError> {
        if target.starts_with('/') || target == "*" {
            return Ok(TargetForm::Origin);
        }
        let rest = strip_prefix_ci(target, "http://")
            .or_else(|| strip_prefix_ci(target, "https://"))
            .ok_or(RequestError::InvalidTarget)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        // `http://h?q` would need a "/" we cannot borrow; userinfo is an
        // error for http URIs (RFC 9110 §4.2.4).
        if !is_authority(authority) || !(path.is_empty() || path.starts_with('/')) {
            return Err(RequestError::InvalidTarget);
        }
        let path = if path.is_empty() { "/" } else { path };
        Ok(TargetForm::Absolute { authority, path })
    }
}

/// Rejects what backends read differently from us: a fragment, and a path
/// whose dot segments climb above the root (nginx answers both with 400).
/// Word-at-a-time searches (byte by byte this was a sixth of parsing a
/// browser GET); the segment walk only runs when the path before the query
/// has a `.` or a `%`.
fn check_target_path(path: &str) -> Result<(), RequestError> {
    let bytes = path.as_bytes();
    // The path ends at the query or at a fragment; a `#` anywhere is an error.
    let path_end = find_any(bytes, [b'?', b'#']).unwrap_or(bytes.len());
    if find_byte(&bytes[path_end..], b'#').is_some() {
        return Err(RequestError::FragmentInTarget);
    }
    let path = &bytes[..path_end];
    if find_any(path, [b'.', b'%']).is_some() && climbs_above_root(path) {
        return Err(RequestError::PathAboveRoot);
    }
    Ok(())
}

/// Whether resolving the dot segments of `path` (RFC 3986 §5.2.4, with
/// `%2e` read as `.`) would go above the root: the depth below the root
/// becomes negative.
fn climbs_above_root(path: &[u8]) -> bool {
    let mut depth: usize = 0;
    let mut segments = path.split(|&b| b == b'/');
    // The part before the first `/` is empty for origin-form paths.
    segments.next();
    let mut segments = segments.peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match dot_segment(segment) {
            Some(1) => {}
            Some(2) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            // An empty last segment (a trailing `/`) adds no depth.
            _ if segment.is_empty() && last => {}
            _ => depth += 1,
        }
    }
    false
}

/// `Some(1)` for `.`, `Some(2)` for `..`, with `%2e`/`%2E` counted as a dot.
fn dot_segment(segment: &[u8]) -> Option<u8> {
    let mut dots = 0u8;
    let mut rest = segment;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && (rest[2] | 0x20) == b'e'
        {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
        if dots > 2 {
            return None;
        }
    }
    (dots > 0).then_some(dots)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host [":" port]` with reg-name, IPv4 or bracketed IP-literal bytes: no
/// userinfo, path, whitespace or non-ASCII. Not empty.
fn is_authority(s: &str) -> bool {
    // No early exit, so the loop over a short host has no branch per byte.
    !s.is_empty()
        && s.bytes()
            .fold(true, |ok, b| ok & AUTHORITY_BYTES[usize::from(b)])
}

/// Bytes allowed in an authority: unreserved, sub-delims, `%`, `:`, `[`, `]`.
static AUTHORITY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"-._~!$&'()*+,;=%:[]";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    let mut b = 0;
    while b < 128 {
        table[b] |= (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    table
};

/// RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, for any request
/// with more than one, and for an invalid value. An empty Host on HTTP/1.0
/// counts as absent.
fn checked_host(host: Singleton<'_>, version: Version) -> Result<Option<&str>, RequestError> {
    match host {
        Singleton::Repeated => Err(RequestError::DuplicateHost),
        Singleton::Absent if version == Version::Http11 => Err(RequestError::MissingHost),
        Singleton::Absent => Ok(None),
        Singleton::One(b"") if version == Version::Http10 => Ok(None),
        Singleton::One(value) => std::str::from_utf8(value)
            .ok()
            .filter(|s| is_authority(s))
            .map(Some)
            .ok_or(RequestError::InvalidHost),
    }
}
