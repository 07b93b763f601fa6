//! A bounded list of spare things (buffers, heap slots) that a worker
//! reuses instead of allocating, and that gives back what load no longer
//! needs: it remembers the fewest spares there were since the last sweep
//! (that many went unused), and a sweep hands exactly those out to be
//! freed. Used by the worker's spare buffers, by [`super::recycled`]
//! and by gzip's spare deflate states.

/// Spare items, at most `max`, with their low-water mark.
pub struct SpareList<T> {
    items: Vec<T>,
    max: usize,
    /// The fewest items since the last sweep.
    low: usize,
}

impl<T> SpareList<T> {
    pub const fn new(max: usize) -> SpareList<T> {
        SpareList {
            items: Vec::new(),
            max,
            low: 0,
        }
    }

    /// A spare item, if there is one.
    pub fn take(&mut self) -> Option<T> {
        let item = self.items.pop();
        self.low = self.low.min(self.items.len());
        item
    }

    /// Keeps `item`, or hands it back when `max` are kept already.
    pub fn keep(&mut self, item: T) -> Result<(), T> {
        if self.items.len() < self.max {
            self.items.push(item);
            Ok(())
        } else {
            Err(item)
        }
    }

    /// The items unused since the last sweep (all of them with `all`),
    /// removed from the list, for the caller to free.
    pub fn sweep(&mut self, all: bool) -> std::vec::Drain<'_, T> {
        let unused = if all {
            self.items.len()
        } else {
            self.low.min(self.items.len())
        };
        let keep = self.items.len() - unused;
        self.low = keep;
        self.items.drain(keep..)
    }

    /// Gives the list's own unused capacity back (after a sweep).
    pub fn shrink(&mut self) {
        self.items.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::SpareList;

    #[test]
    fn a_sweep_hands_out_what_went_unused_since_the_last_one() {
        let mut list = SpareList::new(4);
        for i in 0..3 {
            assert_eq!(list.keep(i), Ok(()));
        }
        // Before any sweep, nothing counts as unused.
        assert_eq!(list.sweep(false).count(), 0);
        // One taken and put back: two of three were never needed.
        let one = list.take().unwrap();
        list.keep(one).unwrap();
        assert_eq!(list.sweep(false).count(), 2);
        assert_eq!(list.len(), 1);
        assert_eq!(list.sweep(true).count(), 1);
        assert!(list.is_empty());
    }

    #[test]
    fn it_keeps_at_most_max() {
        let mut list = SpareList::new(2);
        assert_eq!(list.keep(1), Ok(()));
        assert_eq!(list.keep(2), Ok(()));
        assert_eq!(list.keep(3), Err(3));
        assert_eq!(list.len(), 2);
    }
}
