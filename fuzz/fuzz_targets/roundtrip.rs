//! A structured request (method, target, version, Host, fields, framing) is
//! written out and parsed back: it must come back equal, or be rejected
//! with the one error its deliberate defect calls for. A prefix of it must
//! be `Partial`.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use ringlb::http::{parse_request, BodyKind, Limits, RequestError, Status, Version};

/// Methods are tokens; CONNECT is in the set to check its rejection.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "PURGE", "M-SEARCH",
    "CONNECT",
];
const TCHAR: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Bytes in a path: unreserved, sub-delims, `%`, `:`, `@`, `/`, `?`.
const PATH: &[u8] =
    b"-._~!$&'()*+,;=%:@/?0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const HOST: &[u8] = b"-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Names the generator must not produce at random: they change framing or
/// Host handling and are written on purpose instead.
const RESERVED: &[&str] = &["host", "content-length", "transfer-encoding"];

#[derive(Debug)]
struct Request {
    method: &'static str,
    /// Origin-form path and query, starting with `/`.
    path: String,
    /// Absolute-form target (`http://host/path`) instead of origin-form.
    absolute: Option<&'static str>,
    http11: bool,
    /// The Host field value; `None` leaves the field out.
    host: Option<String>,
    fields: Vec<(String, Vec<u8>)>,
    body: Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    /// `Transfer-Encoding: chunked`, in either case.
    Chunked {
        upper: bool,
    },
}

fn pick<'a, T>(u: &mut Unstructured<'_>, from: &'a [T]) -> arbitrary::Result<&'a T> {
    u.choose(from)
}

/// A string of 0..=max bytes drawn from `alphabet`.
fn string_of(u: &mut Unstructured<'_>, alphabet: &[u8], max: usize) -> arbitrary::Result<String> {
    let len = u.int_in_range(0..=max)?;
    (0..len)
        .map(|_| pick(u, alphabet).map(|&b| char::from(b)))
        .collect()
}

/// A field value: visible ASCII, obs-text, and inner SP / HTAB; nothing a
/// parser trims (OWS at either end) or rejects (controls).
fn value(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let len = u.int_in_range(0..=48)?;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            Ok(match u.int_in_range(0..=9)? {
                0 => b' ',
                1 => b'\t',
                2 => u.int_in_range(0x80..=0xff)?,
                _ => u.int_in_range(0x21..=0x7e)?,
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    while v.last().is_some_and(|b| matches!(b, b' ' | b'\t')) {
        v.pop();
    }
    while v.first().is_some_and(|b| matches!(b, b' ' | b'\t')) {
        v.remove(0);
    }
    Ok(v)
}

impl<'a> Arbitrary<'a> for Request {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let method = *pick(u, METHODS)?;
        let path = format!("/{}", string_of(u, PATH, 64)?);
        let absolute = if u.ratio(1, 8)? {
            Some(*pick(u, &["http", "https", "HTTP"])?)
        } else {
            None
        };
        let http11 = u.ratio(7, 8)?;
        let host = if u.ratio(15, 16)? {
            let mut host = string_of(u, HOST, 24)?;
            if u.ratio(1, 4)? {
                host.push_str(&format!(":{}", u16::arbitrary(u)?));
            }
            Some(host)
        } else {
            None
        };
        let count = u.int_in_range(0..=24)?;
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            let mut name = string_of(u, TCHAR, 24)?;
            if name.is_empty() || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
                name.insert_str(0, "X-");
            }
            fields.push((name, value(u)?));
        }
        let body = match u.int_in_range(0..=2)? {
            0 => Body::None,
            1 => Body::Length(u64::arbitrary(u)? >> u.int_in_range(0..=63)?),
            _ => Body::Chunked {
                upper: bool::arbitrary(u)?,
            },
        };
        Ok(Request {
            method,
            path,
            absolute,
            http11,
            host,
            fields,
            body,
        })
    }
}

impl Request {
    fn target(&self) -> String {
        match (self.absolute, &self.host) {
            (Some(scheme), Some(host)) => format!("{scheme}://{host}{}", self.path),
            _ => self.path.clone(),
        }
    }

    /// The head as sent, and its fields in order.
    fn write(&self) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let mut fields = Vec::new();
        if let Some(host) = &self.host {
            fields.push(("Host".to_owned(), host.clone().into_bytes()));
        }
        fields.extend(self.fields.iter().cloned());
        match self.body {
            Body::None => {}
            Body::Length(n) => fields.push(("Content-Length".to_owned(), n.to_string().into())),
            Body::Chunked { upper } => {
                let coding = if upper { "CHUNKED" } else { "chunked" };
                fields.push(("Transfer-Encoding".to_owned(), coding.into()));
            }
        }
        let minor = if self.http11 { 1 } else { 0 };
        let mut out = format!("{} {} HTTP/1.{minor}\r\n", self.method, self.target()).into_bytes();
        for (name, value) in &fields {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        (out, fields)
    }

    /// The error the parser must give, in the order it checks; `None` if the
    /// request is valid.
    fn defect(&self) -> Option<RequestError> {
        let host = self.host.as_deref();
        if self.method == "CONNECT" {
            return Some(RequestError::ConnectUnsupported);
        }
        if self.absolute.is_some() && host.is_some_and(str::is_empty) {
            return Some(RequestError::InvalidTarget);
        }
        match host {
            None if self.http11 => return Some(RequestError::MissingHost),
            Some("") if self.http11 => return Some(RequestError::InvalidHost),
            _ => {}
        }
        if !self.http11 && matches!(self.body, Body::Chunked { .. }) {
            return Some(RequestError::TransferEncodingOnHttp10);
        }
        if climbs_above_root(&self.path) {
            return Some(RequestError::PathAboveRoot);
        }
        None
    }

    fn body_kind(&self) -> BodyKind {
        match self.body {
            Body::None => BodyKind::Empty,
            Body::Length(n) => BodyKind::Length(n),
            Body::Chunked { .. } => BodyKind::Chunked,
        }
    }
}

/// The parser's rule, written again independently: resolving the dot
/// segments of the path (before any `?`, `%2e` read as `.`) goes above the
/// root. A trailing empty segment adds no depth.
fn climbs_above_root(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or("");
    let segments: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|s| s.to_ascii_lowercase().replace("%2e", "."))
        .collect();
    let mut depth: i64 = 0;
    for (i, segment) in segments.iter().enumerate() {
        match segment.as_str() {
            "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            "" if i + 1 == segments.len() => {}
            _ => depth += 1,
        }
    }
    false
}

fuzz_target!(|input: (Request, u16)| {
    let (request, cut) = input;
    let (bytes, fields) = request.write();
    let limits = Limits::default();
    assert!(bytes.len() < limits.max_head_bytes);
    let cut = usize::from(cut) % bytes.len();
    assert_eq!(parse_request(&bytes[..cut], &limits), Ok(Status::Partial));
    let parsed = parse_request(&bytes, &limits);
    let head = match (parsed, request.defect()) {
        (Ok(Status::Complete(head)), None) => head,
        (Err(got), Some(want)) => {
            assert_eq!(got, want, "{request:?}");
            return;
        }
        (got, want) => panic!(
            "{request:?}\n{:?}\nwant error {want:?}, got {got:?}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(head.head_len(), bytes.len());
    assert_eq!(head.method(), request.method);
    assert_eq!(head.target(), request.target());
    assert_eq!(head.path(), request.path);
    let want_version = if request.http11 {
        Version::Http11
    } else {
        Version::Http10
    };
    assert_eq!(head.version(), want_version);
    let want_host = request.host.as_deref().filter(|h| !h.is_empty());
    assert_eq!(head.host(), want_host);
    assert_eq!(head.body(), request.body_kind());
    let got: Vec<(String, Vec<u8>)> = head
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_vec()))
        .collect();
    assert_eq!(got, fields);
});
