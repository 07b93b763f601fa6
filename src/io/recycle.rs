//! Heap slots for a worker's large per-request futures, recycled instead of
//! freed.
//!
//! A connection that waits between requests should not carry the space of
//! the exchange that serves one (about 6 KiB), so that future lives on the
//! heap while it runs. Allocating and freeing it for every request was the
//! last allocation on a keep-alive request's path; a slot freed here goes
//! to a small per-thread cache instead, and the next request of any
//! connection on the thread takes it. The cache is bounded
//! ([`MAX_SPARE_SLOTS`] per slot size), and [`sweep_spare_slots`], run by
//! the worker's periodic sweep, frees the slots that a whole interval did
//! not need, so memory comes back once the load that needed them has gone.
//!
//! The future is built directly in its slot (the slot is allocated before
//! it is made), not built on the stack and copied there.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use super::SpareList;

/// Spare slots a thread keeps per slot size: enough for the requests one
/// worker serves at a time under ordinary load; beyond that, slots are
/// freed when their future ends.
pub const MAX_SPARE_SLOTS: usize = 64;

/// The spare slots of one size.
struct Spare {
    layout: Layout,
    slots: SpareList<NonNull<u8>>,
}

thread_local! {
    /// Spare slots by layout. A thread sees a handful of layouts at most
    /// (one per future type that uses this), so a list is enough.
    static SPARE: RefCell<Vec<Spare>> = const { RefCell::new(Vec::new()) };
}

/// A future in a recycled heap slot. Pinned for its whole life: the slot
/// never moves, and `Recycled` itself only holds a pointer to it.
pub struct Recycled<F: Future> {
    slot: NonNull<F>,
    /// It owns an `F` (for the drop check).
    _owns: PhantomData<F>,
}

/// Builds `make()`'s future in a slot from this thread's cache (or a new
/// one). Zero-sized futures are not worth it and are not supported.
pub fn recycled<F: Future>(make: impl FnOnce() -> F) -> Recycled<F> {
    let layout = Layout::new::<F>();
    assert!(layout.size() > 0, "recycled() is for large futures");
    let slot = take_spare(layout).unwrap_or_else(|| {
        // SAFETY: `layout` has a non-zero size (asserted above).
        NonNull::new(unsafe { alloc(layout) }).unwrap_or_else(|| handle_alloc_error(layout))
    });
    let slot = slot.cast::<F>();
    // SAFETY: the slot is fresh or spare (no live value in it), sized and
    // aligned for `F` by its layout.
    unsafe { slot.as_ptr().write(make()) };
    Recycled {
        slot,
        _owns: PhantomData,
    }
}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the slot holds a live `F` until `drop`, and it never moves
        // (only this pointer to it does), so pinning it is sound.
        let fut = unsafe { Pin::new_unchecked(&mut *self.slot.as_ptr()) };
        fut.poll(cx)
    }
}

impl<F: Future> Drop for Recycled<F> {
    fn drop(&mut self) {
        // SAFETY: the slot holds a live `F` that nothing else owns; after
        // this it holds none, and is given back or freed.
        unsafe { self.slot.as_ptr().drop_in_place() };
        give_back(Layout::new::<F>(), self.slot.cast());
    }
}

fn take_spare(layout: Layout) -> Option<NonNull<u8>> {
    SPARE
        .try_with(|spare| {
            let mut spare = spare.borrow_mut();
            let spare = spare.iter_mut().find(|s| s.layout == layout)?;
            spare.slots.take()
        })
        .ok()
        .flatten()
}

fn give_back(layout: Layout, slot: NonNull<u8>) {
    let kept = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        let index = match spare.iter().position(|s| s.layout == layout) {
            Some(i) => i,
            None => {
                spare.push(Spare {
                    layout,
                    slots: SpareList::new(MAX_SPARE_SLOTS),
                });
                spare.len() - 1
            }
        };
        spare[index].slots.keep(slot).is_ok()
    });
    if kept != Ok(true) {
        // SAFETY: allocated by `recycled` with this same layout, and empty.
        unsafe { dealloc(slot.as_ptr(), layout) };
    }
}

/// Frees this thread's spare slots that went unused since the last call
/// (all of them with `all`); run by the worker's periodic sweep. Returns
/// roughly how many bytes were freed.
pub fn sweep_spare_slots(all: bool) -> usize {
    SPARE
        .try_with(|spare| {
            let mut freed = 0;
            for spare in spare.borrow_mut().iter_mut() {
                let layout = spare.layout;
                for slot in spare.slots.sweep(all) {
                    // SAFETY: allocated by `recycled` with this layout, empty.
                    unsafe { dealloc(slot.as_ptr(), layout) };
                    freed += layout.size();
                }
            }
            freed
        })
        .unwrap_or(0)
}

/// How many spare slots this thread holds.
#[cfg(test)]
fn spare_slots() -> usize {
    SPARE
        .try_with(|spare| spare.borrow().iter().map(|s| s.slots.len()).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Counts its drops; big enough to be a realistic slot.
    struct Tracked {
        drops: Rc<Cell<u32>>,
        _pad: [u8; 4096],
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    async fn future_of(tracked: Tracked, answer: u32) -> u32 {
        let _held = tracked;
        answer
    }

    fn block_on<F: Future>(fut: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn a_slot_is_reused_and_its_future_dropped_once() {
        sweep_spare_slots(true);
        let drops = Rc::new(Cell::new(0));
        let make = || {
            future_of(
                Tracked {
                    drops: drops.clone(),
                    _pad: [0; 4096],
                },
                7,
            )
        };
        let first = recycled(make);
        let first_slot = first.slot.as_ptr() as usize;
        assert_eq!(block_on(first), 7);
        assert_eq!(drops.get(), 1);
        assert_eq!(spare_slots(), 1);
        let second = recycled(make);
        assert_eq!(
            second.slot.as_ptr() as usize,
            first_slot,
            "the spare slot is taken"
        );
        assert_eq!(spare_slots(), 0);
        // Dropped before it ran: its captured value is still dropped once.
        drop(second);
        assert_eq!(drops.get(), 2);
        assert!(
            sweep_spare_slots(true) > 4096,
            "one slot of over 4 KiB freed"
        );
    }

    #[test]
    fn spare_slots_are_bounded_and_swept_when_unused() {
        sweep_spare_slots(true);
        let drops = Rc::new(Cell::new(0));
        let live: Vec<_> = (0..MAX_SPARE_SLOTS + 10)
            .map(|i| {
                let tracked = Tracked {
                    drops: drops.clone(),
                    _pad: [0; 4096],
                };
                recycled(|| future_of(tracked, i as u32))
            })
            .collect();
        drop(live);
        assert_eq!(drops.get() as usize, MAX_SPARE_SLOTS + 10);
        assert_eq!(spare_slots(), MAX_SPARE_SLOTS);
        // The first sweep marks them; three taken and given back after it
        // keep three from the next.
        sweep_spare_slots(false);
        assert_eq!(spare_slots(), MAX_SPARE_SLOTS);
        let again: Vec<_> = (0..3)
            .map(|i| {
                let tracked = Tracked {
                    drops: drops.clone(),
                    _pad: [0; 4096],
                };
                recycled(|| future_of(tracked, i))
            })
            .collect();
        drop(again);
        sweep_spare_slots(false);
        assert_eq!(spare_slots(), 3);
        sweep_spare_slots(false);
        assert_eq!(spare_slots(), 0);
    }
}
