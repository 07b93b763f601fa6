//! Raw io_uring ops submitted through tokio-uring's `UnsubmittedOneshot`,
//! and the linked-timeout combinator that gives them kernel-side deadlines.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types};
use tokio_uring::{InFlightOneshot, OneshotOutputTransform, UnsubmittedOneshot};

/// Hands back the raw CQE result together with the op's stable data.
pub(crate) struct RawResult<D>(PhantomData<D>);

impl<D> OneshotOutputTransform for RawResult<D> {
    type Output = (i32, D);
    type StoredData = D;

    fn transform_oneshot_output(self, data: D, cqe: cqueue::Entry) -> (i32, D) {
        (cqe.result(), data)
    }
}

type InFlight<D> = InFlightOneshot<D, RawResult<D>>;

/// Submits one SQE. `data` must own everything the SQE points into; the
/// driver keeps it alive until the CQE arrives even if the future is dropped.
pub(crate) fn submit<D: Unpin + 'static>(data: D, sqe: squeue::Entry) -> InFlight<D> {
    UnsubmittedOneshot::new(data, RawResult(PhantomData), sqe).submit()
}

/// Converts a raw CQE result into `io::Result`.
pub(crate) fn cqe_result(res: i32) -> io::Result<u32> {
    if res >= 0 {
        Ok(res as u32)
    } else {
        Err(io::Error::from_raw_os_error(-res))
    }
}

/// Runs `sqe` with an optional deadline enforced by the kernel.
///
/// With a deadline, the op is pushed with `IO_LINK` and immediately followed
/// by a `LINK_TIMEOUT` entry. Both pushes happen without yielding, so no other
/// task can slip an entry between them. If the timeout fires the kernel
/// cancels the op, which then completes with `-ECANCELED` having transferred
/// nothing; that is reported as `ErrorKind::TimedOut`. If the op completes
/// first, the timeout is cancelled by the kernel. Either way the op's data is
/// returned, never lost.
///
/// Fallback: if the submission queue happened to be full between the two
/// pushes, the link is broken and the timeout completes with `-EINVAL` at
/// once. We then arm a runtime timer and, if it fires, `shutdown(2)` the
/// socket so the op completes; the caller sees `TimedOut` and closes, which
/// is what every timeout in ringlb leads to anyway.
pub(crate) async fn with_deadline<D: Unpin + 'static>(
    fd: RawFd,
    data: D,
    sqe: squeue::Entry,
    deadline: Option<Duration>,
) -> (io::Result<u32>, D) {
    let Some(limit) = deadline else {
        let (res, data) = submit(data, sqe).await;
        return (cqe_result(res), data);
    };
    linked(fd, data, sqe, limit, true).await
}

/// [`with_deadline`] whose fallback never shuts `fd` down: if the link
/// breaks, the op simply runs until it completes (for a listening socket
/// another process may share, where a shutdown would reset its queue).
pub(crate) async fn with_deadline_keep_open<D: Unpin + 'static>(
    fd: RawFd,
    data: D,
    sqe: squeue::Entry,
    limit: Duration,
) -> (io::Result<u32>, D) {
    linked(fd, data, sqe, limit, false).await
}

async fn linked<D: Unpin + 'static>(
    fd: RawFd,
    data: D,
    sqe: squeue::Entry,
    limit: Duration,
    shutdown_on_fallback: bool,
) -> (io::Result<u32>, D) {
    let timespec = Box::new(types::Timespec::from(limit));
    let ts_ptr: *const types::Timespec = &*timespec;
    let op = submit(data, sqe.flags(squeue::Flags::IO_LINK));
    let timer = submit(timespec, opcode::LinkTimeout::new(ts_ptr).build());
    let linked = Linked {
        op,
        timer: Some(timer),
        fallback: None,
        fallback_fired: false,
        fd,
        limit,
        shutdown_on_fallback,
    };
    let (res, data, fired) = linked.await;
    let res = match res {
        r if r == -libc::ECANCELED => Err(io::ErrorKind::TimedOut.into()),
        _ if fired => Err(io::ErrorKind::TimedOut.into()),
        r => cqe_result(r),
    };
    (res, data)
}

struct Linked<D: Unpin + 'static> {
    op: InFlight<D>,
    timer: Option<InFlight<Box<types::Timespec>>>,
    fallback: Option<Pin<Box<tokio::time::Sleep>>>,
    fallback_fired: bool,
    fd: RawFd,
    limit: Duration,
    shutdown_on_fallback: bool,
}

impl<D: Unpin + 'static> Future for Linked<D> {
    /// (raw result, data, whether the fallback timer fired)
    type Output = (i32, D, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready((res, data)) = Pin::new(&mut this.op).poll(cx) {
            // Dropping the timer future is safe: the driver keeps its
            // timespec alive until the kernel reports the timeout cancelled.
            return Poll::Ready((res, data, this.fallback_fired));
        }
        if let Some(timer) = this.timer.as_mut() {
            if let Poll::Ready((res, _)) = Pin::new(timer).poll(cx) {
                this.timer = None;
                if res == -libc::EINVAL && this.shutdown_on_fallback {
                    tracing::warn!(
                        "io_uring link broken (submission queue full); using timer fallback"
                    );
                    this.fallback = Some(Box::pin(tokio::time::sleep(this.limit)));
                }
            }
        }
        if let Some(sleep) = this.fallback.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                this.fallback = None;
                this.fallback_fired = true;
                // SAFETY: shutdown on a descriptor this op keeps open; it
                // only makes the pending op complete.
                unsafe { libc::shutdown(this.fd, libc::SHUT_RDWR) };
            }
        }
        Poll::Pending
    }
}
