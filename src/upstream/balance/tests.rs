//! The builder and `pick_and_admit`: every strategy handles exclusion
//! (retries) and emptiness; panic mode; the admission race.

use super::testing::backends;
use super::*;
use crate::upstream::{BackendPolicy, BackendState, Outcome};
use std::sync::Arc;
use std::time::Duration;

const ALL: [Strategy; 9] = [
    Strategy::RoundRobin,
    Strategy::WeightedRoundRobin,
    Strategy::Random,
    Strategy::LeastConnections,
    Strategy::P2c,
    Strategy::P2cEwma,
    Strategy::ConsistentHash,
    Strategy::IpHash,
    Strategy::StickyCookie,
];

#[test]
fn every_strategy_excludes_tried_backends_until_none_is_left() {
    let bs = backends(4);
    for strategy in ALL {
        let mut b = build(strategy, &bs, 1);
        for key in [None, Some(12345)] {
            let mut tried: Vec<usize> = Vec::new();
            while let Some(p) = pick_and_admit(&mut *b, &bs, key, &|i| tried.contains(&i), false, 0)
            {
                assert!(
                    !tried.contains(&p.index),
                    "{strategy:?} repeated {}",
                    p.index
                );
                tried.push(p.index);
            }
            tried.sort_unstable();
            assert_eq!(tried, [0, 1, 2, 3], "{strategy:?} must reach every backend");
        }
    }
}

#[test]
fn every_strategy_builds_from_weights_and_from_nothing() {
    for strategy in ALL {
        let mut b = build(strategy, &[1u32, 2, 3], 0);
        assert!(b.next(&|_| true).is_some_and(|i| i < 3), "{strategy:?}");
        assert_eq!(b.next(&|_| false), None);
        let mut empty = build(strategy, &[] as &[u32], 0);
        assert_eq!(empty.next(&|_| true), None, "{strategy:?}");
    }
}

#[test]
fn hash_strategies_agree_across_workers() {
    let bs = backends(5);
    let mut a = build(Strategy::ConsistentHash, &bs, 0);
    let mut b = build(Strategy::ConsistentHash, &bs, 3);
    for key in 0..500u64 {
        let pa = pick_and_admit(&mut *a, &bs, Some(key), &|_| false, false, 0).map(|p| p.index);
        let pb = pick_and_admit(&mut *b, &bs, Some(key), &|_| false, false, 0).map(|p| p.index);
        assert_eq!(pa, pb);
    }
}

#[test]
fn all_down_is_503_unless_panic_mode() {
    let bs = backends(3);
    for b in &bs {
        b.state.set_health(false, 0);
    }
    let mut rr = build(Strategy::RoundRobin, &bs, 0);
    assert!(pick_and_admit(&mut *rr, &bs, None, &|_| false, false, 0).is_none());
    let p = pick_and_admit(&mut *rr, &bs, None, &|_| false, true, 0).unwrap();
    assert!(p.panicked);
    assert_eq!(bs[p.index].state.in_flight(), 1);
    // Panic mode still skips draining backends and honours exclusion.
    bs[0].state.set_draining(true);
    for _ in 0..10 {
        let p = pick_and_admit(&mut *rr, &bs, None, &|i| i == 1, true, 0).unwrap();
        assert_eq!(p.index, 2);
    }
    bs[2].state.set_draining(true);
    assert!(pick_and_admit(&mut *rr, &bs, None, &|i| i == 1, true, 0).is_none());
}

#[test]
fn panic_mode_is_not_used_while_one_backend_is_up() {
    let bs = backends(3);
    bs[0].state.set_health(false, 0);
    bs[2].state.set_health(false, 0);
    let mut rr = build(Strategy::RoundRobin, &bs, 0);
    for _ in 0..5 {
        let p = pick_and_admit(&mut *rr, &bs, None, &|_| false, true, 0).unwrap();
        assert_eq!((p.index, p.panicked), (1, false));
    }
}

#[test]
fn a_taken_probe_slot_falls_back_to_another_backend() {
    let policy = BackendPolicy {
        passive_fall: 1,
        ..BackendPolicy::default()
    };
    let bs: Vec<Backend> = backends(2)
        .into_iter()
        .map(|b| Backend {
            state: Arc::new(BackendState::new(policy)),
            ..b
        })
        .collect();
    let _ = bs[0]
        .state
        .record_outcome(Outcome::Reset, Duration::ZERO, 0);
    let now = 20_000_000_000; // past the cool-down: backend 0 may be probed once
    let mut rr = build(Strategy::RoundRobin, &bs, 0);
    let first = pick_and_admit(&mut *rr, &bs, None, &|_| false, false, now).unwrap();
    assert_eq!(first.index, 0);
    assert!(first.admission.is_probe());
    // While the probe runs, backend 0 is not offered again.
    for _ in 0..4 {
        let p = pick_and_admit(&mut *rr, &bs, None, &|_| false, false, now).unwrap();
        assert_eq!(p.index, 1);
    }
}

/// Upstream `a` of a config with backends 10.0.0.1:80 and 10.0.0.2:80
/// (the addresses of `testing::backends(2)`) and `extra` keys.
fn upstream(extra: &str) -> UpstreamConfig {
    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
         [upstreams.a]\nbackends = [{{ addr = \"10.0.0.1:80\" }}, {{ addr = \"10.0.0.2:80\" }}]\n\
         {extra}\n"
    );
    let mut config = crate::config::Config::from_toml_str(&src, std::path::Path::new("t"))
        .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
    config.upstreams.remove(0)
}

#[test]
fn the_strategy_decides_the_request_key() {
    use super::hash::tests::head as request;
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let head =
        request(b"GET / HTTP/1.1\r\nHost: a\r\nX-User: u1\r\nCookie: lb=00000000000000ff\r\n\r\n");
    let cases: &[(&str, Option<u64>)] = &[
        ("", None),
        ("strategy = \"least_connections\"", None),
        ("strategy = \"ip_hash\"", Some(ip_key(ip))),
        ("strategy = \"consistent_hash\"", Some(ip_key(ip))),
        (
            "strategy = \"consistent_hash\"\nhash_key = \"header:X-User\"",
            Some(hash_bytes(b"u1")),
        ),
        (
            "strategy = \"consistent_hash\"\nhash_key = \"header:X-Absent\"",
            None,
        ),
        (
            "strategy = \"sticky_cookie\"\nsticky_cookie = { name = \"lb\" }",
            Some(0xff),
        ),
        ("strategy = \"sticky_cookie\"", None),
    ];
    for (extra, want) in cases {
        let up = upstream(extra);
        assert_eq!(
            request_key(&KeyRule::of(&up), &head, ip),
            *want,
            "{extra:?}"
        );
        let picker = Picker::new(&up, &backends(2), 0);
        assert_eq!(picker.request_key(&head, ip), *want, "{extra:?}");
    }
}

#[test]
fn a_sticky_pick_carries_the_cookie_unless_the_request_named_its_backend() {
    let bs = backends(2);
    let up = upstream("strategy = \"sticky_cookie\"\nsticky_cookie = { name = \"lb\" }");
    let mut picker = Picker::new(&up, &bs, 0);
    let none = &|_| false;
    let fresh = picker.pick_and_admit(&bs, None, none, 0).unwrap();
    let cookie = fresh.set_cookie.expect("a new client gets a cookie");
    assert_eq!(
        cookie,
        format!("lb={:016x}; Path=/; HttpOnly", bs[fresh.index].id)
    );
    let back = picker
        .pick_and_admit(&bs, Some(bs[fresh.index].id), none, 0)
        .unwrap();
    assert_eq!(back.index, fresh.index);
    assert_eq!(back.set_cookie, None);
    // Other strategies never set one.
    let mut plain = Picker::new(&upstream(""), &bs, 0);
    assert_eq!(
        plain.pick_and_admit(&bs, None, none, 0).unwrap().set_cookie,
        None
    );
}
