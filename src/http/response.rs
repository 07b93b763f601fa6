//! Response head parsing, the upstream side of the proxy.
//!
//! Why: a backend that frames its response ambiguously could desynchronise
//! the pooled connection or the client's; such responses are errors here
//! and the proxy answers 502 instead of guessing.
//!
//! Invariants: a `ResponseHead` borrows exactly the head bytes; its status is
//! 100..=999; `body()` follows RFC 9112 §6.3 given the request method;
//! `keep_alive()` is false whenever the body is close-delimited or the
//! status is 101 (the connection becomes a tunnel).

use std::fmt;
use std::mem::MaybeUninit;

use super::framing::{body_framing, FramingError, Message};
use super::headers::{
    crlf_only, diagnose_name_error, offset_in, within_limit, ConnectionTokens, FieldScan, Headers,
    NameProblem,
};
use super::{Limits, ResponseBody, Status, Version, MAX_HEADERS_CAP};

/// Why a response head was rejected; the proxy answers 502 and does not
/// reuse the upstream connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// Status code missing, not three digits, or below 100.
    InvalidStatusLine,
    InvalidVersion,
    InvalidHeaderName,
    WhitespaceBeforeColon,
    ObsFold,
    InvalidHeaderValue,
    BareLineEnding,
    TooManyHeaders,
    HeadTooLarge,
    ContentLengthWithTransferEncoding,
    DuplicateContentLength,
    InvalidContentLength,
    ContentLengthOverflow,
    TransferEncodingOnHttp10,
    InvalidTransferEncoding,
    ChunkedRepeated,
    /// `chunked` followed by another coding: re-framing it for the client
    /// would apply chunked twice.
    ChunkedNotFinal,
}

impl ResponseError {
    /// Short human text for logs and the 502 body.
    pub fn reason(&self) -> &'static str {
        use ResponseError::*;
        match self {
            InvalidStatusLine => "invalid upstream status line",
            InvalidVersion => "unsupported upstream HTTP version",
            InvalidHeaderName => "invalid upstream header name",
            WhitespaceBeforeColon => "whitespace in or after upstream header name",
            ObsFold => "obsolete line folding from upstream",
            InvalidHeaderValue => "invalid byte in upstream header value",
            BareLineEnding => "upstream line ending is not CRLF",
            TooManyHeaders => "too many upstream headers",
            HeadTooLarge => "upstream response head too large",
            ContentLengthWithTransferEncoding => {
                "upstream sent both Content-Length and Transfer-Encoding"
            }
            DuplicateContentLength => "upstream sent more than one Content-Length",
            InvalidContentLength => "invalid upstream Content-Length",
            ContentLengthOverflow => "upstream Content-Length too large",
            TransferEncodingOnHttp10 => "Transfer-Encoding on HTTP/1.0 upstream response",
            InvalidTransferEncoding => "malformed upstream Transfer-Encoding",
            ChunkedRepeated => "upstream applied chunked more than once",
            ChunkedNotFinal => "upstream applied a coding after chunked",
        }
    }

    fn from_httparse(e: httparse::Error, head: &[u8]) -> ResponseError {
        match e {
            httparse::Error::HeaderName => match diagnose_name_error(head) {
                NameProblem::ObsFold => ResponseError::ObsFold,
                NameProblem::WhitespaceBeforeColon => ResponseError::WhitespaceBeforeColon,
                NameProblem::Other => ResponseError::InvalidHeaderName,
            },
            httparse::Error::HeaderValue => ResponseError::InvalidHeaderValue,
            httparse::Error::NewLine => ResponseError::BareLineEnding,
            httparse::Error::TooManyHeaders => ResponseError::TooManyHeaders,
            httparse::Error::Version => ResponseError::InvalidVersion,
            httparse::Error::Status | httparse::Error::Token => ResponseError::InvalidStatusLine,
        }
    }
}

impl From<FramingError> for ResponseError {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::ContentLengthWithTransferEncoding => {
                ResponseError::ContentLengthWithTransferEncoding
            }
            FramingError::TransferEncodingOnHttp10 => ResponseError::TransferEncodingOnHttp10,
            FramingError::InvalidTransferEncoding => ResponseError::InvalidTransferEncoding,
            FramingError::ChunkedRepeated => ResponseError::ChunkedRepeated,
            FramingError::ChunkedNotFinal => ResponseError::ChunkedNotFinal,
            // Responses may carry codings we do not decode (rule 3).
            FramingError::UnsupportedTransferCoding => ResponseError::InvalidTransferEncoding,
            FramingError::DuplicateContentLength => ResponseError::DuplicateContentLength,
            FramingError::InvalidContentLength => ResponseError::InvalidContentLength,
            FramingError::ContentLengthOverflow => ResponseError::ContentLengthOverflow,
        }
    }
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ResponseError {}

/// A validated response head borrowing the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead<'b> {
    head: &'b [u8],
    fields_start: usize,
    status: u16,
    reason: &'b str,
    version: Version,
    body: ResponseBody,
    connection: ConnectionTokens,
    has_request_id: bool,
}

/// What the proxy keeps of a response head: everything [`ResponseHead`]
/// knows, without the borrow, so a head is parsed once when it arrives and
/// later stages (filters, the relay, the writer) read this instead of
/// parsing again. [`ResponseInfo::head`] lends the head back over the same
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseInfo {
    pub status: u16,
    /// Bytes of the head including the final CRLFCRLF.
    pub head_len: usize,
    pub body: ResponseBody,
    /// Whether the upstream connection may be reused after this response
    /// ([`ResponseHead::keep_alive`]).
    pub keep_alive: bool,
    /// The head carries an `X-Request-ID` field.
    pub has_request_id: bool,
    version: Version,
    fields_start: usize,
    /// Where the reason phrase is in the head.
    reason: std::ops::Range<usize>,
    connection: ConnectionTokens,
}

impl ResponseInfo {
    /// A 1xx other than 101: another head follows on the same exchange.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The head again, over `buf`: the buffer the head was parsed from,
    /// still holding it at the front. No parsing, only slicing.
    pub fn head<'b>(&self, buf: &'b [u8]) -> ResponseHead<'b> {
        let head = &buf[..self.head_len];
        ResponseHead {
            head,
            fields_start: self.fields_start,
            status: self.status,
            // Valid UTF-8: it was a `&str` when parsed from these bytes.
            reason: std::str::from_utf8(&head[self.reason.clone()]).unwrap_or(""),
            version: self.version,
            body: self.body,
            connection: self.connection,
            has_request_id: self.has_request_id,
        }
    }
}

impl<'b> ResponseHead<'b> {
    /// The owned summary of this head (see [`ResponseInfo`]).
    pub fn info(&self) -> ResponseInfo {
        let reason_at = if self.reason.is_empty() {
            0
        } else {
            offset_in(self.head, self.reason.as_bytes())
        };
        ResponseInfo {
            status: self.status,
            head_len: self.head.len(),
            body: self.body,
            keep_alive: self.keep_alive(),
            has_request_id: self.has_request_id,
            version: self.version,
            fields_start: self.fields_start,
            reason: reason_at..reason_at + self.reason.len(),
            connection: self.connection,
        }
    }

    /// Whether the head carries an `X-Request-ID` field.
    pub fn has_request_id(&self) -> bool {
        self.has_request_id
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as received (may be empty).
    pub fn reason(&self) -> &'b str {
        self.reason
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Bytes of the head including the final CRLFCRLF.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    /// The raw head bytes.
    pub fn as_bytes(&self) -> &'b [u8] {
        self.head
    }

    pub fn body(&self) -> ResponseBody {
        self.body
    }

    /// Whether the upstream connection can be reused after this response:
    /// HTTP/1.1 without `Connection: close`, HTTP/1.0 only with
    /// `keep-alive`, never after a close-delimited body or a 101.
    pub fn keep_alive(&self) -> bool {
        !self.connection.close
            && (self.version == Version::Http11 || self.connection.keep_alive)
            && self.body != ResponseBody::CloseDelimited
            && self.status != 101
    }

    /// A 1xx other than 101: another head follows on the same exchange.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The fields as `(name, value)`, values OWS-trimmed, in received order.
    pub fn headers(&self) -> Headers<'b> {
        Headers::new(&self.head[self.fields_start..self.head.len() - 2])
    }

    /// The Upgrade field value of a 101 response, if any.
    pub fn upgrade(&self) -> Option<&'b [u8]> {
        if self.status != 101 {
            return None;
        }
        self.headers()
            .find(|(name, _)| name.eq_ignore_ascii_case("upgrade"))
            .map(|(_, value)| value)
    }

    pub(crate) fn connection_names_other_fields(&self) -> bool {
        self.connection.names_other_fields
    }
}

/// Parses a response head from the start of `buf`. `request_method_is_head`
/// is whether the request it answers was HEAD (then there is no body).
pub fn parse_response<'b>(
    buf: &'b [u8],
    limits: &Limits,
    request_method_is_head: bool,
) -> Result<Status<ResponseHead<'b>>, ResponseError> {
    let buf = within_limit(buf, limits.max_head_bytes);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)];
    let mut resp = httparse::Response::new(&mut []);
    // The default config is strict: no obs-fold, no space before colons.
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Err(ResponseError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(e) => return Err(ResponseError::from_httparse(e, buf)),
    };
    let head = &buf[..head_len];
    let (Some(minor), Some(status), Some(reason)) = (resp.version, resp.code, resp.reason) else {
        return Err(ResponseError::InvalidStatusLine);
    };
    let start_line = head.len() - head.trim_ascii_start().len();
    let fields = FieldScan::scan(head, resp.headers);
    if !crlf_only(head, start_line, &fields) {
        return Err(ResponseError::BareLineEnding);
    }
    let version = Version::from_minor(minor).ok_or(ResponseError::InvalidVersion)?;
    if status < 100 {
        return Err(ResponseError::InvalidStatusLine);
    }
    let framing = body_framing(
        Message::Response {
            version,
            status,
            request_was_head: request_method_is_head,
        },
        fields.content_length,
        fields.transfer_encoding,
    )?;
    let body = framing;
    let fields_start = match resp.headers.first() {
        Some(h) => offset_in(head, h.name.as_bytes()),
        None => head_len - 2,
    };
    Ok(Status::Complete(ResponseHead {
        head,
        fields_start,
        status,
        reason,
        version,
        body,
        connection: fields.connection,
        has_request_id: fields.request_id.is_some(),
    }))
}
