//! What a shared cache may store, for how long, and what it may serve
//! (RFC 9111 §3, §4; RFC 9110 §13 for conditional requests).
//!
//! Why pure: these are the rules that keep one user's private response
//! from another, so each is a function of plain facts read from the two
//! heads, tested by table. Invariants: a response is stored only when every
//! rule allows it ([`decide_store`] names the first that does not); a stale
//! entry is served only inside the bounds the response itself allows
//! (`must-revalidate`, `proxy-revalidate` and `s-maxage` forbid serving it
//! stale, §4.2.4 and §5.2.2.2).

use std::time::{Duration, SystemTime};

use super::control::CacheControl;

/// Statuses stored without further checks (RFC 9111 §3 with the
/// heuristically cacheable codes of RFC 9110 §15.1 a proxy meets; 206 is
/// left out: we store whole bodies only).
pub const STORABLE_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// Longest entity-tag or date value we read; longer ones are ignored.
const MAX_VALIDATOR_LEN: usize = 256;

/// Why a response was not stored (for `X-Cache-Status: BYPASS` logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Not a GET or HEAD.
    Method,
    /// A status outside [`STORABLE_STATUSES`].
    Status,
    /// `no-store` on the request or the response.
    NoStore,
    /// `private` on the response.
    Private,
    /// A `Set-Cookie` and the route does not allow it.
    SetCookie,
    /// The request carried `Authorization` and the response did not say
    /// `public`, `s-maxage` or `must-revalidate` (§3.5).
    Authorization,
    /// `Vary: *` can never match a later request (§4.1).
    VaryAll,
    /// Its freshness lifetime is zero and it has no validator, so it
    /// could never be served.
    Useless,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::Authorization => "authorization",
            NotStored::VaryAll => "vary-all",
            NotStored::Useless => "no-lifetime",
        }
    }
}

/// A route's cache settings that the rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Freshness when the response gives none (the route's `ttl`).
    pub default_ttl: Duration,
    /// Store responses with `Set-Cookie` (`cache_set_cookie`).
    pub store_set_cookie: bool,
    /// Upper bounds on how long past its freshness an entry may still be
    /// served while revalidating / when the backend fails; the response's
    /// own `stale-while-revalidate` / `stale-if-error` may lower them.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// The request facts the rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub method: CacheMethod,
    pub authorization: bool,
    pub cc: CacheControl,
    /// `If-None-Match` as sent (bounded), if any.
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMethod {
    Get,
    Head,
    #[default]
    Other,
}

impl RequestFacts {
    pub fn read<'a>(method: &str, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let method = match method {
            "GET" => CacheMethod::Get,
            "HEAD" => CacheMethod::Head,
            _ => CacheMethod::Other,
        };
        let mut facts = RequestFacts {
            method,
            ..RequestFacts::default()
        };
        let mut cc_values: [&[u8]; 8] = [&[]; 8];
        let mut cc_count = 0;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("cache-control") {
                if cc_count < cc_values.len() {
                    cc_values[cc_count] = value;
                    cc_count += 1;
                }
            } else if name.eq_ignore_ascii_case("authorization") {
                facts.authorization = true;
            } else if name.eq_ignore_ascii_case("if-none-match") {
                if value.len() <= MAX_VALIDATOR_LEN {
                    let v = String::from_utf8_lossy(value);
                    facts.if_none_match = Some(match facts.if_none_match.take() {
                        Some(old) => format!("{old}, {v}"),
                        None => v.into_owned(),
                    });
                }
            } else if name.eq_ignore_ascii_case("if-modified-since") {
                facts.if_modified_since = http_date(value);
            }
        }
        facts.cc = CacheControl::parse(cc_values[..cc_count].iter().copied());
        facts
    }
}

/// The response facts the rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub status: u16,
    pub cc: CacheControl,
    pub set_cookie: bool,
    /// `Vary` names, lowercased, comma-joined; `*` when it varies on all.
    pub vary: Option<String>,
    pub date: Option<SystemTime>,
    /// `Expires`: `Some(None)` when present but not a valid date, which
    /// means already expired (§5.3).
    pub expires: Option<Option<SystemTime>>,
    /// `Age` in seconds.
    pub age: u32,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
}

impl ResponseFacts {
    pub fn read<'a>(status: u16, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut facts = ResponseFacts {
            status,
            ..ResponseFacts::default()
        };
        let mut cc_values: [&[u8]; 8] = [&[]; 8];
        let mut cc_count = 0;
        let mut vary: Vec<String> = Vec::new();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("cache-control") {
                if cc_count < cc_values.len() {
                    cc_values[cc_count] = value;
                    cc_count += 1;
                }
            } else if name.eq_ignore_ascii_case("set-cookie") {
                facts.set_cookie = true;
            } else if name.eq_ignore_ascii_case("vary") {
                for v in value.split(|&b| b == b',') {
                    let v = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
                    if !v.is_empty() && !vary.contains(&v) && vary.len() < 16 {
                        vary.push(v);
                    }
                }
            } else if name.eq_ignore_ascii_case("date") {
                facts.date = http_date(value);
            } else if name.eq_ignore_ascii_case("expires") {
                facts.expires = Some(http_date(value));
            } else if name.eq_ignore_ascii_case("age") {
                facts.age = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(0, |v| v.min(u64::from(u32::MAX)) as u32);
            } else if name.eq_ignore_ascii_case("etag") {
                if value.len() <= MAX_VALIDATOR_LEN {
                    facts.etag = Some(String::from_utf8_lossy(value).trim().to_owned());
                }
            } else if name.eq_ignore_ascii_case("last-modified") {
                facts.last_modified = http_date(value);
            }
        }
        facts.cc = CacheControl::parse(cc_values[..cc_count].iter().copied());
        if !vary.is_empty() {
            vary.sort();
            facts.vary = Some(if vary.iter().any(|v| v == "*") {
                "*".to_owned()
            } else {
                vary.join(",")
            });
        }
        facts
    }

    fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// How long a stored response is fresh, and how it may be served after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Freshness lifetime (§4.2.1).
    pub fresh: Duration,
    /// Age when stored (§4.2.3, without the response delay).
    pub initial_age: Duration,
    /// How long past `fresh` it may be served while one request
    /// revalidates it, and when the backend fails.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// Whether the response to `req` may be stored, and for how long (`now`
/// is when the response arrived).
pub fn decide_store(
    req: &RequestFacts,
    resp: &ResponseFacts,
    rules: &Rules,
    now: SystemTime,
) -> Result<Lifetime, NotStored> {
    // 1. Method and status.
    if req.method == CacheMethod::Other {
        return Err(NotStored::Method);
    }
    if !STORABLE_STATUSES.contains(&resp.status) {
        return Err(NotStored::Status);
    }
    // 2. no-store on either message; private on the response (§3, a
    //    shared cache).
    if req.cc.no_store || resp.cc.no_store {
        return Err(NotStored::NoStore);
    }
    if resp.cc.private {
        return Err(NotStored::Private);
    }
    // 3. Credentials: Authorization unless the response allows a shared
    //    cache (§3.5); cookies unless the route says so.
    if req.authorization
        && !(resp.cc.public || resp.cc.s_maxage.is_some() || resp.cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if resp.set_cookie && !rules.store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if resp.vary.as_deref() == Some("*") {
        return Err(NotStored::VaryAll);
    }
    let fresh = freshness_lifetime(resp, rules.default_ttl);
    if fresh.is_zero() && !resp.has_validator() {
        return Err(NotStored::Useless);
    }
    let apparent = resp
        .date
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or_default();
    let initial_age = apparent.max(Duration::from_secs(u64::from(resp.age)));
    // `must-revalidate`, `proxy-revalidate` and `s-maxage` forbid serving
    // it stale at all (§4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10).
    // `no-cache` forbids any use without validation (§5.2.2.4).
    let strict = resp.cc.must_revalidate
        || resp.cc.proxy_revalidate
        || resp.cc.s_maxage.is_some()
        || resp.cc.no_cache;
    let bound = |own: Option<u32>, limit: Duration| {
        if strict {
            Duration::ZERO
        } else {
            own.map_or(limit, |s| limit.min(secs(s)))
        }
    };
    Ok(Lifetime {
        fresh,
        initial_age,
        stale_while_revalidate: bound(resp.cc.stale_while_revalidate, rules.stale_while_revalidate),
        stale_if_error: bound(resp.cc.stale_if_error, rules.stale_if_error),
    })
}

/// §4.2.1, in order: `s-maxage`, `max-age`, `Expires` − `Date`, then the
/// route's default. `no-cache` makes it zero: it is stored, but each use
/// revalidates.
pub fn freshness_lifetime(resp: &ResponseFacts, default_ttl: Duration) -> Duration {
    if resp.cc.no_cache {
        return Duration::ZERO;
    }
    if let Some(s) = resp.cc.s_maxage {
        return secs(s);
    }
    if let Some(s) = resp.cc.max_age {
        return secs(s);
    }
    match resp.expires {
        Some(None) => Duration::ZERO,
        Some(Some(expires)) => {
            // Without `Date`, the time it arrived stands in for it; the
            // caller stores `date` as that time.
            let date = resp.date.unwrap_or_else(SystemTime::now);
            expires.duration_since(date).unwrap_or_default()
        }
        None => default_ttl,
    }
}

/// How a stored entry may be used for a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Serve it.
    Fresh,
    /// Stale, but inside `stale-while-revalidate`: serve it and refresh it
    /// in the background.
    StaleWhileRevalidate,
    /// Ask the backend (conditionally when it has a validator); if that
    /// fails, `on_error` says whether the entry may be served instead.
    Revalidate { on_error: bool },
}

/// `age` is the entry's current age (its initial age plus its time in the
/// cache).
pub fn usable(life: &Lifetime, age: Duration, req: &RequestFacts) -> Use {
    let staleness = age.checked_sub(life.fresh);
    let on_error = match staleness {
        None => true,
        Some(s) => s <= life.stale_if_error && !life.stale_if_error.is_zero(),
    };
    // The request's own limits (§5.2.1): `no-cache` and a `max-age` it
    // exceeds both mean "revalidate first".
    let request_wants_fresher = req.cc.no_cache
        || req.cc.max_age.is_some_and(|m| age > secs(m))
        || req
            .cc
            .min_fresh
            .is_some_and(|m| staleness.is_some() || life.fresh - age < secs(m));
    if request_wants_fresher {
        return Use::Revalidate { on_error };
    }
    match staleness {
        None => Use::Fresh,
        Some(s) if s <= life.stale_while_revalidate && !life.stale_while_revalidate.is_zero() => {
            Use::StaleWhileRevalidate
        }
        Some(_) => Use::Revalidate { on_error },
    }
}

/// Whether a conditional request is answered 304 from an entry with these
/// validators (RFC 9110 §13.1.2, §13.1.3, §13.2.2: `If-None-Match` wins;
/// `If-Modified-Since` counts only without it, and only for GET and HEAD).
pub fn not_modified(
    req: &RequestFacts,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    if let Some(inm) = &req.if_none_match {
        let inm = inm.trim();
        if inm == "*" {
            return true;
        }
        let Some(etag) = etag else { return false };
        return inm.split(',').any(|tag| weak_eq(tag.trim(), etag));
    }
    match (req.if_modified_since, last_modified) {
        (Some(since), Some(modified)) if req.method != CacheMethod::Other => modified <= since,
        _ => false,
    }
}

/// Weak comparison (RFC 9110 §8.8.3.2): the opaque tags are equal,
/// whether either is weak or not.
pub fn weak_eq(a: &str, b: &str) -> bool {
    let opaque = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_owned();
    let (a, b) = (opaque(a), opaque(b));
    a.len() >= 2 && a.starts_with('"') && a.ends_with('"') && a == b
}

/// An HTTP date (IMF-fixdate, or the two obsolete forms), or `None`.
pub fn http_date(value: &[u8]) -> Option<SystemTime> {
    if value.len() > MAX_VALIDATOR_LEN {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests;
