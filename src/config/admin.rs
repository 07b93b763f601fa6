//! `[admin]`: where the admin listener binds, who may reach it, and with
//! which credentials.
//!
//! Why at load time: a missing users file, a non-bcrypt entry or a bad
//! CIDR must be a config error naming file, line, column and key (and
//! `ringlb check` must catch it), not a surprise on the first request.
//!
//! Invariants of an [`AdminConfig`]:
//! - `auth` is [`AdminAuth::Off`] exactly when neither `users_file` nor
//!   `token_file` is set;
//! - a `listen` address that is not loopback has credentials, or
//!   `insecure_no_auth = true`;
//! - every user entry is a bcrypt hash; the token is not empty.

use crate::gateway::Cidr;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::error::ConfigErrorKind as Kind;
use super::raw::RawAdmin;
use super::resolve::Cx;
use super::{ConfigError, ListenConfig};

/// `[admin]`: metrics, status and backend control over HTTP, on its own
/// listener, never on a public one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminConfig {
    /// `listen`: required, `"ip:port"`.
    pub listen: SocketAddr,
    /// `users_file`: htpasswd users with bcrypt hashes (HTTP Basic auth).
    pub users: Vec<HtpasswdUser>,
    /// `token_file`: a bearer token (`Authorization: Bearer TOKEN`).
    pub token: Option<AdminToken>,
    /// `auth`: which requests need a credential.
    pub auth: AdminAuth,
    /// `allow`: source networks; empty means every source.
    pub allow: Vec<Cidr>,
    /// `hosts`: more names the `Host` header may carry (lowercase, no
    /// port), beside the listener's own address and `localhost`.
    pub hosts: Vec<String>,
    /// `insecure_no_auth`: a non-loopback `listen` without credentials is
    /// accepted (and warned about at start-up).
    pub insecure_no_auth: bool,
}

impl AdminConfig {
    /// An admin listener on `listen` with every other key at its default
    /// (no credentials, every source, no extra host names).
    pub fn plain(listen: SocketAddr) -> AdminConfig {
        AdminConfig {
            listen,
            users: Vec::new(),
            token: None,
            auth: AdminAuth::Off,
            allow: Vec::new(),
            hosts: Vec::new(),
            insecure_no_auth: false,
        }
    }
}

/// `admin.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuth {
    /// No credentials configured.
    Off,
    /// `"writes"` (the default with credentials): the `POST` endpoints.
    Writes,
    /// `"all"`: every endpoint but `/healthz`.
    All,
}

/// One `user:hash` line of an htpasswd file.
#[derive(Clone, PartialEq, Eq)]
pub struct HtpasswdUser {
    pub name: String,
    /// `$2y$`/`$2b$`/`$2a$` bcrypt hash.
    pub hash: String,
}

impl fmt::Debug for HtpasswdUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HtpasswdUser({:?}, <bcrypt hash>)", self.name)
    }
}

/// The bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Parses an htpasswd file: `user:hash` lines, `#` comments and blank
/// lines skipped. Only bcrypt hashes are accepted: the others (`$apr1$`,
/// `{SHA}`, crypt) are weak. `Err` names the line.
pub fn parse_htpasswd(text: &str) -> Result<Vec<HtpasswdUser>, String> {
    let mut users: Vec<HtpasswdUser> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = n + 1;
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("line {at}: expected \"user:hash\""));
        };
        if name.is_empty() {
            return Err(format!("line {at}: empty user name"));
        }
        if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p))
            || hash.parse::<bcrypt::HashParts>().is_err()
        {
            return Err(format!(
                "line {at}: user {name:?} has no bcrypt hash; only bcrypt entries are \
                 accepted (make them with `htpasswd -B`)"
            ));
        }
        if users.iter().any(|u| u.name == name) {
            return Err(format!("line {at}: user {name:?} appears twice"));
        }
        users.push(HtpasswdUser {
            name: name.to_owned(),
            hash: hash.to_owned(),
        });
    }
    if users.is_empty() {
        return Err("no users in the file".to_owned());
    }
    Ok(users)
}

/// Whether the admin listener on `addr` is reachable only from this host.
fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

fn read_file(
    cx: &Cx<'_>,
    value: &Spanned<String>,
    key: &str,
) -> Result<(PathBuf, String), ConfigError> {
    let path = cx.path(value.get_ref());
    std::fs::read_to_string(&path)
        .map(|text| (path.clone(), text))
        .map_err(|e| {
            let message = format!("cannot read {}: {e}", path.display());
            cx.at(value.span(), key, Kind::InvalidValue(message))
        })
}

/// Resolves `[admin]`. The address must not be one of the public
/// listeners, and a non-loopback one needs credentials.
pub(super) fn resolve_admin(
    cx: &Cx<'_>,
    raw: &RawAdmin,
    listen: &[ListenConfig],
) -> Result<AdminConfig, ConfigError> {
    let text = raw.listen.get_ref();
    let addr: SocketAddr = text.parse().map_err(|_| {
        let kind = Kind::InvalidAddress {
            value: text.clone(),
        };
        cx.at(raw.listen.span(), "admin.listen", kind)
    })?;
    if addr.port() != 0 && listen.iter().any(|l| l.addr == addr) {
        let kind = Kind::DuplicateAddress { addr };
        return Err(cx.at(raw.listen.span(), "admin.listen", kind));
    }
    let users = match &raw.users_file {
        None => Vec::new(),
        Some(value) => {
            let (path, text) = read_file(cx, value, "admin.users_file")?;
            parse_htpasswd(&text).map_err(|e| {
                let message = format!("{}: {e}", path.display());
                cx.at(
                    value.span(),
                    "admin.users_file",
                    Kind::InvalidValue(message),
                )
            })?
        }
    };
    let token = match &raw.token_file {
        None => None,
        Some(value) => {
            let (path, text) = read_file(cx, value, "admin.token_file")?;
            let token = text.trim();
            if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                let message = format!(
                    "{}: the token must be one line of printable characters without spaces",
                    path.display()
                );
                return Err(cx.at(
                    value.span(),
                    "admin.token_file",
                    Kind::InvalidValue(message),
                ));
            }
            Some(AdminToken(token.to_owned()))
        }
    };
    let credentials = !users.is_empty() || token.is_some();
    let auth = match &raw.auth {
        None if credentials => AdminAuth::Writes,
        None => AdminAuth::Off,
        Some(value) => {
            let auth = match value.get_ref().as_str() {
                "writes" => AdminAuth::Writes,
                "all" => AdminAuth::All,
                other => {
                    let message = format!("unknown auth {other:?}: expected \"writes\" or \"all\"");
                    return Err(cx.at(value.span(), "admin.auth", Kind::InvalidValue(message)));
                }
            };
            if !credentials {
                let message =
                    "auth needs credentials: set admin.users_file or admin.token_file".to_owned();
                return Err(cx.at(value.span(), "admin.auth", Kind::InvalidValue(message)));
            }
            auth
        }
    };
    let allow = ip_nets(cx, raw.allow.as_ref(), "admin.allow")?;
    let hosts = match &raw.hosts {
        None => Vec::new(),
        Some(list) => list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let name = host.get_ref().trim_end_matches('.').to_ascii_lowercase();
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
                    && (!name.contains(':') || name.starts_with('['));
                if valid {
                    Ok(name)
                } else {
                    let kind = Kind::InvalidHost {
                        value: host.get_ref().clone(),
                    };
                    Err(cx.at(host.span(), format!("admin.hosts[{i}]"), kind))
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let insecure_no_auth = raw.insecure_no_auth.as_ref().is_some_and(|v| *v.get_ref());
    if let Some(value) = raw.insecure_no_auth.as_ref().filter(|v| *v.get_ref()) {
        if credentials {
            let message =
                "insecure_no_auth = true contradicts users_file/token_file; remove one".to_owned();
            return Err(cx.at(
                value.span(),
                "admin.insecure_no_auth",
                Kind::InvalidValue(message),
            ));
        }
    }
    if !is_loopback(addr) && !credentials && !insecure_no_auth {
        let message = format!(
            "{addr} is not a loopback address and [admin] has no credentials: anyone who \
             reaches it could drain backends and reload. Set admin.users_file (htpasswd -B) \
             or admin.token_file (and admin.allow), or bind it to 127.0.0.1, or set \
             admin.insecure_no_auth = true"
        );
        return Err(cx.at(
            raw.listen.span(),
            "admin.listen",
            Kind::InvalidValue(message),
        ));
    }
    Ok(AdminConfig {
        listen: addr,
        users,
        token,
        auth,
        allow,
        hosts,
        insecure_no_auth,
    })
}

/// A list of networks (`"10.0.0.0/8"`, or one address), each error at
/// `key[i]`; empty when the key is absent.
pub(super) fn ip_nets(
    cx: &Cx<'_>,
    list: Option<&Spanned<Vec<Spanned<String>>>>,
    key: &str,
) -> Result<Vec<Cidr>, ConfigError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.get_ref()
        .iter()
        .enumerate()
        .map(|(i, net)| {
            Cidr::parse(net.get_ref()).map_err(|message| {
                cx.at(
                    net.span(),
                    format!("{key}[{i}]"),
                    Kind::InvalidValue(message),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(Cidr::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
    }

    #[test]
    fn htpasswd() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let users = parse_htpasswd(&format!("# ops\n\nalice:{hash}\n")).unwrap();
        assert_eq!(users[0].name, "alice");
        assert!(parse_htpasswd("bob:$apr1$abc$def\n")
            .unwrap_err()
            .contains("line 1: user \"bob\" has no bcrypt hash"));
        assert!(parse_htpasswd("nocolon\n").is_err());
        assert!(parse_htpasswd("# only comments\n").is_err());
        assert!(parse_htpasswd(&format!("a:{hash}\na:{hash}\n"))
            .unwrap_err()
            .contains("twice"));
    }
}
