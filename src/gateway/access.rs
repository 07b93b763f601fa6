//! `allow` / `deny` CIDR lists of a route or a listener (nginx `allow`,
//! `deny`).
//!
//! Why: keeping an internal route to internal networks, or a known bad
//! network out, is everyday edge work.
//!
//! Order (two lists cannot carry nginx's line order, so the order is by
//! specificity, as in a routing table): the longest prefix that holds the
//! address decides; on equal length `deny` wins. An address that no entry
//! holds is allowed when `allow` is empty, and denied when `allow` lists
//! anything (an allow-list). So `allow = ["10.0.0.0/8"]` is nginx's
//! `allow 10.0.0.0/8; deny all;`, and `deny = ["10.0.0.5"], allow =
//! ["10.0.0.0/8"]` keeps one address of the network out.
//!
//! Invariants: the rules judge one address; a route judges the request's
//! client address (after `trusted_proxies`), a listener the connection's.

use std::net::IpAddr;

use crate::http::LocalReply;
use crate::proxy::filter::{Filter, RequestCtx};

use super::cidr::CidrList;

/// The 403 body's reason.
pub const DENIED: &str = "client address denied by the route's access rules";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRules {
    pub allow: CidrList,
    pub deny: CidrList,
}

impl AccessRules {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        match (self.allow.longest_match(ip), self.deny.longest_match(ip)) {
            (None, None) => self.allow.is_empty(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(d)) => a > d,
        }
    }
}

impl Filter for AccessRules {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        if self.permits(req.client_ip) {
            Ok(())
        } else {
            Err(LocalReply::Forbidden(DENIED))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cidr::Cidr;
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> AccessRules {
        let list = |l: &[&str]| CidrList(l.iter().map(|s| Cidr::parse(s).unwrap()).collect());
        AccessRules {
            allow: list(allow),
            deny: list(deny),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_decides_and_deny_wins_ties() {
        let r = rules(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.0.0.5", "10.1.0.0/16"],
        );
        assert!(r.permits(ip("10.0.0.4")));
        assert!(!r.permits(ip("10.0.0.5")));
        assert!(!r.permits(ip("::ffff:10.0.0.5")));
        assert!(!r.permits(ip("10.1.2.3")));
        assert!(r.permits(ip("2001:db8::9")));
        // Not listed with a non-empty allow: denied.
        assert!(!r.permits(ip("192.0.2.1")));
        assert!(!r.permits(ip("::1")));
        let tie = rules(&["10.0.0.0/8"], &["10.0.0.0/8"]);
        assert!(!tie.permits(ip("10.9.9.9")));
    }

    #[test]
    fn deny_only_lets_the_rest_in() {
        let r = rules(&[], &["192.0.2.0/24", "::1"]);
        assert!(!r.permits(ip("192.0.2.200")));
        assert!(!r.permits(ip("::1")));
        assert!(r.permits(ip("127.0.0.1")));
        let all = rules(&["127.0.0.1"], &["0.0.0.0/0", "::/0"]);
        assert!(all.permits(ip("127.0.0.1")));
        assert!(!all.permits(ip("127.0.0.2")));
    }
}
