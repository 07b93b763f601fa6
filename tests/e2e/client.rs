//! A raw TCP HTTP/1.1 client and the minimal message reader it shares with
//! the test backend.
//!
//! Tests write exact bytes (so malformed and pipelined requests are easy)
//! and read responses with a deliberately strict parser: heads must use
//! CRLF, bodies are framed by Content-Length, chunked (with trailers) or
//! connection close, and HEAD / 1xx / 204 / 304 have no body. Every read is
//! bounded by [`WAIT`]: a stuck read is an error, never a hang.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::harness::WAIT;

/// FNV-1a 64, to compare large bodies without printing them.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `n` deterministic, non-repeating-looking bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A request with `Host: test.local` (unless `headers` has a Host) and a
/// Content-Length for a non-empty body (unless `headers` frames it).
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    if !has("host") {
        out.push_str("Host: test.local\r\n");
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `GET target` with only a Host header.
pub fn get(target: &str) -> Vec<u8> {
    request("GET", target, &[], b"")
}

/// A chunked body: each chunk, the last chunk and the trailers.
pub fn chunked(chunks: &[&[u8]], trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (k, v) in trailers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Header or trailer fields in order, names as sent.
pub type Fields = Vec<(String, String)>;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Header list lookups, case-insensitive.
pub trait Headers {
    fn header_list(&self) -> &[(String, String)];

    /// The first value of `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.header_list()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.header_list()
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a comma-separated header `name` lists `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A parsed message head: the start line and the header fields.
#[derive(Debug, Clone)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Headers for Head {
    fn header_list(&self) -> &[(String, String)] {
        &self.headers
    }
}

impl Head {
    /// The body framing the head announces: `Some(true)` chunked,
    /// `Some(false)` with a length in the second field, `None` neither.
    pub fn framing(&self) -> io::Result<(bool, Option<usize>)> {
        if let Some(te) = self.headers_named("transfer-encoding").last() {
            let last = te.rsplit(',').next().unwrap_or("").trim();
            return Ok((last.eq_ignore_ascii_case("chunked"), None));
        }
        match self.header("content-length") {
            Some(v) => {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?;
                Ok((false, Some(n)))
            }
            None => Ok((false, None)),
        }
    }
}

/// Strictly parses a head (without the final empty line): CRLF line ends,
/// `name: value` fields with no whitespace before the colon.
fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(raw).map_err(|_| invalid("head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.contains('\n') || line.contains('\r') {
            return Err(invalid(format!("bare CR or LF in head line {line:?}")));
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header line without colon {line:?}")))?;
        if k.is_empty() || k.ends_with([' ', '\t']) || k.starts_with([' ', '\t']) {
            return Err(invalid(format!("bad header name in {line:?}")));
        }
        headers.push((k.to_string(), v.trim_matches([' ', '\t']).to_string()));
    }
    if start.contains('\n') {
        return Err(invalid(format!("bare LF in start line {start:?}")));
    }
    Ok(Head { start, headers })
}

/// A buffered reader of HTTP/1.1 messages over a TCP stream.
pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes; `Ok(0)` at end of stream.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 65536];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        out
    }

    fn eof(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF in {what}"))
    }

    /// Reads a head up to and including the empty line. `Ok(None)` if the
    /// stream ends cleanly before its first byte.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            let pending = &self.buf[self.pos..];
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let raw = self.take(i + 4);
                return parse_head(&raw[..i]).map(Some);
            }
            if self.fill()? == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(Self::eof(&format!(
                        "head; got {:?}",
                        String::from_utf8_lossy(self.buffered())
                    )))
                };
            }
        }
    }

    /// Reads one CRLF-terminated line, without the CRLF.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buffered().windows(2).position(|w| w == b"\r\n") {
                let line = self.take(i);
                self.pos += 2;
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(Self::eof("line"));
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Err(Self::eof(&format!(
                    "body: wanted {n} bytes, stream ended after {}",
                    self.buffered().len()
                )));
            }
        }
        Ok(self.take(n))
    }

    /// Reads a chunked body; returns the decoded body and the trailers.
    pub fn read_chunked(&mut self) -> io::Result<(Vec<u8>, Fields)> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let line = String::from_utf8_lossy(&line).to_string();
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&self.read_exact_n(size)?);
            if self.read_line()? != b"" {
                return Err(invalid("chunk data not followed by CRLF".into()));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok((body, trailers));
            }
            let head = parse_head(&[b"x\r\n".as_slice(), &line].concat())?;
            trailers.extend(head.headers);
        }
    }

    /// Reads until the peer closes; a reset counts as a close.
    pub fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        let n = self.buffered().len();
        Ok(self.take(n))
    }
}

/// How a response body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length,
    Chunked,
    Close,
}

/// One response as read by [`Client`].
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub framing: Framing,
}

impl Headers for Response {
    fn header_list(&self) -> &[(String, String)] {
        &self.head.headers
    }
}

impl Response {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// Whether the response announces the connection will close.
    pub fn closes(&self) -> bool {
        self.has_token("connection", "close")
    }
}

/// A raw client connection to the proxy.
pub struct Client {
    pub wire: Wire,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            wire: Wire::new(stream),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.wire
            .stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// Like [`send`](Self::send) but returns the error (the proxy may have
    /// closed the connection already).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)
    }

    /// Reads one response (1xx included) to a request with `method`.
    pub fn try_read_response_to(&mut self, method: &str) -> io::Result<Response> {
        let head = self.wire.read_head()?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response")
        })?;
        let mut parts = head.start.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {:?}", head.start)))?;
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {:?}", head.start)));
        }
        let no_body = method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304;
        let (body, trailers, framing) = if no_body {
            (Vec::new(), Vec::new(), Framing::None)
        } else {
            match head.framing()? {
                (true, _) => {
                    let (b, t) = self.wire.read_chunked()?;
                    (b, t, Framing::Chunked)
                }
                (false, Some(n)) => (self.wire.read_exact_n(n)?, Vec::new(), Framing::Length),
                (false, None) => (self.wire.read_to_eof()?, Vec::new(), Framing::Close),
            }
        };
        Ok(Response {
            version,
            status,
            head,
            body,
            trailers,
            framing,
        })
    }

    /// Reads one response (1xx included) to a request with `method`.
    pub fn read_response_to(&mut self, method: &str) -> Response {
        self.try_read_response_to(method)
            .unwrap_or_else(|e| panic!("reading a response to {method}: {e}"))
    }

    /// Reads one response to a GET-like request.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to("GET")
    }

    /// Reads the final response, skipping 1xx ones (which are returned too).
    pub fn read_final_response(&mut self) -> (Vec<Response>, Response) {
        let mut interim = Vec::new();
        loop {
            let r = self.read_response();
            if (100..200).contains(&r.status) {
                interim.push(r);
            } else {
                return (interim, r);
            }
        }
    }

    /// Sends `req` and reads the response to it, returning errors.
    pub fn try_read_response_after(&mut self, req: &[u8]) -> io::Result<Response> {
        self.try_send(req)?;
        let method = req.split(|b| *b == b' ').next().unwrap_or(b"GET");
        self.try_read_response_to(&String::from_utf8_lossy(method))
    }

    /// Sends `req` and reads the response to it.
    pub fn roundtrip(&mut self, req: &[u8]) -> Response {
        self.send(req);
        let method = req.split(|b| *b == b' ').next().unwrap_or(b"GET");
        self.read_response_to(&String::from_utf8_lossy(method))
    }

    /// Waits (up to [`WAIT`]) for the peer to close; returns what arrived
    /// before the close. Panics if the connection stays open.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        match self.wire.read_to_eof() {
            Ok(rest) => rest,
            Err(e) => panic!(
                "connection not closed by the proxy within {WAIT:?} ({e}); had {:?}",
                String::from_utf8_lossy(self.wire.buffered())
            ),
        }
    }

    /// Asserts the proxy closes the connection without sending more bytes.
    pub fn assert_closed(&mut self) {
        let rest = self.read_until_closed();
        assert!(
            rest.is_empty(),
            "expected close, got extra bytes {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}
