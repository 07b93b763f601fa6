//! Round robin: backends in index order, wrapping around.
//!
//! Why a start offset: every worker has its own cursor, so if all started
//! at backend 0, the first request on each worker after start or reload
//! would all go to backend 0. Starting worker `w` at offset `w` spreads
//! them.
//!
//! Invariants: `cursor < len` whenever `len > 0`; after a pick, the cursor
//! is one past the picked backend, so a skipped (ineligible) backend gets
//! no extra share when it comes back. Weights are not used.

use super::{Balancer, PickContext};

/// A core-local round-robin cursor over `len` backends.
#[derive(Debug, Clone)]
pub struct RoundRobin {
    len: usize,
    cursor: usize,
}

impl RoundRobin {
    /// A cursor over `n_backends` that first offers backend
    /// `start_offset % n_backends`.
    pub fn new(n_backends: usize, start_offset: usize) -> RoundRobin {
        RoundRobin {
            len: n_backends,
            cursor: start_offset.checked_rem(n_backends).unwrap_or(0),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize> {
        let eligible = ctx.eligible;
        for _ in 0..self.len {
            let index = self.cursor;
            self.cursor = (self.cursor + 1) % self.len;
            if eligible(index) {
                return Some(index);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(
        rr: &mut RoundRobin,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<Option<usize>> {
        (0..n).map(|_| rr.next(eligible)).collect()
    }

    #[test]
    fn cycles_in_order() {
        let mut rr = RoundRobin::new(3, 0);
        assert_eq!(
            picks(&mut rr, 7, &|_| true),
            [0, 1, 2, 0, 1, 2, 0].map(Some)
        );
    }

    #[test]
    fn start_offset_wraps() {
        let mut rr = RoundRobin::new(3, 4);
        assert_eq!(picks(&mut rr, 4, &|_| true), [1, 2, 0, 1].map(Some));
    }

    #[test]
    fn skips_ineligible() {
        let mut rr = RoundRobin::new(4, 0);
        assert_eq!(
            picks(&mut rr, 6, &|i| i != 1 && i != 2),
            [0, 3, 0, 3, 0, 3].map(Some)
        );
        // Backends 1 and 2 come back: the cursor continues after the last pick (3).
        assert_eq!(picks(&mut rr, 4, &|_| true), [0, 1, 2, 3].map(Some));
    }

    #[test]
    fn asks_each_backend_at_most_once() {
        use std::cell::RefCell;
        let asked = RefCell::new(Vec::new());
        let mut rr = RoundRobin::new(3, 2);
        let got = rr.next(&|i| {
            asked.borrow_mut().push(i);
            false
        });
        assert_eq!(got, None);
        assert_eq!(*asked.borrow(), [2, 0, 1]);
    }

    #[test]
    fn all_ineligible_or_empty_is_none() {
        let mut rr = RoundRobin::new(3, 0);
        assert_eq!(picks(&mut rr, 2, &|_| false), [None, None]);
        let mut empty = RoundRobin::new(0, 5);
        assert_eq!(empty.next(&|_| true), None);
    }

    #[test]
    fn single_backend() {
        let mut rr = RoundRobin::new(1, 7);
        assert_eq!(picks(&mut rr, 3, &|_| true), [Some(0); 3]);
    }
}
