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

/// Variables a request or response header value may use. `backend` is
/// known only once an attempt chose a backend: request fields that use it
/// are written per attempt ([`BackendFields`]).
pub const HEADER_VARIABLES: [&str; 8] = [
    "client_ip",
    "client_port",
    "request_id",
    "host",
    "scheme",
    "upstream",
    "backend",
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
        Template::parse_text(text, variables)
    }

    fn parse_text(text: &str, variables: &[&str]) -> Result<Template, String> {
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

    /// Parses a reply body (an error page): as [`Template::parse`], but
    /// any byte is allowed, as a body has no framing of its own.
    pub fn parse_body(text: &str, variables: &[&str]) -> Result<Template, String> {
        Template::parse_text(text, variables)
    }

    /// Whether the value uses `$name`.
    pub fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if v == name))
    }

    /// The value as text pieces around each `$split`, other variables
    /// expanded by `var` (so the pieces join with the value of `$split`
    /// once it is known).
    pub fn pieces_around(&self, split: &str, var: &dyn Fn(&str, &mut Vec<u8>)) -> Vec<Vec<u8>> {
        let mut pieces = vec![Vec::new()];
        for part in &self.parts {
            match part {
                Part::Var(name) if name == split => pieces.push(Vec::new()),
                Part::Var(name) => var(name, pieces.last_mut().expect("never empty")),
                Part::Text(t) => pieces
                    .last_mut()
                    .expect("never empty")
                    .extend_from_slice(t.as_bytes()),
            }
        }
        pieces
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
        self.apply_deferring(head, var, None);
    }

    /// Whether an edit's value uses `$backend`.
    pub fn uses_backend(&self) -> bool {
        self.set
            .iter()
            .chain(&self.add)
            .any(|(_, v)| v.uses("backend"))
    }

    /// As [`HeaderEdits::apply`], but with `deferred` given, a `set` or
    /// `add` whose value uses `$backend` is not written: it goes to
    /// `deferred`, for each attempt to write with its backend (a `set`
    /// still removes the client's fields of that name here).
    pub fn apply_deferring(
        &self,
        head: &mut Vec<u8>,
        var: &dyn Fn(&str, &mut Vec<u8>),
        mut deferred: Option<&mut BackendFields>,
    ) {
        let mut out = self.kept_fields(head);
        for (name, value) in self.set.iter().chain(&self.add) {
            if let Some(deferred) = deferred.as_deref_mut() {
                if value.uses("backend") {
                    deferred
                        .fields
                        .push((name.clone(), value.pieces_around("backend", var)));
                    continue;
                }
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            value.expand_into(var, &mut out);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        *head = out;
    }
}

impl HeaderEdits {
    /// The `set` and `add` values with every variable but `$backend`
    /// expanded (a response's edits are rendered when the request is
    /// routed, and finished by [`HeaderEdits::apply_rendered`]).
    pub fn render(&self, var: &dyn Fn(&str, &mut Vec<u8>)) -> BackendFields {
        BackendFields {
            host: false,
            fields: self
                .set
                .iter()
                .chain(&self.add)
                .map(|(name, value)| (name.clone(), value.pieces_around("backend", var)))
                .collect(),
        }
    }

    /// Applies the edits to a written head as [`HeaderEdits::apply`]
    /// does, with the values `render` made and `backend` for `$backend`.
    pub fn apply_rendered(
        &self,
        head: &mut Vec<u8>,
        rendered: &BackendFields,
        backend: std::net::SocketAddr,
    ) {
        let mut out = self.kept_fields(head);
        rendered.write(backend, &mut out);
        out.extend_from_slice(b"\r\n");
        *head = out;
    }

    /// The start line and the fields of `head` that neither `remove` nor
    /// `set` name, without the final CRLF.
    fn kept_fields(&self, head: &[u8]) -> Vec<u8> {
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
        out
    }
}

/// Fields of a forwarded head that name the backend an attempt goes to:
/// its address as `Host` (`host_rewrite = "backend"`, or a request without
/// `Host`) and `request_headers` values that use `$backend`. Written right
/// after the request line, and replaced on each attempt, so a retry on
/// another backend carries that backend's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendFields {
    /// Send `Host: <backend ip:port>`.
    pub host: bool,
    /// Name and the value's pieces around each `$backend`.
    pub fields: Vec<(String, Vec<Vec<u8>>)>,
}

impl BackendFields {
    /// Appends the field lines for an attempt on `backend`.
    pub fn write(&self, backend: std::net::SocketAddr, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        if self.host {
            let _ = write!(out, "Host: {backend}\r\n");
        }
        for (name, pieces) in &self.fields {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    let _ = write!(out, "{backend}");
                }
                out.extend_from_slice(piece);
            }
            out.extend_from_slice(b"\r\n");
        }
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
        let t = Template::parse("ip=$client_ip;r=$route $ 5$", &HEADER_VARIABLES).unwrap();
        let mut out = Vec::new();
        t.expand_into(&vars, &mut out);
        assert_eq!(out, b"ip=127.0.0.9;r=3 $ 5$");
        assert!(Template::parse("$backends", &HEADER_VARIABLES)
            .unwrap_err()
            .contains("unknown variable $backends"));
        assert!(Template::parse("a\r\nX-Evil: 1", &HEADER_VARIABLES).is_err());
    }

    fn edits(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderEdits {
        let t = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        Template::parse(v, &HEADER_VARIABLES).unwrap(),
                    )
                })
                .collect()
        };
        HeaderEdits {
            remove: remove.iter().map(|n| n.to_string()).collect(),
            set: t(set),
            add: t(add),
        }
    }

    /// `$backend` values wait for the attempt; every other edit is made
    /// at once, and a `set` still drops the client's field.
    #[test]
    fn backend_values_are_deferred_to_each_attempt() {
        let e = edits(
            &[
                ("X-Served-By", "$backend via r$route"),
                ("X-Route", "$route"),
            ],
            &[("X-Both", "$client_ip>$backend<$backend")],
            &[],
        );
        assert!(e.uses_backend());
        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Served-By: client\r\n\r\n".to_vec();
        let mut deferred = BackendFields::default();
        e.apply_deferring(&mut head, &vars, Some(&mut deferred));
        assert_eq!(
            String::from_utf8(head.clone()).unwrap(),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Route: 3\r\n\r\n"
        );
        for (addr, want) in [
            (
                "10.0.0.1:80",
                "X-Served-By: 10.0.0.1:80 via r3\r\nX-Both: 127.0.0.9>10.0.0.1:80<10.0.0.1:80\r\n",
            ),
            (
                "[::1]:9",
                "X-Served-By: [::1]:9 via r3\r\nX-Both: 127.0.0.9>[::1]:9<[::1]:9\r\n",
            ),
        ] {
            let mut out = Vec::new();
            deferred.write(addr.parse().unwrap(), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        let host_too = BackendFields {
            host: true,
            fields: Vec::new(),
        };
        let mut out = Vec::new();
        host_too.write("127.0.0.1:1".parse().unwrap(), &mut out);
        assert_eq!(out, b"Host: 127.0.0.1:1\r\n");
    }

    /// Response edits: rendered at routing, finished with the backend.
    #[test]
    fn response_edits_render_then_apply_with_the_backend() {
        let e = edits(
            &[("Server", "ringlb"), ("X-Served-By", "$backend")],
            &[("X-Route", "r$route")],
            &["X-Powered-By"],
        );
        let rendered = e.render(&vars);
        let mut head =
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Powered-By: php\r\nContent-Length: 2\r\n\r\n"
                .to_vec();
        e.apply_rendered(&mut head, &rendered, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: ringlb\r\nX-Served-By: 127.0.0.2:8080\r\nX-Route: r3\r\n\r\n"
        );
    }

    #[test]
    fn remove_then_set_then_add() {
        let edits = HeaderEdits {
            remove: vec!["x-secret".into()],
            set: vec![(
                "X-Route".into(),
                Template::parse("$route", &HEADER_VARIABLES).unwrap(),
            )],
            add: vec![(
                "X-Tag".into(),
                Template::parse("a", &HEADER_VARIABLES).unwrap(),
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
