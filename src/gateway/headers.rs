//! `request_headers = { set, add, remove }`: field edits on the head sent
//! to the backend, with variables in the values.
//!
//! Why: backends want to know things the client did not say (the client's
//! address, the route, the request id) and should not see some fields the
//! client sent (nginx `proxy_set_header`, HAProxy `http-request set-header`).
//!
//! Order: `remove`, then `set` (which removes the field and adds it once),
//! then `add`; the edits apply to the head as written for the backend, so
//! they also see (and may remove) the `X-Forwarded-*` fields the proxy
//! adds. Framing and hop-by-hop fields (`FORBIDDEN`) are config errors.
//!
//! Invariants: names are tokens and values hold no CR, LF or other control
//! byte (checked at load), so an edit cannot split or smuggle a field.

/// Fields that carry framing, hop-by-hop meaning or routing; changing them
/// from config would break the exchange (`Host`: use `host_rewrite`).
pub const FORBIDDEN: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "host",
];

/// Variables a request header value may use.
pub const REQUEST_VARIABLES: [&str; 7] = [
    "client_ip",
    "client_port",
    "request_id",
    "host",
    "scheme",
    "upstream",
    "route",
];

/// One value: literal text and `$name` variables, split at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

impl Template {
    /// Parses `text`; `$name` must be one of `variables` (a `$` not
    /// followed by a letter is literal). `Err` names the problem.
    pub fn parse(text: &str, variables: &[&str]) -> Result<Template, String> {
        if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!("{text:?} holds a control character"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            let after = &rest[at + 1..];
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                .count();
            if len == 0 {
                parts.push(Part::Text(rest[..=at].to_owned()));
                rest = after;
                continue;
            }
            let name = &after[..len];
            if !variables.contains(&name) {
                return Err(format!(
                    "unknown variable ${name} (known: ${})",
                    variables.join(", $")
                ));
            }
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            parts.push(Part::Var(name.to_owned()));
            rest = &after[len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Appends the value, with each variable's text from `var`.
    pub fn expand_into(&self, var: &dyn Fn(&str, &mut Vec<u8>), out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Var(name) => var(name, out),
            }
        }
    }
}

/// A route's `request_headers`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    pub remove: Vec<String>,
    pub set: Vec<(String, Template)>,
    pub add: Vec<(String, Template)>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the edits to a written head (start line, fields, final
    /// CRLF); `var` gives each variable's text.
    pub fn apply(&self, head: &mut Vec<u8>, var: &dyn Fn(&str, &mut Vec<u8>)) {
        let dropped = |name: &[u8]| {
            self.remove
                .iter()
                .chain(self.set.iter().map(|(n, _)| n))
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
        };
        let mut out = Vec::with_capacity(head.len() + 128);
        let mut lines = head.split_inclusive(|&b| b == b'\n');
        if let Some(start) = lines.next() {
            out.extend_from_slice(start);
        }
        for line in lines {
            if line == b"\r\n" {
                break;
            }
            let name = &line[..line.iter().position(|&b| b == b':').unwrap_or(0)];
            if !dropped(name) {
                out.extend_from_slice(line);
            }
        }
        for (name, value) in self.set.iter().chain(&self.add) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            value.expand_into(var, &mut out);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        *head = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(match name {
            "client_ip" => b"127.0.0.9",
            "route" => b"3",
            _ => b"?",
        })
    }

    #[test]
    fn templates_split_text_and_variables() {
        let t = Template::parse("ip=$client_ip;r=$route $ 5$", &REQUEST_VARIABLES).unwrap();
        let mut out = Vec::new();
        t.expand_into(&vars, &mut out);
        assert_eq!(out, b"ip=127.0.0.9;r=3 $ 5$");
        assert!(Template::parse("$backend", &REQUEST_VARIABLES)
            .unwrap_err()
            .contains("unknown variable $backend"));
        assert!(Template::parse("a\r\nX-Evil: 1", &REQUEST_VARIABLES).is_err());
    }

    #[test]
    fn remove_then_set_then_add() {
        let edits = HeaderEdits {
            remove: vec!["x-secret".into()],
            set: vec![(
                "X-Route".into(),
                Template::parse("$route", &REQUEST_VARIABLES).unwrap(),
            )],
            add: vec![(
                "X-Tag".into(),
                Template::parse("a", &REQUEST_VARIABLES).unwrap(),
            )],
        };
        let mut head =
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Secret: s\r\nx-route: client\r\nX-Tag: b\r\n\r\n"
                .to_vec();
        edits.apply(&mut head, &vars);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Tag: b\r\nX-Route: 3\r\nX-Tag: a\r\n\r\n"
        );
    }
}
