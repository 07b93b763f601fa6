//! Power of two choices: draw two distinct eligible backends at random and
//! take the less loaded one.
//!
//! Why: nearly as good as least connections at avoiding a slow backend,
//! without every worker herding onto the same "least" backend at once
//! (Mitzenmacher; linkerd's and Envoy's default). Two loads are read per
//! pick instead of n.
//!
//! Load: `InFlight` is the global in-flight count. `PeakEwma` is the cost
//! `latency_ewma_µs × (in_flight + 1)` (linkerd's shape; our EWMA is a plain
//! α = 1/8 average, not a peak-sensitive one), with an unmeasured backend
//! counted as 1 µs so new backends get tried.
//!
//! Invariants: both candidates are eligible and distinct when at least two
//! are eligible; with one eligible backend it is returned; ties go to the
//! first draw. Draws are uniform over the eligible set (see `random.rs`).

use super::random::uniform_eligible;
use super::{Balancer, PickContext};

/// What "less loaded" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    InFlight,
    PeakEwma,
}

/// Core-local P2C state: an RNG and a scratch list.
#[derive(Debug, Clone)]
pub struct PowerOfTwo {
    len: usize,
    load: Load,
    rng: fastrand::Rng,
    scratch: Vec<usize>,
}

impl PowerOfTwo {
    pub fn new(n_backends: usize, load: Load, seed: u64) -> PowerOfTwo {
        PowerOfTwo {
            len: n_backends,
            load,
            rng: fastrand::Rng::with_seed(seed),
            scratch: Vec::with_capacity(n_backends),
        }
    }

    fn cost(&self, ctx: &PickContext<'_>, i: usize) -> u64 {
        let Some(b) = ctx.backends.get(i) else {
            return 0;
        };
        let in_flight = b.state.in_flight();
        match self.load {
            Load::InFlight => in_flight,
            Load::PeakEwma => {
                let us = u64::try_from(b.state.latency_ewma().as_micros()).unwrap_or(u64::MAX);
                us.max(1).saturating_mul(in_flight + 1)
            }
        }
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        let first = uniform_eligible(&mut self.rng, self.len, ctx.eligible, &mut self.scratch)?;
        let others = |i: usize| i != first && (ctx.eligible)(i);
        let Some(second) = uniform_eligible(&mut self.rng, self.len, &others, &mut self.scratch)
        else {
            return Some(first);
        };
        if self.cost(ctx, second) < self.cost(ctx, first) {
            Some(second)
        } else {
            Some(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, pick};
    use super::*;
    use std::time::Duration;

    #[test]
    fn never_picks_the_most_loaded_of_three() {
        // With three backends, the most loaded one can only win if drawn
        // twice, which distinct draws forbid.
        let bs = backends(3);
        let _g: Vec<_> = (0..5).map(|_| bs[2].state.start_request()).collect();
        let _h = bs[1].state.start_request();
        let mut p = PowerOfTwo::new(3, Load::InFlight, 11);
        let mut counts = [0; 3];
        for _ in 0..9_000 {
            counts[pick(&mut p, &bs, None, &|_| true).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        // Backend 0 wins whenever drawn (2/3 of pairs), 1 only against 2 (1/3).
        assert!((5_700..=6_300).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn equal_loads_spread_evenly() {
        let bs = backends(4);
        let mut p = PowerOfTwo::new(4, Load::InFlight, 5);
        let mut counts = [0; 4];
        for _ in 0..40_000 {
            counts[pick(&mut p, &bs, None, &|_| true).unwrap()] += 1;
        }
        for c in counts {
            assert!((9_400..=10_600).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn samples_only_among_eligible() {
        let bs = backends(5);
        let mut p = PowerOfTwo::new(5, Load::InFlight, 3);
        for _ in 0..1_000 {
            let i = pick(&mut p, &bs, None, &|i| i == 1 || i == 3).unwrap();
            assert!(i == 1 || i == 3);
        }
        assert_eq!(pick(&mut p, &bs, None, &|i| i == 4), Some(4));
        assert_eq!(pick(&mut p, &bs, None, &|_| false), None);
    }

    #[test]
    fn ewma_prefers_the_faster_backend() {
        let bs = backends(2);
        let now = 0;
        for _ in 0..20 {
            let _ = bs[0].state.record_outcome(
                crate::upstream::Outcome::Response(200),
                Duration::from_millis(50),
                now,
            );
            let _ = bs[1].state.record_outcome(
                crate::upstream::Outcome::Response(200),
                Duration::from_millis(5),
                now,
            );
        }
        let mut p = PowerOfTwo::new(2, Load::PeakEwma, 9);
        for _ in 0..100 {
            assert_eq!(pick(&mut p, &bs, None, &|_| true), Some(1));
        }
    }
}
