//! `Cache-Control` and the cache's storage rules on arbitrary heads.
//!
//! The input is split on `\n` into header lines (`name:value`). Checked:
//! nothing panics; several `Cache-Control` values read as their comma
//! join (list semantics, RFC 9110 §5.3) when no quote can span them; and
//! whatever the headers, a response is stored only when the rules allow
//! it: a storable status, no `no-store` on either message, no `private`,
//! no `Set-Cookie` (the route does not allow it here), no `Vary: *`, and
//! with `Authorization` only if the response allows a shared cache.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use ringlb::cache::policy::{self, Rules, STORABLE_STATUSES};
use ringlb::cache::{CacheControl, RequestFacts, ResponseFacts};

fuzz_target!(|data: &[u8]| {
    let (Some(&status_byte), rest) = (data.first(), data.get(1..).unwrap_or(&[])) else {
        return;
    };
    let lines: Vec<(&str, &[u8])> = rest
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((std::str::from_utf8(&line[..colon]).ok()?, &line[colon + 1..]))
        })
        .collect();

    // List semantics.
    let values: Vec<&[u8]> = lines.iter().map(|(_, v)| *v).collect();
    if values.len() <= 8 && !values.iter().any(|v| v.contains(&b'"')) {
        let joined = values.join(&b","[..]);
        assert_eq!(
            CacheControl::parse(values.iter().copied()),
            CacheControl::parse([&joined[..]]),
        );
    }

    // The rules: request headers are the lines whose name starts with
    // `q-` (prefix dropped), the rest are the response's.
    let req_lines: Vec<(&str, &[u8])> = lines
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("q-")?, *v)))
        .collect();
    let resp_lines: Vec<(&str, &[u8])> = lines
        .iter()
        .filter(|(n, _)| !n.starts_with("q-"))
        .copied()
        .collect();
    let status = [200u16, 203, 204, 206, 301, 302, 304, 404, 410, 500][status_byte as usize % 10];
    let req = RequestFacts::read("GET", req_lines.iter().copied());
    let resp = ResponseFacts::read(status, resp_lines.iter().copied());
    let rules = Rules {
        default_ttl: Duration::from_secs(60),
        store_set_cookie: false,
        stale_while_revalidate: Duration::from_secs(5),
        stale_if_error: Duration::from_secs(5),
    };
    let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    if let Ok(life) = policy::decide_store(&req, &resp, &rules, now) {
        assert!(STORABLE_STATUSES.contains(&status));
        assert!(!req.cc.no_store && !resp.cc.no_store && !resp.cc.private);
        assert!(!resp.set_cookie);
        assert_ne!(resp.vary.as_deref(), Some("*"));
        if req.authorization {
            assert!(resp.cc.public || resp.cc.s_maxage.is_some() || resp.cc.must_revalidate);
        }
        assert!(life.stale_if_error <= rules.stale_if_error);
        let _ = policy::usable(&life, life.initial_age + life.fresh, &req);
    }
    let _ = policy::not_modified(&req, resp.etag.as_deref(), resp.last_modified);
});
