//! Least connections: the eligible backend with the fewest requests in
//! flight across all workers; ties go round robin.
//!
//! Why global counts: a worker's own count says little when a backend is
//! slow for everyone; `BackendState::in_flight` is shared, so every worker
//! sees the same load. Reading n atomics per pick is cheap next to a
//! request.
//!
//! Invariants: the scan starts at a core-local cursor and takes the first
//! strictly smallest load, then moves the cursor past the pick, so equal
//! loads rotate (and a fresh start, all zero, is round robin). Loads are
//! read without a snapshot; a count that moves during the scan only makes
//! the pick a moment stale. Weights are ignored.

use super::{Balancer, PickContext};

/// Core-local cursor for tie-breaking over `len` backends.
#[derive(Debug, Clone)]
pub struct LeastConnections {
    len: usize,
    cursor: usize,
}

impl LeastConnections {
    pub fn new(n_backends: usize, start_offset: usize) -> LeastConnections {
        LeastConnections {
            len: n_backends,
            cursor: start_offset.checked_rem(n_backends).unwrap_or(0),
        }
    }
}

impl Balancer for LeastConnections {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for k in 0..self.len {
            let i = (self.cursor + k) % self.len;
            if !(ctx.eligible)(i) {
                continue;
            }
            let load = ctx.backends.get(i).map_or(0, |b| b.state.in_flight());
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        let (i, _) = best?;
        self.cursor = (i + 1) % self.len;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, pick};
    use super::*;

    #[test]
    fn picks_the_minimum_in_flight() {
        let bs = backends(3);
        let _g: Vec<_> = [0, 0, 0, 1, 2, 2]
            .iter()
            .map(|&i| bs[i].state.start_request())
            .collect();
        // In flight: 3, 1, 2.
        let mut lc = LeastConnections::new(3, 0);
        assert_eq!(pick(&mut lc, &bs, None, &|_| true), Some(1));
        assert_eq!(pick(&mut lc, &bs, None, &|i| i != 1), Some(2));
    }

    #[test]
    fn ties_rotate_round_robin() {
        let bs = backends(3);
        let mut lc = LeastConnections::new(3, 1);
        let got: Vec<_> = (0..6)
            .map(|_| pick(&mut lc, &bs, None, &|_| true))
            .collect();
        assert_eq!(got, [1, 2, 0, 1, 2, 0].map(Some));
        // Equal minimum among a subset also rotates.
        let _busy = bs[0].state.start_request();
        let got: Vec<_> = (0..4)
            .map(|_| pick(&mut lc, &bs, None, &|_| true))
            .collect();
        assert_eq!(got, [1, 2, 1, 2].map(Some));
    }

    #[test]
    fn follows_the_load_as_it_changes() {
        let bs = backends(2);
        let mut lc = LeastConnections::new(2, 0);
        let mut guards = Vec::new();
        // Each pick starts a request that stays open: picks alternate.
        for want in [0, 1, 0, 1] {
            let i = pick(&mut lc, &bs, None, &|_| true).unwrap();
            assert_eq!(i, want);
            guards.push(bs[i].state.start_request());
        }
        drop(guards.remove(0)); // backend 0 now has 1, backend 1 has 2.
        assert_eq!(pick(&mut lc, &bs, None, &|_| true), Some(0));
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let bs = backends(2);
        let mut lc = LeastConnections::new(2, 0);
        assert_eq!(pick(&mut lc, &bs, None, &|_| false), None);
        assert_eq!(LeastConnections::new(0, 0).next(&|_| true), None);
    }
}
