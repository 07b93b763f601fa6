//! Checks `[cache.zones.NAME]` and a route's `cache = { ... }` (issue 13).
//!
//! Why apart from `resolve`: the cache keys are self-contained; each is
//! checked here with the key path and span an operator needs. Sizes are
//! written as `"256MiB"`: a number and one of `B`, `KiB`, `MiB`, `GiB`
//! (or a bare number of bytes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::raw::HumanDuration;
use super::resolve::Cx;
use crate::cache::key::KeySpec;
use crate::cache::policy::Rules;

/// Default `max_size` of a zone.
pub const DEFAULT_ZONE_SIZE: u64 = 256 << 20;
/// Default `max_object` of a zone.
pub const DEFAULT_MAX_OBJECT: u64 = 8 << 20;
/// Allowed zone sizes: 1 MiB to 64 GiB.
const ZONE_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(64 << 30);
/// Most zones, warm paths per route, key parts per route.
const MAX_ZONES: usize = 64;
const MAX_WARM: usize = 256;
const MAX_KEY_PARTS: usize = 16;
/// Default `ttl`, `lock_timeout`; the stale bounds default to none.
const DEFAULT_TTL: Duration = Duration::from_secs(60);
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// `[cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    #[serde(default)]
    pub zones: BTreeMap<Spanned<String>, RawZone>,
}

/// `[cache.zones.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZone {
    pub max_size: Option<Spanned<RawSize>>,
    pub max_object: Option<Spanned<RawSize>>,
}

/// A size: bytes as a number, or text such as `"8MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// A route's `cache = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteCache {
    pub zone: Spanned<String>,
    pub ttl: Option<Spanned<HumanDuration>>,
    pub key: Option<RawCacheKey>,
    pub stale_while_revalidate: Option<Spanned<HumanDuration>>,
    pub stale_if_error: Option<Spanned<HumanDuration>>,
    pub lock_timeout: Option<Spanned<HumanDuration>>,
    pub status_header: Option<bool>,
    pub cache_set_cookie: Option<bool>,
    pub warm: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `key = { headers = [...], cookies = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCacheKey {
    pub headers: Option<Vec<Spanned<String>>>,
    pub cookies: Option<Vec<Spanned<String>>>,
}

/// A checked zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheZoneConfig {
    pub name: String,
    /// `max_size`: the most bytes of entries; default 256 MiB.
    pub max_size: u64,
    /// `max_object`: a larger response is passed through, not stored;
    /// default 8 MiB (at most `max_size`).
    pub max_object: u64,
}

/// A checked route `cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Index into [`super::Config::cache_zones`].
    pub zone: usize,
    pub key: KeySpec,
    /// `ttl` (default 60 s), `stale_while_revalidate`, `stale_if_error`
    /// (default 0: never stale) and `cache_set_cookie`.
    pub rules: Rules,
    /// `lock_timeout`: how long a miss waits for a concurrent fetch of the
    /// same key before it goes to the backend itself; default 5 s.
    pub lock_timeout: Duration,
    /// `status_header`: add `X-Cache-Status`; default true.
    pub status_header: bool,
    /// `warm`: paths fetched into the cache at start and after a reload.
    pub warm: Vec<String>,
}

pub(super) fn resolve_zones(
    cx: &Cx<'_>,
    raw: Option<&RawCache>,
) -> Result<Vec<CacheZoneConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.zones.len() > MAX_ZONES {
        let kind = Kind::InvalidValue(format!("at most {MAX_ZONES} zones"));
        return Err(cx.at(0..0, "cache.zones", kind));
    }
    let mut zones = Vec::with_capacity(raw.zones.len());
    for (name, zone) in &raw.zones {
        let key = |k: &str| format!("cache.zones.{}.{k}", name.get_ref());
        if !valid_zone_name(name.get_ref()) {
            let kind = Kind::InvalidValue(format!(
                "zone name {:?}: use letters, digits, '-' and '_' (it appears in URLs and metrics)",
                name.get_ref()
            ));
            return Err(cx.at(name.span(), format!("cache.zones.{}", name.get_ref()), kind));
        }
        let max_size = match &zone.max_size {
            None => DEFAULT_ZONE_SIZE,
            Some(s) => size(cx, s, &key("max_size"), ZONE_SIZE_RANGE)?,
        };
        let max_object = match &zone.max_object {
            None => DEFAULT_MAX_OBJECT.min(max_size),
            Some(s) => size(cx, s, &key("max_object"), 1..=max_size)?,
        };
        zones.push(CacheZoneConfig {
            name: name.get_ref().clone(),
            max_size,
            max_object,
        });
    }
    Ok(zones)
}

pub(super) fn resolve_route_cache(
    cx: &Cx<'_>,
    i: usize,
    raw: Option<&Spanned<RawRouteCache>>,
    zones: &[CacheZoneConfig],
) -> Result<Option<Arc<RouteCache>>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let c = raw.get_ref();
    let key = |k: &str| format!("routes[{i}].cache.{k}");
    let zone = zones
        .iter()
        .position(|z| &z.name == c.zone.get_ref())
        .ok_or_else(|| {
            let known: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
            let kind = Kind::InvalidValue(format!(
                "no zone {:?} in [cache.zones] (declared: {})",
                c.zone.get_ref(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
            cx.at(c.zone.span(), key("zone"), kind)
        })?;
    let duration = |d: &Option<Spanned<HumanDuration>>, default: Duration| {
        d.as_ref().map_or(default, |d| d.get_ref().0)
    };
    let lock_timeout = duration(&c.lock_timeout, DEFAULT_LOCK_TIMEOUT);
    if let Some(l) = &c.lock_timeout {
        if l.get_ref().0 > Duration::from_secs(60) {
            let kind = Kind::InvalidValue("at most 60s".to_owned());
            return Err(cx.at(l.span(), key("lock_timeout"), kind));
        }
    }
    let mut spec = KeySpec::default();
    if let Some(k) = &c.key {
        for (j, h) in k.headers.iter().flatten().enumerate() {
            if !is_token(h.get_ref()) {
                let kind = Kind::InvalidValue(format!("{:?} is not a header name", h.get_ref()));
                return Err(cx.at(h.span(), key(&format!("key.headers[{j}]")), kind));
            }
            spec.headers.push(h.get_ref().to_ascii_lowercase());
        }
        for (j, name) in k.cookies.iter().flatten().enumerate() {
            if !is_token(name.get_ref()) {
                let kind = Kind::InvalidValue(format!("{:?} is not a cookie name", name.get_ref()));
                return Err(cx.at(name.span(), key(&format!("key.cookies[{j}]")), kind));
            }
            spec.cookies.push(name.get_ref().clone());
        }
        if spec.headers.len() + spec.cookies.len() > MAX_KEY_PARTS {
            let kind =
                Kind::InvalidValue(format!("at most {MAX_KEY_PARTS} key headers and cookies"));
            return Err(cx.at(raw.span(), key("key"), kind));
        }
    }
    let mut warm = Vec::new();
    if let Some(list) = &c.warm {
        if list.get_ref().len() > MAX_WARM {
            let kind = Kind::InvalidValue(format!("at most {MAX_WARM} paths"));
            return Err(cx.at(list.span(), key("warm"), kind));
        }
        for (j, p) in list.get_ref().iter().enumerate() {
            let path = p.get_ref();
            let valid = path.starts_with('/')
                && !path.contains('#')
                && path.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                let kind = Kind::InvalidValue(format!(
                    "{path:?} is not a request target (it starts with '/', has no spaces or '#')"
                ));
                return Err(cx.at(p.span(), key(&format!("warm[{j}]")), kind));
            }
            warm.push(path.clone());
        }
    }
    Ok(Some(Arc::new(RouteCache {
        zone,
        key: spec,
        rules: Rules {
            default_ttl: duration(&c.ttl, DEFAULT_TTL),
            store_set_cookie: c.cache_set_cookie.unwrap_or(false),
            stale_while_revalidate: duration(&c.stale_while_revalidate, Duration::ZERO),
            stale_if_error: duration(&c.stale_if_error, Duration::ZERO),
        },
        lock_timeout,
        status_header: c.status_header.unwrap_or(true),
        warm,
    })))
}

fn size(
    cx: &Cx<'_>,
    raw: &Spanned<RawSize>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let parsed = match raw.get_ref() {
        RawSize::Bytes(n) => Some(*n),
        RawSize::Text(t) => parse_size(t),
    };
    let fmt = |n: u64| {
        if n % (1 << 30) == 0 {
            format!("{}GiB", n >> 30)
        } else if n % (1 << 20) == 0 {
            format!("{}MiB", n >> 20)
        } else {
            format!("{n}B")
        }
    };
    match parsed {
        Some(n) if range.contains(&n) => Ok(n),
        Some(_) => {
            let kind = Kind::InvalidValue(format!(
                "must be {} to {}",
                fmt(*range.start()),
                fmt(*range.end())
            ));
            Err(cx.at(raw.span(), key, kind))
        }
        None => {
            let kind = Kind::InvalidValue(
                "a size is a number of bytes or text such as \"512KiB\", \"8MiB\", \"1GiB\""
                    .to_owned(),
            );
            Err(cx.at(raw.span(), key, kind))
        }
    }
}

/// `"8MiB"` → 8 388 608; `None` when it is not a size.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = t[..digits].parse().ok()?;
    let unit: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn valid_zone_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests;
