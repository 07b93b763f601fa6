//! Sticky cookie: a cookie names the backend; honoured while that backend
//! is eligible, else the request is rebalanced and the cookie re-set.
//!
//! Why a hash of the address and not the index: the cookie outlives the
//! config. Reordering, adding or removing other backends must not send a
//! client elsewhere, and the value must mean the same on every worker and
//! every ringlb instance. The value is the backend's stable id
//! ([`super::backend_id`]) as 16 lowercase hex digits; it reveals nothing
//! about the address.
//!
//! Use: the proxy reads the id with [`cookie_id`] and passes it as
//! `PickContext::key`; after the pick, [`needs_cookie`] says whether to add
//! [`set_cookie_value`] as a `Set-Cookie` field to the response (the client
//! had no cookie, or it named another backend, or one that is gone).
//!
//! Why a map: the cookie's id is looked up per request; an `AHashMap` from
//! id to index makes that O(1) instead of a scan of the ids.
//!
//! Invariants: with a key naming an eligible backend, that backend is
//! returned; otherwise the pick is smooth weighted round robin over the
//! eligible backends (so a fallback never returns an ineligible one).

use std::fmt::Write as _;

use ahash::AHashMap;

use super::weighted::WeightedRoundRobin;
use super::{cookie_value, Balancer, PickContext};
use crate::config::StickyCookieConfig;
use crate::http::RequestHead;
use crate::upstream::Backend;

/// Core-local sticky-cookie state: backend ids and the rebalancing WRR.
#[derive(Debug, Clone)]
pub struct StickyCookie {
    /// Backend id to index; the first index wins if two share an id.
    index_of: AHashMap<u64, usize>,
    fallback: WeightedRoundRobin,
}

impl StickyCookie {
    pub fn new(ids: &[u64], weights: &[u32], start_offset: usize) -> StickyCookie {
        let mut index_of = AHashMap::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            index_of.entry(id).or_insert(i);
        }
        StickyCookie {
            index_of,
            fallback: WeightedRoundRobin::new(weights, start_offset),
        }
    }
}

impl Balancer for StickyCookie {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        if let Some(id) = ctx.key {
            if let Some(&i) = self.index_of.get(&id) {
                if (ctx.eligible)(i) {
                    return Some(i);
                }
            }
        }
        self.fallback.pick(ctx)
    }
}

/// The backend id in cookie `name`, if present and well-formed (16 hex
/// digits); any other value is ignored as if absent.
pub fn cookie_id(head: &RequestHead<'_>, name: &str) -> Option<u64> {
    let value = cookie_value(head, name)?;
    if value.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

/// The index of the backend the cookie names, if any still has that id.
pub fn cookie_backend(head: &RequestHead<'_>, name: &str, backends: &[Backend]) -> Option<usize> {
    let id = cookie_id(head, name)?;
    backends.iter().position(|b| b.id == id)
}

/// Whether the response should carry a new cookie: the request's id was
/// absent or named another backend than the one picked.
pub fn needs_cookie(key: Option<u64>, picked: &Backend) -> bool {
    key != Some(picked.id)
}

/// The `Set-Cookie` field value naming `backend`:
/// `NAME=0123456789abcdef; Path=/; HttpOnly` plus `; Max-Age=N` when
/// configured (seconds, rounded down, at least 1).
pub fn set_cookie_value(cookie: &StickyCookieConfig, backend: &Backend) -> String {
    let mut out = String::with_capacity(cookie.name.len() + 48);
    // Writing to a String cannot fail.
    let _ = write!(out, "{}={:016x}; Path=/; HttpOnly", cookie.name, backend.id);
    if let Some(age) = cookie.max_age {
        let _ = write!(out, "; Max-Age={}", age.as_secs().max(1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::backend_id;
    use super::super::hash::tests::head;
    use super::super::testing::{backends, pick};
    use super::*;
    use std::time::Duration;

    fn sticky(bs: &[Backend]) -> StickyCookie {
        let ids: Vec<u64> = bs.iter().map(|b| backend_id(b.addr)).collect();
        StickyCookie::new(&ids, &vec![1; bs.len()], 0)
    }

    #[test]
    fn set_cookie_round_trips_through_a_request() {
        let bs = backends(3);
        let config = StickyCookieConfig {
            name: "lb".into(),
            max_age: Some(Duration::from_secs(3600)),
        };
        let set = set_cookie_value(&config, &bs[2]);
        assert!(set.ends_with("; Path=/; HttpOnly; Max-Age=3600"), "{set}");
        let pair = set.split(';').next().unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: x=1; {pair}\r\n\r\n");
        let h = head(req.as_bytes());
        assert_eq!(cookie_backend(&h, "lb", &bs), Some(2));
        // Survives reordering the backend list.
        let reordered = [bs[2].clone(), bs[0].clone(), bs[1].clone()];
        assert_eq!(cookie_backend(&h, "lb", &reordered), Some(0));
        let session = set_cookie_value(&StickyCookieConfig::default(), &bs[0]);
        assert!(session.starts_with("ringlb_backend="));
        assert!(session.ends_with("; Path=/; HttpOnly"));
    }

    #[test]
    fn malformed_or_unknown_cookie_is_absent() {
        let bs = backends(2);
        for cookie in [
            "lb=zz",
            "lb=",
            "lb=0123456789abcdefff",
            "lb=ffffffffffffffff",
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\n\r\n");
            assert_eq!(
                cookie_backend(&head(req.as_bytes()), "lb", &bs),
                None,
                "{cookie}"
            );
        }
    }

    #[test]
    fn honours_the_cookie_while_eligible_else_rebalances() {
        let bs = backends(3);
        let mut s = sticky(&bs);
        let id1 = Some(backend_id(bs[1].addr));
        for _ in 0..5 {
            assert_eq!(pick(&mut s, &bs, id1, &|_| true), Some(1));
        }
        assert!(!needs_cookie(id1, &bs[1]));
        // Backend 1 down: round robin over the rest, and a new cookie.
        let got: Vec<_> = (0..4)
            .map(|_| pick(&mut s, &bs, id1, &|i| i != 1))
            .collect();
        assert_eq!(got, [0, 2, 0, 2].map(Some));
        assert!(needs_cookie(id1, &bs[0]));
        // No cookie: plain round robin.
        let got: Vec<_> = (0..3).map(|_| pick(&mut s, &bs, None, &|_| true)).collect();
        assert_eq!(got, [0, 1, 2].map(Some));
        assert!(needs_cookie(None, &bs[0]));
        assert_eq!(pick(&mut s, &bs, id1, &|_| false), None);
    }
    #[test]
    fn an_unavailable_cookie_backend_is_skipped_at_any_size() {
        let bs = backends(100);
        let mut s = sticky(&bs);
        for want in [0, 37, 99] {
            let id = Some(backend_id(bs[want].addr));
            assert_eq!(pick(&mut s, &bs, id, &|_| true), Some(want));
            for _ in 0..200 {
                let got = pick(&mut s, &bs, id, &|i| i != want && i % 2 == 0).unwrap();
                assert!(got != want && got % 2 == 0, "{got}");
            }
        }
        // An id no backend has is rebalanced like no cookie.
        assert!(pick(&mut s, &bs, Some(1), &|_| true).is_some());
    }
}
