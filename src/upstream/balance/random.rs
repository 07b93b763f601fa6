//! Random: each pick is uniform among the eligible backends.
//!
//! Why: no cursor to synchronise and no shared state to read; with many
//! workers and many clients it spreads as well as round robin. Weights are
//! ignored.
//!
//! Invariants: a pick is uniform over the eligible set. It first draws up to
//! [`DRAWS`] indices from all backends and returns the first eligible one;
//! if all were ineligible, it lists the eligible backends and draws among
//! them, so a mostly-down upstream still gets a uniform pick in O(n). The
//! RNG is core-local and seeded at build (tests pass a fixed seed).

use super::{Balancer, PickContext};

/// Blind draws before falling back to listing the eligible backends.
const DRAWS: usize = 4;

/// Core-local random picker over `len` backends.
#[derive(Debug, Clone)]
pub struct Random {
    len: usize,
    rng: fastrand::Rng,
    scratch: Vec<usize>,
}

impl Random {
    pub fn new(n_backends: usize, seed: u64) -> Random {
        Random {
            len: n_backends,
            rng: fastrand::Rng::with_seed(seed),
            scratch: Vec::with_capacity(n_backends),
        }
    }
}

/// A uniform eligible index among `0..len`, by blind draws then a listing.
pub(super) fn uniform_eligible(
    rng: &mut fastrand::Rng,
    len: usize,
    eligible: &dyn Fn(usize) -> bool,
    scratch: &mut Vec<usize>,
) -> Option<usize> {
    if len == 0 {
        return None;
    }
    for _ in 0..DRAWS {
        let i = rng.usize(..len);
        if eligible(i) {
            return Some(i);
        }
    }
    scratch.clear();
    scratch.extend((0..len).filter(|&i| eligible(i)));
    if scratch.is_empty() {
        return None;
    }
    Some(scratch[rng.usize(..scratch.len())])
}

impl Balancer for Random {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        uniform_eligible(&mut self.rng, self.len, ctx.eligible, &mut self.scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        r: &mut Random,
        n: usize,
        picks: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..picks {
            c[r.next(eligible).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn uniform_within_statistical_bounds() {
        // 40,000 picks over 4: expected 10,000 each, sd ~87; allow 5%.
        let mut r = Random::new(4, 42);
        for c in counts(&mut r, 4, 40_000, &|_| true) {
            assert!((9_500..=10_500).contains(&c), "{c}");
        }
    }

    #[test]
    fn only_eligible_and_uniform_among_them() {
        let mut r = Random::new(10, 7);
        // Only 8 and 9 eligible: blind draws mostly miss, the listing path runs.
        let c = counts(&mut r, 10, 20_000, &|i| i >= 8);
        assert_eq!(c[..8].iter().sum::<usize>(), 0);
        assert!((9_400..=10_600).contains(&c[8]), "{c:?}");
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let mut r = Random::new(3, 1);
        assert_eq!(r.next(&|_| false), None);
        assert_eq!(Random::new(0, 1).next(&|_| true), None);
    }

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Random::new(5, 99), Random::new(5, 99));
        let sa: Vec<_> = (0..50).map(|_| a.next(&|_| true)).collect();
        let sb: Vec<_> = (0..50).map(|_| b.next(&|_| true)).collect();
        assert_eq!(sa, sb);
    }
}
