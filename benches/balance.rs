//! Criterion benchmarks of backend selection: one pick per strategy, with 3
//! and with 100 backends, all eligible and with half of them rejected, plus
//! the whole per-attempt cost (`pick_and_admit`: availability check, pick,
//! and the atomic admission).
//!
//! Target (printed, never asserted): a pick in < 50 ns at 100 backends,
//! O(1) or O(log n) in the backend count. A new strategy is one entry in
//! `STRATEGIES`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringlb::config::Strategy;
use ringlb::upstream::balance::{self, PickContext};
use ringlb::upstream::{Backend, BackendState};

const BACKEND_COUNTS: [usize; 2] = [3, 100];

const STRATEGIES: [(&str, Strategy); 9] = [
    ("round_robin", Strategy::RoundRobin),
    ("weighted_round_robin", Strategy::WeightedRoundRobin),
    ("random", Strategy::Random),
    ("least_connections", Strategy::LeastConnections),
    ("p2c", Strategy::P2c),
    ("p2c_ewma", Strategy::P2cEwma),
    ("consistent_hash", Strategy::ConsistentHash),
    ("ip_hash", Strategy::IpHash),
    ("sticky_cookie", Strategy::StickyCookie),
];

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            Backend::new(
                SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)),
                1 + (i % 3) as u32,
                Arc::new(BackendState::default()),
            )
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let all: &dyn Fn(usize) -> bool = &|_| true;
    // Odd backends are out: about every other candidate is skipped.
    let half: &dyn Fn(usize) -> bool = &|i| i % 2 == 0;
    for (name, strategy) in STRATEGIES {
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for n in BACKEND_COUNTS {
            let backends = backends(n);
            for (label, eligible) in [("all_eligible", all), ("half_eligible", half)] {
                let mut balancer = balance::build(strategy, &backends, 0);
                let mut key = 0u64;
                group.bench_function(BenchmarkId::new(label, n), |b| {
                    b.iter(|| {
                        // A different key each pick, as different clients would send.
                        key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        let ctx = PickContext {
                            backends: &backends,
                            key: Some(key),
                            eligible,
                        };
                        balancer.pick(black_box(&ctx))
                    })
                });
            }
        }
        group.finish();
    }
}

/// The whole per-attempt cost the proxy pays: availability, pick, and the
/// admission (in-flight increment and its release on drop).
fn pick_and_admit(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_and_admit");
    for (name, strategy) in [
        ("round_robin", Strategy::RoundRobin),
        ("p2c", Strategy::P2c),
        ("consistent_hash", Strategy::ConsistentHash),
    ] {
        for n in BACKEND_COUNTS {
            let backends = backends(n);
            let mut balancer = balance::build(strategy, &backends, 0);
            let mut key = 0u64;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let picked = balance::pick_and_admit(
                        &mut *balancer,
                        &backends,
                        Some(key),
                        &|_| false,
                        false,
                        0,
                    );
                    black_box(picked.map(|p| p.index))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, picks, pick_and_admit);
criterion_main!(benches);
