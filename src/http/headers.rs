//! Field helpers shared by the request and response parsers and the writers.
//!
//! Why: both roles need the same single pass over httparse's header slots
//! (framing fields, `Connection` tokens) and the same checks httparse leaves
//! to us (bare LF line endings, telling obs-fold from a bad name).
//!
//! Invariants: `Headers` is only built over a head that httparse accepted
//! *and* `crlf_only` approved, so every field line is `name ":" OWS value OWS
//! CRLF` with a token name; it re-splits those lines without re-validating.

use super::framing::{ContentLengthField, TransferEncodingField};

/// Case-insensitive ASCII comparison, the rule for field names and tokens.
/// Same answer as `eq_ignore_ascii_case`, but without its early exit the
/// loop against a constant compiles branch-free: byte by byte it was a
/// quarter of the instructions of `FieldScan::scan` (callgrind).
#[inline]
pub(crate) fn eq_ci(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).fold(0, |diff, (x, y)| {
            diff | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
        }) == 0
}

/// `tchar` from RFC 9110 §5.6.2.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The elements of a comma-separated list field, OWS-trimmed, empty elements
/// included (callers decide whether an empty element is an error).
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Byte offset of `part` inside `whole`; `part` must be a sub-slice of it.
#[inline]
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// Index of the first `needle` in `haystack`, eight bytes at a time: the
/// `\n` search of `Headers::next_line` walks every byte of a forwarded head,
/// and byte by byte it was a third of `write_request_head` (callgrind).
#[inline]
pub(crate) fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    find_any(haystack, [needle])
}

/// Index of the first byte of `haystack` that is one of `needles`, eight
/// bytes at a time (see `find_byte`).
pub(crate) fn find_any<const N: usize>(haystack: &[u8], needles: [u8; N]) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let chunks = haystack.chunks_exact(8);
    let tail = chunks.remainder();
    for (i, chunk) in chunks.enumerate() {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let mut found = 0;
        for needle in needles {
            // Bytes equal to `needle` become zero; the lowest zero byte gets
            // its high bit set (a borrow only sets bits above a zero byte),
            // so the lowest bit of the union is the first match of any.
            let x = word ^ (LO * u64::from(needle));
            found |= x.wrapping_sub(LO) & !x & HI;
        }
        if found != 0 {
            return Some(i * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let at = haystack.len() - tail.len();
    tail.iter()
        .position(|b| needles.contains(b))
        .map(|i| at + i)
}

/// The bytes the parser may look at: at most `max` of them, so that a prefix
/// of any message gets the same verdict as the message (see `mod.rs`).
#[inline]
pub(crate) fn within_limit(buf: &[u8], max: usize) -> &[u8] {
    &buf[..buf.len().min(max)]
}

/// httparse accepts a bare LF wherever CRLF belongs; we do not: RFC 9112
/// §2.2 only permits it, and a bare LF that two parsers read differently is a
/// smuggling vector.
///
/// Every LF httparse accepted ends a line, and every line but the last is
/// followed by a field name (or by the final empty line). So it is enough to
/// check the bytes before each field name (`FieldScan` does, in its pass over
/// the fields), the final four bytes, and any empty lines skipped before the
/// start line.
pub(crate) fn crlf_only(head: &[u8], start_line: usize, fields: &FieldScan<'_>) -> bool {
    let leading = &head[..start_line];
    if leading.len() % 2 != 0 || !leading.chunks(2).all(|c| c == b"\r\n") {
        return false;
    }
    fields.crlf_before_every_field && head.ends_with(b"\r\n\r\n")
}

/// Why httparse rejected a field name, for a precise error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameProblem {
    ObsFold,
    WhitespaceBeforeColon,
    Other,
}

/// Finds the first field line with obs-fold or whitespace in or after its
/// name. httparse stops at the first bad line, and both defects are httparse
/// errors, so the first such line is the one it stopped at (or the defect is
/// something else): the verdict depends only on bytes httparse has seen.
pub(crate) fn diagnose_name_error(head: &[u8]) -> NameProblem {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    // Skip empty lines before the start line, then the start line itself.
    lines.find(|line| !line.is_empty());
    for line in lines {
        match line.first() {
            None => break,
            Some(b' ' | b'\t') => return NameProblem::ObsFold,
            Some(_) => {}
        }
        let name = line.split(|&b| b == b':').next().unwrap_or(line);
        if name.iter().any(|&b| b == b' ' || b == b'\t') {
            return NameProblem::WhitespaceBeforeColon;
        }
        if !name.iter().all(|&b| is_tchar(b)) || name.len() == line.len() {
            break;
        }
    }
    NameProblem::Other
}

/// How many times a singleton field appeared, and its first value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Singleton<'b> {
    #[default]
    Absent,
    One(&'b [u8]),
    Repeated,
}

impl<'b> Singleton<'b> {
    fn add(&mut self, value: &'b [u8]) {
        *self = match *self {
            Singleton::Absent => Singleton::One(value),
            _ => Singleton::Repeated,
        };
    }
}

/// `Connection` tokens that matter to the codec, plus whether any other
/// token names a field that forwarding must drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    pub names_other_fields: bool,
}

impl ConnectionTokens {
    fn add(&mut self, value: &[u8]) {
        // The usual value is one token; skip splitting a list for it.
        if eq_ci(value, b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        if eq_ci(value, b"close") {
            self.close = true;
            return;
        }
        for token in list_elements(value) {
            if eq_ci(token, b"close") {
                self.close = true;
            } else if eq_ci(token, b"keep-alive") {
                self.keep_alive = true;
            } else if eq_ci(token, b"upgrade") {
                self.upgrade = true;
            } else if !token.is_empty() {
                self.names_other_fields = true;
            }
        }
    }
}

/// Everything one pass over the header slots learns. Errors are kept as
/// field states, so that the framing function raises them in RFC order.
#[derive(Debug)]
pub(crate) struct FieldScan<'b> {
    pub content_length: ContentLengthField,
    pub transfer_encoding: TransferEncodingField,
    pub connection: ConnectionTokens,
    pub host: Singleton<'b>,
    pub upgrade: Option<&'b [u8]>,
    pub expect_continue: bool,
    /// The first `X-Request-ID` value.
    pub request_id: Option<&'b [u8]>,
    /// Whether every field line follows a CRLF (for `crlf_only`): checked
    /// here so that parsing walks the slots once.
    pub crlf_before_every_field: bool,
}

impl<'b> FieldScan<'b> {
    /// `headers` are httparse's slots for `head`, so every name borrows it.
    pub(crate) fn scan(head: &[u8], headers: &[httparse::Header<'b>]) -> FieldScan<'b> {
        let mut scan = FieldScan {
            content_length: ContentLengthField::default(),
            transfer_encoding: TransferEncodingField::default(),
            connection: ConnectionTokens::default(),
            host: Singleton::Absent,
            upgrade: None,
            expect_continue: false,
            request_id: None,
            crlf_before_every_field: true,
        };
        for h in headers {
            let name = h.name.as_bytes();
            let at = offset_in(head, name);
            scan.crlf_before_every_field &= at >= 2 && head[at - 2..at] == *b"\r\n";
            // Dispatch on length and first letter: most fields are none of
            // these, and this keeps the scan a small part of parsing.
            if !matches!(name[0] | 0x20, b'h' | b'e' | b'u' | b'c' | b't' | b'x') {
                continue;
            }
            match name.len() {
                4 if eq_ci(name, b"host") => scan.host.add(h.value),
                6 if eq_ci(name, b"expect") => {
                    scan.expect_continue |= eq_ci(h.value, b"100-continue");
                }
                7 if eq_ci(name, b"upgrade") => {
                    scan.upgrade.get_or_insert(h.value);
                }
                10 if eq_ci(name, b"connection") => scan.connection.add(h.value),
                12 if eq_ci(name, b"x-request-id") => {
                    scan.request_id.get_or_insert(h.value);
                }
                14 if eq_ci(name, b"content-length") => scan.content_length.add(h.value),
                17 if eq_ci(name, b"transfer-encoding") => scan.transfer_encoding.add(h.value),
                _ => {}
            }
        }
        scan
    }
}

/// Iterator over the fields of a validated head, as `(name, value)` with the
/// value OWS-trimmed. Built by `RequestHead::headers`/`ResponseHead::headers`.
#[derive(Clone, Debug)]
pub struct Headers<'b> {
    lines: &'b [u8],
}

impl<'b> Headers<'b> {
    /// `lines` is the field section without the final empty line: zero or
    /// more `name:value\r\n` lines.
    pub(crate) fn new(lines: &'b [u8]) -> Headers<'b> {
        Headers { lines }
    }

    /// Next field with its raw line (CRLF included), for verbatim copying.
    pub(crate) fn next_line(&mut self) -> Option<FieldLine<'b>> {
        let end = find_byte(self.lines, b'\n')?;
        let (raw, rest) = self.lines.split_at(end + 1);
        self.lines = rest;
        let line = &raw[..raw.len() - 2];
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let name = &line[..colon];
        let value = trim_ows(line.get(colon + 1..).unwrap_or(b""));
        Some(FieldLine { name, value, raw })
    }
}

impl<'b> Iterator for Headers<'b> {
    type Item = (&'b str, &'b [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Names are tokens (checked by httparse), hence ASCII and UTF-8.
        self.next_line()
            .map(|f| (std::str::from_utf8(f.name).unwrap_or(""), f.value))
    }
}

/// One field of a validated head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldLine<'b> {
    pub name: &'b [u8],
    pub value: &'b [u8],
    /// The whole line including its CRLF.
    pub raw: &'b [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_ci_matches_eq_ignore_ascii_case() {
        for x in 0..=255u8 {
            for y in 0..=255u8 {
                let (a, b) = ([b'k', x, b'-'], [b'K', y, b'-']);
                assert_eq!(eq_ci(&a, &b), a.eq_ignore_ascii_case(&b), "{x:02x} {y:02x}");
            }
        }
        assert!(eq_ci(b"Keep-Alive", b"keep-alive"));
        assert!(!eq_ci(b"keep-alive", b"keep-aliv"));
        assert!(eq_ci(b"", b""));
    }

    #[test]
    fn trim_and_list() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
        let v: Vec<&[u8]> = list_elements(b"a, b ,,c").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"", b"c"]);
    }

    #[test]
    fn find_byte_every_position() {
        for len in 0..20 {
            for at in 0..len {
                let mut hay = vec![b'a'; len];
                hay[at] = b'\n';
                // A second match later must not win.
                if at + 3 < len {
                    hay[at + 3] = b'\n';
                }
                assert_eq!(find_byte(&hay, b'\n'), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_byte(&vec![b'a'; len], b'\n'), None);
        }
        // Bytes near the needle's value, where a borrow could fake a match:
        // compared with the plain search on many mixes of them.
        for needle in [b'\n', b':', 0x00, 0x80, 0xff] {
            let near = [
                needle,
                needle ^ 1,
                needle.wrapping_add(1),
                needle.wrapping_sub(1),
                0x00,
                0x80,
                0xff,
            ];
            let mut state = 0x9e37_79b9_u32;
            for _ in 0..2000 {
                let len = (state % 24) as usize;
                let hay: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        near[(state % 7) as usize]
                    })
                    .collect();
                let want = hay.iter().position(|&b| b == needle);
                assert_eq!(find_byte(&hay, needle), want, "{hay:02x?} {needle:02x}");
                let other = near[(state % 5) as usize];
                let want = hay.iter().position(|&b| b == needle || b == other);
                assert_eq!(find_any(&hay, [needle, other]), want, "{hay:02x?}");
            }
        }
    }

    #[test]
    fn diagnose() {
        assert_eq!(
            diagnose_name_error(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
            NameProblem::ObsFold
        );
        assert_eq!(
            diagnose_name_error(b"GET / HTTP/1.1\r\nA : b\r\n\r\n"),
            NameProblem::WhitespaceBeforeColon
        );
        assert_eq!(
            diagnose_name_error(b"GET / HTTP/1.1\r\nA@: b\r\n c\r\n"),
            NameProblem::Other
        );
        assert_eq!(
            diagnose_name_error(b"\r\nGET / HTTP/1.1\r\nA: b\r\n\tc\r\n"),
            NameProblem::ObsFold
        );
    }

    #[test]
    fn header_lines() {
        let mut h = Headers::new(b"A: 1\r\nBb:\t two \r\nC:\r\n");
        let names: Vec<_> = h.clone().collect();
        assert_eq!(
            names,
            [("A", &b"1"[..]), ("Bb", &b"two"[..]), ("C", &b""[..])]
        );
        assert_eq!(h.next_line().unwrap().raw, b"A: 1\r\n");
    }
}
