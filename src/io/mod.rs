//! The only module that talks to the kernel through io_uring, and the
//! worker's runtime ([`rt`]) that drives it.
//!
//! Why a layer of our own: an io_uring op keeps running in the kernel when
//! its future is dropped. A read raced against a timer would swallow bytes
//! that arrive later and pin the file open. So nothing outside this module
//! ever races or drops an op:
//!
//! * every read, write and connect that needs a deadline gets it from the
//!   kernel: the worker's watchdog cancels it by descriptor once the
//!   deadline passed, or it is linked to an `IORING_OP_LINK_TIMEOUT`; either
//!   the op completes with its bytes or it is cancelled having consumed none
//!   (see [`op::with_deadline`]);
//! * each listener has exactly one accept op in flight at a time, owned by an
//!   accept loop that lives as long as the worker ([`Listener::accept`]);
//! * an idle connection is closed by `shutdown(2)` then dropped; every op
//!   holds an `Rc` of the descriptor, so the fd is closed only after the last
//!   op on it has completed.
//!
//! Buffers are plain owned `Vec<u8>`s moved into the op and handed back with
//! the result.
#![allow(unsafe_code)]
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod alloc_count;
mod op;
mod probe;
mod recycle;
mod rt;
mod socket;
mod spare;
mod transport;

pub use alloc_count::{
    count_allocations_of_this_thread, worker_heap_allocations, CountingAllocator,
};
pub use op::NotifyDeadline;
pub use probe::{probe_uring, UringUnavailable, IO_URING_DISABLED_SYSCTL};
pub use recycle::{recycled, sweep_spare_slots, Recycled};
pub use rt::{now, sleep, sleep_until, timeout, Elapsed, JoinError, JoinHandle, Sleep};
pub use socket::{connect, BoundSocket, Closer, Conn, Listener, ParkedConn};
pub use spare::SpareList;
pub use transport::{ParkedTransport, Tls, Transport};

use std::future::Future;

/// Submission queue size of each worker's ring. Linked ops take two entries
/// and are pushed back to back after the runtime made room for both (if a
/// link still broke, [`op::with_deadline`] falls back to a timer and
/// `shutdown(2)`).
pub const RING_ENTRIES: u32 = 4096;

/// Runs `fut` on a new runtime on the current thread (see [`rt`]: one
/// ring, set up with `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has
/// them, 6.1, else `COOP_TASKRUN`, else plain).
pub fn run_worker<F: Future>(fut: F) -> F::Output {
    op::reset_watchdog();
    rt::block_on(RING_ENTRIES, fut)
}

/// Whether deadlines go through the watchdog (see [`op::with_deadline`]):
/// whether this kernel's io_uring can cancel by descriptor (5.19), probed
/// once per process on a small ring of its own.
pub(crate) fn cancel_by_fd() -> bool {
    static CANCEL_BY_FD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CANCEL_BY_FD.get_or_init(|| {
        let cancel_by_fd = probe_cancel_by_fd().unwrap_or(false);
        if !cancel_by_fd {
            tracing::info!(
                "io_uring cannot cancel by descriptor; every deadline is a linked timeout"
            );
        }
        cancel_by_fd
    })
}

/// Submits a cancel-by-descriptor for a descriptor with nothing pending:
/// a kernel that knows the flag answers `ENOENT`, an older one `EINVAL`.
fn probe_cancel_by_fd() -> std::io::Result<bool> {
    let mut ring = io_uring::IoUring::new(8)?;
    let sqe = io_uring::opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::fd(
        io_uring::types::Fd(std::os::fd::AsRawFd::as_raw_fd(&ring)),
    ))
    .build();
    // SAFETY: the entry points at nothing that must outlive it.
    unsafe { ring.submission().push(&sqe) }.map_err(std::io::Error::other)?;
    ring.submit_and_wait(1)?;
    let res = ring.completion().next().map(|c| c.result());
    Ok(res == Some(-libc::ENOENT))
}

/// Allocations from this size up get their own mappings (glibc's mmap
/// threshold); see [`tune_allocator`].
const OWN_MAPPING_FROM: usize = 16 * 1024;

/// Serves allocations of 16 KiB and more (relay and body buffers, at the
/// default `buffer_size`) with their own mappings, which go back to the
/// kernel when freed. In glibc's heap, the buffers a burst of connections
/// held during their idle grace left holes between the connection tasks,
/// which stay part of RSS: a third of an idle connection's cost. The
/// worker's spare lists keep the mapping and unmapping off the request
/// path. Called first thing in `main`, before any thread starts.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt has no preconditions; it runs before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_FROM as libc::c_int);
    }
}

/// Returns the allocator's free memory to the kernel: glibc's malloc keeps
/// freed memory in its arenas otherwise, so RSS would stay at a load
/// peak's. Takes a few milliseconds at most; the server calls it after a
/// drop in load, at most once per sweep.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Spawns a task on the current worker's runtime.
pub fn spawn<F: Future + 'static>(fut: F) -> JoinHandle<F::Output> {
    rt::spawn(fut)
}

#[cfg(test)]
mod tests;
