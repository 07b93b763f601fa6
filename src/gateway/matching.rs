//! Extra route conditions: `methods`, `headers` and `path_regex`.
//!
//! Why: routing by host and prefix alone cannot send `POST /api` to one
//! upstream and `GET /api` to another, or canary traffic by a header.
//!
//! Invariants: patterns are compiled once, at config load, with a bounded
//! compiled size; matching does not allocate. All conditions of a route
//! must hold (AND); a `headers` entry holds when any field with that name
//! passes its test.

use crate::http::Headers;

/// Compiled-size bound of one pattern, so a config cannot make a huge
/// automaton (the crate's default is 10 MiB).
const MAX_PATTERN_BYTES: usize = 1 << 20;

/// A regular expression with the text it came from; equal when the texts
/// are (so configs compare).
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: regex::bytes::Regex,
}

impl Pattern {
    /// Compiles `source` (Rust `regex` syntax, unanchored unless it says
    /// `^`/`$`); the error text says what is wrong.
    pub fn new(source: &str) -> Result<Pattern, String> {
        regex::bytes::RegexBuilder::new(source)
            .size_limit(MAX_PATTERN_BYTES)
            .build()
            .map(|regex| Pattern {
                source: source.to_owned(),
                regex,
            })
            .map_err(|e| e.to_string().replace('\n', " "))
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &[u8]) -> bool {
        self.regex.is_match(text)
    }

    pub fn regex(&self) -> &regex::bytes::Regex {
        &self.regex
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

/// What a `headers` entry asks of a field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    /// `{ name = "X" }`: the field is there, any value.
    Present,
    /// `{ name = "X", value = "v" }`: byte-equal value (after OWS trim).
    Exact(String),
    /// `{ name = "X", regex = "..." }`: the pattern matches the value.
    Regex(Pattern),
}

/// One `headers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    /// Compared ASCII case-insensitively.
    pub name: String,
    pub test: HeaderTest,
}

impl HeaderCondition {
    fn holds(&self, headers: Headers<'_>) -> bool {
        headers
            .filter(|(name, _)| name.eq_ignore_ascii_case(&self.name))
            .any(|(_, value)| match &self.test {
                HeaderTest::Present => true,
                HeaderTest::Exact(want) => value == want.as_bytes(),
                HeaderTest::Regex(p) => p.is_match(value),
            })
    }
}

/// A route's extra conditions; every one must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// `methods`: exact, case-sensitive method tokens (RFC 9110 §9.1);
    /// empty means any.
    pub methods: Vec<String>,
    /// `headers`: all must hold.
    pub headers: Vec<HeaderCondition>,
    /// `path_regex`: matched against the path before `?`.
    pub path_regex: Option<Pattern>,
}

impl RouteMatch {
    /// Whether a request with `method`, `path` (before `?`) and fields
    /// `headers` passes every condition.
    pub fn matches(&self, method: &str, path: &[u8], headers: &Headers<'_>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.path_regex.as_ref().is_none_or(|p| p.is_match(path))
            && self.headers.iter().all(|c| c.holds(headers.clone()))
    }

    /// Whether no condition is set (such a route needs no `RouteMatch`).
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.headers.is_empty() && self.path_regex.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, Limits, Status};

    fn head_of(raw: &[u8]) -> crate::http::RequestHead<'_> {
        match parse_request(raw, &Limits::default()).unwrap() {
            Status::Complete(h) => h,
            Status::Partial => panic!("partial"),
        }
    }

    fn check(m: &RouteMatch, raw: &[u8]) -> bool {
        let head = head_of(raw);
        let path = head.path().split_once('?').map_or(head.path(), |(p, _)| p);
        m.matches(head.method(), path.as_bytes(), &head.headers())
    }

    #[test]
    fn empty_match_accepts_everything() {
        let m = RouteMatch::default();
        assert!(m.is_empty());
        assert!(check(&m, b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn methods_are_exact_and_case_sensitive() {
        let m = RouteMatch {
            methods: vec!["GET".into(), "HEAD".into()],
            ..RouteMatch::default()
        };
        assert!(check(&m, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(check(&m, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!check(&m, b"POST / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!check(&m, b"get / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn header_present_exact_and_regex() {
        let m = RouteMatch {
            headers: vec![
                HeaderCondition {
                    name: "X-Canary".into(),
                    test: HeaderTest::Present,
                },
                HeaderCondition {
                    name: "x-env".into(),
                    test: HeaderTest::Exact("blue".into()),
                },
                HeaderCondition {
                    name: "X-Version".into(),
                    test: HeaderTest::Regex(Pattern::new("^v[0-9]+$").unwrap()),
                },
            ],
            ..RouteMatch::default()
        };
        let all =
            b"GET / HTTP/1.1\r\nHost: a\r\nx-canary:\r\nX-Env:  blue \r\nX-Version: v2\r\n\r\n";
        assert!(check(&m, all));
        // A second field of the same name can satisfy the test.
        let second = b"GET / HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\nX-Env: green\r\nX-Env: blue\r\nX-Version: v10\r\n\r\n";
        assert!(check(&m, second));
        let no_canary = b"GET / HTTP/1.1\r\nHost: a\r\nX-Env: blue\r\nX-Version: v2\r\n\r\n";
        assert!(!check(&m, no_canary));
        let wrong_case_value =
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\nX-Env: Blue\r\nX-Version: v2\r\n\r\n";
        assert!(!check(&m, wrong_case_value));
        let bad_version =
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\nX-Env: blue\r\nX-Version: v2b\r\n\r\n";
        assert!(!check(&m, bad_version));
    }

    #[test]
    fn path_regex_sees_the_path_without_query() {
        let m = RouteMatch {
            path_regex: Some(Pattern::new(r"^/users/[0-9]+$").unwrap()),
            ..RouteMatch::default()
        };
        assert!(check(&m, b"GET /users/42 HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(check(&m, b"GET /users/42?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!check(&m, b"GET /users/abc HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!check(&m, b"GET /users/42/x HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn bad_and_oversized_patterns_are_refused() {
        assert!(Pattern::new("(").is_err());
        // Far over the compiled-size bound.
        assert!(Pattern::new(r"\w{1000}\w{1000}\w{1000}").is_err());
        assert_eq!(Pattern::new("a+").unwrap(), Pattern::new("a+").unwrap());
    }
}
