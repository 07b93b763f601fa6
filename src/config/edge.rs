//! Checks the edge-defence keys (issue 12): `trusted_proxies`,
//! `allow`/`deny`, `max_connections_per_ip`, and a route's `rate_limit`
//! and `cors`, into `crate::gateway` types.
//!
//! Why apart from `gateway`: these keys live on the server, the listeners
//! and the routes, and each error names its own key path and span.

use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::sync::Arc;

use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::gateway::is_token;
use super::raw::{RawCors, RawRateLimit, RawRoute};
use super::resolve::Cx;

use crate::gateway::cors::OriginPattern;
use crate::gateway::rate_limit::{parse_rate, RateKey};
use crate::gateway::{AccessRules, Cidr, CidrList, Cors, RateLimit};

/// Most entries in one CIDR list (bounded work per request).
const MAX_CIDRS: usize = 1024;
/// `max_connections_per_ip` range.
const CONNECTIONS_PER_IP_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// `rate_limit.burst` range.
const BURST_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// `cors.max_age` range, seconds (a week; browsers cap lower).
const MAX_AGE_RANGE: RangeInclusive<u64> = 0..=604_800;
/// Most entries in one CORS list.
const MAX_CORS_ENTRIES: usize = 64;

type RawList = Option<Spanned<Vec<Spanned<String>>>>;

/// A list of CIDR blocks at `key`; empty when absent.
pub(super) fn cidr_list(cx: &Cx<'_>, raw: &RawList, key: &str) -> Result<CidrList, ConfigError> {
    let Some(raw) = raw else {
        return Ok(CidrList::default());
    };
    if raw.get_ref().len() > MAX_CIDRS {
        let kind = Kind::InvalidValue(format!("at most {MAX_CIDRS} entries"));
        return Err(cx.at(raw.span(), key, kind));
    }
    raw.get_ref()
        .iter()
        .enumerate()
        .map(|(j, text)| {
            Cidr::parse(text.get_ref())
                .map_err(|e| cx.at(text.span(), format!("{key}[{j}]"), Kind::InvalidValue(e)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CidrList)
}

/// `allow` and `deny` under `prefix` (`routes[3]`, `server.listen[0]`);
/// `None` when both are absent or empty.
pub(super) fn access_rules(
    cx: &Cx<'_>,
    allow: &RawList,
    deny: &RawList,
    prefix: &str,
) -> Result<Option<Arc<AccessRules>>, ConfigError> {
    let rules = AccessRules {
        allow: cidr_list(cx, allow, &format!("{prefix}.allow"))?,
        deny: cidr_list(cx, deny, &format!("{prefix}.deny"))?,
    };
    Ok((!rules.is_empty()).then(|| Arc::new(rules)))
}

/// `max_connections_per_ip` at `key`; `None` when absent.
pub(super) fn connections_per_ip(
    cx: &Cx<'_>,
    raw: &Option<Spanned<u64>>,
    key: &str,
) -> Result<Option<NonZeroU32>, ConfigError> {
    if raw.is_none() {
        return Ok(None);
    }
    let n = cx.number(raw, key, 0, CONNECTIONS_PER_IP_RANGE)?;
    Ok(NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// What tells route `route` apart from the others, as text that stays
/// the same across reloads while the route does: its host, prefix and
/// conditions (not its position in the file, nor spans).
pub(super) fn route_identity(host: &str, path_prefix: &str, route: &RawRoute) -> String {
    let text = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
    let methods = route.methods.as_ref().map(|m| {
        m.get_ref()
            .iter()
            .map(|x| x.get_ref().clone())
            .collect::<Vec<_>>()
    });
    let headers = route.headers.as_ref().map(|hs| {
        hs.get_ref()
            .iter()
            .map(|h| {
                let h = h.get_ref();
                (h.name.get_ref().clone(), text(&h.value), text(&h.regex))
            })
            .collect::<Vec<_>>()
    });
    format!(
        "{host}|{path_prefix}|{methods:?}|{:?}|{headers:?}",
        text(&route.path_regex)
    )
}

/// `rate_limit` of route `i`; `identity` names the route across reloads.
pub(super) fn rate_limit(
    cx: &Cx<'_>,
    i: usize,
    raw: &Option<Spanned<RawRateLimit>>,
    identity: String,
) -> Result<Option<Arc<RateLimit>>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let raw = raw.get_ref();
    let key = format!("routes[{i}].rate_limit");
    let interval = parse_rate(raw.rate.get_ref()).map_err(|e| {
        cx.at(
            raw.rate.span(),
            format!("{key}.rate"),
            Kind::InvalidValue(e),
        )
    })?;
    let burst = cx.number(&raw.burst, &format!("{key}.burst"), 1, BURST_RANGE)?;
    let rate_key = match &raw.key {
        None => RateKey::ClientIp,
        Some(k) => match k.get_ref().as_str() {
            "client_ip" => RateKey::ClientIp,
            text => match text.strip_prefix("header:") {
                Some(name) if is_token(name) => RateKey::Header(name.to_ascii_lowercase()),
                _ => {
                    let kind = Kind::InvalidValue(format!(
                        "{text:?}: give \"client_ip\" or \"header:NAME\" with a field name"
                    ));
                    return Err(cx.at(k.span(), format!("{key}.key"), kind));
                }
            },
        },
    };
    Ok(Some(Arc::new(RateLimit {
        interval,
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
        key: rate_key,
        identity,
    })))
}

/// `cors` of route `i`.
pub(super) fn cors(
    cx: &Cx<'_>,
    i: usize,
    raw: &Option<Spanned<RawCors>>,
) -> Result<Option<Arc<Cors>>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let span = raw.span();
    let raw = raw.get_ref();
    let key = format!("routes[{i}].cors");
    let origins = raw.allow_origins.get_ref();
    if origins.is_empty() || origins.len() > MAX_CORS_ENTRIES {
        let kind = Kind::InvalidValue(format!("give 1 to {MAX_CORS_ENTRIES} origins"));
        return Err(cx.at(
            raw.allow_origins.span(),
            format!("{key}.allow_origins"),
            kind,
        ));
    }
    let credentials = raw.allow_credentials.as_ref().is_some_and(|c| *c.get_ref());
    let mut allow_origins = Vec::with_capacity(origins.len());
    for (j, origin) in origins.iter().enumerate() {
        let at = format!("{key}.allow_origins[{j}]");
        let pattern = OriginPattern::parse(origin.get_ref())
            .map_err(|e| cx.at(origin.span(), at.clone(), Kind::InvalidValue(e)))?;
        if pattern == OriginPattern::Any && credentials {
            let kind = Kind::InvalidValue(
                "\"*\" cannot be used with allow_credentials = true (the CORS standard forbids it); list the origins".to_owned(),
            );
            return Err(cx.at(origin.span(), at, kind));
        }
        allow_origins.push(pattern);
    }
    // A list of tokens (methods, field names), or `*` where `star` allows.
    let tokens = |list: &Option<Spanned<Vec<Spanned<String>>>>,
                  name: &str,
                  star: bool,
                  default: &str|
     -> Result<String, ConfigError> {
        let Some(list) = list else {
            return Ok(default.to_owned());
        };
        if list.get_ref().len() > MAX_CORS_ENTRIES {
            let kind = Kind::InvalidValue(format!("at most {MAX_CORS_ENTRIES} entries"));
            return Err(cx.at(list.span(), format!("{key}.{name}"), kind));
        }
        let mut out = Vec::new();
        for (j, item) in list.get_ref().iter().enumerate() {
            let text = item.get_ref();
            let ok = is_token(text) && (text != "*" || (star && !credentials));
            if !ok {
                let why = if text == "*" && credentials {
                    "\"*\" is taken literally with allow_credentials = true; list the names"
                        .to_owned()
                } else {
                    format!("{text:?} is not a token")
                };
                return Err(cx.at(
                    item.span(),
                    format!("{key}.{name}[{j}]"),
                    Kind::InvalidValue(why),
                ));
            }
            out.push(text.as_str());
        }
        Ok(out.join(", "))
    };
    let cors = Cors {
        allow_origins,
        allow_methods: tokens(
            &raw.allow_methods,
            "allow_methods",
            false,
            "GET, HEAD, POST",
        )?,
        allow_headers: tokens(&raw.allow_headers, "allow_headers", true, "")?,
        expose_headers: tokens(&raw.expose_headers, "expose_headers", true, "")?,
        allow_credentials: credentials,
        max_age: match &raw.max_age {
            None => None,
            Some(_) => {
                Some(cx.number(&raw.max_age, &format!("{key}.max_age"), 0, MAX_AGE_RANGE)?)
            }
        },
    };
    if cors.allow_methods.is_empty() {
        let kind = Kind::InvalidValue("allow_methods cannot be empty".to_owned());
        return Err(cx.at(span, format!("{key}.allow_methods"), kind));
    }
    Ok(Some(Arc::new(cors)))
}
