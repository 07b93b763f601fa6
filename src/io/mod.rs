//! The only module that talks to the kernel through tokio-uring.
//!
//! Why a layer of our own: tokio-uring 0.5 does not cancel a pending op when
//! its future is dropped. A read raced against `tokio::time::timeout` keeps
//! running in the kernel, swallows bytes that arrive later and pins the file
//! open. So nothing outside this module ever races or drops an op:
//!
//! * every read, write and connect that needs a deadline is submitted as a
//!   linked pair, the op with `IOSQE_IO_LINK` followed by
//!   `IORING_OP_LINK_TIMEOUT`, so the *kernel* cancels it atomically: either
//!   the op completes with its bytes or it is cancelled having consumed none
//!   (see [`op::with_deadline`]);
//! * each listener has exactly one accept op in flight at a time, owned by an
//!   accept loop that lives as long as the worker ([`Listener::accept`]);
//! * an idle connection is closed by `shutdown(2)` then dropped; every op
//!   holds an `Rc` of the descriptor, so the fd is closed only after the last
//!   op on it has completed.
//!
//! Buffers are plain owned `Vec<u8>`s moved into the op and handed back with
//! the result, tokio-uring style.
#![allow(unsafe_code)]
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod alloc_count;
mod op;
mod probe;
mod recycle;
mod socket;
mod spare;
mod transport;

pub use alloc_count::{
    count_allocations_of_this_thread, worker_heap_allocations, CountingAllocator,
};
pub use probe::{probe_uring, UringUnavailable, IO_URING_DISABLED_SYSCTL};
pub use recycle::{recycled, sweep_spare_slots, Recycled};
pub use socket::{connect, BoundSocket, Closer, Conn, Listener};
pub use spare::SpareList;
pub use transport::{Tls, Transport};

use std::future::Future;

/// Submission queue size of each worker's ring. Linked ops take two entries
/// and must be pushed back to back; a large ring makes it very unlikely that
/// the queue fills between the two pushes (if it does, [`op::with_deadline`]
/// falls back to a timer and `shutdown(2)`).
pub const RING_ENTRIES: u32 = 4096;

/// Runs `fut` on a new tokio-uring runtime on the current thread.
///
/// The ring is set up with `COOP_TASKRUN` (and `TASKRUN_FLAG`) and
/// `SINGLE_ISSUER` where the kernel has them (5.19 and 6.0). Without
/// `COOP_TASKRUN` every completion is delivered as signalled task work
/// that interrupts the worker (an IPI while it runs user code, the signal
/// path on the way back); with it, completions wait for the worker's next
/// entry into the kernel, which a worker makes on every loop turn (the
/// runtime flushes submissions before it parks and parks in `epoll_wait`,
/// and a sleeping worker is still woken). Only the worker thread submits
/// to its ring, which is what `SINGLE_ISSUER` promises. `DEFER_TASKRUN`
/// is not usable: tokio-uring never enters with `GETEVENTS`, so deferred
/// completions would never be posted.
pub fn run_worker<F: Future>(fut: F) -> F::Output {
    let mut builder = tokio_uring::builder();
    builder.entries(RING_ENTRIES);
    if let Some(flags) = ring_setup() {
        builder.uring_builder(&flags);
    }
    op::reset_watchdog();
    builder.start(fut)
}

/// What this kernel's io_uring offers beyond 5.11, probed once per process
/// on a small ring of its own.
struct RingFeatures {
    /// `COOP_TASKRUN`, `TASKRUN_FLAG` and `SINGLE_ISSUER` (6.0).
    coop: bool,
    /// `IORING_ASYNC_CANCEL_FD` (5.19): deadlines by [`op`]'s watchdog
    /// instead of a linked timeout per op.
    cancel_by_fd: bool,
}

fn coop_builder() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer();
    b
}

fn ring_features() -> &'static RingFeatures {
    static FEATURES: std::sync::OnceLock<RingFeatures> = std::sync::OnceLock::new();
    FEATURES.get_or_init(|| {
        let coop = match coop_builder().build(8) {
            Ok(_) => true,
            Err(e) => {
                tracing::info!(
                    "io_uring COOP_TASKRUN/SINGLE_ISSUER not available ({e}); using a plain ring"
                );
                false
            }
        };
        let cancel_by_fd = probe_cancel_by_fd().unwrap_or(false);
        if !cancel_by_fd {
            tracing::info!(
                "io_uring cannot cancel by descriptor; every deadline is a linked timeout"
            );
        }
        RingFeatures { coop, cancel_by_fd }
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

/// The ring set-up flags this kernel accepts.
fn ring_setup() -> Option<io_uring::Builder> {
    ring_features().coop.then(coop_builder)
}

/// Whether deadlines go through the watchdog (see [`op::with_deadline`]).
pub(crate) fn cancel_by_fd() -> bool {
    ring_features().cancel_by_fd
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
pub fn spawn<F: Future + 'static>(fut: F) -> tokio::task::JoinHandle<F::Output> {
    tokio_uring::spawn(fut)
}

#[cfg(test)]
mod tests;
