//! The config file: TOML in, a checked and resolved [`Config`] out.
//!
//! Why: the proxy must never meet a nonsensical setting at request time. The
//! file is parsed once (`raw.rs`, serde, `deny_unknown_fields` everywhere) and
//! resolved once (`resolve.rs`: defaults, ranges, addresses, upstream
//! references) into the types below, which the rest of the crate trusts.
//! Reload builds a new `Config` the same way and swaps it whole.
//!
//! Invariants of a `Config` (the only constructor is [`Config::from_toml_str`]
//! / [`Config::load`]; the structs are `#[non_exhaustive]` so code outside the
//! crate cannot build one by hand):
//! - at least one listen address, no duplicates;
//! - at least one upstream; each has at least one backend, no duplicate
//!   backend addresses, weights in [`WEIGHT_RANGE`];
//! - at least one route; each `RouteConfig::upstream` is a valid index into
//!   `Config::upstreams`; no two routes share host and path prefix;
//! - every number is inside its documented range and every timeout is
//!   greater than zero.
//!
//! Errors name the file, line:column and key path; see [`ConfigError`].

mod error;
mod locate;
mod raw;
mod resolve;
#[cfg(test)]
mod tests;

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::tls::{CertKeyPaths, TlsListenConfig};
pub use error::{ConfigError, ConfigErrorKind, Location};

/// Allowed `server.workers`.
pub const WORKERS_RANGE: RangeInclusive<u64> = 1..=1024;
/// Default `server.backlog`.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Allowed `server.backlog` (the kernel further caps it at `somaxconn`).
pub const BACKLOG_RANGE: RangeInclusive<u64> = 1..=65_535;
/// Default `server.max_connections` (per worker).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Allowed `server.max_connections`.
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// Default `server.max_head_bytes`.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// Allowed `server.max_head_bytes`: 1 KiB to 1 MiB.
pub const MAX_HEAD_BYTES_RANGE: RangeInclusive<u64> = 1024..=1024 * 1024;
/// Default `server.max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Allowed `server.max_headers`.
pub const MAX_HEADERS_RANGE: RangeInclusive<u64> = 1..=256;
/// Default `server.buffer_size`.
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;
/// Allowed `server.buffer_size`: 4 KiB to 1 MiB.
pub const BUFFER_SIZE_RANGE: RangeInclusive<u64> = 4096..=1024 * 1024;
/// Default `server.max_request_body`: 1 GiB.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 1024 * 1024 * 1024;
/// Default `server.head_timeout`.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `server.keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.tunnel_timeout`.
pub const DEFAULT_TUNNEL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `server.send_timeout`.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `upstreams.NAME.connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default `upstreams.NAME.response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `upstreams.NAME.max_idle`.
pub const DEFAULT_MAX_IDLE: usize = 32;
/// Allowed `upstreams.NAME.max_idle`.
pub const MAX_IDLE_RANGE: RangeInclusive<u64> = 0..=100_000;
/// Default `upstreams.NAME.idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default backend `weight`.
pub const DEFAULT_WEIGHT: u16 = 1;
/// Allowed backend `weight`.
pub const WEIGHT_RANGE: RangeInclusive<u64> = 1..=1000;

/// A checked, resolved config file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// `[server]`: listeners, workers, limits and client-side timeouts.
    pub server: ServerConfig,
    /// `[upstreams.NAME]`, sorted by name; the index is the upstream id used
    /// by [`RouteConfig::upstream`].
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[admin]`: the admin HTTP listener; `None` when the section is absent.
    pub admin: Option<AdminConfig>,
    /// The file this was loaded from (for messages and reload).
    pub source_path: PathBuf,
}

/// `[admin]`: metrics, status and backend control over HTTP, on its own
/// listener, never on a public one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminConfig {
    /// `listen`: required, `"ip:port"`. Bind it to loopback or a private
    /// address: the endpoints have no authentication.
    pub listen: SocketAddr,
}

/// `server.access_log = { path = "...", format = "combined" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessLogConfig {
    /// `path`: required; appended to, created if absent. Relative paths
    /// are resolved against the config file's directory.
    pub path: PathBuf,
    /// `format`: `"combined"` (the default) or `"json"`.
    pub format: AccessLogFormat,
}

/// `server.access_log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// The Apache/nginx combined format, followed by the duration, the
    /// backend, the attempts and the request id.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `listen`: required, non-empty list of `"ip:port"` strings or
    /// `{ addr = "ip:port", tls = { ... } }` tables (see [`ListenConfig`]).
    /// Port 0 asks the kernel for a free port. No duplicates.
    pub listen: Vec<ListenConfig>,
    /// `workers`: worker threads, one event loop each. Default: the number of
    /// available cores (`std::thread::available_parallelism`), capped at
    /// 1024. Range 1..=1024.
    pub workers: NonZeroUsize,
    /// `pin_workers`: pin worker N to core N. Default `false`.
    pub pin_workers: bool,
    /// `backlog`: listen(2) backlog per listener socket. Default 1024, range 1..=65535.
    pub backlog: NonZeroU32,
    /// `max_connections`: open client connections per worker; further
    /// accepts wait. Default 10000, range 1..=1000000.
    pub max_connections: NonZeroUsize,
    /// `max_head_bytes`: largest request or response head (start line and
    /// headers). Default 16384, range 1024..=1048576.
    pub max_head_bytes: usize,
    /// `max_headers`: most header fields in one head. Default 100, range 1..=256.
    pub max_headers: NonZeroUsize,
    /// `buffer_size`: relay buffer per direction per connection, in bytes.
    /// Default 16384, range 4096..=1048576.
    pub buffer_size: usize,
    /// `max_request_body`: largest request body in bytes; `None` (written as
    /// `0`) means unlimited. Default 1073741824 (1 GiB).
    pub max_request_body: Option<NonZeroU64>,
    /// `head_timeout`: time to read a whole request head from the client
    /// (slowloris defence). Default `"10s"`.
    pub head_timeout: Duration,
    /// `keepalive_timeout`: how long a client connection may sit idle
    /// between requests. Default `"60s"`.
    pub keepalive_timeout: Duration,
    /// `body_timeout`: longest idle gap between body bytes, in either
    /// direction. Default `"60s"`.
    pub body_timeout: Duration,
    /// `tunnel_timeout`: longest idle time of an upgraded (101) tunnel.
    /// Default `"1h"`.
    pub tunnel_timeout: Duration,
    /// `send_timeout`: a write to the client must make progress within this.
    /// Default `"60s"`.
    pub send_timeout: Duration,
    /// `access_log`: `{ path = "...", format = "combined" | "json" }`.
    /// Absent: no access log.
    pub access_log: Option<AccessLogConfig>,
}

/// One `server.listen` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenConfig {
    /// The address to bind, `"ip:port"`.
    pub addr: SocketAddr,
    /// `tls = { cert = "a.pem", key = "a.key", sni = [{ cert, key }, ...] }`:
    /// terminate TLS here. `cert`/`key` is the default certificate; each
    /// `sni` entry is served to clients whose SNI matches one of its DNS
    /// subject alternative names. Relative paths are resolved against the
    /// config file's directory. Every file is loaded and checked (PEM,
    /// key matches certificate) when the config is loaded. `None`: plain
    /// HTTP.
    pub tls: Option<TlsListenConfig>,
}

/// `[upstreams.NAME]`: a named group of backends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// The table name, `NAME` in `[upstreams.NAME]`.
    pub name: String,
    /// `backends`: required, non-empty list of `{ addr = "ip:port", weight = 1 }`.
    /// `addr` is a socket address; `"localhost:port"` is also accepted and
    /// resolved once at load time (IPv4 preferred). No duplicate addresses.
    pub backends: Vec<BackendConfig>,
    /// `strategy`: how backends are picked. Default `"round_robin"`.
    pub strategy: Strategy,
    /// `connect_timeout`: TCP connect to a backend. Default `"3s"`.
    pub connect_timeout: Duration,
    /// `response_timeout`: time for a backend to send its whole response
    /// head after the request was sent. Default `"60s"`.
    pub response_timeout: Duration,
    /// `max_idle`: idle keep-alive connections pooled per backend per worker;
    /// 0 disables pooling. Default 32, range 0..=100000.
    pub max_idle: usize,
    /// `idle_timeout`: a pooled connection idle longer is closed. Default `"30s"`.
    pub idle_timeout: Duration,
    /// `tls = true`: speak TLS to the backends, trusting only `tls_ca`
    /// (required then, a PEM file of CA certificates) and checking the
    /// name `tls_server_name` (default: each backend's IP address). `None`:
    /// plain HTTP (`tls_ca`/`tls_server_name` without `tls = true` is an
    /// error).
    pub tls: Option<UpstreamTlsConfig>,
}

/// TLS to an upstream's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamTlsConfig {
    /// `tls_ca`: PEM file of trusted CA certificates (resolved path).
    pub ca: PathBuf,
    /// `tls_server_name`: the SNI and certificate name to check; `None`
    /// means the backend's IP address. Build with [`crate::tls::server_name`].
    pub server_name: Option<String>,
}

/// One backend of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendConfig {
    /// `addr`: where to connect.
    pub addr: SocketAddr,
    /// `weight`: relative share for weighted strategies. Default 1, range
    /// 1..=1000. `round_robin` ignores it; `weighted_round_robin` uses it.
    pub weight: NonZeroU16,
    /// `down`: marks the backend permanently unavailable, as nginx's
    /// `server ... down`: it stays in the list (so a hash keeps its place)
    /// but gets no requests. Default false.
    pub down: bool,
}

/// `strategy` of an upstream. Unknown names are rejected, listing these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// `"round_robin"`: each worker cycles through the backends in order,
    /// starting at a different backend per worker. The default.
    #[default]
    RoundRobin,
    /// `"weighted_round_robin"`: smooth weighted round robin (nginx's):
    /// each backend gets `weight` picks per cycle, interleaved.
    WeightedRoundRobin,
}

impl Strategy {
    /// The name as written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
        }
    }
}

/// `[[routes]]`: which upstream serves which host and path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteConfig {
    /// `path_prefix`: matched as a plain byte prefix of the request path
    /// (before `?`), like nginx `location /api` (so `/api` also matches
    /// `/apix`; write `/api/` to stop at the segment). Must start with `/`.
    /// Default `"/"`.
    pub path_prefix: String,
    /// `host`: optional. Exact host name, compared case-insensitively with
    /// the request's `Host` minus its port; or `"*.example.com"`, which
    /// matches any name ending in `.example.com` (not `example.com` itself).
    /// Absent: any host.
    pub host: Option<HostPattern>,
    /// `upstream`: required, the name of an `[upstreams.NAME]` table,
    /// resolved to its index in [`Config::upstreams`].
    pub upstream: usize,
}

/// A checked route `host`, lowercased, without port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `example.com` or `[::1]`: equal, ignoring ASCII case.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Suffix(String),
}

impl HostPattern {
    /// Whether `host` (a request host without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Suffix(suffix) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl Config {
    /// Parses and checks `src`; `path` is used only in error messages and
    /// kept as [`Config::source_path`].
    pub fn from_toml_str(src: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig =
            toml::from_str(src).map_err(|e| resolve::from_toml_error(src, path, &e))?;
        resolve::resolve(raw, src, path)
    }

    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, "", ConfigErrorKind::Io(e)))?;
        Config::from_toml_str(&src, path)
    }

    /// A human summary for `ringlb check`: listeners, workers, upstreams
    /// with backends and weights, routes.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let s = &self.server;
        // Writing to a String cannot fail.
        let _ = writeln!(out, "config: {}", self.source_path.display());
        let listen: Vec<String> = s
            .listen
            .iter()
            .map(|l| match &l.tls {
                None => l.addr.to_string(),
                Some(tls) => format!("{} (tls, {} certificates)", l.addr, 1 + tls.sni.len()),
            })
            .collect();
        let _ = writeln!(out, "listen: {}", listen.join(", "));
        let _ = writeln!(
            out,
            "workers: {}{}",
            s.workers,
            if s.pin_workers { " (pinned)" } else { "" }
        );
        let _ = writeln!(out, "upstreams:");
        for u in &self.upstreams {
            let tls = if u.tls.is_some() { ", tls" } else { "" };
            let _ = writeln!(out, "  {} ({}{tls}):", u.name, u.strategy.name());
            for b in &u.backends {
                let down = if b.down { " (down)" } else { "" };
                let _ = writeln!(out, "    {} weight {}{down}", b.addr, b.weight);
            }
        }
        let _ = writeln!(out, "routes:");
        for r in &self.routes {
            let host = r.host.as_ref().map_or("*".to_owned(), |h| h.to_string());
            let upstream = &self.upstreams[r.upstream].name;
            let _ = writeln!(out, "  host {host} path {} -> {upstream}", r.path_prefix);
        }
        if let Some(log) = &s.access_log {
            let format = match log.format {
                AccessLogFormat::Combined => "combined",
                AccessLogFormat::Json => "json",
            };
            let _ = writeln!(out, "access log: {} ({format})", log.path.display());
        }
        if let Some(admin) = &self.admin {
            let _ = writeln!(out, "admin: {}", admin.listen);
        }
        out
    }
}
