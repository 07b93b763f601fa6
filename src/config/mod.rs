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
//! - at least one upstream; each has at least one backend (or `discovery`,
//!   whose set may be empty only with `allow_empty`), no duplicate backend
//!   addresses, weights in [`WEIGHT_RANGE`];
//! - at least one route; each `RouteConfig::upstream` is a valid index into
//!   `Config::upstreams`; no two routes share host and path prefix;
//! - every number is inside its documented range and every timeout is
//!   greater than zero.
//!
//! Errors name the file, line:column and key path; see [`ConfigError`].

mod admin;
mod cache;
mod edge;
mod error;
mod gateway;
mod locate;
mod raw;
mod resolve;
mod tcp;
#[cfg(test)]
mod tests;

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use crate::gateway::{
    AccessRules, Cidr, CidrList, Compress, Cors, ErrorPages, HeaderEdits, RateLimit, Redirect,
    Rewrite, RouteMatch,
};
pub use crate::tls::{CertKeyPaths, TlsListenConfig};
pub use admin::{parse_htpasswd, AdminAuth, AdminConfig, AdminToken, HtpasswdUser};
pub use cache::{parse_size, CacheZoneConfig, RouteCache};
pub use error::{ConfigError, ConfigErrorKind, Location};
pub use tcp::{TcpConfig, DEFAULT_CLIENT_HELLO_TIMEOUT, DEFAULT_TCP_IDLE_TIMEOUT};

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
/// Default `server.max_head_bytes`: the codec's default limit.
pub const DEFAULT_MAX_HEAD_BYTES: usize = crate::http::Limits::DEFAULT_MAX_HEAD_BYTES;
/// Allowed `server.max_head_bytes`: 1 KiB to 1 MiB.
pub const MAX_HEAD_BYTES_RANGE: RangeInclusive<u64> = 1024..=1024 * 1024;
/// Default `server.max_headers`: the codec's default limit.
pub const DEFAULT_MAX_HEADERS: usize = crate::http::Limits::DEFAULT_MAX_HEADERS;
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
/// Default `server.shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
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
/// Allowed `upstreams.NAME.max_connections`.
pub const UPSTREAM_MAX_CONNECTIONS_RANGE: RangeInclusive<u64> = 1..=100_000;
/// Default `upstreams.NAME.queue_timeout`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `upstreams.NAME.idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default backend `weight`.
pub const DEFAULT_WEIGHT: u16 = 1;
/// Allowed backend `weight`.
pub const WEIGHT_RANGE: RangeInclusive<u64> = 1..=1000;
/// Default `upstreams.NAME.sticky_cookie.name`.
pub const DEFAULT_STICKY_COOKIE: &str = "ringlb_backend";
/// Default `upstreams.NAME.passive_fall`.
pub const DEFAULT_PASSIVE_FALL: u32 = 3;
/// Allowed `upstreams.NAME.passive_fall` (0 turns passive ejection off).
pub const PASSIVE_FALL_RANGE: RangeInclusive<u64> = 0..=1000;
/// Default `upstreams.NAME.passive_cooldown`.
pub const DEFAULT_PASSIVE_COOLDOWN: Duration = Duration::from_secs(10);
/// Default `upstreams.NAME.health.path`.
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// Default `upstreams.NAME.health.interval`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Default `upstreams.NAME.health.timeout`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `upstreams.NAME.health.expect_status`.
pub const DEFAULT_EXPECT_STATUS: &str = "200-399";
/// Default `upstreams.NAME.health.rise`.
pub const DEFAULT_RISE: u32 = 2;
/// Default `upstreams.NAME.health.fall`.
pub const DEFAULT_FALL: u32 = 3;
/// Allowed `rise`, `fall`, `breaker.failures`, `breaker.successes` and
/// `breaker.half_open_probes` (the breaker packs its counters in 11 bits).
pub const THRESHOLD_RANGE: RangeInclusive<u64> = 1..=1000;
/// Default `upstreams.NAME.breaker.failures`.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default `upstreams.NAME.breaker.successes`.
pub const DEFAULT_BREAKER_SUCCESSES: u32 = 3;
/// Default `upstreams.NAME.breaker.open_for`.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(30);
/// Default `upstreams.NAME.breaker.half_open_probes`.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;
/// Default `upstreams.NAME.retry.attempts` when `[upstreams.NAME.retry]` is
/// present (absent: 1, no retries).
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// Allowed `upstreams.NAME.retry.attempts` (the first try counts).
pub const RETRY_ATTEMPTS_RANGE: RangeInclusive<u64> = 1..=10;
/// Default `upstreams.NAME.retry.backoff`.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// Default `upstreams.NAME.retry.max_backoff`.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Default `upstreams.NAME.retry.on`.
pub const DEFAULT_RETRY_ON: &[&str] = &["connect", "reset", "502", "503", "504"];
/// Default `upstreams.NAME.retry.budget`.
pub const DEFAULT_RETRY_BUDGET: f64 = 0.2;
/// Default `upstreams.NAME.retry.retry_buffer`: 64 KiB.
pub const DEFAULT_RETRY_BUFFER: usize = 64 * 1024;
/// Allowed `upstreams.NAME.retry.retry_buffer`: 0 to 16 MiB.
pub const RETRY_BUFFER_RANGE: RangeInclusive<u64> = 0..=16 * 1024 * 1024;

/// Default `upstreams.NAME.discovery.interval`.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// Default `upstreams.NAME.discovery.min_interval`.
pub const DEFAULT_DISCOVERY_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest `server.drain_delay`.
pub const MAX_DRAIN_DELAY: Duration = Duration::from_secs(300);
/// Most `upstreams.NAME.discovery.resolvers`.
pub const MAX_DISCOVERY_RESOLVERS: usize = 8;
/// Most backends one discovery answer contributes; the rest are dropped
/// (and logged), so a runaway record set cannot grow the tables unbounded.
pub const MAX_DISCOVERED_BACKENDS: usize = 256;

/// A checked, resolved config file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// `[server]`: listeners, workers, limits and client-side timeouts.
    pub server: ServerConfig,
    /// `[upstreams.NAME]`, sorted by name; the index is the upstream id used
    /// by [`RouteConfig::upstream`].
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[routes]]`, in file order (empty in a config of `[[tcp]]`
    /// listeners alone).
    pub routes: Vec<RouteConfig>,
    /// `[[tcp]]`: the L4 listeners, in file order.
    pub tcp: Vec<TcpConfig>,
    /// `[admin]`: the admin HTTP listener; `None` when the section is absent.
    pub admin: Option<AdminConfig>,
    /// `[cache.zones.NAME]`, sorted by name; routes refer to them by index.
    pub cache_zones: Vec<CacheZoneConfig>,
    /// The file this was loaded from (for messages and reload).
    pub source_path: PathBuf,
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

/// `server.overload`: what a worker does with new connections while it has
/// `max_connections` open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overload {
    /// Leave them in the kernel's accept queue until a connection closes.
    Queue,
    /// Accept and answer `503` with `Connection: close` at once (close a TLS
    /// connection), so clients fail fast and retry elsewhere.
    #[default]
    Reject,
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
    /// `overload`: `"reject"` (default) or `"queue"` (see [`Overload`]);
    /// reloadable.
    pub overload: Overload,
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
    /// `shutdown_timeout`: on SIGTERM or SIGQUIT, how long in-flight
    /// requests may take to finish before the process exits anyway.
    /// Default `"30s"`.
    pub shutdown_timeout: Duration,
    /// `drain_delay`: on SIGTERM or SIGQUIT, how long `/healthz` answers
    /// 503 while the listeners still accept, before the stop proper, so
    /// a balancer in front takes the host out before any connection is
    /// refused (HAProxy's `grace`). Default 0: stop accepting at once.
    pub drain_delay: Duration,
    /// `access_log`: `{ path = "...", format = "combined" | "json" }`.
    /// Absent: no access log.
    pub access_log: Option<AccessLogConfig>,
    /// `upgrade_socket`: a Unix socket path on which this process hands
    /// its listening sockets to `ringlb run --takeover` (binary upgrade).
    /// Relative to the config file's directory. Absent: no takeover.
    pub upgrade_socket: Option<PathBuf>,
    /// `error_pages = [{ status = [..], file | text, content_type }]`:
    /// custom bodies for the replies the proxy makes itself (see
    /// `crate::gateway::pages`); a route's own pages come first. Files are
    /// read at load. Empty when unset.
    pub error_pages: Arc<ErrorPages>,
    /// `trusted_proxies`: CIDR blocks whose `X-Forwarded-For` is believed
    /// (see `crate::gateway::cidr::client_ip`). From any other peer the
    /// field is replaced by the peer's address. Default: none (every
    /// client's `X-Forwarded-For` is replaced). Reloadable.
    pub trusted_proxies: CidrList,
    /// `max_connections_per_ip`: open connections one client address may
    /// hold across all workers and listeners; over it a new connection is
    /// closed at once. Default: no limit. Reloadable.
    pub max_connections_per_ip: Option<NonZeroU32>,
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
    /// `https_redirect = true` (plain listeners only): every request is
    /// answered with a 308 to the same host and target on `https://`.
    pub https_redirect: bool,
    /// `allow`, `deny`: CIDR lists judging the connection's address
    /// (see `crate::gateway::access`); a denied connection is closed at
    /// once. `None` when neither is set. Reloadable.
    pub access: Option<Arc<AccessRules>>,
    /// `max_connections_per_ip`: as the server's, counted for this
    /// listener alone. Reloadable.
    pub max_connections_per_ip: Option<NonZeroU32>,
    /// `proxy_protocol = { accept = true, trusted = [...], timeout = "3s" }`:
    /// every connection starts with a PROXY protocol v1 or v2 header from
    /// an L4 balancer in `trusted`, whose source address is the client's.
    /// `None`: no header is expected.
    pub proxy_protocol: Option<ProxyProtocolAccept>,
}

/// Default `proxy_protocol.timeout`: how long the header may take to arrive.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// A listener's `proxy_protocol` table with `accept = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocolAccept {
    /// `trusted`: the networks the L4 tier connects from; required and
    /// non-empty. A connection from elsewhere is closed unread.
    pub trusted: Vec<Cidr>,
    /// `timeout`: the header's read deadline (slowloris). Default 3 s.
    pub timeout: Duration,
}

impl ProxyProtocolAccept {
    /// Whether `peer` may send a header.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(peer))
    }
}

/// `[upstreams.NAME]`: a named group of backends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// `send_proxy_protocol`: `"v1"` or `"v2"`: each new connection to a
    /// backend starts with a PROXY header carrying the client's address and
    /// the address it connected to. Such connections are not pooled (the
    /// header is per connection, the client per request). Default none.
    pub send_proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// The table name, `NAME` in `[upstreams.NAME]`.
    pub name: String,
    /// `backends`: list of `{ addr = "ip:port", weight = 1 }`, required and
    /// non-empty unless `discovery` is set. `addr` is a socket address;
    /// `"localhost:port"` is also accepted and resolved once at load time
    /// (IPv4 preferred). No duplicate addresses. At run time this is the
    /// whole set: the file's `static_backends` first, then the discovered
    /// ones (see [`Config::with_discovered`]).
    pub backends: Vec<BackendConfig>,
    /// How many of `backends`, from the front, the file lists.
    pub static_backends: usize,
    /// `discovery = { dns = "...", ... }`: backends from DNS. `None`: only
    /// the file's.
    pub discovery: Option<DiscoveryConfig>,
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
    /// `max_connections`: open connections per backend per worker, in use
    /// or pooled. A request that finds them all in use waits for one, first
    /// come first served, up to `queue_timeout`, then gets 503. Absent: no
    /// limit. Range 1..=100000. `[[tcp]]` sessions are not counted.
    pub max_connections: Option<usize>,
    /// `queue_timeout`: how long a request waits for a connection under
    /// `max_connections`. Default `"5s"`.
    pub queue_timeout: Duration,
    /// `idle_timeout`: a pooled connection idle longer is closed. Default `"30s"`.
    pub idle_timeout: Duration,
    /// `hash_key`: what `consistent_hash` hashes: `"client_ip"`,
    /// `"header:NAME"` or `"cookie:NAME"`. Default `"client_ip"`. Only
    /// allowed with `strategy = "consistent_hash"`; `ip_hash` always uses
    /// the client IP.
    pub hash_key: HashKeySource,
    /// `sticky_cookie = { name = "ringlb_backend", max_age = "1h" }`: the
    /// cookie of `strategy = "sticky_cookie"`. `name` defaults to
    /// `"ringlb_backend"`; `max_age` absent means a session cookie. Only
    /// allowed with that strategy.
    pub sticky_cookie: StickyCookieConfig,
    /// `panic_mode`: when no backend is available (down, ejected or
    /// breaker-open), pick among all backends that are not draining or
    /// `down = true` instead of answering 503 (Envoy's panic threshold at
    /// 100%). Default `false`.
    pub panic_mode: bool,
    /// `passive_fall`: this many consecutive failures of live traffic
    /// (connect failure, reset, timeout, 5xx) eject a backend. It comes back
    /// through the active check (`rise` passes) when `[health]` is set,
    /// else through one probe request after `passive_cooldown`. Default 3,
    /// range 0..=1000; 0 turns passive ejection off.
    pub passive_fall: u32,
    /// `passive_cooldown`: how long a passively ejected backend without an
    /// active check waits before one probe request may try it. Default `"10s"`.
    pub passive_cooldown: Duration,
    /// `[upstreams.NAME.health]`: active health checks. Absent: none.
    pub health: Option<HealthConfig>,
    /// `[upstreams.NAME.breaker]`: circuit breaker. Absent: no breaker.
    pub breaker: Option<BreakerConfig>,
    /// `[upstreams.NAME.retry]`: retries on another backend. Absent:
    /// [`RetryConfig::disabled`] (one attempt; the transparent re-send on a
    /// dead pooled connection is separate and stays).
    pub retry: RetryConfig,
    /// `tls = true`: speak TLS to the backends, trusting only `tls_ca`
    /// (required then, a PEM file of CA certificates) and checking the
    /// name `tls_server_name` (default: each backend's IP address). `None`:
    /// plain HTTP (`tls_ca`/`tls_server_name` without `tls = true` is an
    /// error).
    pub tls: Option<UpstreamTlsConfig>,
}

/// `upstreams.NAME.discovery`: where an upstream learns backends from DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// `dns`: the name to resolve, e.g. `"app.internal"`, or an SRV name
    /// such as `"_http._tcp.app.internal"` / `"web.service.consul"`.
    pub dns: String,
    /// A/AAAA at `port`, or SRV (no `port`).
    pub records: DiscoveryRecords,
    /// `interval`: time between resolutions. Default `"5s"`.
    pub interval: Duration,
    /// `min_interval`: the shortest time between resolutions, however
    /// short the records' TTL. Default `"1s"`; at most `interval`.
    pub min_interval: Duration,
    /// `resolvers`: `"ip:port"` (or `"ip"`, port 53) name servers, at most
    /// [`MAX_DISCOVERY_RESOLVERS`]. Empty: the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<SocketAddr>,
    /// `allow_empty`: start (or reload) even when the name does not
    /// resolve; the upstream answers 503 until it does. Default `false`.
    pub allow_empty: bool,
}

/// Which records a discovery name is resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryRecords {
    /// `port` given: the name's A and AAAA records, each at `port`, weight 1.
    Address { port: NonZeroU16 },
    /// No `port`: the name's SRV records; each target's addresses at the
    /// record's port with the record's weight (clamped to
    /// [`WEIGHT_RANGE`]); only the records of the lowest priority.
    Srv,
}

impl DiscoveryConfig {
    /// What `/status` shows as the set's source.
    pub fn source(&self) -> String {
        let kind = match self.records {
            DiscoveryRecords::Address { port } => format!("dns A/AAAA {}:{port}", self.dns),
            DiscoveryRecords::Srv => format!("dns SRV {}", self.dns),
        };
        if self.resolvers.is_empty() {
            format!("{kind} via the system resolver")
        } else {
            let list: Vec<String> = self.resolvers.iter().map(|r| r.to_string()).collect();
            format!("{kind} via {}", list.join(", "))
        }
    }
}

/// `hash_key` of a `consistent_hash` upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKeySource {
    /// `"client_ip"`: the peer address of the client connection. The default.
    #[default]
    ClientIp,
    /// `"header:NAME"`: the first value of header `NAME` (stored lowercase;
    /// matched case-insensitively). Absent header: no key.
    Header(String),
    /// `"cookie:NAME"`: the value of cookie `NAME`. Absent cookie: no key.
    Cookie(String),
}

/// `sticky_cookie` of a `sticky_cookie` upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StickyCookieConfig {
    /// `name`: a cookie-name token. Default `"ringlb_backend"`.
    pub name: String,
    /// `max_age`: `Max-Age` of the cookie. Default: absent (session cookie).
    pub max_age: Option<Duration>,
}

impl Default for StickyCookieConfig {
    fn default() -> Self {
        StickyCookieConfig {
            name: DEFAULT_STICKY_COOKIE.to_owned(),
            max_age: None,
        }
    }
}

/// `[upstreams.NAME.health]`: one checker per backend for the whole
/// process (not per worker).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthConfig {
    /// The upstream's `send_proxy_protocol`, copied here: a check starts
    /// with a header too (v2 LOCAL, v1 UNKNOWN), as its backends expect one.
    pub send_proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// `type`: `"http"` (a GET whose status must be in `expect_status`) or
    /// `"tcp"` (a connect must succeed). Default `"http"`.
    pub kind: CheckKind,
    /// `path`: request target of the HTTP check, starting with `/`.
    /// Default `"/health"`.
    pub path: String,
    /// `interval`: time between the end of one check and the start of the
    /// next. Default `"5s"`.
    pub interval: Duration,
    /// `timeout`: the whole check (connect, send, response head) must finish
    /// within this. Default `"1s"`.
    pub timeout: Duration,
    /// `expect_status`: comma-separated statuses or ranges, e.g.
    /// `"200-399"` or `"200,204,300-308"`, each in 100..=599. Default `"200-399"`.
    pub expect_status: StatusRanges,
    /// `rise`: consecutive passes that mark an unhealthy backend healthy.
    /// Default 2, range 1..=1000.
    pub rise: NonZeroU32,
    /// `fall`: consecutive failed checks that mark a healthy backend
    /// unhealthy. Default 3, range 1..=1000.
    pub fall: NonZeroU32,
    /// `start`: `"healthy"` or `"unhealthy"`, the state before the first
    /// checks. Default `"healthy"` (traffic flows at once; a dead backend
    /// is found by passive ejection or after `fall` checks).
    pub start: StartState,
}

/// `health.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// `"http"`: `GET path`, the status decides. The default.
    #[default]
    Http,
    /// `"tcp"`: a TCP connect within `timeout` passes.
    Tcp,
}

/// `health.start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartState {
    /// `"healthy"`: the default.
    #[default]
    Healthy,
    /// `"unhealthy"`: no traffic until `rise` checks pass.
    Unhealthy,
}

/// Checked `expect_status`: non-empty, each range within 100..=599, low <= high.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(Vec<RangeInclusive<u16>>);

impl StatusRanges {
    /// Parses `"200-399"`, `"200"`, `"200,204,300-308"`.
    pub fn parse(text: &str) -> Option<StatusRanges> {
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let lo: u16 = lo.trim().parse().ok()?;
            let hi: u16 = hi.trim().parse().ok()?;
            if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
                return None;
            }
            ranges.push(lo..=hi);
        }
        Some(StatusRanges(ranges))
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

/// `[upstreams.NAME.breaker]`: a consecutive-failures circuit breaker per
/// backend, shared by all workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// `failures`: consecutive failures (connect failure, reset, timeout,
    /// 5xx) that open the breaker. Default 5, range 1..=1000.
    pub failures: NonZeroU32,
    /// `successes`: probe successes in half-open that close it. Default 3,
    /// range 1..=1000.
    pub successes: NonZeroU32,
    /// `open_for`: how long it stays open before letting probes through.
    /// Default `"30s"`.
    pub open_for: Duration,
    /// `half_open_probes`: requests allowed in flight at once in half-open,
    /// across all workers together. Default 1, range 1..=1000.
    pub half_open_probes: NonZeroU32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: NonZeroU32::new(DEFAULT_BREAKER_FAILURES).unwrap_or(NonZeroU32::MIN),
            successes: NonZeroU32::new(DEFAULT_BREAKER_SUCCESSES).unwrap_or(NonZeroU32::MIN),
            open_for: DEFAULT_BREAKER_OPEN_FOR,
            half_open_probes: NonZeroU32::MIN,
        }
    }
}

/// `[upstreams.NAME.retry]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// `attempts`: tries in all, the first included. Default 3 when the
    /// table is present, 1 (no retries) when it is absent. Range 1..=10.
    pub attempts: NonZeroU32,
    /// `backoff`: wait before the first retry; doubles each retry. `"0s"`
    /// is allowed. Default `"25ms"`.
    pub backoff: Duration,
    /// `max_backoff`: cap of the doubling; must be >= `backoff`. Default `"1s"`.
    pub max_backoff: Duration,
    /// `jitter`: full jitter, a uniform wait in `0..=backoff`. Default `true`.
    pub jitter: bool,
    /// `on`: which failures are retried: `"connect"` (refused or connect
    /// timeout), `"reset"` (connection reset or closed before a response),
    /// `"timeout"` (response head timeout), and statuses `"500"`..`"599"`.
    /// Default `["connect", "reset", "502", "503", "504"]`.
    pub on: RetryOn,
    /// `budget`: retries allowed as a fraction of requests, per worker, 0.0..=1.0,
    /// on top of a floor of [`crate::upstream::retry::BUDGET_FLOOR_PER_SEC`]
    /// retries a second. Default 0.2.
    pub budget: Ratio,
    /// `retry_buffer`: a request body up to this many bytes is kept so it
    /// can be replayed; a longer streamed body is never retried once sent.
    /// Default 65536, range 0..=16777216.
    pub retry_buffer: usize,
}

impl RetryConfig {
    /// The policy of an upstream without a `[retry]` table: one attempt.
    pub fn disabled() -> RetryConfig {
        RetryConfig {
            attempts: NonZeroU32::MIN,
            backoff: DEFAULT_RETRY_BACKOFF,
            max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            jitter: true,
            on: RetryOn::default_set(),
            budget: Ratio::from_f64(DEFAULT_RETRY_BUDGET),
            retry_buffer: DEFAULT_RETRY_BUFFER,
        }
    }
}

/// A fraction in 0.0..=1.0, kept in millionths so configs stay `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio(u32);

impl Ratio {
    /// Clamped to 0.0..=1.0; NaN is 0.
    pub fn from_f64(f: f64) -> Ratio {
        let f = if f.is_nan() { 0.0 } else { f.clamp(0.0, 1.0) };
        Ratio((f * 1e6).round() as u32)
    }

    pub fn get(self) -> f64 {
        f64::from(self.0) / 1e6
    }

    /// In millionths.
    pub fn millionths(self) -> u32 {
        self.0
    }
}

/// The failures a retry is allowed for: a bit set of kinds and 5xx statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    kinds: u8,
    /// Bit `s - 500` for status `s`.
    statuses: u128,
}

impl RetryOn {
    const CONNECT: u8 = 1;
    const RESET: u8 = 2;
    const TIMEOUT: u8 = 4;

    /// The empty set.
    pub fn none() -> RetryOn {
        RetryOn {
            kinds: 0,
            statuses: 0,
        }
    }

    /// `["connect", "reset", "502", "503", "504"]`.
    pub fn default_set() -> RetryOn {
        let mut on = RetryOn::none();
        for name in DEFAULT_RETRY_ON {
            on.add(name);
        }
        on
    }

    /// Adds one `on` entry; false if it is not a known name or a status in
    /// 500..=599.
    pub fn add(&mut self, name: &str) -> bool {
        match name {
            "connect" => self.kinds |= Self::CONNECT,
            "reset" => self.kinds |= Self::RESET,
            "timeout" => self.kinds |= Self::TIMEOUT,
            _ => match name.parse::<u16>() {
                Ok(s @ 500..=599) if name.len() == 3 => self.statuses |= 1 << (s - 500),
                _ => return false,
            },
        }
        true
    }

    pub fn connect(self) -> bool {
        self.kinds & Self::CONNECT != 0
    }

    pub fn reset(self) -> bool {
        self.kinds & Self::RESET != 0
    }

    pub fn timeout(self) -> bool {
        self.kinds & Self::TIMEOUT != 0
    }

    pub fn status(self, status: u16) -> bool {
        (500..=599).contains(&status) && self.statuses & (1 << (status - 500)) != 0
    }
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

impl BackendConfig {
    /// A backend found by discovery: never `down`; `weight` 0 counts as 1.
    pub fn discovered(addr: SocketAddr, weight: u16) -> BackendConfig {
        BackendConfig {
            addr,
            weight: NonZeroU16::new(weight).unwrap_or(NonZeroU16::MIN),
            down: false,
        }
    }
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
    /// `"random"`: uniform among available backends (weights ignored).
    Random,
    /// `"least_connections"`: fewest requests in flight across all workers;
    /// ties go round robin.
    LeastConnections,
    /// `"p2c"`: power of two choices: two random available backends, the
    /// one with fewer requests in flight wins.
    P2c,
    /// `"p2c_ewma"`: power of two choices on peak-EWMA cost, latency EWMA
    /// times (in-flight + 1).
    P2cEwma,
    /// `"consistent_hash"`: Maglev over `hash_key`; adding or removing one
    /// of N backends moves about 1/N of the keys. Weights scale the share.
    ConsistentHash,
    /// `"ip_hash"`: `consistent_hash` keyed by the client IP.
    IpHash,
    /// `"sticky_cookie"`: a cookie names the backend (a hash of its
    /// address); honoured while that backend is available, else the request
    /// is rebalanced (smooth weighted round robin) and the cookie re-set.
    StickyCookie,
}

impl Strategy {
    /// The name as written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
            Strategy::Random => "random",
            Strategy::LeastConnections => "least_connections",
            Strategy::P2c => "p2c",
            Strategy::P2cEwma => "p2c_ewma",
            Strategy::ConsistentHash => "consistent_hash",
            Strategy::IpHash => "ip_hash",
            Strategy::StickyCookie => "sticky_cookie",
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
    /// `upstream`: the name of an `[upstreams.NAME]` table, resolved to
    /// its index in [`Config::upstreams`]. Required, except on a route with
    /// a `redirect` (which has none).
    pub upstream: Option<usize>,
    /// `methods`, `headers`, `path_regex`: further conditions, all of
    /// which must hold (see `crate::route` for precedence). `None` when
    /// the route sets none.
    pub matching: Option<Box<RouteMatch>>,
    /// `strip_prefix`, `replace_prefix`, `add_prefix`, `regex_rewrite`,
    /// `host_rewrite` (see `crate::gateway::rewrite`). `None` when the
    /// route sets none.
    pub rewrite: Option<Arc<Rewrite>>,
    /// `request_headers` (see `crate::gateway::headers`); `None` when unset.
    pub request_headers: Option<Arc<HeaderEdits>>,
    /// `response_headers`: the same edits on the backend's response head.
    pub response_headers: Option<Arc<HeaderEdits>>,
    /// `redirect = { to, status }`: the route answers with a redirect
    /// (see `crate::gateway::redirect`).
    pub redirect: Option<Arc<Redirect>>,
    /// `https_redirect = true`: plain HTTP requests get a 308 to HTTPS.
    pub https_redirect: bool,
    /// `error_pages` and `intercept_errors`; `None` when unset.
    pub error_pages: Option<Arc<ErrorPages>>,
    /// `cache = { zone, ttl, ... }` (see `crate::cache`); `None` when unset.
    pub cache: Option<Arc<RouteCache>>,
    /// `allow`, `deny`: CIDR lists judging the request's client address
    /// (after `trusted_proxies`); a denied request gets 403.
    pub access: Option<Arc<AccessRules>>,
    /// `rate_limit = { rate, burst, key }` (see
    /// `crate::gateway::rate_limit`); `None` when unset.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// `cors = { ... }` (see `crate::gateway::cors`); `None` when unset.
    pub cors: Option<Arc<Cors>>,
    /// `compress` (see `crate::gateway::compress`); `None` when unset.
    pub compress: Option<Arc<Compress>>,
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
    /// This config with upstream `u`'s discovered backends replaced by
    /// `found` (those whose address the file already lists are left out:
    /// the file's entry wins).
    pub fn with_discovered(&self, u: usize, found: &[BackendConfig]) -> Config {
        let mut config = self.clone();
        if let Some(up) = config.upstreams.get_mut(u) {
            up.backends.truncate(up.static_backends);
            for b in found.iter().take(MAX_DISCOVERED_BACKENDS) {
                if !up.backends.iter().any(|s| s.addr == b.addr) {
                    up.backends.push(*b);
                }
            }
        }
        config
    }

    /// Upstream `u`'s discovered backends (those after the file's).
    pub fn discovered(&self, u: usize) -> &[BackendConfig] {
        self.upstreams.get(u).map_or(&[], |up| {
            &up.backends[up.static_backends.min(up.backends.len())..]
        })
    }

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
            .map(|l| {
                let mut notes = Vec::new();
                if let Some(tls) = &l.tls {
                    notes.push(format!("tls, {} certificates", 1 + tls.sni.len()));
                }
                if l.https_redirect {
                    notes.push("https_redirect".to_owned());
                }
                if let Some(proxy) = &l.proxy_protocol {
                    let trusted: Vec<String> =
                        proxy.trusted.iter().map(ToString::to_string).collect();
                    notes.push(format!("proxy_protocol from {}", trusted.join(" ")));
                }
                match notes.is_empty() {
                    true => l.addr.to_string(),
                    false => format!("{} ({})", l.addr, notes.join("; ")),
                }
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
            if let Some(d) = &u.discovery {
                let _ = writeln!(
                    out,
                    "    discovery: {} every {} (at least {} apart){}",
                    d.source(),
                    humantime::format_duration(d.interval),
                    humantime::format_duration(d.min_interval),
                    if d.allow_empty { ", may be empty" } else { "" }
                );
            }
        }
        let _ = writeln!(out, "routes:");
        for r in &self.routes {
            let host = r.host.as_ref().map_or("*".to_owned(), |h| h.to_string());
            let upstream = match (r.upstream, &r.redirect) {
                (Some(u), _) => self.upstreams[u].name.clone(),
                (None, Some(redirect)) => format!("redirect {}", redirect.status),
                (None, None) => "-".to_owned(),
            };
            let mut conditions = String::new();
            if let Some(m) = &r.matching {
                if !m.methods.is_empty() {
                    let _ = write!(conditions, " methods {}", m.methods.join(","));
                }
                for h in &m.headers {
                    let _ = write!(conditions, " header {}", h.name);
                }
                if let Some(p) = &m.path_regex {
                    let _ = write!(conditions, " path_regex {:?}", p.as_str());
                }
            }
            if r.rewrite.is_some() {
                conditions.push_str(" (rewritten)");
            }
            if r.https_redirect {
                conditions.push_str(" (https_redirect)");
            }
            for (set, note) in [
                (r.access.is_some(), " (allow/deny)"),
                (r.rate_limit.is_some(), " (rate limited)"),
                (r.cors.is_some(), " (cors)"),
            ] {
                if set {
                    conditions.push_str(note);
                }
            }
            if let Some(c) = &r.compress {
                let names: Vec<&str> = c.algorithms.iter().map(|(c, _)| c.token()).collect();
                let _ = write!(conditions, " (compress {})", names.join(","));
            }
            let _ = writeln!(
                out,
                "  host {host} path {}{conditions} -> {upstream}",
                r.path_prefix
            );
        }
        if !self.tcp.is_empty() {
            let _ = writeln!(out, "tcp:");
        }
        for t in &self.tcp {
            let upstream = t.upstream.map_or("-", |u| self.upstreams[u].name.as_str());
            let sni = if t.sni_routes.is_empty() {
                String::new()
            } else {
                let routes: Vec<String> = t
                    .sni_routes
                    .upstreams()
                    .map(|u| self.upstreams[u].name.clone())
                    .collect();
                format!(" (sni_routes to {})", routes.join(","))
            };
            let proxy = if t.listen.proxy_protocol.is_some() {
                " (proxy_protocol)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {} {}{proxy}{sni} -> {upstream}, idle {}",
                t.name,
                t.listen.addr,
                humantime::format_duration(t.idle_timeout)
            );
        }
        if let Some(log) = &s.access_log {
            let format = match log.format {
                AccessLogFormat::Combined => "combined",
                AccessLogFormat::Json => "json",
            };
            let _ = writeln!(out, "access log: {} ({format})", log.path.display());
        }
        if let Some(admin) = &self.admin {
            let mut notes = Vec::new();
            match admin.auth {
                AdminAuth::Off if admin.insecure_no_auth => notes.push("NO credentials".to_owned()),
                AdminAuth::Off => {}
                AdminAuth::Writes => notes.push("credentials for writes".to_owned()),
                AdminAuth::All => notes.push("credentials for all but /healthz".to_owned()),
            }
            if !admin.allow.is_empty() {
                let nets: Vec<String> = admin.allow.iter().map(Cidr::to_string).collect();
                notes.push(format!("allow {}", nets.join(", ")));
            }
            if notes.is_empty() {
                let _ = writeln!(out, "admin: {}", admin.listen);
            } else {
                let _ = writeln!(out, "admin: {} ({})", admin.listen, notes.join("; "));
            }
        }
        out
    }
}
