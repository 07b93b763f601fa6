//! Smooth weighted round robin, as nginx does it.
//!
//! Each pick adds every eligible backend's weight to its running score,
//! picks the highest score, and takes the sum of eligible weights off the
//! winner. Over any window of `sum(weights)` picks each backend is chosen
//! `weight` times, and the picks interleave (weights 5,1,1 give
//! a a b a c a a, not a a a a a b c), so no backend gets a burst.
//!
//! Invariants: `scores.len() == weights.len()`; an ineligible backend's
//! score is left alone, so it neither banks credit while down nor pays for
//! picks it did not get.

use super::{Balancer, PickContext};

/// Core-local smooth weighted round-robin state.
#[derive(Debug, Clone)]
pub struct WeightedRoundRobin {
    weights: Vec<i64>,
    scores: Vec<i64>,
}

impl WeightedRoundRobin {
    /// `start_offset` picks are made and discarded first, so workers that
    /// start together do not all send their first request to the same
    /// backend.
    pub fn new(weights: &[u32], start_offset: usize) -> WeightedRoundRobin {
        let mut wrr = WeightedRoundRobin {
            weights: weights.iter().map(|&w| i64::from(w.max(1))).collect(),
            scores: vec![0; weights.len()],
        };
        let cycle: i64 = wrr.weights.iter().sum();
        for _ in 0..(start_offset as i64 % cycle.max(1)) {
            wrr.next(&|_| true);
        }
        wrr
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        let eligible = ctx.eligible;
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.weights.len() {
            if !eligible(i) {
                continue;
            }
            self.scores[i] += self.weights[i];
            total += self.weights[i];
            if best.is_none_or(|b| self.scores[i] > self.scores[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.scores[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(
        wrr: &mut WeightedRoundRobin,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        (0..n).map(|_| wrr.next(eligible).unwrap()).collect()
    }

    #[test]
    fn nginx_sequence_for_5_1_1() {
        // The sequence nginx documents for weights 5, 1, 1.
        let mut wrr = WeightedRoundRobin::new(&[5, 1, 1], 0);
        assert_eq!(sequence(&mut wrr, 7, &|_| true), [0, 0, 1, 0, 2, 0, 0]);
        // And it repeats exactly.
        assert_eq!(sequence(&mut wrr, 7, &|_| true), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_weights_without_bursts() {
        let mut wrr = WeightedRoundRobin::new(&[1, 2], 0);
        let picks = sequence(&mut wrr, 30, &|_| true);
        assert_eq!(picks.iter().filter(|&&b| b == 0).count(), 10);
        assert_eq!(picks.iter().filter(|&&b| b == 1).count(), 20);
        // Never two picks of the weight-1 backend in a row.
        assert!(picks.windows(2).all(|w| !(w[0] == 0 && w[1] == 0)));
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let mut wrr = WeightedRoundRobin::new(&[1, 1, 1], 0);
        assert_eq!(sequence(&mut wrr, 6, &|_| true), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_ineligible_and_spreads_over_the_rest() {
        let mut wrr = WeightedRoundRobin::new(&[3, 1, 1], 0);
        let picks = sequence(&mut wrr, 8, &|i| i != 0);
        assert_eq!(picks, [1, 2, 1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let mut wrr = WeightedRoundRobin::new(&[1, 2], 0);
        assert_eq!(wrr.next(&|_| false), None);
        let mut empty = WeightedRoundRobin::new(&[], 3);
        assert_eq!(empty.next(&|_| true), None);
    }

    #[test]
    fn start_offset_shifts_the_cycle() {
        let mut a = WeightedRoundRobin::new(&[5, 1, 1], 0);
        let mut b = WeightedRoundRobin::new(&[5, 1, 1], 2);
        let from_a = sequence(&mut a, 9, &|_| true);
        let from_b = sequence(&mut b, 7, &|_| true);
        assert_eq!(from_b, from_a[2..]);
    }
}
