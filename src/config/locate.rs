//! Turning a byte offset in the TOML source into a line:column and a key path.
//!
//! Why: `toml::de::Error` gives a byte span and a message but not the key
//! path (its key list is private), and values we validate ourselves carry
//! only a `Spanned` byte range. This module recovers the dotted path
//! (`upstreams.app.backends[1].addr`) by lexing the source up to the offset.
//!
//! Invariants: the lexer never panics and never reads past the source, on any
//! input, including invalid TOML (it is used for syntax errors too). It is
//! best effort: on malformed input the path is the closest enclosing key it
//! could see. It is only run when an error is reported, never on a hot path.

use std::collections::HashMap;

use super::error::Location;

/// The 1-based line and column (counted in characters) of byte `offset`.
pub(crate) fn line_col(src: &str, offset: usize) -> Location {
    let offset = floor_char_boundary(src, offset.min(src.len()));
    let before = &src[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = src[line_start..offset].chars().count() + 1;
    Location { line, column }
}

fn floor_char_boundary(src: &str, mut i: usize) -> usize {
    while !src.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One step of a key path.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Renders segments as `a.b[2].c`, quoting keys that are not bare keys.
fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&quote_key(k));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A TOML key as it would be written: bare if it can be, else quoted.
pub(crate) fn quote_key(key: &str) -> String {
    if !key.is_empty() && key.bytes().all(is_bare_key_byte) {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn is_bare_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Where the lexer is: a table (the top-level statement or an inline table)
/// whose current dotted key is `key`, or an array at element `index`.
enum Frame {
    Table { key: Vec<String>, expect_key: bool },
    Array { index: usize },
}

/// The dotted key path of whatever starts at byte `offset`: the value, the
/// key, or the table header there.
pub(crate) fn key_path_at(src: &str, offset: usize) -> String {
    let bytes = src.as_bytes();
    let offset = offset.min(bytes.len());
    let mut lexer = Lexer {
        src,
        header: Vec::new(),
        arrays_of_tables: HashMap::new(),
        stack: vec![Frame::Table {
            key: Vec::new(),
            expect_key: true,
        }],
        stopped_in_header: false,
    };
    let mut i = 0;
    while i < offset {
        i = lexer.step(i, offset);
    }
    lexer.path_at(offset)
}

struct Lexer<'a> {
    src: &'a str,
    /// The path of the current `[table]` or `[[array]]` header, indices resolved.
    header: Vec<Seg>,
    /// How many `[[x]]` headers have been seen, by rendered path.
    arrays_of_tables: HashMap<String, usize>,
    stack: Vec<Frame>,
    /// The offset fell inside a table header; the path is that header.
    stopped_in_header: bool,
}

impl Lexer<'_> {
    /// Consumes one token starting at `i` and returns where the next starts.
    fn step(&mut self, i: usize, limit: usize) -> usize {
        let bytes = self.src.as_bytes();
        let at_top = self.stack.len() == 1;
        match bytes[i] {
            b'\n' => {
                if at_top {
                    self.reset_top();
                }
                i + 1
            }
            b'#' => self.src[i..].find('\n').map_or(bytes.len(), |n| i + n),
            b'"' | b'\'' => {
                let (text, end) = read_string(self.src, i);
                if let Some(Frame::Table {
                    key,
                    expect_key: true,
                }) = self.stack.last_mut()
                {
                    key.push(text);
                }
                end
            }
            b'=' => {
                if let Some(Frame::Table { expect_key, .. }) = self.stack.last_mut() {
                    *expect_key = false;
                }
                i + 1
            }
            b'[' if self.at_header_position() => {
                let (segs, is_array, end) = read_header(self.src, i);
                if end <= limit {
                    self.enter_header(segs, is_array);
                    self.reset_top();
                    end
                } else {
                    // The offset is inside this header: stop with it as the path.
                    self.enter_header(segs, is_array);
                    self.stopped_in_header = true;
                    limit
                }
            }
            b'[' => {
                self.stack.push(Frame::Array { index: 0 });
                i + 1
            }
            b']' => {
                if matches!(self.stack.last(), Some(Frame::Array { .. })) {
                    self.stack.pop();
                }
                i + 1
            }
            b'{' => {
                self.stack.push(Frame::Table {
                    key: Vec::new(),
                    expect_key: true,
                });
                i + 1
            }
            b'}' => {
                if !at_top && matches!(self.stack.last(), Some(Frame::Table { .. })) {
                    self.stack.pop();
                }
                i + 1
            }
            b',' => {
                match self.stack.last_mut() {
                    Some(Frame::Array { index }) => *index += 1,
                    Some(Frame::Table { key, expect_key }) if !at_top => {
                        key.clear();
                        *expect_key = true;
                    }
                    _ => {}
                }
                i + 1
            }
            b if b.is_ascii_whitespace() || b == b'.' => i + 1,
            _ => {
                let expecting_key = matches!(
                    self.stack.last(),
                    Some(Frame::Table {
                        expect_key: true,
                        ..
                    })
                );
                if expecting_key {
                    let end = scan(bytes, i, is_bare_key_byte);
                    let end = end.max(i + 1);
                    if let Some(Frame::Table { key, .. }) = self.stack.last_mut() {
                        key.push(lossy(&bytes[i..end]));
                    }
                    end
                } else {
                    let end = scan(bytes, i, |b| {
                        !(b.is_ascii_whitespace() || b",]}#=\"'[{".contains(&b))
                    });
                    end.max(i + 1)
                }
            }
        }
    }

    fn reset_top(&mut self) {
        self.stack.truncate(1);
        self.stack[0] = Frame::Table {
            key: Vec::new(),
            expect_key: true,
        };
    }

    fn at_header_position(&self) -> bool {
        matches!(self.stack.as_slice(), [Frame::Table { key, expect_key: true }] if key.is_empty())
    }

    fn enter_header(&mut self, keys: Vec<String>, is_array: bool) {
        let mut resolved = Vec::new();
        let last = keys.len().saturating_sub(1);
        for (n, k) in keys.into_iter().enumerate() {
            resolved.push(Seg::Key(k));
            let rendered = render(&resolved);
            if n == last && is_array {
                let count = self.arrays_of_tables.entry(rendered).or_insert(0);
                *count += 1;
                resolved.push(Seg::Index(*count - 1));
            } else if let Some(count) = self.arrays_of_tables.get(&rendered) {
                // `[a.b]` after `[[a]]` is inside the last element of `a`.
                resolved.push(Seg::Index(count.saturating_sub(1)));
            }
        }
        self.header = resolved;
    }

    /// The path at `offset`, reading one more key or header if one starts there.
    fn path_at(&mut self, offset: usize) -> String {
        if self.stopped_in_header {
            return render(&self.header);
        }
        let bytes = self.src.as_bytes();
        let mut i = offset;
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'[' && self.at_header_position() {
            let (segs, is_array, _) = read_header(self.src, i);
            self.enter_header(segs, is_array);
            return render(&self.header);
        }
        if matches!(
            self.stack.last(),
            Some(Frame::Table {
                expect_key: true,
                ..
            })
        ) {
            let (keys, _) = read_dotted_key(self.src, i);
            if let Some(Frame::Table { key, .. }) = self.stack.last_mut() {
                key.extend(keys);
            }
        }
        let mut segs = self.header.clone();
        for frame in &self.stack {
            match frame {
                Frame::Table { key, .. } => segs.extend(key.iter().cloned().map(Seg::Key)),
                Frame::Array { index } => segs.push(Seg::Index(*index)),
            }
        }
        render(&segs)
    }
}

fn scan(bytes: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while i < bytes.len() && keep(bytes[i]) {
        i += 1;
    }
    i
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads a basic, literal or multi-line string starting at `i` (which holds
/// the quote). Returns its raw text (escapes not decoded) and the end offset.
fn read_string(src: &str, i: usize) -> (String, usize) {
    let bytes = src.as_bytes();
    let quote = bytes[i];
    let triple = bytes.len() >= i + 3 && bytes[i + 1] == quote && bytes[i + 2] == quote;
    let open = if triple { 3 } else { 1 };
    let mut j = i + open;
    while j < bytes.len() {
        let b = bytes[j];
        if quote == b'"' && b == b'\\' {
            j += 2;
            continue;
        }
        if !triple && b == b'\n' {
            // Unterminated single-line string: stop at the line end.
            return (lossy(&bytes[i + open..j]), j);
        }
        if b == quote {
            if !triple {
                return (lossy(&bytes[i + 1..j]), j + 1);
            }
            if bytes.len() >= j + 3 && bytes[j + 1] == quote && bytes[j + 2] == quote {
                return (lossy(&bytes[i + 3..j]), j + 3);
            }
        }
        j += 1;
    }
    let end = bytes.len();
    (lossy(&bytes[(i + open).min(end)..end]), end)
}

/// Reads a dotted key (`a."b c".d`) starting at `i`. Returns the keys and the end.
fn read_dotted_key(src: &str, mut i: usize) -> (Vec<String>, usize) {
    let bytes = src.as_bytes();
    let mut keys = Vec::new();
    loop {
        i = scan(bytes, i, |b| b == b' ' || b == b'\t');
        if i >= bytes.len() {
            break;
        }
        match bytes[i] {
            b'"' | b'\'' => {
                let (text, end) = read_string(src, i);
                keys.push(text);
                i = end;
            }
            b if is_bare_key_byte(b) => {
                let end = scan(bytes, i, is_bare_key_byte);
                keys.push(lossy(&bytes[i..end]));
                i = end;
            }
            _ => break,
        }
        i = scan(bytes, i, |b| b == b' ' || b == b'\t');
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
        } else {
            break;
        }
    }
    (keys, i)
}

/// Reads `[a.b]` or `[[a.b]]` starting at `i`. Returns keys, whether it is an
/// array-of-tables header, and the end offset.
fn read_header(src: &str, i: usize) -> (Vec<String>, bool, usize) {
    let bytes = src.as_bytes();
    let is_array = bytes.get(i + 1) == Some(&b'[');
    let start = i + if is_array { 2 } else { 1 };
    let (keys, mut end) = read_dotted_key(src, start);
    end = scan(bytes, end, |b| b == b']' || b == b' ' || b == b'\t');
    (keys, is_array, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path at the first occurrence of `needle` in `src`.
    fn path_of(src: &str, needle: &str) -> String {
        key_path_at(src, src.find(needle).expect("needle in source"))
    }

    const DOC: &str = r#"# comment [not.a.header]
[server]
listen = ["127.0.0.1:1", "127.0.0.1:2"]
workers = 2 # trailing "comment"

[[routes]]
path_prefix = "/"
upstream = "a"

[[routes]]
host = "x.example"
upstream = 'b'

[upstreams.app]
backends = [
  { addr = "127.0.0.1:9001" },
  { addr = "127.0.0.1:99999", weight = 2 },
]
"quoted.name" = { a = [1, [2, 3]] }
"#;

    #[test]
    fn key_paths_at_values_keys_and_headers() {
        let cases = [
            ("\"127.0.0.1:2\"", "server.listen[1]"),
            ("workers", "server.workers"),
            ("2 #", "server.workers"),
            ("[[routes]]\npath", "routes[0]"),
            ("path_prefix", "routes[0].path_prefix"),
            ("'b'", "routes[1].upstream"),
            ("host", "routes[1].host"),
            ("[upstreams.app]", "upstreams.app"),
            ("app]", "upstreams.app"),
            ("\"127.0.0.1:99999\"", "upstreams.app.backends[1].addr"),
            ("weight", "upstreams.app.backends[1].weight"),
            ("{ addr = \"127.0.0.1:99999\"", "upstreams.app.backends[1]"),
            ("3]", "upstreams.app.\"quoted.name\".a[1][1]"),
        ];
        for (needle, want) in cases {
            assert_eq!(path_of(DOC, needle), want, "at {needle:?}");
        }
    }

    #[test]
    fn line_col_counts_from_one_in_chars() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(src, 0), Location { line: 1, column: 1 });
        assert_eq!(
            line_col(src, src.find('=').unwrap()),
            Location { line: 1, column: 3 }
        );
        // "bé = " is 5 chars but 6 bytes.
        assert_eq!(
            line_col(src, src.find('"').unwrap()),
            Location { line: 2, column: 6 }
        );
        assert_eq!(line_col(src, 10_000).line, 3);
    }

    #[test]
    fn never_panics_on_garbage() {
        let src = "[a.\"b\n x = [{ 'y\n]]} = = ,, \"\"\"unterminated";
        for offset in 0..=src.len() + 2 {
            let _ = key_path_at(src, offset);
            let _ = line_col(src, offset);
        }
    }
}
