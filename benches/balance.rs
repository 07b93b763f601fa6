//! Criterion benchmarks of backend selection: one pick per strategy, with 3
//! and with 100 backends, all eligible and with half of them rejected.
//!
//! Target (printed, never asserted): a pick in < 20 ns. A new strategy is
//! one line in `picks`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringlb::upstream::balance::{Balancer, RoundRobin};

const BACKEND_COUNTS: [usize; 2] = [3, 100];

fn picks(c: &mut Criterion) {
    bench_strategy(c, "round_robin", |n| RoundRobin::new(n, 0));
}

/// Benches `next` of the balancer `build(n)` makes, for every backend count
/// and both predicates. Generic, so the pick is statically dispatched as it
/// is in the proxy; only the predicate is `dyn`, as the trait requires.
fn bench_strategy<B: Balancer>(c: &mut Criterion, name: &str, build: fn(usize) -> B) {
    let all: &dyn Fn(usize) -> bool = &|_| true;
    // Odd backends are down: about every other pick skips one.
    let half: &dyn Fn(usize) -> bool = &|i| i % 2 == 0;
    let mut group = c.benchmark_group(format!("pick/{name}"));
    for n in BACKEND_COUNTS {
        for (label, eligible) in [("all_eligible", all), ("half_eligible", half)] {
            let mut balancer = build(n);
            group.bench_function(BenchmarkId::new(label, n), |b| {
                b.iter(|| balancer.next(black_box(eligible)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
