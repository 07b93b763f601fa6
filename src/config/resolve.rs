//! From raw serde structs to a checked [`Config`]: defaults, ranges,
//! addresses, references between sections.
//!
//! Why here and not in serde: these checks need to say where the value was
//! (its span) and what the key path is, and some need the whole file (a
//! route's upstream must exist).
//!
//! Invariants: the first problem found is returned; checks run in file
//! section order (server, upstreams, routes) so the reported error is the
//! one nearest the top that an operator would fix first.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::locate::{key_path_at, line_col, quote_key};
use super::raw::{
    HumanDuration, ListenEntry, RawAccessLog, RawBreaker, RawConfig, RawDiscovery, RawHealth,
    RawListenTls, RawProxyProtocol, RawRetry, RawRoute, RawServer, RawStickyCookie, RawUpstream,
};
use super::*;

/// Turns a serde/TOML error into a [`ConfigError`] with location and key path.
pub(super) fn from_toml_error(src: &str, file: &Path, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().replace('\n', "; ");
    // toml reports shape errors and syntax errors alike; a syntax error is
    // one where the text is not TOML at all.
    let is_syntax = src.parse::<toml::Table>().is_err();
    let missing = backticked(&message, "missing field `");
    let span = err.span();
    let mut key = span
        .as_ref()
        .map_or_else(String::new, |s| key_path_at(src, s.start));
    if let Some(field) = missing {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(&quote_key(field));
    }
    let location = span.map(|s| line_col(src, s.start));
    let kind = if is_syntax {
        Kind::Syntax(message)
    } else if message.starts_with("unknown field") {
        Kind::UnknownKey(message)
    } else if missing.is_some() {
        Kind::MissingKey(message)
    } else {
        Kind::InvalidValue(message)
    };
    ConfigError::new(file, location, key, kind)
}

/// The text between `prefix` and the next backtick, if `message` starts with `prefix`.
fn backticked<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// Where errors go: the source for line numbers and the file for messages.
pub(super) struct Cx<'a> {
    src: &'a str,
    file: &'a Path,
}

impl Cx<'_> {
    pub(super) fn at(&self, span: Range<usize>, key: impl Into<String>, kind: Kind) -> ConfigError {
        ConfigError::new(self.file, Some(line_col(self.src, span.start)), key, kind)
    }

    fn nowhere(&self, key: impl Into<String>, kind: Kind) -> ConfigError {
        ConfigError::new(self.file, None, key, kind)
    }

    /// A path from the file: relative ones are relative to the file's
    /// directory, not to the working directory.
    pub(super) fn path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    pub(super) fn number(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        if range.contains(&n) {
            Ok(n)
        } else {
            let kind = Kind::OutOfRange {
                value: n,
                min: *range.start(),
                max: *range.end(),
            };
            Err(self.at(value.span(), key, kind))
        }
    }

    pub(super) fn timeout(
        &self,
        value: &Option<Spanned<HumanDuration>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if v.get_ref().0.is_zero() => Err(self.at(v.span(), key, Kind::ZeroDuration)),
            Some(v) => Ok(v.get_ref().0),
        }
    }
}

impl Cx<'_> {
    /// A count in `range` that is at least 1, as `NonZeroU32`.
    fn threshold(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: u32,
    ) -> Result<NonZeroU32, ConfigError> {
        let n = self.number(value, key, default.into(), THRESHOLD_RANGE)?;
        Ok(NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN))
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        self.at(span, key, Kind::InvalidValue(message))
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

pub(super) fn resolve(raw: RawConfig, src: &str, file: &Path) -> Result<Config, ConfigError> {
    let cx = Cx { src, file };
    // Optional in serde only so that its absence is reported here: toml
    // gives a missing root field no usable span.
    let Some(raw_server) = &raw.server else {
        let kind = Kind::MissingKey("missing [server] table".to_owned());
        return Err(cx.nowhere("server", kind));
    };
    // A config of [[tcp]] listeners alone has no HTTP listener and no routes.
    let has_tcp = raw.tcp.as_ref().is_some_and(|t| !t.get_ref().is_empty());
    let server = resolve_server(&cx, raw_server, has_tcp)?;
    if raw.upstreams.is_empty() {
        return Err(cx.nowhere("upstreams", Kind::NoUpstreams));
    }
    let upstreams = raw
        .upstreams
        .iter()
        .map(|(name, raw)| resolve_upstream(&cx, name, raw))
        .collect::<Result<Vec<_>, _>>()?;
    let cache_zones = super::cache::resolve_zones(&cx, raw.cache.as_ref())?;
    let routes = if server.listen.is_empty() && raw.routes.is_none() {
        Vec::new()
    } else {
        resolve_routes(
            &cx,
            &raw.routes,
            &upstreams,
            &server.error_pages,
            &cache_zones,
        )?
    };
    let tcp = super::tcp::resolve_tcp(&cx, raw.tcp.as_ref(), &upstreams, &server.listen)?;
    let every_listener: Vec<ListenConfig> = server
        .listen
        .iter()
        .chain(tcp.iter().map(|t| &t.listen))
        .cloned()
        .collect();
    let admin = raw
        .admin
        .as_ref()
        .map(|a| super::admin::resolve_admin(&cx, a, &every_listener))
        .transpose()?;
    Ok(Config {
        server,
        upstreams,
        routes,
        tcp,
        admin,
        cache_zones,
        source_path: file.to_path_buf(),
    })
}

/// `no_http`: the config has `[[tcp]]` listeners, so `server.listen` may
/// be empty.
fn resolve_server(
    cx: &Cx<'_>,
    raw: &RawServer,
    no_http: bool,
) -> Result<ServerConfig, ConfigError> {
    let listen = resolve_listen(cx, &raw.listen, no_http)?;
    let default_workers = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(to_usize(*WORKERS_RANGE.end()));
    let workers = cx.number(
        &raw.workers,
        "server.workers",
        default_workers as u64,
        WORKERS_RANGE,
    )?;
    let backlog = cx.number(
        &raw.backlog,
        "server.backlog",
        DEFAULT_BACKLOG.into(),
        BACKLOG_RANGE,
    )?;
    let max_connections = cx.number(
        &raw.max_connections,
        "server.max_connections",
        DEFAULT_MAX_CONNECTIONS as u64,
        MAX_CONNECTIONS_RANGE,
    )?;
    let max_head_bytes = cx.number(
        &raw.max_head_bytes,
        "server.max_head_bytes",
        DEFAULT_MAX_HEAD_BYTES as u64,
        MAX_HEAD_BYTES_RANGE,
    )?;
    let max_headers = cx.number(
        &raw.max_headers,
        "server.max_headers",
        DEFAULT_MAX_HEADERS as u64,
        MAX_HEADERS_RANGE,
    )?;
    let buffer_size = cx.number(
        &raw.buffer_size,
        "server.buffer_size",
        DEFAULT_BUFFER_SIZE as u64,
        BUFFER_SIZE_RANGE,
    )?;
    let max_request_body = raw
        .max_request_body
        .as_ref()
        .map_or(DEFAULT_MAX_REQUEST_BODY, |v| *v.get_ref());
    let trusted_proxies =
        super::edge::cidr_list(cx, &raw.trusted_proxies, "server.trusted_proxies")?;
    let max_connections_per_ip = super::edge::connections_per_ip(
        cx,
        &raw.max_connections_per_ip,
        "server.max_connections_per_ip",
    )?;
    Ok(ServerConfig {
        trusted_proxies,
        max_connections_per_ip,
        listen,
        workers: NonZeroUsize::new(to_usize(workers)).unwrap_or(NonZeroUsize::MIN),
        pin_workers: raw.pin_workers.unwrap_or(false),
        backlog: NonZeroU32::new(u32::try_from(backlog).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN),
        max_connections: NonZeroUsize::new(to_usize(max_connections)).unwrap_or(NonZeroUsize::MIN),
        overload: raw.overload.unwrap_or_default(),
        max_head_bytes: to_usize(max_head_bytes),
        max_headers: NonZeroUsize::new(to_usize(max_headers)).unwrap_or(NonZeroUsize::MIN),
        buffer_size: to_usize(buffer_size),
        max_request_body: NonZeroU64::new(max_request_body),
        head_timeout: cx.timeout(
            &raw.head_timeout,
            "server.head_timeout",
            DEFAULT_HEAD_TIMEOUT,
        )?,
        keepalive_timeout: cx.timeout(
            &raw.keepalive_timeout,
            "server.keepalive_timeout",
            DEFAULT_KEEPALIVE_TIMEOUT,
        )?,
        body_timeout: cx.timeout(
            &raw.body_timeout,
            "server.body_timeout",
            DEFAULT_BODY_TIMEOUT,
        )?,
        tunnel_timeout: cx.timeout(
            &raw.tunnel_timeout,
            "server.tunnel_timeout",
            DEFAULT_TUNNEL_TIMEOUT,
        )?,
        send_timeout: cx.timeout(
            &raw.send_timeout,
            "server.send_timeout",
            DEFAULT_SEND_TIMEOUT,
        )?,
        shutdown_timeout: cx.timeout(
            &raw.shutdown_timeout,
            "server.shutdown_timeout",
            DEFAULT_SHUTDOWN_TIMEOUT,
        )?,
        drain_delay: match &raw.drain_delay {
            None => Duration::ZERO,
            Some(d) if d.get_ref().0 <= MAX_DRAIN_DELAY => d.get_ref().0,
            Some(d) => {
                let message = format!("at most {}", humantime::format_duration(MAX_DRAIN_DELAY));
                return Err(cx.invalid(d.span(), "server.drain_delay", message));
            }
        },
        access_log: raw
            .access_log
            .as_ref()
            .map(|log| resolve_access_log(cx, log))
            .transpose()?,
        upgrade_socket: match &raw.upgrade_socket {
            None => None,
            Some(path) if path.get_ref().is_empty() => {
                let kind = Kind::InvalidValue("empty upgrade socket path".to_owned());
                return Err(cx.at(path.span(), "server.upgrade_socket", kind));
            }
            Some(path) => Some(cx.path(path.get_ref())),
        },
        error_pages: match &raw.error_pages {
            None => Arc::new(ErrorPages::default()),
            Some(pages) => Arc::new(super::gateway::resolve_error_pages(
                cx,
                "server.error_pages",
                pages,
            )?),
        },
    })
}

fn resolve_access_log(cx: &Cx<'_>, raw: &RawAccessLog) -> Result<AccessLogConfig, ConfigError> {
    let path = raw.path.get_ref();
    if path.is_empty() {
        let kind = Kind::InvalidValue("empty access log path".to_owned());
        return Err(cx.at(raw.path.span(), "server.access_log.path", kind));
    }
    Ok(AccessLogConfig {
        path: cx.path(path),
        format: raw.format,
    })
}

/// Resolves the paths of a listener's `tls` table and loads every file, so
/// that a bad certificate is a config error naming the key and the file.
fn resolve_listen_tls(
    cx: &Cx<'_>,
    raw: &RawListenTls,
    key: &str,
) -> Result<TlsListenConfig, ConfigError> {
    let pairs: Vec<(String, &Spanned<String>, &Spanned<String>)> =
        std::iter::once((format!("{key}.tls"), &raw.cert, &raw.key))
            .chain(
                raw.sni
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("{key}.tls.sni[{i}]"), &p.cert, &p.key)),
            )
            .collect();
    let paths: Vec<CertKeyPaths> = pairs
        .iter()
        .map(|(_, cert, key)| CertKeyPaths {
            cert: cx.path(cert.get_ref()),
            key: cx.path(key.get_ref()),
        })
        .collect();
    let config = TlsListenConfig {
        default: paths[0].clone(),
        sni: paths[1..].to_vec(),
    };
    crate::tls::check_server_config(&config).map_err(|e| {
        // Point at the first entry that names the failing file.
        let which = e.which().unwrap_or(crate::tls::Which::Cert);
        let found = paths
            .iter()
            .zip(&pairs)
            .find_map(|(p, (prefix, cert, key))| {
                let (path, span, field) = match which {
                    crate::tls::Which::Cert => (&p.cert, cert.span(), "cert"),
                    crate::tls::Which::Key => (&p.key, key.span(), "key"),
                };
                (Some(path.as_path()) == e.path()).then(|| (span, format!("{prefix}.{field}")))
            });
        let (span, key) = found.unwrap_or((raw.cert.span(), format!("{key}.tls")));
        cx.at(span, key, Kind::Tls(e))
    })?;
    Ok(config)
}

fn resolve_listen(
    cx: &Cx<'_>,
    raw: &Spanned<Vec<Spanned<ListenEntry>>>,
    allow_empty: bool,
) -> Result<Vec<ListenConfig>, ConfigError> {
    if raw.get_ref().is_empty() && !allow_empty {
        return Err(cx.at(raw.span(), "server.listen", Kind::NoListen));
    }
    let mut listen: Vec<ListenConfig> = Vec::with_capacity(raw.get_ref().len());
    for (i, entry) in raw.get_ref().iter().enumerate() {
        let key = format!("server.listen[{i}]");
        let resolved = resolve_listen_entry(cx, entry, &key)?;
        if listen.iter().any(|l| l.addr == resolved.addr) {
            let (span, key) = match entry.get_ref() {
                ListenEntry::Addr(_) => (entry.span(), key),
                ListenEntry::Table(t) => (t.addr.span(), format!("{key}.addr")),
            };
            let addr = resolved.addr;
            return Err(cx.at(span, key, Kind::DuplicateAddress { addr }));
        }
        listen.push(resolved);
    }
    Ok(listen)
}

/// One listen entry, `"ip:port"` or a table, at `key` (`server.listen[i]`
/// or `tcp[i].listen`).
pub(super) fn resolve_listen_entry(
    cx: &Cx<'_>,
    entry: &Spanned<ListenEntry>,
    key: &str,
) -> Result<ListenConfig, ConfigError> {
    let (text, span, addr_key, tls, table) = match entry.get_ref() {
        ListenEntry::Addr(text) => (text.as_str(), entry.span(), key.to_owned(), None, None),
        ListenEntry::Table(table) => (
            table.addr.get_ref().as_str(),
            table.addr.span(),
            format!("{key}.addr"),
            table.tls.as_ref(),
            Some(table),
        ),
    };
    let (access, max_connections_per_ip) = match table {
        None => (None, None),
        Some(t) => (
            super::edge::access_rules(cx, &t.allow, &t.deny, key)?,
            super::edge::connections_per_ip(
                cx,
                &t.max_connections_per_ip,
                &format!("{key}.max_connections_per_ip"),
            )?,
        ),
    };
    let proxy_protocol = match table.and_then(|t| t.proxy_protocol.as_ref()) {
        Some(raw) => resolve_proxy_accept(cx, raw, &format!("{key}.proxy_protocol"))?,
        None => None,
    };
    let addr: SocketAddr = text.parse().map_err(|_| {
        let kind = Kind::InvalidAddress {
            value: text.to_owned(),
        };
        cx.at(span.clone(), addr_key.clone(), kind)
    })?;
    let https_redirect = match table.and_then(|t| t.https_redirect.as_ref()) {
        Some(flag) if *flag.get_ref() => {
            if tls.is_some() {
                let kind = Kind::InvalidValue(
                    "https_redirect is for a plain HTTP listener; this one is TLS".to_owned(),
                );
                return Err(cx.at(flag.span(), format!("{key}.https_redirect"), kind));
            }
            true
        }
        _ => false,
    };
    let tls = tls
        .map(|raw| resolve_listen_tls(cx, raw, key))
        .transpose()?;
    Ok(ListenConfig {
        addr,
        tls,
        https_redirect,
        access,
        max_connections_per_ip,
        proxy_protocol,
    })
}

/// A listener's `proxy_protocol` table: `None` when `accept = false`.
/// `trusted` is required with `accept = true`: a header from anyone would
/// let any client choose its own address.
fn resolve_proxy_accept(
    cx: &Cx<'_>,
    raw: &RawProxyProtocol,
    key: &str,
) -> Result<Option<ProxyProtocolAccept>, ConfigError> {
    let timeout = cx.timeout(
        &raw.timeout,
        &format!("{key}.timeout"),
        DEFAULT_PROXY_HEADER_TIMEOUT,
    )?;
    let trusted = super::admin::ip_nets(cx, raw.trusted.as_ref(), &format!("{key}.trusted"))?;
    if !*raw.accept.get_ref() {
        return Ok(None);
    }
    if trusted.is_empty() {
        let span = raw.trusted.as_ref().map_or(raw.accept.span(), |t| t.span());
        let message = "proxy_protocol with accept = true needs a non-empty `trusted` list \
            (the networks of the L4 balancers; \"0.0.0.0/0\" and \"::/0\" trust every source)"
            .to_owned();
        return Err(cx.invalid(span, &format!("{key}.trusted"), message));
    }
    Ok(Some(ProxyProtocolAccept { trusted, timeout }))
}

fn resolve_upstream(
    cx: &Cx<'_>,
    spanned_name: &Spanned<String>,
    raw: &RawUpstream,
) -> Result<UpstreamConfig, ConfigError> {
    let name = spanned_name.get_ref().as_str();
    let prefix = format!("upstreams.{}", quote_key(name));
    let discovery = raw
        .discovery
        .as_ref()
        .map(|d| resolve_discovery(cx, spanned_name.span(), &format!("{prefix}.discovery"), d))
        .transpose()?;
    let no_backends = Vec::new();
    let raw_backends = match &raw.backends {
        Some(list) if list.get_ref().is_empty() && discovery.is_none() => {
            let key = format!("{prefix}.backends");
            return Err(cx.at(list.span(), key, Kind::EmptyBackends));
        }
        Some(list) => list.get_ref(),
        None if discovery.is_some() => &no_backends,
        None => {
            let kind = Kind::MissingKey(
                "missing backends (need a list of { addr = \"ip:port\" }, or discovery)".to_owned(),
            );
            return Err(cx.at(spanned_name.span(), format!("{prefix}.backends"), kind));
        }
    };
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(raw_backends.len());
    for (i, backend) in raw_backends.iter().enumerate() {
        let backend = backend.get_ref();
        let key = format!("{prefix}.backends[{i}].addr");
        let addr = backend_addr(backend.addr.get_ref())
            .map_err(|kind| cx.at(backend.addr.span(), key.clone(), kind))?;
        if backends.iter().any(|b| b.addr == addr) {
            return Err(cx.at(backend.addr.span(), key, Kind::DuplicateAddress { addr }));
        }
        let weight = cx.number(
            &backend.weight,
            &format!("{prefix}.backends[{i}].weight"),
            DEFAULT_WEIGHT.into(),
            WEIGHT_RANGE,
        )?;
        let weight =
            NonZeroU16::new(u16::try_from(weight).unwrap_or(u16::MAX)).unwrap_or(NonZeroU16::MIN);
        backends.push(BackendConfig {
            addr,
            weight,
            down: backend.down.unwrap_or(false),
        });
    }
    let max_idle = cx.number(
        &raw.max_idle,
        &format!("{prefix}.max_idle"),
        DEFAULT_MAX_IDLE as u64,
        MAX_IDLE_RANGE,
    )?;
    let strategy = raw
        .strategy
        .as_ref()
        .map_or_else(Strategy::default, |s| *s.get_ref());
    let hash_key = match &raw.hash_key {
        None => HashKeySource::ClientIp,
        Some(text) => {
            let key = format!("{prefix}.hash_key");
            if strategy != Strategy::ConsistentHash {
                let message = format!(
                    "hash_key only applies to strategy \"consistent_hash\", not {:?}",
                    strategy.name()
                );
                return Err(cx.invalid(text.span(), &key, message));
            }
            parse_hash_key(text.get_ref()).ok_or_else(|| {
                let message = format!(
                    "invalid hash_key {:?}: expected \"client_ip\", \"header:NAME\" or \"cookie:NAME\"",
                    text.get_ref()
                );
                cx.invalid(text.span(), &key, message)
            })?
        }
    };
    let sticky_cookie = resolve_sticky(cx, &prefix, strategy, raw)?;
    let passive_fall = cx.number(
        &raw.passive_fall,
        &format!("{prefix}.passive_fall"),
        DEFAULT_PASSIVE_FALL.into(),
        PASSIVE_FALL_RANGE,
    )?;
    let send_proxy_protocol = match &raw.send_proxy_protocol {
        None => None,
        Some(v) => match v.get_ref().as_str() {
            "v1" => Some(crate::proxy_protocol::Version::V1),
            "v2" => Some(crate::proxy_protocol::Version::V2),
            other => {
                let message = format!("expected \"v1\" or \"v2\", found {other:?}");
                return Err(cx.invalid(
                    v.span(),
                    &format!("{prefix}.send_proxy_protocol"),
                    message,
                ));
            }
        },
    };
    let health = raw
        .health
        .as_ref()
        .map(|h| resolve_health(cx, &format!("{prefix}.health"), h))
        .transpose()?
        .map(|h| HealthConfig {
            send_proxy_protocol,
            ..h
        });
    let breaker = raw
        .breaker
        .as_ref()
        .map(|b| resolve_breaker(cx, &format!("{prefix}.breaker"), b))
        .transpose()?;
    let retry = match &raw.retry {
        None => RetryConfig::disabled(),
        Some(r) => resolve_retry(cx, &format!("{prefix}.retry"), r)?,
    };
    let tls = resolve_upstream_tls(cx, raw, &prefix)?;
    Ok(UpstreamConfig {
        send_proxy_protocol,
        name: name.to_owned(),
        static_backends: backends.len(),
        backends,
        discovery,
        strategy,
        hash_key,
        sticky_cookie,
        panic_mode: raw.panic_mode.unwrap_or(false),
        passive_fall: u32::try_from(passive_fall).unwrap_or(u32::MAX),
        passive_cooldown: cx.timeout(
            &raw.passive_cooldown,
            &format!("{prefix}.passive_cooldown"),
            DEFAULT_PASSIVE_COOLDOWN,
        )?,
        health,
        breaker,
        retry,
        connect_timeout: cx.timeout(
            &raw.connect_timeout,
            &format!("{prefix}.connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        response_timeout: cx.timeout(
            &raw.response_timeout,
            &format!("{prefix}.response_timeout"),
            DEFAULT_RESPONSE_TIMEOUT,
        )?,
        max_idle: to_usize(max_idle),
        max_connections: match &raw.max_connections {
            None => None,
            some => Some(to_usize(cx.number(
                some,
                &format!("{prefix}.max_connections"),
                1,
                UPSTREAM_MAX_CONNECTIONS_RANGE,
            )?)),
        },
        queue_timeout: cx.timeout(
            &raw.queue_timeout,
            &format!("{prefix}.queue_timeout"),
            DEFAULT_QUEUE_TIMEOUT,
        )?,
        idle_timeout: cx.timeout(
            &raw.idle_timeout,
            &format!("{prefix}.idle_timeout"),
            DEFAULT_IDLE_TIMEOUT,
        )?,
        tls,
    })
}

/// `discovery = { dns, port, interval, min_interval, resolvers, allow_empty }`.
/// Nothing is resolved here (`ringlb check --resolve` and the start do).
fn resolve_discovery(
    cx: &Cx<'_>,
    upstream_span: Range<usize>,
    key: &str,
    raw: &RawDiscovery,
) -> Result<DiscoveryConfig, ConfigError> {
    let Some(dns) = &raw.dns else {
        let kind = Kind::MissingKey("discovery needs dns = \"NAME\"".to_owned());
        return Err(cx.at(upstream_span, format!("{key}.dns"), kind));
    };
    let name = dns.get_ref().strip_suffix('.').unwrap_or(dns.get_ref());
    if !valid_host_name(name) || name.parse::<IpAddr>().is_ok() {
        let message = format!("invalid dns {:?}: expected a DNS name", dns.get_ref());
        return Err(cx.invalid(dns.span(), &format!("{key}.dns"), message));
    }
    let records = match &raw.port {
        None => DiscoveryRecords::Srv,
        Some(port) => {
            let value = cx.number(&raw.port, &format!("{key}.port"), 0, 1..=65_535)?;
            if name.starts_with('_') {
                let message = format!(
                    "{name:?} is an SRV name, whose records carry their ports: leave port out"
                );
                return Err(cx.invalid(port.span(), &format!("{key}.port"), message));
            }
            let port = u16::try_from(value).ok().and_then(NonZeroU16::new);
            DiscoveryRecords::Address {
                port: port.unwrap_or(NonZeroU16::MIN),
            }
        }
    };
    let interval = cx.timeout(
        &raw.interval,
        &format!("{key}.interval"),
        DEFAULT_DISCOVERY_INTERVAL,
    )?;
    let min_interval = cx.timeout(
        &raw.min_interval,
        &format!("{key}.min_interval"),
        DEFAULT_DISCOVERY_MIN_INTERVAL.min(interval),
    )?;
    if let (Some(m), true) = (&raw.min_interval, min_interval > interval) {
        let message = format!(
            "min_interval {} is longer than interval {}",
            humantime::format_duration(min_interval),
            humantime::format_duration(interval)
        );
        return Err(cx.invalid(m.span(), &format!("{key}.min_interval"), message));
    }
    let mut resolvers = Vec::new();
    if let Some(list) = &raw.resolvers {
        if list.get_ref().len() > MAX_DISCOVERY_RESOLVERS {
            let message = format!(
                "{} resolvers, at most {MAX_DISCOVERY_RESOLVERS}",
                list.get_ref().len()
            );
            return Err(cx.invalid(list.span(), &format!("{key}.resolvers"), message));
        }
        for (i, r) in list.get_ref().iter().enumerate() {
            let text = r.get_ref();
            let addr = text
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| {
                    text.parse::<IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .filter(|a| a.port() != 0);
            let Some(addr) = addr else {
                let kind = Kind::InvalidAddress {
                    value: text.clone(),
                };
                return Err(cx.at(r.span(), format!("{key}.resolvers[{i}]"), kind));
            };
            resolvers.push(addr);
        }
    }
    Ok(DiscoveryConfig {
        dns: name.to_owned(),
        records,
        interval,
        min_interval,
        resolvers,
        allow_empty: raw.allow_empty.unwrap_or(false),
    })
}

/// `client_ip`, `header:NAME` or `cookie:NAME` with `NAME` a token.
fn parse_hash_key(text: &str) -> Option<HashKeySource> {
    if text == "client_ip" {
        return Some(HashKeySource::ClientIp);
    }
    let (kind, name) = text.split_once(':')?;
    if !is_token(name) {
        return None;
    }
    match kind {
        "header" => Some(HashKeySource::Header(name.to_ascii_lowercase())),
        "cookie" => Some(HashKeySource::Cookie(name.to_owned())),
        _ => None,
    }
}

/// An RFC 9110 token: what a header or cookie name may be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn resolve_sticky(
    cx: &Cx<'_>,
    prefix: &str,
    strategy: Strategy,
    raw: &RawUpstream,
) -> Result<StickyCookieConfig, ConfigError> {
    let Some(RawStickyCookie { name, max_age }) = &raw.sticky_cookie else {
        return Ok(StickyCookieConfig::default());
    };
    let key = format!("{prefix}.sticky_cookie");
    if strategy != Strategy::StickyCookie {
        let message = format!(
            "sticky_cookie only applies to strategy \"sticky_cookie\", not {:?}",
            strategy.name()
        );
        return Err(match raw.strategy.as_ref().or(None) {
            Some(s) => cx.invalid(s.span(), &key, message),
            None => cx.nowhere(key, Kind::InvalidValue(message)),
        });
    }
    let name = match name {
        None => DEFAULT_STICKY_COOKIE.to_owned(),
        Some(n) if is_token(n.get_ref()) => n.get_ref().clone(),
        Some(n) => {
            let message = format!("invalid cookie name {:?}: must be a token", n.get_ref());
            return Err(cx.invalid(n.span(), &format!("{key}.name"), message));
        }
    };
    let max_age = match max_age {
        None => None,
        Some(_) => Some(cx.timeout(max_age, &format!("{key}.max_age"), Duration::ZERO)?),
    };
    Ok(StickyCookieConfig { name, max_age })
}

fn resolve_health(cx: &Cx<'_>, key: &str, raw: &RawHealth) -> Result<HealthConfig, ConfigError> {
    let path = match &raw.path {
        None => DEFAULT_HEALTH_PATH.to_owned(),
        Some(p) if valid_path_prefix(p.get_ref()) => p.get_ref().clone(),
        Some(p) => {
            let message = format!(
                "invalid health path {:?}: must start with \"/\" and hold no whitespace or control characters",
                p.get_ref()
            );
            return Err(cx.invalid(p.span(), &format!("{key}.path"), message));
        }
    };
    let expect_status = match &raw.expect_status {
        None => StatusRanges::parse(DEFAULT_EXPECT_STATUS).unwrap_or(StatusRanges(Vec::new())),
        Some(e) => StatusRanges::parse(e.get_ref()).ok_or_else(|| {
            let message = format!(
                "invalid expect_status {:?}: expected statuses or ranges in 100..=599, e.g. \"200-399\" or \"200,204\"",
                e.get_ref()
            );
            cx.invalid(e.span(), &format!("{key}.expect_status"), message)
        })?,
    };
    Ok(HealthConfig {
        send_proxy_protocol: None,
        kind: raw.kind.unwrap_or_default(),
        path,
        interval: cx.timeout(
            &raw.interval,
            &format!("{key}.interval"),
            DEFAULT_HEALTH_INTERVAL,
        )?,
        timeout: cx.timeout(
            &raw.timeout,
            &format!("{key}.timeout"),
            DEFAULT_HEALTH_TIMEOUT,
        )?,
        expect_status,
        rise: cx.threshold(&raw.rise, &format!("{key}.rise"), DEFAULT_RISE)?,
        fall: cx.threshold(&raw.fall, &format!("{key}.fall"), DEFAULT_FALL)?,
        start: raw.start.unwrap_or_default(),
    })
}

fn resolve_breaker(cx: &Cx<'_>, key: &str, raw: &RawBreaker) -> Result<BreakerConfig, ConfigError> {
    Ok(BreakerConfig {
        failures: cx.threshold(
            &raw.failures,
            &format!("{key}.failures"),
            DEFAULT_BREAKER_FAILURES,
        )?,
        successes: cx.threshold(
            &raw.successes,
            &format!("{key}.successes"),
            DEFAULT_BREAKER_SUCCESSES,
        )?,
        open_for: cx.timeout(
            &raw.open_for,
            &format!("{key}.open_for"),
            DEFAULT_BREAKER_OPEN_FOR,
        )?,
        half_open_probes: cx.threshold(
            &raw.half_open_probes,
            &format!("{key}.half_open_probes"),
            DEFAULT_HALF_OPEN_PROBES,
        )?,
    })
}

fn resolve_retry(cx: &Cx<'_>, key: &str, raw: &RawRetry) -> Result<RetryConfig, ConfigError> {
    let attempts = cx.number(
        &raw.attempts,
        &format!("{key}.attempts"),
        DEFAULT_RETRY_ATTEMPTS.into(),
        RETRY_ATTEMPTS_RANGE,
    )?;
    // Zero is a valid backoff: retry at once.
    let backoff = raw
        .backoff
        .as_ref()
        .map_or(DEFAULT_RETRY_BACKOFF, |b| b.get_ref().0);
    let max_backoff = match &raw.max_backoff {
        None => DEFAULT_RETRY_MAX_BACKOFF.max(backoff),
        Some(m) if m.get_ref().0 < backoff => {
            let message = format!(
                "max_backoff {} is less than backoff {}",
                humantime::format_duration(m.get_ref().0),
                humantime::format_duration(backoff)
            );
            return Err(cx.invalid(m.span(), &format!("{key}.max_backoff"), message));
        }
        Some(m) => m.get_ref().0,
    };
    let on = match &raw.on {
        None => RetryOn::default_set(),
        Some(list) => {
            let mut on = RetryOn::none();
            for (i, entry) in list.get_ref().iter().enumerate() {
                if !on.add(entry.get_ref()) {
                    let message = format!(
                        "unknown retry condition {:?}: expected \"connect\", \"reset\", \"timeout\" or a status 500..=599",
                        entry.get_ref()
                    );
                    return Err(cx.invalid(entry.span(), &format!("{key}.on[{i}]"), message));
                }
            }
            on
        }
    };
    let budget = match &raw.budget {
        None => Ratio::from_f64(DEFAULT_RETRY_BUDGET),
        Some(b) if (0.0..=1.0).contains(b.get_ref()) => Ratio::from_f64(*b.get_ref()),
        Some(b) => {
            let message = format!("budget {} is out of range, expected 0.0..=1.0", b.get_ref());
            return Err(cx.invalid(b.span(), &format!("{key}.budget"), message));
        }
    };
    let retry_buffer = cx.number(
        &raw.retry_buffer,
        &format!("{key}.retry_buffer"),
        DEFAULT_RETRY_BUFFER as u64,
        RETRY_BUFFER_RANGE,
    )?;
    Ok(RetryConfig {
        attempts: NonZeroU32::new(u32::try_from(attempts).unwrap_or(1)).unwrap_or(NonZeroU32::MIN),
        backoff,
        max_backoff,
        jitter: raw.jitter.unwrap_or(true),
        on,
        budget,
        retry_buffer: to_usize(retry_buffer),
    })
}

/// `tls`, `tls_ca`, `tls_server_name` of an upstream; the CA file is
/// loaded now so that `ringlb check` catches a bad one.
fn resolve_upstream_tls(
    cx: &Cx<'_>,
    raw: &RawUpstream,
    prefix: &str,
) -> Result<Option<UpstreamTlsConfig>, ConfigError> {
    let enabled = raw.tls.as_ref().is_some_and(|t| *t.get_ref());
    if !enabled {
        let stray = [
            ("tls_ca", raw.tls_ca.as_ref()),
            ("tls_server_name", raw.tls_server_name.as_ref()),
        ];
        if let Some((name, value)) = stray.iter().find_map(|(n, v)| v.map(|v| (n, v))) {
            let kind = Kind::TlsKeys(format!("{name} is set but tls is not true"));
            return Err(cx.at(value.span(), format!("{prefix}.{name}"), kind));
        }
        return Ok(None);
    }
    let Some(ca) = &raw.tls_ca else {
        let kind = Kind::TlsKeys("tls = true needs tls_ca, a PEM file of CA certificates".into());
        let span = raw.tls.as_ref().map_or(0..0, |t| t.span());
        return Err(cx.at(span, format!("{prefix}.tls_ca"), kind));
    };
    let path = cx.path(ca.get_ref());
    crate::tls::load_client_config(&path)
        .map_err(|e| cx.at(ca.span(), format!("{prefix}.tls_ca"), Kind::Tls(e)))?;
    let server_name = match &raw.tls_server_name {
        None => None,
        Some(name) => {
            crate::tls::server_name(name.get_ref()).map_err(|reason| {
                let kind = Kind::InvalidServerName {
                    value: name.get_ref().clone(),
                    reason,
                };
                cx.at(name.span(), format!("{prefix}.tls_server_name"), kind)
            })?;
            Some(name.get_ref().clone())
        }
    };
    Ok(Some(UpstreamTlsConfig {
        ca: path,
        server_name,
    }))
}

/// `ip:port`, or `localhost:port` resolved now (IPv4 preferred, since local
/// backends most often bind 127.0.0.1). Port 0 is refused: nothing can be
/// connected to there.
fn backend_addr(text: &str) -> Result<SocketAddr, Kind> {
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => resolve_localhost(text)?,
    };
    if addr.port() == 0 {
        return Err(Kind::ZeroPort {
            value: text.to_owned(),
        });
    }
    Ok(addr)
}

fn resolve_localhost(text: &str) -> Result<SocketAddr, Kind> {
    let invalid = || Kind::InvalidAddress {
        value: text.to_owned(),
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    if !host.eq_ignore_ascii_case("localhost") {
        return Err(invalid());
    }
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let unresolvable = |reason: String| Kind::Unresolvable {
        value: text.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = ("localhost", port)
        .to_socket_addrs()
        .map_err(|e| unresolvable(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| unresolvable("no addresses".to_owned()))
}

fn resolve_routes(
    cx: &Cx<'_>,
    raw: &Option<Spanned<Vec<Spanned<RawRoute>>>>,
    upstreams: &[UpstreamConfig],
    server_pages: &ErrorPages,
    zones: &[super::CacheZoneConfig],
) -> Result<Vec<RouteConfig>, ConfigError> {
    let raw_routes = match raw {
        None => return Err(cx.nowhere("routes", Kind::NoRoutes)),
        Some(list) if list.get_ref().is_empty() => {
            return Err(cx.at(list.span(), "routes", Kind::NoRoutes))
        }
        Some(list) => list.get_ref(),
    };
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw_routes.len());
    for (i, route) in raw_routes.iter().enumerate() {
        let route_span = route.span();
        let route = route.get_ref();
        let path_prefix = match &route.path_prefix {
            None => "/".to_owned(),
            Some(p) if valid_path_prefix(p.get_ref()) => p.get_ref().clone(),
            Some(p) => {
                let kind = Kind::InvalidPathPrefix {
                    value: p.get_ref().clone(),
                };
                return Err(cx.at(p.span(), format!("routes[{i}].path_prefix"), kind));
            }
        };
        let host = match &route.host {
            None => None,
            Some(h) => Some(parse_host(h.get_ref()).ok_or_else(|| {
                let kind = Kind::InvalidHost {
                    value: h.get_ref().clone(),
                };
                cx.at(h.span(), format!("routes[{i}].host"), kind)
            })?),
        };
        let redirect = super::gateway::resolve_redirect(cx, i, route)?;
        let upstream = match &route.upstream {
            Some(name_at) => Some(upstream_index(
                cx,
                name_at,
                upstreams,
                &format!("routes[{i}].upstream"),
            )?),
            None if redirect.is_some() => None,
            None => {
                let kind = Kind::MissingKey(
                    "missing field `upstream` (required unless the route has a `redirect`)"
                        .to_owned(),
                );
                return Err(cx.at(route_span, format!("routes[{i}].upstream"), kind));
            }
        };
        let matching = super::gateway::resolve_route_match(cx, i, route)?;
        let rewrite = super::gateway::resolve_rewrite(cx, i, route)?;
        let request_headers = super::gateway::resolve_request_headers(cx, i, route)?;
        let response_headers = super::gateway::resolve_response_headers(cx, i, route)?;
        let https_redirect = route.https_redirect.as_ref().is_some_and(|b| *b.get_ref());
        let error_pages = super::gateway::resolve_route_pages(cx, i, route, server_pages)?;
        let cache = super::cache::resolve_route_cache(cx, i, route.cache.as_ref(), zones)?;
        let access =
            super::edge::access_rules(cx, &route.allow, &route.deny, &format!("routes[{i}]"))?;
        // What names the route's rate-limit cells across reloads.
        let identity = super::edge::route_identity(&format!("{host:?}"), &path_prefix, route);
        let rate_limit = super::edge::rate_limit(cx, i, &route.rate_limit, identity)?;
        let cors = super::edge::cors(cx, i, &route.cors)?;
        let compress = super::gateway::resolve_compress(cx, i, route)?;
        if let Some(first) = routes
            .iter()
            .position(|r| r.host == host && r.path_prefix == path_prefix && r.matching == matching)
        {
            return Err(cx.at(
                route_span,
                format!("routes[{i}]"),
                Kind::DuplicateRoute { first },
            ));
        }
        routes.push(RouteConfig {
            path_prefix,
            host,
            upstream,
            matching,
            rewrite,
            request_headers,
            response_headers,
            redirect,
            https_redirect,
            error_pages,
            cache,
            access,
            rate_limit,
            cors,
            compress,
        });
    }
    Ok(routes)
}

/// The index of the upstream `name` names, at `key`; an unknown name is
/// an error listing the known ones.
pub(super) fn upstream_index(
    cx: &Cx<'_>,
    name: &Spanned<String>,
    upstreams: &[UpstreamConfig],
    key: &str,
) -> Result<usize, ConfigError> {
    upstreams
        .iter()
        .position(|u| &u.name == name.get_ref())
        .ok_or_else(|| {
            let kind = Kind::UnknownUpstream {
                name: name.get_ref().clone(),
                known: upstreams.iter().map(|u| u.name.clone()).collect(),
            };
            cx.at(name.span(), key, kind)
        })
}

fn valid_path_prefix(p: &str) -> bool {
    p.starts_with('/')
        && !p
            .chars()
            .any(|c| c == '?' || c.is_whitespace() || c.is_control())
}

/// A host name (letters, digits, `-`, `_`, dot-separated labels), `*.` and a
/// host name, or a bracketed IPv6 literal. One trailing dot is dropped.
/// Lowercased. No port.
fn parse_host(text: &str) -> Option<HostPattern> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(rest) = name.strip_prefix("*.") {
        return valid_host_name(rest).then(|| HostPattern::Suffix(format!(".{rest}")));
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return matches!(inner.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
            .then(|| HostPattern::Exact(name.to_owned()));
    }
    valid_host_name(name).then(|| HostPattern::Exact(name.to_owned()))
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
