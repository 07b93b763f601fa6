//! Rewriting heads for the next hop: request heads toward a backend,
//! response heads toward the client.
//!
//! Why: a proxy must not pass on hop-by-hop fields (RFC 9110 §7.6.1), and
//! must re-state framing itself, so that the next parser sees exactly the
//! framing we decided on, never the one the sender wrote.
//!
//! Invariants:
//! - Upstream requests are always `HTTP/1.1` with an origin-form target, one
//!   `Host`, and framing fields matching `RequestHead::body()`.
//! - Hop-by-hop fields and fields named by `Connection` are dropped, except
//!   that `Connection` can never remove `Host`, framing fields, or the
//!   `X-Forwarded-*` fields we set.
//! - The writers only append to `out`; they do not allocate otherwise.

use std::io::Write;
use std::net::IpAddr;

use super::framing::ContentLengthField;
use super::headers::{eq_ci, list_elements, FieldLine, Headers};
use super::{BodyKind, RequestHead, ResponseBody, ResponseHead, Version};

/// What the proxy knows about the client connection.
#[derive(Clone, Copy, Debug)]
pub struct ForwardContext<'a> {
    /// The connection's address: the hop `X-Forwarded-For` gains.
    pub client_ip: IpAddr,
    /// Whether the client's own `X-Forwarded-For` is kept in front of
    /// `client_ip` (the peer is a trusted proxy); otherwise it is replaced.
    pub keep_client_xff: bool,
    /// `"http"` or `"https"`: the scheme the client used.
    pub proto: &'a str,
    /// Host to send when the request has none (HTTP/1.0 without Host).
    pub host_fallback: Option<&'a str>,
    /// An `X-Request-ID` to add: one the proxy generated because the
    /// request had none (a client's own id is forwarded as it came).
    pub request_id: Option<&'a str>,
}

/// How a response head goes to the client: the relay's plan and the fields
/// the proxy adds.
#[derive(Clone, Copy, Debug)]
pub struct ResponseContext<'a> {
    /// How the body is relayed, which decides the framing fields.
    pub framing: OutFraming,
    /// Whether the client connection stays open afterwards.
    pub keep_alive: bool,
    pub client_version: Version,
    /// Echoed as `X-Request-ID` unless the backend sent its own.
    pub request_id: Option<&'a str>,
    /// A `Set-Cookie` value to add (the sticky-cookie balancer's).
    pub set_cookie: Option<&'a str>,
    /// The `Content-Encoding` the proxy applies to the body (with
    /// `framing` [`OutFraming::Recoded`]): added to the head, and a strong
    /// `ETag` is weakened (the bytes differ from the backend's).
    pub content_coding: Option<&'a str>,
    /// A field name to add to `Vary` (merged into one line with the
    /// backend's, unless it lists the name or `*` already).
    pub vary: Option<&'a str>,
}

/// How the proxy relays the response body, which decides its framing fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFraming {
    /// Body bytes relayed as received.
    AsIs,
    /// A close-delimited body that the proxy chunk-encodes.
    ChunkEncoded,
    /// A chunked body stripped to its data for an HTTP/1.0 client; the
    /// client connection closes after it.
    Dechunked,
    /// The body's data transformed by the proxy (compressed), so its length
    /// is known only at its end: chunk-encoded to an HTTP/1.1 client, ended
    /// by close to an HTTP/1.0 client. Any framing in, never `Empty`.
    Recoded,
}

/// What forwarding does with one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FieldRole {
    /// Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
    /// Proxy-Authenticate, Proxy-Authorization: never forwarded.
    HopByHop,
    TransferEncoding,
    Upgrade,
    ContentLength,
    Host,
    XForwardedFor,
    /// X-Forwarded-Proto / X-Forwarded-Host: replaced by ours.
    XForwardedOther,
    /// Forwarded unless named by `Connection`.
    EndToEnd,
}

fn field_role(n: &[u8]) -> FieldRole {
    let is = |s: &[u8]| eq_ci(n, s);
    match n.len() {
        2 if is(b"te") => FieldRole::HopByHop,
        4 if is(b"host") => FieldRole::Host,
        7 if is(b"trailer") => FieldRole::HopByHop,
        7 if is(b"upgrade") => FieldRole::Upgrade,
        10 if is(b"connection") || is(b"keep-alive") => FieldRole::HopByHop,
        14 if is(b"content-length") => FieldRole::ContentLength,
        15 if is(b"x-forwarded-for") => FieldRole::XForwardedFor,
        16 if is(b"proxy-connection") => FieldRole::HopByHop,
        16 if is(b"x-forwarded-host") => FieldRole::XForwardedOther,
        17 if is(b"transfer-encoding") => FieldRole::TransferEncoding,
        17 if is(b"x-forwarded-proto") => FieldRole::XForwardedOther,
        18 if is(b"proxy-authenticate") => FieldRole::HopByHop,
        19 if is(b"proxy-authorization") => FieldRole::HopByHop,
        _ => FieldRole::EndToEnd,
    }
}

/// Whether a `Connection` field in `fields` lists `name`. Only called when
/// the head has such tokens, so the quadratic walk is rare and short.
fn named_by_connection(fields: Headers<'_>, name: &[u8]) -> bool {
    fields
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .any(|(_, v)| list_elements(v).any(|t| eq_ci(t, name)))
}

/// Fields of `fields` that survive the generic rules: end-to-end and not
/// named by `Connection` (when `connection_names_other` says to look).
pub(super) fn end_to_end<'b>(
    fields: Headers<'b>,
    connection_names_other: bool,
) -> impl Iterator<Item = (FieldRole, FieldLine<'b>)> {
    let all = fields.clone();
    let mut lines = fields;
    std::iter::from_fn(move || lines.next_line()).filter_map(move |line| {
        let role = field_role(line.name);
        let dropped = role == FieldRole::EndToEnd
            && connection_names_other
            && named_by_connection(all.clone(), line.name);
        (!dropped).then_some((role, line))
    })
}

pub(super) fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the head to send upstream for `head`.
///
/// Order: request line, Host, the client's end-to-end fields as received,
/// then framing, `X-Forwarded-For/Proto/Host`, and `Connection`.
pub fn write_request_head(head: &RequestHead<'_>, ctx: &ForwardContext<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = head.host().or(ctx.host_fallback);
    if let Some(host) = host {
        put_field(out, b"Host", host.as_bytes());
    }
    let mut client_xff = false;
    for (role, line) in end_to_end(head.headers(), head.connection_names_other_fields()) {
        match role {
            FieldRole::EndToEnd => out.extend_from_slice(line.raw),
            FieldRole::XForwardedFor => client_xff = ctx.keep_client_xff,
            FieldRole::HopByHop
            | FieldRole::ContentLength
            | FieldRole::TransferEncoding
            | FieldRole::Upgrade
            | FieldRole::Host
            | FieldRole::XForwardedOther => {}
        }
    }
    // Framing in canonical form: `Content-Length: 0011` goes on as `11`.
    match head.body() {
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_decimal(n, out);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Empty => {}
    }
    write_x_forwarded_for(head.headers(), client_xff, ctx.client_ip, out);
    put_field(out, b"X-Forwarded-Proto", ctx.proto.as_bytes());
    if let Some(host) = host {
        put_field(out, b"X-Forwarded-Host", host.as_bytes());
    }
    match head.upgrade() {
        Some(protocol) => {
            out.extend_from_slice(b"Connection: upgrade\r\n");
            put_field(out, b"Upgrade", protocol);
        }
        None => out.extend_from_slice(b"Connection: keep-alive\r\n"),
    }
    if let Some(id) = ctx.request_id {
        put_field(out, b"X-Request-ID", id.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Gives a head written by [`write_request_head`] for a request without
/// Host (HTTP/1.0) the Host of the backend it goes to, `host` (nginx's
/// `$proxy_host`): a `Host` line right after the request line, replacing the
/// `prev_len` bytes that an earlier call put there for another backend (0 the
/// first time). Returns the length of the line put in, for the next call.
/// Only such requests pay for this; `out` starts with the head.
pub fn put_backend_host(out: &mut Vec<u8>, prev_len: usize, host: std::net::SocketAddr) -> usize {
    let mut line = Vec::with_capacity(64);
    let _ = write!(line, "Host: {host}\r\n");
    put_after_request_line(out, prev_len, &line)
}

/// Puts `lines` (whole field lines) right after the request line of the
/// head at the start of `out`, replacing the `prev_len` bytes an earlier
/// call put there (0 the first time); returns `lines.len()` for the next
/// call. Each attempt of a request uses it for the fields that name its
/// backend (see `gateway::BackendFields`).
pub fn put_after_request_line(out: &mut Vec<u8>, prev_len: usize, lines: &[u8]) -> usize {
    let Some(line_end) = out.iter().position(|&b| b == b'\n') else {
        return 0;
    };
    let at = line_end + 1;
    out.splice(at..(at + prev_len).min(out.len()), lines.iter().copied());
    lines.len()
}

/// `X-Forwarded-For: <client values, in order>, <ip>`; every client
/// `X-Forwarded-For` field is folded into this one line.
fn write_x_forwarded_for(fields: Headers<'_>, client_xff: bool, ip: IpAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(b"X-Forwarded-For: ");
    if client_xff {
        for (_, value) in fields.filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for")) {
            if !value.is_empty() {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
        }
    }
    put_ip(ip, out);
    out.extend_from_slice(b"\r\n");
}

/// Appends `ip` as `Display` writes it. IPv4 is done by hand: through `fmt`
/// it was a sixth of `write_request_head` (callgrind).
fn put_ip(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, n) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if n >= 100 {
                    out.push(b'0' + n / 100);
                }
                if n >= 10 {
                    out.push(b'0' + n / 10 % 10);
                }
                out.push(b'0' + n % 10);
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes `status`'s digits without the formatting machinery (it was a
/// measurable part of the small-response path).
fn put_status(status: u16, out: &mut Vec<u8>) {
    if (100..1000).contains(&status) {
        out.extend_from_slice(&[
            b'0' + (status / 100) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ]);
    } else {
        // A parsed head has three digits; anything else as it is.
        let _ = write!(out, "{status}");
    }
}

/// Writes the head to send to the client for `head`.
///
/// `ctx.framing` is how the proxy relays the body: `ChunkEncoded` only for a
/// close-delimited body, `Dechunked` only for a chunked one, and `AsIs` not
/// for a chunked body to an HTTP/1.0 client (all debug-asserted; see
/// [`super::plan_response`]). `ctx.keep_alive` is whether the client
/// connection stays open afterwards. The status line is always `HTTP/1.1`
/// (allowed towards HTTP/1.0 clients too).
/// 1xx heads get no `Connection` field; 101 keeps `Connection: upgrade` and
/// `Upgrade`. `Set-Cookie` and `X-Request-ID` from `ctx` come last.
pub fn write_response_head(head: &ResponseHead<'_>, ctx: &ResponseContext<'_>, out: &mut Vec<u8>) {
    let (out_framing, keep_alive_to_client, client_version) =
        (ctx.framing, ctx.keep_alive, ctx.client_version);
    let status = head.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    put_status(status, out);
    out.push(b' ');
    let reason = match head.reason() {
        "" => canonical_reason(status),
        given => given,
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = status == 101;
    // RFC 9110 §8.6, RFC 9112 §6.1: no Content-Length or Transfer-Encoding
    // in a 1xx or 204 response; the body-less framing stays as it is.
    let framing_fields_allowed = status >= 200 && status != 204;
    let mut content_length = ContentLengthField::Absent;
    let mut transfer_encoding = false;
    for (role, line) in end_to_end(head.headers(), head.connection_names_other_fields()) {
        let keep = match role {
            FieldRole::EndToEnd if ctx.vary.is_some() && eq_ci(line.name, b"vary") => false,
            FieldRole::EndToEnd if ctx.content_coding.is_some() && eq_ci(line.name, b"etag") => {
                put_weak_etag(line.value, out);
                false
            }
            FieldRole::EndToEnd
            | FieldRole::Host
            | FieldRole::XForwardedFor
            | FieldRole::XForwardedOther => true,
            // Both are re-stated below in one canonical line each.
            FieldRole::ContentLength => {
                content_length.add(line.value);
                false
            }
            FieldRole::TransferEncoding => {
                transfer_encoding = true;
                false
            }
            FieldRole::Upgrade => switching,
            FieldRole::HopByHop => false,
        };
        if keep {
            out.extend_from_slice(line.raw);
        }
    }
    if framing_fields_allowed {
        write_response_framing(
            head,
            (out_framing, client_version),
            content_length,
            transfer_encoding,
            out,
        );
    }
    if let Some(coding) = ctx.content_coding {
        put_field(out, b"Content-Encoding", coding.as_bytes());
    }
    if let Some(name) = ctx.vary {
        put_vary(head.headers(), name, out);
    }
    debug_assert!(
        ctx.content_coding.is_none() || out_framing == OutFraming::Recoded,
        "a content coding changes the body's length"
    );
    debug_assert!(
        !(out_framing == OutFraming::AsIs
            && head.body() == ResponseBody::Chunked
            && client_version == Version::Http10),
        "an HTTP/1.0 client cannot read a chunked body"
    );
    // Otherwise the head would keep the backend's Content-Length and gain
    // our Transfer-Encoding (or lose a chunked body's only framing field).
    debug_assert!(
        match out_framing {
            OutFraming::AsIs => true,
            OutFraming::ChunkEncoded => head.body() == ResponseBody::CloseDelimited,
            OutFraming::Dechunked => head.body() == ResponseBody::Chunked,
            OutFraming::Recoded => head.body() != ResponseBody::Empty,
        },
        "{out_framing:?} does not fit a {:?} body",
        head.body()
    );
    if switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if head.is_informational() {
        // Interim responses say nothing about the connection.
    } else if !keep_alive_to_client {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client_version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if let Some(cookie) = ctx.set_cookie {
        put_field(out, b"Set-Cookie", cookie.as_bytes());
    }
    if let Some(id) = ctx.request_id.filter(|_| !head.has_request_id()) {
        put_field(out, b"X-Request-ID", id.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `ETag: W/"x"` for the backend's `value`: a strong tag (`"x"`) is
/// weakened, a weak one kept. RFC 9110 §8.8.3: the compressed bytes are
/// not the ones the tag names, yet the representation is the same, so a
/// weak comparison (`If-None-Match`) at the backend still matches.
fn put_weak_etag(value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"ETag: ");
    if value.first() == Some(&b'"') {
        out.extend_from_slice(b"W/");
    }
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// One `Vary` line: the backend's `Vary` values, then `name` unless they
/// list it (any case) or `*` already.
fn put_vary(fields: Headers<'_>, name: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"Vary: ");
    let mut first = true;
    let mut listed = false;
    for (_, value) in fields.filter(|(n, _)| n.eq_ignore_ascii_case("vary")) {
        for element in list_elements(value).filter(|e| !e.is_empty()) {
            listed |= element == b"*" || eq_ci(element, name.as_bytes());
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(element);
            first = false;
        }
    }
    if !listed {
        if !first {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The framing fields of a response head, each as at most one line in
/// canonical form, so that no parser downstream can read them differently:
/// - `Content-Length` is the decimal of the length the proxy framed the body
///   by; on a body-less response (HEAD, 304) the backend's value is kept,
///   canonical, only if it is a single valid number, and dropped otherwise.
/// - `Transfer-Encoding` lines are folded into one, with `chunked` appended
///   when the proxy chunk-encodes a close-delimited body, and dropped when it
///   de-chunks for an HTTP/1.0 client.
/// - A body the proxy re-codes has no `Content-Length`; it is
///   `Transfer-Encoding: chunked` to an HTTP/1.1 client and has no framing
///   field to an HTTP/1.0 one (it ends by close).
fn write_response_framing(
    head: &ResponseHead<'_>,
    (out_framing, client_version): (OutFraming, Version),
    content_length: ContentLengthField,
    transfer_encoding: bool,
    out: &mut Vec<u8>,
) {
    if out_framing == OutFraming::Recoded {
        if client_version == Version::Http11 {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        return;
    }
    let length = match (head.body(), content_length) {
        (ResponseBody::Length(n), _) => Some(n),
        (ResponseBody::Empty, ContentLengthField::Valid(n)) => Some(n),
        _ => None,
    };
    if let Some(n) = length {
        out.extend_from_slice(b"Content-Length: ");
        put_decimal(n, out);
        out.extend_from_slice(b"\r\n");
    }
    let chunk_encoding = out_framing == OutFraming::ChunkEncoded;
    if out_framing == OutFraming::Dechunked || !(transfer_encoding || chunk_encoding) {
        return;
    }
    out.extend_from_slice(b"Transfer-Encoding: ");
    let mut first = true;
    if transfer_encoding {
        let fields = head.headers();
        for (_, value) in fields.filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")) {
            for coding in list_elements(value).filter(|c| !c.is_empty()) {
                if !first {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(coding);
                first = false;
            }
        }
    }
    if chunk_encoding {
        // After any codings the backend listed, so chunked is last.
        if !first {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"chunked");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without leading zeros.
fn put_decimal(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Reason phrases for when the backend sent none.
pub(super) fn canonical_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
