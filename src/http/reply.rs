//! Every response the proxy generates itself, one enum (sozu's
//! `DefaultAnswer` shape).
//!
//! Why: locally generated answers are part of the protocol surface; listing
//! them in one place keeps their status codes, bodies and connection
//! handling consistent and reviewable.
//!
//! Invariants: each variant maps to exactly one status code; `write` emits a
//! complete HTTP/1.1 response with `Content-Length`, so the client can always
//! find its end; the body is `<code> <phrase>: <reason>\n`.

use std::io::Write;

use super::{RequestError, ResponseError};

/// `100 Continue`, sent when a client expects it and the proxy lets the body
/// come.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A locally generated response. The `&'static str` is the short reason
/// shown in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalReply {
    /// 400 (RFC 9110 §15.5.1): the request is malformed.
    BadRequest(&'static str),
    /// 204 (RFC 9110 §15.3.5): answered by the proxy without a body (a
    /// CORS preflight); the reason is for logs only.
    NoContent(&'static str),
    /// 403 (RFC 9110 §15.5.4): the route's access rules refuse the client.
    Forbidden(&'static str),
    /// 404 (RFC 9110 §15.5.5): no route matches the host and path.
    NotFound,
    /// 429 (RFC 6585 §4): the route's rate limit is exceeded (the caller
    /// adds `Retry-After`).
    TooManyRequests(&'static str),
    /// 408 (RFC 9110 §15.5.9): the request head did not arrive in time.
    RequestTimeout,
    /// 431 (RFC 6585 §5): the head exceeds `Limits`.
    HeadersTooLarge,
    /// 414 (RFC 9110 §15.5.15): the request line alone exceeds `Limits`.
    UriTooLong,
    /// 413 (RFC 9110 §15.5.14): the body exceeds the route's limit.
    PayloadTooLarge,
    /// 500 (RFC 9110 §15.6.1): the proxy's own processing failed (a
    /// route's rewrite gave an invalid target).
    InternalError(&'static str),
    /// 301, 302, 307 or 308 (RFC 9110 §15.4): a route's `redirect` or
    /// `https_redirect`; the `Location` comes with the reply's parts.
    Redirect(u16),
    /// A backend's error status that the route intercepts
    /// (`intercept_errors`): answered with the route's page instead.
    Intercepted(u16),
    /// 501 (RFC 9110 §15.6.2): a method or coding we do not implement.
    NotImplemented(&'static str),
    /// 502 (RFC 9110 §15.6.3): the backend failed or answered badly.
    BadGateway(&'static str),
    /// 503 (RFC 9110 §15.6.4): no backend can take the request.
    ServiceUnavailable(&'static str),
    /// 504 (RFC 9110 §15.6.5): the backend did not answer in time.
    GatewayTimeout(&'static str),
}

impl LocalReply {
    pub fn status(&self) -> u16 {
        match self {
            LocalReply::BadRequest(_) => 400,
            LocalReply::NoContent(_) => 204,
            LocalReply::Forbidden(_) => 403,
            LocalReply::NotFound => 404,
            LocalReply::TooManyRequests(_) => 429,
            LocalReply::RequestTimeout => 408,
            LocalReply::HeadersTooLarge => 431,
            LocalReply::UriTooLong => 414,
            LocalReply::PayloadTooLarge => 413,
            LocalReply::InternalError(_) => 500,
            LocalReply::NotImplemented(_) => 501,
            LocalReply::BadGateway(_) => 502,
            LocalReply::ServiceUnavailable(_) => 503,
            LocalReply::GatewayTimeout(_) => 504,
            LocalReply::Redirect(status) | LocalReply::Intercepted(status) => *status,
        }
    }

    /// The standard reason phrase of the status.
    pub fn status_text(&self) -> &'static str {
        match self {
            LocalReply::BadRequest(_) => "Bad Request",
            LocalReply::NoContent(_) => "No Content",
            LocalReply::Forbidden(_) => "Forbidden",
            LocalReply::NotFound => "Not Found",
            LocalReply::TooManyRequests(_) => "Too Many Requests",
            LocalReply::RequestTimeout => "Request Timeout",
            LocalReply::HeadersTooLarge => "Request Header Fields Too Large",
            LocalReply::UriTooLong => "URI Too Long",
            LocalReply::PayloadTooLarge => "Payload Too Large",
            LocalReply::InternalError(_) => "Internal Server Error",
            LocalReply::NotImplemented(_) => "Not Implemented",
            LocalReply::BadGateway(_) => "Bad Gateway",
            LocalReply::ServiceUnavailable(_) => "Service Unavailable",
            LocalReply::GatewayTimeout(_) => "Gateway Timeout",
            LocalReply::Redirect(status) | LocalReply::Intercepted(status) => status_text(*status),
        }
    }

    /// Why we answered this way, for the body and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            LocalReply::BadRequest(r)
            | LocalReply::NoContent(r)
            | LocalReply::Forbidden(r)
            | LocalReply::TooManyRequests(r)
            | LocalReply::NotImplemented(r)
            | LocalReply::InternalError(r)
            | LocalReply::BadGateway(r)
            | LocalReply::ServiceUnavailable(r)
            | LocalReply::GatewayTimeout(r) => r,
            LocalReply::NotFound => "no route for this host and path",
            LocalReply::RequestTimeout => "request head not received in time",
            LocalReply::HeadersTooLarge => "request head too large",
            LocalReply::UriTooLong => "request line too long",
            LocalReply::PayloadTooLarge => "request body too large",
            LocalReply::Redirect(_) => "see Location",
            LocalReply::Intercepted(_) => "the backend answered with an error",
        }
    }

    /// Appends the complete response, with `X-Request-ID: request_id` when
    /// given. Without `keep_alive` it says `Connection: close` and the proxy
    /// must close after writing it. Returns the length of the head (where
    /// the body starts in what was appended).
    pub fn write(&self, keep_alive: bool, request_id: Option<&str>, out: &mut Vec<u8>) -> usize {
        let parts = ReplyParts {
            keep_alive,
            request_id,
            ..ReplyParts::default()
        };
        self.write_with(&parts, out)
    }

    /// As [`LocalReply::write`], with what `parts` adds: a `Location`, a
    /// custom body, or no body for a `HEAD` request (the head still says
    /// the length the body would have had, RFC 9110 §9.3.2).
    pub fn write_with(&self, parts: &ReplyParts<'_>, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        let (status, text, reason) = (self.status(), self.status_text(), self.reason());
        if status == 204 {
            // No body, and no Content-Length (RFC 9110 §8.6).
            let _ = write!(out, "HTTP/1.1 {status} {text}\r\n");
            if !parts.keep_alive {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            if let Some(id) = parts.request_id {
                let _ = write!(out, "X-Request-ID: {id}\r\n");
            }
            out.extend_from_slice(b"\r\n");
            return out.len() - start;
        }
        let (content_type, body_len) = match parts.page {
            Some((content_type, body)) => (content_type, body.len()),
            // The body is "<3 digits> <text>: <reason>\n".
            None => ("text/plain", 3 + 1 + text.len() + 2 + reason.len() + 1),
        };
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {status} {text}\r\n\
             Content-Type: {content_type}\r\n\
             Content-Length: {body_len}\r\n"
        );
        if let Some(location) = parts.location {
            let _ = write!(out, "Location: {location}\r\n");
        }
        if !parts.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if let Some(id) = parts.request_id {
            let _ = write!(out, "X-Request-ID: {id}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let head_len = out.len() - start;
        if !parts.head_only {
            match parts.page {
                Some((_, body)) => out.extend_from_slice(body),
                None => {
                    let _ = writeln!(out, "{status} {text}: {reason}");
                }
            }
        }
        head_len
    }
}

/// What a local reply carries besides its status (see
/// [`LocalReply::write_with`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplyParts<'a> {
    pub keep_alive: bool,
    pub request_id: Option<&'a str>,
    /// The request was `HEAD`: the head only.
    pub head_only: bool,
    /// `Location`, for a redirect.
    pub location: Option<&'a str>,
    /// A custom body and its content type (an error page) instead of the
    /// standard text.
    pub page: Option<(&'a str, &'a [u8])>,
}

/// The reason phrase of a status a local reply may carry through
/// `Redirect` or `Intercepted`.
fn status_text(status: u16) -> &'static str {
    match status {
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl From<RequestError> for LocalReply {
    fn from(e: RequestError) -> Self {
        match e.status() {
            431 => LocalReply::HeadersTooLarge,
            414 => LocalReply::UriTooLong,
            501 => LocalReply::NotImplemented(e.reason()),
            _ => LocalReply::BadRequest(e.reason()),
        }
    }
}

impl From<ResponseError> for LocalReply {
    fn from(e: ResponseError) -> Self {
        LocalReply::BadGateway(e.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(reply: LocalReply, keep_alive: bool) -> String {
        let mut out = Vec::new();
        reply.write(keep_alive, None, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bad_gateway_closes() {
        let body = "502 Bad Gateway: upstream connect failed\n";
        assert_eq!(
            written(LocalReply::BadGateway("upstream connect failed"), false),
            format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn request_id_goes_in_the_head() {
        let mut out = b"earlier".to_vec();
        let head_len = LocalReply::NotFound.write(true, Some("abc"), &mut out);
        let head = crate::http::parse_response(&out[7..], &Default::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(head.head_len(), head_len);
        assert!(head.has_request_id());
        assert!(head
            .headers()
            .any(|(n, v)| n == "X-Request-ID" && v == b"abc"));
    }

    #[test]
    fn every_variant_is_a_parseable_response() {
        let replies = [
            LocalReply::BadRequest("x"),
            LocalReply::HeadersTooLarge,
            LocalReply::UriTooLong,
            LocalReply::PayloadTooLarge,
            LocalReply::NotImplemented("x"),
            LocalReply::BadGateway("x"),
            LocalReply::ServiceUnavailable("x"),
            LocalReply::GatewayTimeout("x"),
            LocalReply::Redirect(308),
            LocalReply::Intercepted(500),
            LocalReply::Forbidden("x"),
            LocalReply::TooManyRequests("x"),
        ];
        for reply in replies {
            for keep_alive in [true, false] {
                let text = written(reply, keep_alive);
                let head = crate::http::parse_response(text.as_bytes(), &Default::default(), false)
                    .unwrap()
                    .unwrap();
                assert_eq!(head.status(), reply.status(), "{reply:?}");
                assert_eq!(head.keep_alive(), keep_alive, "{reply:?}");
                let crate::http::ResponseBody::Length(n) = head.body() else {
                    panic!("{reply:?} has no Content-Length");
                };
                assert_eq!(head.head_len() + n as usize, text.len(), "{reply:?}");
            }
        }
    }

    #[test]
    fn pages_locations_and_head_only() {
        let mut out = Vec::new();
        let parts = ReplyParts {
            keep_alive: false,
            request_id: Some("r1"),
            head_only: false,
            location: Some("https://h/a?b"),
            page: None,
        };
        let head_len = LocalReply::Redirect(301).write_with(&parts, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nLocation: https://h/a?b\r\n"), "{text}");
        assert_eq!(&text[head_len..], "301 Moved Permanently: see Location\n");

        let body: &[u8] = b"{\"e\":503}";
        let page = ReplyParts {
            page: Some(("application/json", body)),
            ..ReplyParts::default()
        };
        out.clear();
        let head_len = LocalReply::ServiceUnavailable("x").write_with(&page, &mut out);
        let head = crate::http::parse_response(&out, &Default::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            head.body(),
            crate::http::ResponseBody::Length(body.len() as u64)
        );
        assert_eq!(&out[head_len..], body);
        assert!(head
            .headers()
            .any(|(n, v)| n == "Content-Type" && v == b"application/json"));

        // HEAD: the same head, no body.
        let head_only = ReplyParts {
            head_only: true,
            ..page
        };
        let mut only = Vec::new();
        let len = LocalReply::ServiceUnavailable("x").write_with(&head_only, &mut only);
        assert_eq!(only.len(), len);
        assert_eq!(only, out[..head_len]);
    }

    #[test]
    fn no_content_has_no_body_and_no_length() {
        let text = written(LocalReply::NoContent("preflight"), false);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let head = crate::http::parse_response(text.as_bytes(), &Default::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(head.status(), 204);
        assert_eq!(head.head_len(), text.len());
    }

    #[test]
    fn from_request_error() {
        assert_eq!(
            LocalReply::from(RequestError::HeadTooLarge),
            LocalReply::HeadersTooLarge
        );
        assert_eq!(
            LocalReply::from(RequestError::UnsupportedTransferCoding).status(),
            501
        );
        assert_eq!(
            LocalReply::from(RequestError::UriTooLong),
            LocalReply::UriTooLong
        );
        assert_eq!(
            LocalReply::from(RequestError::ContentLengthWithTransferEncoding),
            LocalReply::BadRequest("conflicting Content-Length and Transfer-Encoding")
        );
    }
}
