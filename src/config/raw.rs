//! The TOML file as serde sees it, before any semantic check.
//!
//! Why two layers: serde checks shape (types, unknown keys, durations); the
//! resolver in `resolve.rs` checks meaning (ranges, addresses, references)
//! and needs the byte span of each value it may reject, so those fields are
//! `Spanned`. Optional fields are `Option` here and defaulted in the resolver,
//! where the defaults are named consts.
//!
//! Invariants: every struct is `deny_unknown_fields`. No table-valued field is
//! `Spanned`: a table created implicitly by a dotted header
//! (`[upstreams.app]` creates `upstreams`) has no span in toml 0.8, and a
//! `Spanned` table would then fail to deserialize.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{AccessLogFormat, CheckKind, StartState, Strategy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: Option<RawServer>,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, RawUpstream>,
    pub routes: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    pub admin: Option<RawAdmin>,
    pub cache: Option<super::cache::RawCache>,
    pub tcp: Option<Spanned<Vec<Spanned<super::tcp::RawTcp>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Spanned<String>,
    pub users_file: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub auth: Option<Spanned<String>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub insecure_no_auth: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Spanned<Vec<Spanned<ListenEntry>>>,
    pub workers: Option<Spanned<u64>>,
    pub pin_workers: Option<bool>,
    pub backlog: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub overload: Option<super::Overload>,
    pub max_head_bytes: Option<Spanned<u64>>,
    pub max_headers: Option<Spanned<u64>>,
    pub buffer_size: Option<Spanned<u64>>,
    pub max_request_body: Option<Spanned<u64>>,
    pub head_timeout: Option<Spanned<HumanDuration>>,
    pub keepalive_timeout: Option<Spanned<HumanDuration>>,
    pub body_timeout: Option<Spanned<HumanDuration>>,
    pub tunnel_timeout: Option<Spanned<HumanDuration>>,
    pub send_timeout: Option<Spanned<HumanDuration>>,
    pub shutdown_timeout: Option<Spanned<HumanDuration>>,
    pub drain_delay: Option<Spanned<HumanDuration>>,
    pub access_log: Option<RawAccessLog>,
    pub upgrade_socket: Option<Spanned<String>>,
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_connections_per_ip: Option<Spanned<u64>>,
    pub error_pages: Option<Spanned<Vec<Spanned<RawErrorPage>>>>,
}

/// One `error_pages = [{ status, file | text, content_type }]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawErrorPage {
    pub status: Spanned<Vec<Spanned<u64>>>,
    pub file: Option<Spanned<String>>,
    pub text: Option<Spanned<String>>,
    pub content_type: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    pub path: Spanned<String>,
    #[serde(default)]
    pub format: AccessLogFormat,
}

/// One `server.listen` entry: `"ip:port"` or `{ addr = "ip:port" }`.
///
/// Deserialized by hand rather than `#[serde(untagged)]`: untagged buffers
/// the value, which loses the spans of the table form's fields and turns
/// every mistake into "did not match any variant".
#[derive(Debug)]
pub(super) enum ListenEntry {
    Addr(String),
    Table(Box<RawListenTable>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenTable {
    pub addr: Spanned<String>,
    pub tls: Option<RawListenTls>,
    pub https_redirect: Option<Spanned<bool>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_connections_per_ip: Option<Spanned<u64>>,
    pub proxy_protocol: Option<RawProxyProtocol>,
}

/// `proxy_protocol = { accept = true, trusted = ["10.0.0.0/8"], timeout = "3s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyProtocol {
    pub accept: Spanned<bool>,
    pub trusted: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<HumanDuration>>,
}

/// `tls = { cert, key, sni = [{ cert, key }, ...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    #[serde(default)]
    pub sni: Vec<RawCertPair>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertPair {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

impl<'de> Deserialize<'de> for ListenEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ListenEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address string \"ip:port\" or a table { addr = \"ip:port\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenEntry, E> {
                Ok(ListenEntry::Addr(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ListenEntry, A::Error> {
                RawListenTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| ListenEntry::Table(Box::new(t)))
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    /// Optional in serde so that an upstream with `discovery` may leave it
    /// out; without `discovery` its absence is reported by the resolver.
    pub backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    pub discovery: Option<RawDiscovery>,
    pub strategy: Option<Spanned<Strategy>>,
    pub connect_timeout: Option<Spanned<HumanDuration>>,
    pub response_timeout: Option<Spanned<HumanDuration>>,
    pub max_idle: Option<Spanned<u64>>,
    pub idle_timeout: Option<Spanned<HumanDuration>>,
    pub max_connections: Option<Spanned<u64>>,
    pub queue_timeout: Option<Spanned<HumanDuration>>,
    pub hash_key: Option<Spanned<String>>,
    pub sticky_cookie: Option<RawStickyCookie>,
    pub panic_mode: Option<bool>,
    pub passive_fall: Option<Spanned<u64>>,
    pub passive_cooldown: Option<Spanned<HumanDuration>>,
    pub health: Option<RawHealth>,
    pub breaker: Option<RawBreaker>,
    pub retry: Option<RawRetry>,
    pub tls: Option<Spanned<bool>>,
    pub tls_ca: Option<Spanned<String>>,
    pub tls_server_name: Option<Spanned<String>>,
    pub send_proxy_protocol: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    pub dns: Option<Spanned<String>>,
    pub port: Option<Spanned<u64>>,
    pub interval: Option<Spanned<HumanDuration>>,
    pub min_interval: Option<Spanned<HumanDuration>>,
    pub resolvers: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_empty: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStickyCookie {
    pub name: Option<Spanned<String>>,
    pub max_age: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    #[serde(rename = "type")]
    pub kind: Option<CheckKind>,
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<HumanDuration>>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub expect_status: Option<Spanned<String>>,
    pub rise: Option<Spanned<u64>>,
    pub fall: Option<Spanned<u64>>,
    pub start: Option<StartState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub failures: Option<Spanned<u64>>,
    pub successes: Option<Spanned<u64>>,
    pub open_for: Option<Spanned<HumanDuration>>,
    pub half_open_probes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub attempts: Option<Spanned<u64>>,
    pub backoff: Option<Spanned<HumanDuration>>,
    pub max_backoff: Option<Spanned<HumanDuration>>,
    pub jitter: Option<bool>,
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
    pub budget: Option<Spanned<f64>>,
    pub retry_buffer: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub addr: Spanned<String>,
    pub weight: Option<Spanned<u64>>,
    pub down: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub path_prefix: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub headers: Option<Spanned<Vec<Spanned<RawHeaderMatch>>>>,
    pub path_regex: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<String>>,
    pub add_prefix: Option<Spanned<String>>,
    pub replace_prefix: Option<Spanned<RawReplacePrefix>>,
    pub regex_rewrite: Option<Spanned<RawRegexRewrite>>,
    pub host_rewrite: Option<Spanned<String>>,
    pub request_headers: Option<Spanned<RawHeaderEdits>>,
    pub response_headers: Option<Spanned<RawHeaderEdits>>,
    pub redirect: Option<Spanned<RawRedirect>>,
    pub https_redirect: Option<Spanned<bool>>,
    pub error_pages: Option<Spanned<Vec<Spanned<RawErrorPage>>>>,
    pub intercept_errors: Option<Spanned<Vec<Spanned<u64>>>>,
    pub cache: Option<Spanned<super::cache::RawRouteCache>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    pub cors: Option<Spanned<RawCors>>,
    /// Not `Spanned`: it may be written as a `[routes.compress]` table.
    pub compress: Option<RawCompress>,
}

/// `compress = { algorithms, min_length, types, level = { gzip = 5 } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompress {
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub min_length: Option<Spanned<u64>>,
    pub types: Option<Spanned<Vec<Spanned<String>>>>,
    pub level: Option<RawCompressLevels>,
}

/// `level = { br = 4, gzip = 5, deflate = 5, zstd = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompressLevels {
    pub br: Option<Spanned<i64>>,
    pub gzip: Option<Spanned<i64>>,
    pub deflate: Option<Spanned<i64>>,
    pub zstd: Option<Spanned<i64>>,
}

/// `rate_limit = { rate = "100/s", burst = 50, key = "client_ip" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u64>>,
    pub key: Option<Spanned<String>>,
}

/// `cors = { allow_origins = [...], ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub allow_origins: Spanned<Vec<Spanned<String>>>,
    pub allow_methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub expose_headers: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_credentials: Option<Spanned<bool>>,
    pub max_age: Option<Spanned<u64>>,
}

/// `redirect = { to, status }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    pub to: Spanned<String>,
    pub status: Option<Spanned<u64>>,
}

/// `request_headers`/`response_headers = { set = { NAME = VALUE }, add = { ... }, remove = [NAME] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderEdits {
    pub set: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub add: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub remove: Option<Vec<Spanned<String>>>,
}

/// `replace_prefix = { from, to }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplacePrefix {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

/// `regex_rewrite = { pattern, substitution }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegexRewrite {
    pub pattern: Spanned<String>,
    pub substitution: Spanned<String>,
}

/// One `headers = [{ name, value | regex }]` entry of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderMatch {
    pub name: Spanned<String>,
    pub value: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
}

/// A `Duration` written the humantime way: `"5s"`, `"1h 30m"`, `"250ms"`.
///
/// Parsed with `humantime::parse_duration` directly rather than through
/// `humantime_serde`, so the error says what was wrong with the text
/// ("unknown time unit") instead of only "expected a duration".
#[derive(Debug, Clone, Copy)]
pub(super) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"5s\", \"250ms\" or \"1h 30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v)
                    .map(HumanDuration)
                    .map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}
