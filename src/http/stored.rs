//! Response heads for a shared cache: the fields it keeps from a
//! backend's response, and the head it writes when it serves one.
//!
//! Why in `http/`: which fields are hop-by-hop, and how a head is framed
//! for the client, are the codec's rules; the cache only decides what to
//! store. Invariants: kept fields are the end-to-end fields as received
//! (each line with its CRLF), minus `Age` (restated when served) and
//! `X-Request-ID` (it names another request); a served head states its
//! body's length in one `Content-Length`, so its framing never depends on
//! what the backend sent; a 304 carries only the fields RFC 9110 §15.4.5
//! lists.

use std::io::Write as _;

use super::forward::{canonical_reason, end_to_end, put_field, FieldRole};
use super::response::ResponseHead;
use super::Version;

/// The fields of `head` a cache keeps, as raw lines.
pub fn stored_fields(head: &ResponseHead<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.head_len());
    for (role, line) in end_to_end(head.headers(), head.connection_names_other_fields()) {
        let skip = role != FieldRole::EndToEnd
            || line.name.eq_ignore_ascii_case(b"age")
            || line.name.eq_ignore_ascii_case(b"x-request-id");
        if !skip {
            out.extend_from_slice(line.raw);
        }
    }
    out
}

/// A response served from the cache, as the client gets it.
pub struct StoredReply<'a> {
    pub status: u16,
    /// [`stored_fields`] of the stored response.
    pub fields: &'a [u8],
    pub body_len: u64,
    /// Its current age in seconds (RFC 9111 §5.1).
    pub age: u64,
    /// `X-Cache-Status`, when the route shows it.
    pub cache_status: Option<&'a str>,
    pub keep_alive: bool,
    pub client_version: Version,
    pub request_id: Option<&'a str>,
    /// Answer `304 Not Modified` instead (a conditional request that
    /// matched).
    pub not_modified: bool,
}

/// Fields a 304 carries (RFC 9110 §15.4.5), when the stored response has
/// them.
const NOT_MODIFIED_FIELDS: [&[u8]; 6] = [
    b"cache-control",
    b"content-location",
    b"date",
    b"etag",
    b"expires",
    b"vary",
];

/// Writes the head of `reply`; its body (unless HEAD or 304) follows.
pub fn write_stored_head(reply: &StoredReply<'_>, out: &mut Vec<u8>) {
    let status = if reply.not_modified {
        304
    } else {
        reply.status
    };
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", canonical_reason(status));
    if reply.not_modified {
        let mut fields = super::headers::Headers::new(reply.fields);
        while let Some(line) = fields.next_line() {
            if NOT_MODIFIED_FIELDS
                .iter()
                .any(|n| line.name.eq_ignore_ascii_case(n))
            {
                out.extend_from_slice(line.raw);
            }
        }
    } else {
        out.extend_from_slice(reply.fields);
        // RFC 9110 §8.6: no Content-Length on a 204.
        if status != 204 {
            let _ = write!(out, "Content-Length: {}\r\n", reply.body_len);
        }
    }
    let _ = write!(out, "Age: {}\r\n", reply.age);
    if let Some(label) = reply.cache_status {
        put_field(out, b"X-Cache-Status", label.as_bytes());
    }
    if !reply.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if reply.client_version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if let Some(id) = reply.request_id {
        put_field(out, b"X-Request-ID", id.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_response, Limits, Status};

    fn head_of(raw: &'static [u8]) -> ResponseHead<'static> {
        match parse_response(raw, &Limits::default(), false) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keeps_end_to_end_fields_only() {
        let head = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\n\
              X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nAge: 7\r\n\
              X-Request-ID: abc\r\nETag: \"v1\"\r\nSet-Cookie: a=b\r\n\r\n",
        );
        let kept = stored_fields(&head);
        assert_eq!(
            kept,
            b"Content-Type: text/plain\r\nETag: \"v1\"\r\nSet-Cookie: a=b\r\n"
        );
    }

    fn reply(fields: &'static [u8]) -> StoredReply<'static> {
        StoredReply {
            status: 200,
            fields,
            body_len: 5,
            age: 3,
            cache_status: Some("HIT"),
            keep_alive: true,
            client_version: Version::Http11,
            request_id: Some("r1"),
            not_modified: false,
        }
    }

    #[test]
    fn a_served_head_restates_length_age_and_status() {
        let mut out = Vec::new();
        write_stored_head(&reply(b"Content-Type: text/plain\r\n"), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nAge: 3\r\n\
             X-Cache-Status: HIT\r\nX-Request-ID: r1\r\n\r\n"
        );
        let mut out = Vec::new();
        let closing = StoredReply {
            keep_alive: false,
            cache_status: None,
            request_id: None,
            ..reply(b"")
        };
        write_stored_head(&closing, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nAge: 3\r\nConnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        let old_client = StoredReply {
            client_version: Version::Http10,
            cache_status: None,
            request_id: None,
            ..reply(b"")
        };
        write_stored_head(&old_client, &mut out);
        assert!(out.ends_with(b"Connection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn a_304_carries_only_its_fields() {
        let mut out = Vec::new();
        let nm = StoredReply {
            not_modified: true,
            cache_status: None,
            request_id: None,
            ..reply(b"Content-Type: text/plain\r\nETag: \"v1\"\r\nCache-Control: max-age=9\r\nX-Other: 1\r\n")
        };
        write_stored_head(&nm, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=9\r\nAge: 3\r\n\r\n"
        );
    }
}
