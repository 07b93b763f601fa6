//! Checks the `[[tcp]]` listeners of the L4 mode (issue 14).
//!
//! Why apart from `resolve`: a TCP listener shares the listen entry's form
//! (`"ip:port"` or a table with `allow`, `deny`, `max_connections_per_ip`
//! and `proxy_protocol`) and the upstreams, but nothing of the HTTP routes;
//! its own keys are checked here with the key path and span an operator
//! needs.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::raw::{HumanDuration, ListenEntry};
use super::resolve::Cx;
use super::{ListenConfig, Strategy, UpstreamConfig};
use crate::tcp::sni::{SniPattern, SniRoutes};

/// Default `idle_timeout`: no byte either way for this long ends a
/// session (nginx's `proxy_timeout` default).
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default `client_hello_timeout`: how long the ClientHello may take to
/// arrive on a listener with `sni_routes`.
pub const DEFAULT_CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most `[[tcp]]` listeners, and most `sni_routes` on one.
const MAX_TCP_LISTENERS: usize = 256;
const MAX_SNI_ROUTES: usize = 1024;

/// One `[[tcp]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    pub name: Option<Spanned<String>>,
    pub listen: Spanned<ListenEntry>,
    pub upstream: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<HumanDuration>>,
    pub client_hello_timeout: Option<Spanned<HumanDuration>>,
    pub sni_routes: Option<Spanned<Vec<Spanned<RawSniRoute>>>>,
}

/// `sni_routes = [{ sni = "db.example.com", upstream = "db" }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSniRoute {
    pub sni: Spanned<String>,
    pub upstream: Spanned<String>,
}

/// One `[[tcp]]` listener: raw TCP relayed to an upstream's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// `name`: the `listener` label of its metrics and access log lines;
    /// defaults to the listen address.
    pub name: String,
    /// `listen`: the address and the connection-level settings it shares
    /// with HTTP listeners (`allow`, `deny`, `max_connections_per_ip`,
    /// `proxy_protocol`); never `tls` or `https_redirect`.
    pub listen: ListenConfig,
    /// `upstream`: index into `Config::upstreams`; with `sni_routes`, the
    /// upstream of a ClientHello that no route matches (`None`: such a
    /// connection is closed).
    pub upstream: Option<usize>,
    /// `idle_timeout`: a session with no byte in either direction for this
    /// long is closed. Default 10 min.
    pub idle_timeout: Duration,
    /// `client_hello_timeout`: the ClientHello's read deadline with
    /// `sni_routes`. Default 5 s.
    pub client_hello_timeout: Duration,
    /// `sni_routes`: the upstream chosen by the TLS ClientHello's server
    /// name, without terminating TLS. Empty: no ClientHello is read.
    pub sni_routes: SniRoutes,
}

/// Resolves every `[[tcp]]` table; `http_listen` is `server.listen`, whose
/// addresses a TCP listener must not repeat.
pub(super) fn resolve_tcp(
    cx: &Cx<'_>,
    raw: Option<&Spanned<Vec<Spanned<RawTcp>>>>,
    upstreams: &[UpstreamConfig],
    http_listen: &[ListenConfig],
) -> Result<Vec<TcpConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.get_ref().len() > MAX_TCP_LISTENERS {
        let message = format!("at most {MAX_TCP_LISTENERS} [[tcp]] listeners");
        return Err(cx.at(raw.span(), "tcp", Kind::InvalidValue(message)));
    }
    let mut out: Vec<TcpConfig> = Vec::with_capacity(raw.get_ref().len());
    for (i, entry) in raw.get_ref().iter().enumerate() {
        let key = format!("tcp[{i}]");
        let table = entry.get_ref();
        let listen_key = format!("{key}.listen");
        // Before the entry is resolved: a `tls` table's files are read then.
        if let ListenEntry::Table(t) = table.listen.get_ref() {
            let refused = t
                .tls
                .as_ref()
                .map(|_| ("tls", table.listen.span()))
                .or_else(|| {
                    t.https_redirect
                        .as_ref()
                        .map(|f| ("https_redirect", f.span()))
                });
            if let Some((field, span)) = refused {
                let message = format!(
                    "a [[tcp]] listener relays bytes as they come, so `{field}` has no meaning \
                     here; TLS passes through it (route it with sni_routes) or is terminated \
                     on a server.listen listener"
                );
                return Err(cx.at(
                    span,
                    format!("{listen_key}.{field}"),
                    Kind::InvalidValue(message),
                ));
            }
        }
        let listen = super::resolve::resolve_listen_entry(cx, &table.listen, &listen_key)?;
        let taken = http_listen
            .iter()
            .chain(out.iter().map(|t| &t.listen))
            .any(|l| l.addr == listen.addr);
        if taken {
            let span = match table.listen.get_ref() {
                ListenEntry::Table(t) => t.addr.span(),
                ListenEntry::Addr(_) => table.listen.span(),
            };
            return Err(cx.at(
                span,
                listen_key,
                Kind::DuplicateAddress { addr: listen.addr },
            ));
        }
        let name = match &table.name {
            None => listen.addr.to_string(),
            Some(n) => {
                let text = n.get_ref();
                if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
                    let message =
                        "a name of 1 to 64 characters without control characters".to_owned();
                    return Err(cx.at(
                        n.span(),
                        format!("{key}.name"),
                        Kind::InvalidValue(message),
                    ));
                }
                text.clone()
            }
        };
        if out.iter().any(|t| t.name == name) {
            let span = table.name.as_ref().map_or(entry.span(), Spanned::span);
            let message = format!("the name {name:?} is taken by an earlier [[tcp]] listener");
            return Err(cx.at(span, format!("{key}.name"), Kind::InvalidValue(message)));
        }
        let upstream = table
            .upstream
            .as_ref()
            .map(|u| tcp_upstream(cx, u, upstreams, &format!("{key}.upstream")))
            .transpose()?;
        let sni_routes = resolve_sni_routes(cx, table.sni_routes.as_ref(), upstreams, &key)?;
        if upstream.is_none() && sni_routes.is_empty() {
            let message = "missing field `upstream` (required unless the listener has sni_routes)";
            return Err(cx.at(
                entry.span(),
                format!("{key}.upstream"),
                Kind::MissingKey(message.to_owned()),
            ));
        }
        let idle_timeout = cx.timeout(
            &table.idle_timeout,
            &format!("{key}.idle_timeout"),
            DEFAULT_TCP_IDLE_TIMEOUT,
        )?;
        let client_hello_timeout = cx.timeout(
            &table.client_hello_timeout,
            &format!("{key}.client_hello_timeout"),
            DEFAULT_CLIENT_HELLO_TIMEOUT,
        )?;
        out.push(TcpConfig {
            name,
            listen,
            upstream,
            idle_timeout,
            client_hello_timeout,
            sni_routes,
        });
    }
    Ok(out)
}

/// The index of the upstream `name` names, if a TCP listener can use it:
/// not `sticky_cookie` (no cookies in raw TCP) and not `tls` (the bytes
/// are relayed as they come).
fn tcp_upstream(
    cx: &Cx<'_>,
    name: &Spanned<String>,
    upstreams: &[UpstreamConfig],
    key: &str,
) -> Result<usize, ConfigError> {
    let index = super::resolve::upstream_index(cx, name, upstreams, key)?;
    let up = &upstreams[index];
    let unusable = if up.strategy == Strategy::StickyCookie {
        Some("strategy sticky_cookie needs HTTP cookies; use ip_hash or consistent_hash")
    } else if up.tls.is_some() {
        Some("tls = true originates TLS to the backends; a [[tcp]] listener relays bytes as they come")
    } else {
        None
    };
    if let Some(why) = unusable {
        let message = format!(
            "upstream {:?} cannot serve a [[tcp]] listener: {why}",
            up.name
        );
        return Err(cx.at(name.span(), key, Kind::InvalidValue(message)));
    }
    Ok(index)
}

fn resolve_sni_routes(
    cx: &Cx<'_>,
    raw: Option<&Spanned<Vec<Spanned<RawSniRoute>>>>,
    upstreams: &[UpstreamConfig],
    key: &str,
) -> Result<SniRoutes, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SniRoutes::default());
    };
    if raw.get_ref().len() > MAX_SNI_ROUTES {
        let message = format!("at most {MAX_SNI_ROUTES} sni_routes");
        return Err(cx.at(
            raw.span(),
            format!("{key}.sni_routes"),
            Kind::InvalidValue(message),
        ));
    }
    let mut routes = Vec::with_capacity(raw.get_ref().len());
    for (j, route) in raw.get_ref().iter().enumerate() {
        let route = route.get_ref();
        let route_key = format!("{key}.sni_routes[{j}]");
        let pattern = SniPattern::parse(route.sni.get_ref()).map_err(|why| {
            cx.at(
                route.sni.span(),
                format!("{route_key}.sni"),
                Kind::InvalidValue(why),
            )
        })?;
        if routes.iter().any(|(p, _)| *p == pattern) {
            let message = format!("{:?} is listed twice", route.sni.get_ref());
            return Err(cx.at(
                route.sni.span(),
                format!("{route_key}.sni"),
                Kind::InvalidValue(message),
            ));
        }
        let upstream = tcp_upstream(
            cx,
            &route.upstream,
            upstreams,
            &format!("{route_key}.upstream"),
        )?;
        routes.push((pattern, upstream));
    }
    Ok(SniRoutes::new(routes))
}
