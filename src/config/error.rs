//! The one error type of config loading.
//!
//! Why: an operator who mistypes a key should be told the file, the line and
//! column, and the key path, in one line they can paste into an editor:
//! `config.toml:12:9: upstreams.app.backends[1].addr: invalid socket address "127.0.0.1:99999"`.
//!
//! Invariants: `location` is `None` only when the problem has no place in the
//! file (an IO error, or a required section that is absent altogether);
//! `key` is empty only for IO errors and whole-file syntax errors with no
//! enclosing key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A 1-based line and column (in characters) in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Why a config file was rejected, with where. Boxed: it is returned
/// through every resolver function and should stay one pointer wide.
#[derive(Debug)]
pub struct ConfigError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    file: PathBuf,
    location: Option<Location>,
    key: String,
    kind: ConfigErrorKind,
}

/// What was wrong. Each variant is one kind of mistake an operator can make.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not valid TOML.
    Syntax(String),
    /// A key that the schema does not have (`deny_unknown_fields`).
    UnknownKey(String),
    /// A required key is absent.
    MissingKey(String),
    /// A value of the wrong type or shape: not a number, a bad duration, an
    /// unknown strategy.
    InvalidValue(String),
    /// Not an `ip:port` socket address (or, for backends, `localhost:port`).
    InvalidAddress { value: String },
    /// `localhost:port` did not resolve.
    Unresolvable { value: String, reason: String },
    /// Port 0 where a real port is needed (a backend).
    ZeroPort { value: String },
    /// The same address twice in one list.
    DuplicateAddress { addr: SocketAddr },
    /// A number outside its allowed range.
    OutOfRange { value: u64, min: u64, max: u64 },
    /// A timeout of zero, which would fail every operation.
    ZeroDuration,
    /// `server.listen` is empty.
    NoListen,
    /// No `[upstreams.NAME]` table.
    NoUpstreams,
    /// An upstream with `backends = []`.
    EmptyBackends,
    /// No `[[routes]]`.
    NoRoutes,
    /// A route names an upstream that is not defined.
    UnknownUpstream { name: String, known: Vec<String> },
    /// `path_prefix` does not start with `/`, or holds `?`, whitespace or a control character.
    InvalidPathPrefix { value: String },
    /// `host` is not a host name, `*.suffix` or bracketed IPv6 literal, or has a port.
    InvalidHost { value: String },
    /// A route with the same host and path prefix as an earlier one; it could never match.
    DuplicateRoute { first: usize },
    /// A certificate, key or CA file that cannot be read, parsed or used
    /// (the message names the file).
    Tls(crate::tls::TlsError),
    /// `tls_server_name` is not a DNS name or IP address.
    InvalidServerName { value: String, reason: String },
    /// `tls_ca` or `tls_server_name` on an upstream without `tls = true`,
    /// or `tls = true` without `tls_ca`.
    TlsKeys(String),
}

impl ConfigError {
    pub(crate) fn new(
        file: &Path,
        location: Option<Location>,
        key: impl Into<String>,
        kind: ConfigErrorKind,
    ) -> Self {
        ConfigError(Box::new(Inner {
            file: file.to_path_buf(),
            location,
            key: key.into(),
            kind,
        }))
    }

    /// The config file, as the path it was loaded from.
    pub fn file(&self) -> &Path {
        &self.0.file
    }

    /// Where in the file, if the problem has a place.
    pub fn location(&self) -> Option<Location> {
        self.0.location
    }

    /// The dotted key path, e.g. `upstreams.app.backends[1].addr`.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    pub fn kind(&self) -> &ConfigErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner {
            file,
            location,
            key,
            kind,
        } = &*self.0;
        write!(f, "{}", file.display())?;
        if let Some(Location { line, column }) = location {
            write!(f, ":{line}:{column}")?;
        }
        if !key.is_empty() {
            write!(f, ": {key}")?;
        }
        write!(f, ": {kind}")
    }
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigErrorKind::*;
        match self {
            Io(e) => write!(f, "cannot read config file: {e}"),
            Syntax(msg) => write!(f, "TOML syntax error: {msg}"),
            UnknownKey(msg) | MissingKey(msg) | InvalidValue(msg) => f.write_str(msg),
            InvalidAddress { value } => write!(f, "invalid socket address {value:?}"),
            Unresolvable { value, reason } => write!(f, "cannot resolve {value:?}: {reason}"),
            ZeroPort { value } => write!(f, "invalid socket address {value:?}: port 0"),
            DuplicateAddress { addr } => write!(f, "duplicate address {addr}"),
            OutOfRange { value, min, max } => {
                write!(f, "{value} is out of range, expected {min}..={max}")
            }
            ZeroDuration => f.write_str("duration must be greater than zero"),
            NoListen => f.write_str("no listen address (need at least one \"ip:port\")"),
            NoUpstreams => f.write_str("no upstreams (need at least one [upstreams.NAME] table)"),
            EmptyBackends => f.write_str("empty backend list (need at least one { addr = \"ip:port\" })"),
            NoRoutes => f.write_str("no routes (need at least one [[routes]] table)"),
            UnknownUpstream { name, known } => {
                write!(f, "upstream {name:?} is not defined (defined: {})", known.join(", "))
            }
            InvalidPathPrefix { value } => write!(
                f,
                "invalid path_prefix {value:?}: must start with \"/\" and hold no '?', whitespace or control characters"
            ),
            InvalidHost { value } => write!(
                f,
                "invalid host {value:?}: expected a host name without port, \"*.example.com\", or \"[ipv6]\""
            ),
            DuplicateRoute { first } => write!(
                f,
                "same host, path_prefix and conditions as routes[{first}], so this route could never match"
            ),
            Tls(e) => write!(f, "{e}"),
            InvalidServerName { value, reason } => {
                write!(f, "invalid TLS server name {value:?}: {reason}")
            }
            TlsKeys(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.kind {
            ConfigErrorKind::Io(e) => Some(e),
            ConfigErrorKind::Tls(e) => Some(e),
            _ => None,
        }
    }
}
