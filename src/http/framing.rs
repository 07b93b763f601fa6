//! The body-length decision for requests and responses: one function,
//! RFC 9112 §6.3 in order.
//!
//! Why: request smuggling is a disagreement between two parsers about where
//! a body ends. Keeping the decision in one place, strict by default, makes
//! "which rule fired" reviewable against the RFC text.
//!
//! Invariants: a head whose framing is ambiguous (CL with TE, several or
//! invalid CLs, TE on HTTP/1.0, malformed TE) never gets a `Framing`; a
//! request never gets `CloseDelimited`; `chunked` is only ever the final
//! coding of a `Chunked` result.

use super::headers::{is_tchar, list_elements};
use super::Version;

/// What the message is, which is all that differs between the roles here.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Message {
    Request {
        version: Version,
    },
    Response {
        version: Version,
        status: u16,
        request_was_head: bool,
    },
}

/// How the body of a message is delimited: the response's four cases
/// (a request never gets `CloseDelimited`).
pub(crate) type Framing = super::ResponseBody;

/// Why a head has no trustworthy framing. Mapped into `RequestError` /
/// `ResponseError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FramingError {
    ContentLengthWithTransferEncoding,
    TransferEncodingOnHttp10,
    InvalidTransferEncoding,
    ChunkedRepeated,
    /// A response with `chunked` followed by another coding.
    ChunkedNotFinal,
    UnsupportedTransferCoding,
    DuplicateContentLength,
    InvalidContentLength,
    ContentLengthOverflow,
}

/// The `Content-Length` fields of a head, folded as they are scanned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ContentLengthField {
    #[default]
    Absent,
    Valid(u64),
    Invalid(FramingError),
}

impl ContentLengthField {
    /// Adds one field. A second field is rejected even when equal (strictest
    /// reading of RFC 9112 §6.3 rule 5).
    pub(crate) fn add(&mut self, value: &[u8]) {
        *self = match self {
            ContentLengthField::Absent => Self::parse(value),
            _ => ContentLengthField::Invalid(FramingError::DuplicateContentLength),
        };
    }

    fn parse(value: &[u8]) -> ContentLengthField {
        if value.contains(&b',') {
            return ContentLengthField::Invalid(FramingError::DuplicateContentLength);
        }
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return ContentLengthField::Invalid(FramingError::InvalidContentLength);
        }
        let mut n: u64 = 0;
        for &d in value {
            n = match n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
            {
                Some(n) => n,
                None => return ContentLengthField::Invalid(FramingError::ContentLengthOverflow),
            };
        }
        ContentLengthField::Valid(n)
    }
}

/// The `Transfer-Encoding` fields of a head, combined as one list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransferEncodingField {
    present: bool,
    /// An element that is empty or not a bare token (parameters, quotes).
    malformed: bool,
    chunked_count: u8,
    other_coding: bool,
    last_is_chunked: bool,
}

impl TransferEncodingField {
    pub(crate) fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_elements(value) {
            if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
                self.malformed = true;
                self.last_is_chunked = false;
            } else if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked_count = self.chunked_count.saturating_add(1);
                self.last_is_chunked = true;
            } else {
                self.other_coding = true;
                self.last_is_chunked = false;
            }
        }
    }
}

/// Decides how the body of `message` is delimited (RFC 9112 §6.3).
///
/// The rules, in the RFC's order:
/// 1. A response to HEAD, and any 1xx, 204 or 304 response, has no body.
///    (101 is here too: what follows it is a tunnel, not a body.)
/// 2. A 2xx response to CONNECT is a tunnel. Not reachable: `parse_request`
///    rejects CONNECT, so we never forward one.
/// 3. Transfer-Encoding present:
///    - with Content-Length too: error (a request MUST be rejected; for a
///      response we are strict too and the proxy answers 502);
///    - in an HTTP/1.0 message: error (§6.1, the framing is faulty);
///    - malformed or `chunked` applied twice: error;
///    - `chunked` final: chunked;
///    - otherwise a request is an error (we implement no other coding: 501);
///    - a response with `chunked` before another coding is an error too,
///      although the RFC would read it until close: the proxy could not
///      re-frame it for the client without applying chunked twice (found by
///      the response_head fuzz target);
///    - any other response is delimited by close.
/// 4. Content-Length invalid, repeated or a list: error.
/// 5. Content-Length valid: exactly that many bytes.
/// 6. A request with neither: no body.
/// 7. A response with neither: delimited by close.
pub(crate) fn body_framing(
    message: Message,
    content_length: ContentLengthField,
    transfer_encoding: TransferEncodingField,
) -> Result<Framing, FramingError> {
    let (version, is_request) = match message {
        // 1.
        Message::Response {
            status,
            request_was_head,
            ..
        } if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 => {
            return Ok(Framing::Empty)
        }
        Message::Response { version, .. } => (version, false),
        Message::Request { version } => (version, true),
    };
    // 2. Not reachable, see above.
    // 3.
    let te = transfer_encoding;
    if te.present {
        return if content_length != ContentLengthField::Absent {
            Err(FramingError::ContentLengthWithTransferEncoding)
        } else if version == Version::Http10 {
            Err(FramingError::TransferEncodingOnHttp10)
        } else if te.malformed {
            Err(FramingError::InvalidTransferEncoding)
        } else if te.chunked_count > 1 {
            Err(FramingError::ChunkedRepeated)
        } else if is_request && te.other_coding {
            Err(FramingError::UnsupportedTransferCoding)
        } else if te.chunked_count == 1 && !te.last_is_chunked {
            Err(FramingError::ChunkedNotFinal)
        } else if te.last_is_chunked {
            Ok(Framing::Chunked)
        } else {
            Ok(Framing::CloseDelimited)
        };
    }
    match content_length {
        // 4.
        ContentLengthField::Invalid(e) => Err(e),
        // 5.
        ContentLengthField::Valid(n) => Ok(Framing::Length(n)),
        // 6.
        ContentLengthField::Absent if is_request => Ok(Framing::Empty),
        // 7.
        ContentLengthField::Absent => Ok(Framing::CloseDelimited),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FramingError as E;

    fn cl(values: &[&str]) -> ContentLengthField {
        let mut f = ContentLengthField::default();
        values.iter().for_each(|v| f.add(v.as_bytes()));
        f
    }

    fn te(values: &[&str]) -> TransferEncodingField {
        let mut f = TransferEncodingField::default();
        values.iter().for_each(|v| f.add(v.as_bytes()));
        f
    }

    #[test]
    fn content_length_values() {
        let cases: &[(&str, &[&str], ContentLengthField)] = &[
            ("zero", &["0"], ContentLengthField::Valid(0)),
            ("leading zeros", &["007"], ContentLengthField::Valid(7)),
            (
                "u64 max",
                &["18446744073709551615"],
                ContentLengthField::Valid(u64::MAX),
            ),
            (
                "u64 max + 1",
                &["18446744073709551616"],
                ContentLengthField::Invalid(E::ContentLengthOverflow),
            ),
            (
                "plus",
                &["+5"],
                ContentLengthField::Invalid(E::InvalidContentLength),
            ),
            (
                "minus",
                &["-1"],
                ContentLengthField::Invalid(E::InvalidContentLength),
            ),
            (
                "hex",
                &["0x5"],
                ContentLengthField::Invalid(E::InvalidContentLength),
            ),
            (
                "inner space",
                &["5 5"],
                ContentLengthField::Invalid(E::InvalidContentLength),
            ),
            (
                "empty",
                &[""],
                ContentLengthField::Invalid(E::InvalidContentLength),
            ),
            (
                "list same",
                &["5, 5"],
                ContentLengthField::Invalid(E::DuplicateContentLength),
            ),
            (
                "two same",
                &["5", "5"],
                ContentLengthField::Invalid(E::DuplicateContentLength),
            ),
            (
                "two differ",
                &["5", "6"],
                ContentLengthField::Invalid(E::DuplicateContentLength),
            ),
        ];
        for (name, values, want) in cases {
            assert_eq!(cl(values), *want, "case {name}");
        }
    }

    /// (name, message, Content-Length, Transfer-Encoding, expected framing)
    type RuleCase = (
        &'static str,
        Message,
        ContentLengthField,
        TransferEncodingField,
        Result<Framing, E>,
    );

    #[test]
    fn rules_in_order() {
        let req11 = Message::Request {
            version: Version::Http11,
        };
        let req10 = Message::Request {
            version: Version::Http10,
        };
        let resp = |status, head| Message::Response {
            version: Version::Http11,
            status,
            request_was_head: head,
        };
        let none = ContentLengthField::Absent;
        let no_te = TransferEncodingField::default();
        let cases: &[RuleCase] = &[
            (
                "1 head",
                resp(200, true),
                cl(&["5"]),
                no_te,
                Ok(Framing::Empty),
            ),
            (
                "1 head ignores te+cl",
                resp(200, true),
                cl(&["5"]),
                te(&["chunked"]),
                Ok(Framing::Empty),
            ),
            ("1 100", resp(100, false), none, no_te, Ok(Framing::Empty)),
            ("1 101", resp(101, false), none, no_te, Ok(Framing::Empty)),
            ("1 204", resp(204, false), none, no_te, Ok(Framing::Empty)),
            (
                "1 304",
                resp(304, false),
                cl(&["9"]),
                no_te,
                Ok(Framing::Empty),
            ),
            (
                "3 te+cl req",
                req11,
                cl(&["5"]),
                te(&["chunked"]),
                Err(E::ContentLengthWithTransferEncoding),
            ),
            (
                "3 te+cl resp",
                resp(200, false),
                cl(&["5"]),
                te(&["chunked"]),
                Err(E::ContentLengthWithTransferEncoding),
            ),
            (
                "3 te 1.0",
                req10,
                none,
                te(&["chunked"]),
                Err(E::TransferEncodingOnHttp10),
            ),
            (
                "3 twice",
                req11,
                none,
                te(&["chunked", "chunked"]),
                Err(E::ChunkedRepeated),
            ),
            (
                "3 gzip req",
                req11,
                none,
                te(&["gzip, chunked"]),
                Err(E::UnsupportedTransferCoding),
            ),
            (
                "3 gzip resp",
                resp(200, false),
                none,
                te(&["gzip, chunked"]),
                Ok(Framing::Chunked),
            ),
            (
                "3 not final resp",
                resp(200, false),
                none,
                te(&["chunked, gzip"]),
                Err(E::ChunkedNotFinal),
            ),
            (
                "3 not final, two fields",
                resp(200, false),
                none,
                te(&["chunked", "gzip"]),
                Err(E::ChunkedNotFinal),
            ),
            (
                "3 other codings resp",
                resp(200, false),
                none,
                te(&["gzip, br"]),
                Ok(Framing::CloseDelimited),
            ),
            (
                "3 malformed",
                resp(200, false),
                none,
                te(&["chunked;q=1"]),
                Err(E::InvalidTransferEncoding),
            ),
            (
                "3 chunked",
                req11,
                none,
                te(&["Chunked"]),
                Ok(Framing::Chunked),
            ),
            (
                "4 bad cl",
                req11,
                cl(&["x"]),
                no_te,
                Err(E::InvalidContentLength),
            ),
            (
                "5 cl",
                resp(200, false),
                cl(&["5"]),
                no_te,
                Ok(Framing::Length(5)),
            ),
            ("6 request", req10, none, no_te, Ok(Framing::Empty)),
            (
                "7 response",
                resp(200, false),
                none,
                no_te,
                Ok(Framing::CloseDelimited),
            ),
        ];
        for (name, message, cl, te, want) in cases {
            assert_eq!(body_framing(*message, *cl, *te), *want, "case {name}");
        }
    }
}
