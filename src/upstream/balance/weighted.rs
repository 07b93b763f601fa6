//! Smooth weighted round robin, as nginx does it.
//!
//! Each pick adds every eligible backend's weight to its running score,
//! picks the highest score, and takes the sum of eligible weights off the
//! winner. Over any window of `sum(weights)` picks each backend is chosen
//! `weight` times, and the picks interleave (weights 5,1,1 give
//! a a b a c a a, not a a a a a b c), so no backend gets a burst.
//!
//! Why a schedule: scoring is a scan of every backend per pick (about
//! 270 ns at 100 backends). The sequence with every backend eligible is
//! periodic, so it is computed once at build (weights divided by their gcd,
//! at most [`MAX_SCHEDULE`] entries) and a pick is one step of a cursor.
//! An unavailable scheduled backend is skipped by stepping on (at most
//! [`MAX_SKIP`] entries), so the available ones keep their weight per
//! cycle; only past that, or when the cycle is too long to store, does a
//! pick fall back to scoring the eligible backends.
//!
//! Invariants: `scores.len() == weights.len()`; `schedule` holds indices
//! `< weights.len()` and is empty or one whole period; an ineligible
//! backend's score is left alone, so it neither banks credit while down nor
//! pays for picks it did not get. The balancer is rebuilt with the backend
//! set, so the schedule always matches it.

use super::{Balancer, PickContext};

/// Longest stored cycle (4 bytes an entry); longer cycles are scored.
pub const MAX_SCHEDULE: usize = 4096;

/// Schedule entries stepped over before a pick falls back to scoring.
pub const MAX_SKIP: usize = 8;

/// Core-local smooth weighted round-robin state.
#[derive(Debug, Clone)]
pub struct WeightedRoundRobin {
    weights: Vec<i64>,
    scores: Vec<i64>,
    /// One period of the all-eligible sequence; empty if too long.
    schedule: Vec<u32>,
    cursor: usize,
}

impl WeightedRoundRobin {
    /// `start_offset` picks are made and discarded first, so workers that
    /// start together do not all send their first request to the same
    /// backend.
    pub fn new(weights: &[u32], start_offset: usize) -> WeightedRoundRobin {
        let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w.max(1))).collect();
        let schedule = schedule(&weights);
        let mut wrr = WeightedRoundRobin {
            scores: vec![0; weights.len()],
            weights,
            cursor: start_offset.checked_rem(schedule.len()).unwrap_or(0),
            schedule,
        };
        if wrr.schedule.is_empty() {
            let cycle: i64 = wrr.weights.iter().sum();
            for _ in 0..(start_offset as i64 % cycle.max(1)) {
                wrr.scored(&|_| true);
            }
        }
        wrr
    }

    /// One pick by scoring every eligible backend (nginx's algorithm).
    fn scored(&mut self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
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

/// One period of the smooth sequence with every backend eligible, or
/// nothing if it is longer than [`MAX_SCHEDULE`]. Dividing by the gcd does
/// not change the sequence (every score scales by it) and shortens it.
fn schedule(weights: &[i64]) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let reduced: Vec<i64> = weights.iter().map(|&w| w / g).collect();
    let period: i64 = reduced.iter().sum();
    if period == 0 || period > MAX_SCHEDULE as i64 {
        return Vec::new();
    }
    let mut scorer = WeightedRoundRobin {
        scores: vec![0; reduced.len()],
        weights: reduced,
        schedule: Vec::new(),
        cursor: 0,
    };
    (0..period)
        .filter_map(|_| scorer.scored(&|_| true))
        .map(|i| i as u32)
        .collect()
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        let len = self.schedule.len();
        for _ in 0..MAX_SKIP.min(len) {
            let i = self.schedule[self.cursor] as usize;
            self.cursor += 1;
            if self.cursor == len {
                self.cursor = 0;
            }
            if (ctx.eligible)(i) {
                return Some(i);
            }
        }
        self.scored(ctx.eligible)
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
    #[test]
    fn the_schedule_is_the_scored_sequence() {
        for weights in [&[5, 1, 1][..], &[1, 2, 3], &[10, 20, 30], &[7, 3, 1, 1, 4]] {
            let mut fast = WeightedRoundRobin::new(weights, 0);
            let mut slow = WeightedRoundRobin::new(weights, 0);
            assert!(!fast.schedule.is_empty());
            let cycle: u32 = weights.iter().sum();
            for _ in 0..2 * cycle {
                assert_eq!(fast.next(&|_| true), slow.scored(&|_| true), "{weights:?}");
            }
        }
    }

    #[test]
    fn a_cycle_too_long_to_store_is_scored() {
        let weights = [u32::from(u16::MAX), u32::from(u16::MAX) - 1];
        let mut wrr = WeightedRoundRobin::new(&weights, 0);
        assert!(wrr.schedule.is_empty());
        let picks = sequence(&mut wrr, 1000, &|_| true);
        let zeros = picks.iter().filter(|&&b| b == 0).count();
        assert!((499..=501).contains(&zeros), "{zeros}");
    }

    #[test]
    fn skipping_keeps_the_shares_of_the_available() {
        // 100 backends, weights 1,2,3,...; the odd ones are out.
        let weights: Vec<u32> = (0..100).map(|i| 1 + i % 3).collect();
        let mut wrr = WeightedRoundRobin::new(&weights, 0);
        let cycle: u32 = weights.iter().sum();
        let mut counts = [0u32; 100];
        for _ in 0..cycle {
            counts[wrr.next(&|i| i % 2 == 0).unwrap()] += 1;
        }
        assert!(counts.iter().step_by(2).all(|&c| c > 0), "{counts:?}");
        assert!(counts.iter().skip(1).step_by(2).all(|&c| c == 0));
        // A long run of unavailable entries falls back to scoring.
        let mut wrr = WeightedRoundRobin::new(&weights, 0);
        for _ in 0..50 {
            assert_eq!(wrr.next(&|i| i == 99), Some(99));
        }
        assert_eq!(wrr.next(&|_| false), None);
    }
}
