//! Counts the heap allocations made on worker threads, for
//! `ringlb_worker_heap_allocations_total`: a warm keep-alive request
//! through the proxy should make none, and the count shows whether it
//! does (an end-to-end test checks it).
//!
//! The binary installs [`CountingAllocator`] (the system allocator, with a
//! count); each worker thread registers a counter of its own, so counting
//! is one uncontended store on that thread, and other threads are not
//! counted at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The system allocator, counting the allocations of registered threads.
pub struct CountingAllocator;

thread_local! {
    /// This thread's counter, if it is a worker. Const-initialised and
    /// without a destructor, so the allocator may read it at any time
    /// (reading it never allocates).
    static COUNTER: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}

/// Every registered thread's counter (a few, one per worker thread; a
/// counter outlives its thread so that the total never goes down).
static COUNTERS: Mutex<Vec<&'static AtomicU64>> = Mutex::new(Vec::new());

fn count() {
    if let Some(counter) = COUNTER.with(Cell::get) {
        // Only this thread writes it: a plain load and store, no lock prefix.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; counting touches only
// a thread-local and an atomic, and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts this thread's allocations from now on (a worker thread calls it
/// as it starts; a second call is a no-op).
pub fn count_allocations_of_this_thread() {
    if COUNTER.with(Cell::get).is_some() {
        return;
    }
    let counter: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    COUNTERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(counter);
    COUNTER.with(|c| c.set(Some(counter)));
}

/// Allocations made on worker threads so far (0 unless the binary installed
/// [`CountingAllocator`]).
pub fn worker_heap_allocations() -> u64 {
    COUNTERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
}
