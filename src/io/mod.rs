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

mod op;
mod probe;
mod socket;

pub use probe::{probe_uring, UringUnavailable, IO_URING_DISABLED_SYSCTL};
pub use socket::{connect, BoundSocket, Closer, Conn, Listener};

use std::future::Future;

/// Submission queue size of each worker's ring. Linked ops take two entries
/// and must be pushed back to back; a large ring makes it very unlikely that
/// the queue fills between the two pushes (if it does, [`op::with_deadline`]
/// falls back to a timer and `shutdown(2)`).
pub const RING_ENTRIES: u32 = 4096;

/// Runs `fut` on a new tokio-uring runtime on the current thread.
pub fn run_worker<F: Future>(fut: F) -> F::Output {
    tokio_uring::builder().entries(RING_ENTRIES).start(fut)
}

/// Spawns a task on the current worker's runtime.
pub fn spawn<F: Future + 'static>(fut: F) -> tokio::task::JoinHandle<F::Output> {
    tokio_uring::spawn(fut)
}

#[cfg(test)]
mod tests;
