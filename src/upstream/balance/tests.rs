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
