//! Who may do what on the admin listener: source networks, the `Host`
//! header, cross-site requests and credentials. Pure code over a parsed
//! request head, tested without sockets.
//!
//! Why each check:
//! - `allow`: the operator's own network boundary (403).
//! - `Host`: a DNS-rebinding page reaches the listener under the
//!   attacker's name; only the listener's own address, `localhost` and
//!   `admin.hosts` are served (421).
//! - Cross-site: a page on another site can make a browser send a
//!   `POST` without a CORS preflight only with a form or text content
//!   type (415), and a browser marks it with `Origin` or
//!   `Sec-Fetch-Site` (403). A browser's `POST` must also carry
//!   [`BROWSER_HEADER`]: a custom header forces a preflight, which the
//!   admin never grants, so only a same-origin page (the status page)
//!   can send it.
//! - Credentials: Basic (htpasswd, bcrypt) or Bearer (constant-time
//!   compare). bcrypt costs tens of milliseconds, so successful checks
//!   are remembered (by SHA-256 of the header, bounded); failures are
//!   counted per source, and a source with too many gets 429 until its
//!   window ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::config::{AdminAuth, AdminConfig, AdminToken, HtpasswdUser};
use crate::gateway::Cidr;

/// The header a browser's state-changing request must carry.
pub const BROWSER_HEADER: &str = "x-ringlb-admin";
/// Failed credentials from one source within [`FAILURE_WINDOW`] before it
/// gets 429.
pub const MAX_FAILURES: u32 = 10;
/// How long failures are remembered per source.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources whose failures are tracked at once.
const MAX_TRACKED_SOURCES: usize = 4096;
/// Successful Basic credentials remembered, so bcrypt runs once per
/// credential rather than per request.
const MAX_CACHED: usize = 64;
/// Failures logged per source and window; the rest are counted only.
const LOGGED_FAILURES: u32 = 3;

/// What the checks look at.
pub struct Head<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// Lowercase names.
    pub headers: &'a [(String, String)],
    pub peer: IpAddr,
    /// The listener's address the client connected to.
    pub local: SocketAddr,
}

impl Head<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Anything but `GET` and `HEAD` may change state.
    pub fn is_write(&self) -> bool {
        !matches!(self.method, "GET" | "HEAD")
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: u16,
    pub reason: String,
    /// `WWW-Authenticate` values (401 only).
    pub challenges: Vec<&'static str>,
    /// `Retry-After` seconds (429 only).
    pub retry_after: Option<u64>,
}

impl Denied {
    fn new(status: u16, reason: impl Into<String>) -> Denied {
        Denied {
            status,
            reason: reason.into(),
            challenges: Vec::new(),
            retry_after: None,
        }
    }
}

/// Whether a failed credential should be logged (the first few per source
/// and window) and with what count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLog {
    Log,
    Quiet,
}

/// The checks of one `[admin]` config. A reload makes a new one (and so
/// forgets the cache and the failure counts).
pub struct Guard {
    allow: Vec<Cidr>,
    hosts: Vec<String>,
    auth: AdminAuth,
    users: Vec<HtpasswdUser>,
    token: Option<AdminToken>,
    /// SHA-256 of `Authorization` values that passed bcrypt.
    verified: Mutex<Vec<[u8; 32]>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Guard {
    pub fn new(config: &AdminConfig) -> Guard {
        Guard {
            allow: config.allow.clone(),
            hosts: config.hosts.clone(),
            auth: config.auth,
            users: config.users.clone(),
            token: config.token.clone(),
            verified: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// No checks but `Host` and cross-site (an admin without `[admin]`
    /// keys beyond `listen`).
    pub fn open() -> Guard {
        Guard::new(&AdminConfig::plain(SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    /// The cheap checks, in order: source, `Host`, cross-site. `Ok` says
    /// whether the request still needs a credential ([`Guard::authorize`]).
    pub fn screen(&self, head: &Head<'_>) -> Result<bool, Denied> {
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(head.peer)) {
            return Err(Denied::new(403, "source address not allowed"));
        }
        let Some(host) = head.header("host") else {
            return Err(Denied::new(400, "missing Host header"));
        };
        if !self.host_allowed(host, head.local) {
            return Err(Denied::new(
                421,
                format!("Host {host:?} is not this admin listener (add it to admin.hosts)"),
            ));
        }
        if head.is_write() {
            cross_site(head, host)?;
        }
        Ok(match self.auth {
            AdminAuth::Off => false,
            AdminAuth::Writes => head.is_write(),
            AdminAuth::All => head.path != "/healthz",
        })
    }

    fn host_allowed(&self, host: &str, local: SocketAddr) -> bool {
        let name = host_name(host);
        if name == "localhost" || self.hosts.contains(&name) {
            return true;
        }
        let own = match local.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        // An IPv6 literal in Host may be written differently ([::0001]).
        name == own
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .and_then(|n| n.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip == local.ip().to_canonical())
    }

    /// Checks the credential of a request that needs one (slow: may run
    /// bcrypt). `now` is for the failure window.
    pub fn authorize(&self, head: &Head<'_>, now: Instant) -> Result<(), (Denied, FailureLog)> {
        if let Some(retry) = self.blocked(head.peer, now) {
            let mut denied = Denied::new(429, "too many failed credentials from this address");
            denied.retry_after = Some(retry);
            return Err((denied, FailureLog::Quiet));
        }
        let presented = head.header("authorization");
        if presented.is_some_and(|value| self.accepts(value)) {
            return Ok(());
        }
        let why = if presented.is_some() {
            "wrong credentials"
        } else {
            "credentials required"
        };
        let mut denied = Denied::new(401, why);
        if !self.users.is_empty() {
            denied
                .challenges
                .push("Basic realm=\"ringlb admin\", charset=\"UTF-8\"");
        }
        if self.token.is_some() {
            denied.challenges.push("Bearer realm=\"ringlb admin\"");
        }
        let log = self.count_failure(head.peer, now);
        Err((denied, log))
    }

    fn accepts(&self, value: &str) -> bool {
        let (scheme, credential) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .token
                .as_ref()
                .is_some_and(|t| bool::from(t.0.as_bytes().ct_eq(credential.as_bytes())));
        }
        if !scheme.eq_ignore_ascii_case("basic") || self.users.is_empty() {
            return false;
        }
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, value.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        if lock(&self.verified).contains(&digest) {
            return true;
        }
        let Some((user, password)) = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|text| {
                text.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
            })
        else {
            return false;
        };
        let Some(entry) = self.users.iter().find(|u| u.name == user) else {
            return false;
        };
        if !bcrypt::verify(password, &entry.hash).unwrap_or(false) {
            return false;
        }
        let mut verified = lock(&self.verified);
        if verified.len() >= MAX_CACHED {
            verified.clear();
        }
        verified.push(digest);
        true
    }

    /// Seconds until `peer` may try again, if it is over the limit.
    fn blocked(&self, peer: IpAddr, now: Instant) -> Option<u64> {
        let failures = lock(&self.failures);
        let (since, count) = failures.get(&peer)?;
        let age = now.saturating_duration_since(*since);
        (*count >= MAX_FAILURES && age < FAILURE_WINDOW)
            .then(|| (FAILURE_WINDOW - age).as_secs().max(1))
    }

    fn count_failure(&self, peer: IpAddr, now: Instant) -> FailureLog {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED_SOURCES && !failures.contains_key(&peer) {
            failures.retain(|_, (since, _)| now.saturating_duration_since(*since) < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED_SOURCES {
                // Many sources at once: forget the oldest window.
                if let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (s, _))| *s)
                    .map(|(k, _)| *k)
                {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 <= LOGGED_FAILURES {
            FailureLog::Log
        } else {
            FailureLog::Quiet
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The host part of a `Host` value: lowercase, no port, no trailing dot.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The form and text types a cross-site page can `POST` without a
/// preflight (CORS "simple" content types).
const SIMPLE_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

fn cross_site(head: &Head<'_>, host: &str) -> Result<(), Denied> {
    if let Some(site) = head.header("sec-fetch-site") {
        if !matches!(site.trim(), "same-origin" | "none") {
            return Err(Denied::new(
                403,
                format!("cross-site request refused (Sec-Fetch-Site: {site})"),
            ));
        }
    }
    let origin = head.header("origin");
    if let Some(origin) = origin {
        let authority = origin
            .trim()
            .strip_prefix("http://")
            .or_else(|| origin.trim().strip_prefix("https://"));
        if !authority.is_some_and(|a| a.eq_ignore_ascii_case(host.trim())) {
            return Err(Denied::new(
                403,
                format!("cross-site request refused (Origin: {origin})"),
            ));
        }
    }
    if let Some(content_type) = head.header("content-type") {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if SIMPLE_TYPES.contains(&media.as_str()) {
            return Err(Denied::new(
                415,
                format!("content type {media} is not accepted on the admin API"),
            ));
        }
    }
    let from_browser = origin.is_some()
        || head.header("sec-fetch-site").is_some()
        || head.header("sec-fetch-mode").is_some();
    if from_browser && head.header(BROWSER_HEADER).is_none() {
        return Err(Denied::new(
            403,
            "a browser request must carry the X-Ringlb-Admin header",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(method: &'a str, path: &'a str, headers: &'a [(String, String)]) -> Head<'a> {
        Head {
            method,
            path,
            headers,
            peer: "127.0.0.1".parse().unwrap(),
            local: "127.0.0.1:9090".parse().unwrap(),
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn host_names() {
        let g = Guard::open();
        let ok = |host: &str| {
            let hs = h(&[("host", host)]);
            g.screen(&head("GET", "/status", &hs)).is_ok()
        };
        assert!(ok("127.0.0.1:9090"));
        assert!(ok("127.0.0.1"));
        assert!(ok("LOCALHOST:1234"));
        assert!(ok("localhost."));
        assert!(!ok("evil.example"));
        assert!(!ok("evil.example:9090"));
        assert!(!ok("127.0.0.2:9090"));
        let hs = h(&[]);
        assert_eq!(g.screen(&head("GET", "/", &hs)).unwrap_err().status, 400);
        let mut config = AdminConfig::plain("[::1]:9090".parse().unwrap());
        config.hosts = vec!["admin.example".into()];
        let g = Guard::new(&config);
        let ok6 = |host: &str| {
            let hs = h(&[("host", host)]);
            let mut hd = head("GET", "/status", &hs);
            hd.local = "[::1]:9090".parse().unwrap();
            g.screen(&hd).is_ok()
        };
        assert!(ok6("[::1]:9090"));
        assert!(ok6("[0:0::1]"));
        assert!(ok6("admin.example:443"));
        assert!(!ok6("[::2]:9090"));
    }

    #[test]
    fn cross_site_writes() {
        let g = Guard::open();
        let status = |pairs: &[(&str, &str)]| {
            let mut all = vec![("host", "127.0.0.1:9090")];
            all.extend_from_slice(pairs);
            let hs = h(&all);
            g.screen(&head("POST", "/reload", &hs))
                .err()
                .map_or(200, |d| d.status)
        };
        assert_eq!(status(&[]), 200);
        assert_eq!(status(&[("origin", "http://evil.example")]), 403);
        assert_eq!(status(&[("origin", "null")]), 403);
        assert_eq!(status(&[("sec-fetch-site", "cross-site")]), 403);
        assert_eq!(status(&[("sec-fetch-site", "same-site")]), 403);
        assert_eq!(
            status(&[("content-type", "application/x-www-form-urlencoded")]),
            415
        );
        assert_eq!(
            status(&[("content-type", "Multipart/Form-Data; boundary=x")]),
            415
        );
        assert_eq!(status(&[("content-type", "text/plain;charset=utf-8")]), 415);
        assert_eq!(status(&[("content-type", "application/json")]), 200);
        // The status page: same origin, with the custom header.
        let page = [
            ("origin", "http://127.0.0.1:9090"),
            ("sec-fetch-site", "same-origin"),
            ("x-ringlb-admin", "1"),
        ];
        assert_eq!(status(&page), 200);
        assert_eq!(status(&page[..2]), 403, "a browser needs the custom header");
        // Reads are not cross-site checked (they change nothing; Host
        // protects them from rebinding).
        let hs = h(&[("host", "localhost"), ("origin", "http://evil.example")]);
        assert!(g.screen(&head("GET", "/status", &hs)).is_ok());
    }

    #[test]
    fn allow_list() {
        let mut config = AdminConfig::plain("0.0.0.0:9090".parse().unwrap());
        config.allow = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let g = Guard::new(&config);
        let hs = h(&[("host", "localhost")]);
        let mut hd = head("GET", "/healthz", &hs);
        assert_eq!(g.screen(&hd).unwrap_err().status, 403);
        hd.peer = "10.9.8.7".parse().unwrap();
        assert!(g.screen(&hd).is_ok());
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn credentials_and_the_failure_limit() {
        let mut config = AdminConfig::plain("127.0.0.1:9090".parse().unwrap());
        config.users = vec![HtpasswdUser {
            name: "ops".into(),
            hash: bcrypt::hash("pw", 4).unwrap(),
        }];
        config.token = Some(AdminToken("t0ken".into()));
        config.auth = AdminAuth::All;
        let g = Guard::new(&config);
        let now = Instant::now();
        let check = |auth: Option<&str>, peer: &str, at: Instant| {
            let mut pairs = vec![("host", "localhost")];
            if let Some(a) = auth {
                pairs.push(("authorization", a));
            }
            let hs = h(&pairs);
            let mut hd = head("GET", "/status", &hs);
            hd.peer = peer.parse().unwrap();
            assert!(g.screen(&hd).unwrap(), "auth = all covers /status");
            g.authorize(&hd, at).map_err(|(d, _)| d)
        };
        assert!(check(Some(&basic("ops", "pw")), "127.0.0.1", now).is_ok());
        // Cached: the same header passes again.
        assert!(check(Some(&basic("ops", "pw")), "127.0.0.1", now).is_ok());
        assert!(check(Some("Bearer t0ken"), "127.0.0.1", now).is_ok());
        assert!(check(Some("bearer t0ken"), "127.0.0.1", now).is_ok());
        let denied = check(None, "127.0.0.1", now).unwrap_err();
        assert_eq!(denied.status, 401);
        assert_eq!(denied.challenges.len(), 2);
        assert_eq!(
            check(Some(&basic("ops", "no")), "127.0.0.1", now)
                .unwrap_err()
                .reason,
            "wrong credentials"
        );
        assert!(check(Some("Bearer t0ke"), "127.0.0.1", now).is_err());
        assert!(check(Some(&basic("eve", "pw")), "127.0.0.1", now).is_err());
        // Up to the limit, then 429 even with the right credential, for
        // this source only, until the window ends.
        for _ in 0..MAX_FAILURES {
            let _ = check(Some("Bearer nope"), "10.0.0.1", now);
        }
        let denied = check(Some("Bearer t0ken"), "10.0.0.1", now).unwrap_err();
        assert_eq!(denied.status, 429);
        assert!(denied.retry_after.is_some());
        assert!(check(Some("Bearer t0ken"), "10.0.0.2", now).is_ok());
        let later = now + FAILURE_WINDOW;
        assert!(check(Some("Bearer t0ken"), "10.0.0.1", later).is_ok());
        // /healthz never needs a credential.
        let hs = h(&[("host", "localhost")]);
        assert!(!g.screen(&head("GET", "/healthz", &hs)).unwrap());
    }

    #[test]
    fn writes_only_by_default() {
        let mut config = AdminConfig::plain("127.0.0.1:9090".parse().unwrap());
        config.token = Some(AdminToken("t".into()));
        config.auth = AdminAuth::Writes;
        let g = Guard::new(&config);
        let hs = h(&[("host", "localhost")]);
        assert!(!g.screen(&head("GET", "/metrics", &hs)).unwrap());
        assert!(g.screen(&head("POST", "/reload", &hs)).unwrap());
    }
}
