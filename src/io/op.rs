//! Raw io_uring ops submitted through tokio-uring's `UnsubmittedOneshot`,
//! and the linked-timeout combinator that gives them kernel-side deadlines.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{opcode, squeue, types};

pub(crate) use super::rt::submit;
use super::rt::{submit_linked, submit_notify, submit_notify_linked, InFlight, OnDone};

/// Converts a raw CQE result into `io::Result`.
pub(crate) fn cqe_result(res: i32) -> io::Result<u32> {
    if res >= 0 {
        Ok(res as u32)
    } else {
        Err(io::Error::from_raw_os_error(-res))
    }
}

/// Runs `sqe` with an optional deadline.
///
/// Where the kernel can cancel by descriptor (5.19+, probed once), the op is
/// submitted alone and its deadline goes into the worker's [`Watchdog`]: a
/// coarse timer that, only when a deadline passes, submits
/// `IORING_OP_ASYNC_CANCEL` for the op's descriptor. A cancelled op
/// completes with `-ECANCELED` having transferred nothing, which is reported
/// as `ErrorKind::TimedOut`; an op that completed first keeps its result.
/// So an op costs no timer SQE and no timer completion; a deadline fires up
/// to one tick ([`WATCHDOG_TICK`]) late.
///
/// Elsewhere the op is pushed with `IO_LINK` and immediately followed by a
/// `LINK_TIMEOUT` entry (see [`linked_deadline`]).
///
/// Either way the op's data is returned, never lost.
pub(crate) fn with_deadline<D: Unpin + 'static>(
    fd: RawFd,
    data: D,
    sqe: squeue::Entry,
    deadline: Option<Duration>,
) -> DeadlineOp<D> {
    DeadlineOp::new(fd, data, sqe, deadline, true)
}

/// [`with_deadline`] whose fallback never shuts `fd` down: if the link
/// breaks, the op simply runs until it completes (for a listening socket
/// another process may share, where a shutdown would reset its queue). The
/// watchdog's cancel shuts nothing down either.
pub(crate) fn with_deadline_keep_open<D: Unpin + 'static>(
    fd: RawFd,
    data: D,
    sqe: squeue::Entry,
    limit: Duration,
) -> DeadlineOp<D> {
    DeadlineOp::new(fd, data, sqe, Some(limit), false)
}

/// Submits `sqe` (an op on `fd`) as a notify op (see
/// [`super::rt::submit_notify`]) that the kernel cancels after `limit`:
/// `on_done` then sees `TimedOut`. Keep the returned deadline until
/// `on_done` runs (dropping it earlier forgets the deadline), and `fd`
/// open.
pub(crate) fn notify_with_deadline(
    fd: RawFd,
    sqe: squeue::Entry,
    limit: Duration,
    token: u64,
    on_done: OnDone,
) -> NotifyDeadline {
    if !super::cancel_by_fd() || LINKED_ONLY.with(|l| l.get()) {
        let timespec = Box::new(types::Timespec::from(limit));
        let ts_ptr: *const types::Timespec = &*timespec;
        submit_notify_linked(
            (sqe.flags(squeue::Flags::IO_LINK), token, on_done),
            (timespec, opcode::LinkTimeout::new(ts_ptr).build()),
        );
        return NotifyDeadline { _watch: None };
    }
    let watch = Watch::start(fd, limit);
    submit_notify(sqe, token, on_done);
    NotifyDeadline {
        _watch: Some(watch),
    }
}

/// The deadline of a notify op: its watchdog registration, or nothing
/// when it is a kernel-linked timeout.
pub struct NotifyDeadline {
    _watch: Option<Watch>,
}

/// The future of [`with_deadline`]. Written by hand rather than as an
/// `async fn`: an async fn keeps its arguments (the 64-byte SQE among
/// them) for its whole life, and each nested one its own copy. An op's
/// future was 296 bytes that way, and every I/O future of a connection,
/// idle or busy, holds one.
pub(crate) struct DeadlineOp<D: Unpin + 'static> {
    state: DeadlineState<D>,
}

enum DeadlineState<D: Unpin + 'static> {
    /// Not polled yet: nothing is submitted before the first poll, so a
    /// future dropped unpolled leaves no op in flight.
    Unsubmitted {
        fd: RawFd,
        data: D,
        sqe: squeue::Entry,
        deadline: Option<Duration>,
        shutdown_on_fallback: bool,
    },
    /// Submitted without a deadline.
    Plain(InFlight<D>),
    /// Submitted, its deadline in the worker's watchdog.
    Watched {
        op: InFlight<D>,
        _watch: Watch,
    },
    /// Submitted with a kernel-linked timeout. Boxed: the rare path should
    /// not size every op's future.
    Linked(Pin<Box<dyn Future<Output = (io::Result<u32>, D)>>>),
    Done,
}

impl<D: Unpin + 'static> DeadlineOp<D> {
    fn new(
        fd: RawFd,
        data: D,
        sqe: squeue::Entry,
        deadline: Option<Duration>,
        shutdown_on_fallback: bool,
    ) -> DeadlineOp<D> {
        DeadlineOp {
            state: DeadlineState::Unsubmitted {
                fd,
                data,
                sqe,
                deadline,
                shutdown_on_fallback,
            },
        }
    }

    /// Submits the op, its deadline as this kernel allows.
    fn submit(&mut self) {
        let DeadlineState::Unsubmitted {
            fd,
            data,
            sqe,
            deadline,
            shutdown_on_fallback,
        } = std::mem::replace(&mut self.state, DeadlineState::Done)
        else {
            return;
        };
        self.state = match deadline {
            None => DeadlineState::Plain(submit(data, sqe)),
            Some(limit) if !super::cancel_by_fd() || LINKED_ONLY.with(|l| l.get()) => {
                DeadlineState::Linked(Box::pin(linked_deadline(
                    fd,
                    data,
                    sqe,
                    limit,
                    shutdown_on_fallback,
                )))
            }
            Some(limit) => {
                let watch = Watch::start(fd, limit);
                DeadlineState::Watched {
                    op: submit(data, sqe),
                    _watch: watch,
                }
            }
        };
    }
}

impl<D: Unpin + 'static> Future for DeadlineOp<D> {
    type Output = (io::Result<u32>, D);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if matches!(this.state, DeadlineState::Unsubmitted { .. }) {
            this.submit();
        }
        match &mut this.state {
            DeadlineState::Plain(op) => Pin::new(op)
                .poll(cx)
                .map(|(res, data)| (cqe_result(res), data)),
            DeadlineState::Watched { op, .. } => {
                let (res, data) = std::task::ready!(Pin::new(op).poll(cx));
                // Drops the watch: the deadline no longer applies.
                this.state = DeadlineState::Done;
                let res = match res {
                    r if r == -libc::ECANCELED => Err(io::ErrorKind::TimedOut.into()),
                    r => cqe_result(r),
                };
                Poll::Ready((res, data))
            }
            DeadlineState::Linked(op) => op.as_mut().poll(cx),
            DeadlineState::Unsubmitted { .. } | DeadlineState::Done => {
                panic!("a deadline op polled after it completed")
            }
        }
    }
}

thread_local! {
    /// Tests set it to prove the linked-timeout path on kernels that have
    /// the watchdog's.
    static LINKED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread's deadlines kernel-linked timeouts (tests only).
#[cfg(test)]
pub(crate) fn use_linked_deadlines() {
    LINKED_ONLY.with(|l| l.set(true));
}

/// How often a worker's watchdog looks for passed deadlines.
pub(crate) const WATCHDOG_TICK: Duration = Duration::from_millis(100);

/// The deadlines of a worker's pending ops, in ticks of [`WATCHDOG_TICK`].
/// One per worker thread; touched only by that thread.
#[derive(Default)]
struct Watchdog {
    /// Pending ops: (due tick, descriptor, cancel submitted).
    pending: slab::Slab<(u64, RawFd, bool)>,
    /// Ticks since the worker started (advanced by the ticker task).
    now: u64,
    /// Whether the ticker task runs (it stops when nothing is pending).
    ticking: bool,
}

thread_local! {
    static WATCHDOG: RefCell<Watchdog> = RefCell::new(Watchdog::default());
}

/// Forgets the watchdog state of an earlier runtime on this thread (its
/// ticker task died with it, so `ticking` would stay set and no deadline
/// would fire); called as each runtime starts.
pub(crate) fn reset_watchdog() {
    WATCHDOG.with(|w| *w.borrow_mut() = Watchdog::default());
}

/// One op's registration with the watchdog; removed when the op ends (or
/// its future is dropped, which only happens when the runtime shuts down).
/// It is removed before the task can submit another op on the descriptor,
/// so a cancel that the ticker pushed for a deadline that passed as the op
/// completed reaches the kernel before any later op, and finds nothing.
struct Watch {
    key: Option<usize>,
}

impl Watch {
    fn start(fd: RawFd, limit: Duration) -> Watch {
        // Rounded up, plus one: the current tick is already partly gone.
        let ticks = limit.as_nanos().div_ceil(WATCHDOG_TICK.as_nanos()) as u64 + 1;
        let start_ticker = WATCHDOG.with(|w| {
            let mut w = w.borrow_mut();
            let due = w.now + ticks;
            let key = w.pending.insert((due, fd, false));
            let start = !w.ticking;
            w.ticking = true;
            (key, start)
        });
        if start_ticker.1 {
            drop(super::rt::spawn(tick()));
        }
        Watch {
            key: Some(start_ticker.0),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // `try_with`: at thread exit the registry may be gone already.
            let _ = WATCHDOG.try_with(|w| w.borrow_mut().pending.try_remove(key));
        }
    }
}

/// The ticker: every [`WATCHDOG_TICK`], cancels the ops whose deadline
/// passed; returns once nothing is pending.
async fn tick() {
    loop {
        super::rt::sleep(WATCHDOG_TICK).await;
        let due: Vec<RawFd> = WATCHDOG.with(|w| {
            let mut w = w.borrow_mut();
            w.now += 1;
            if w.pending.is_empty() {
                w.ticking = false;
                return Vec::new();
            }
            let now = w.now;
            let mut due = Vec::new();
            for (_, (at, fd, cancelled)) in w.pending.iter_mut() {
                if *at <= now && !*cancelled {
                    *cancelled = true;
                    due.push(*fd);
                }
            }
            due
        });
        if !WATCHDOG.with(|w| w.borrow().ticking) {
            return;
        }
        for fd in due {
            // The op's data holds the descriptor open until it completes.
            // Every op on it is cancelled: each of them is then reported as
            // timed out, and a timeout closes the connection anyway. The
            // cancel's own completion is not needed.
            let sqe =
                opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build();
            drop(submit((), sqe));
        }
    }
}

/// The deadline as a kernel-linked timeout, for kernels that cannot cancel
/// by descriptor.
///
/// The op is pushed with `IO_LINK` and immediately followed by a
/// `LINK_TIMEOUT` entry. Both pushes happen without yielding, so no other
/// task can slip an entry between them. If the timeout fires the kernel
/// cancels the op, which then completes with `-ECANCELED` having transferred
/// nothing; that is reported as `ErrorKind::TimedOut`. If the op completes
/// first, the timeout is cancelled by the kernel.
///
/// Fallback: if the submission queue happened to be full between the two
/// pushes, the link is broken and the timeout completes with `-EINVAL` at
/// once. We then arm a runtime timer and, if it fires, `shutdown(2)` the
/// socket so the op completes; the caller sees `TimedOut` and closes, which
/// is what every timeout in ringlb leads to anyway; unless
/// `shutdown_on_fallback` is false, when the op just runs until it
/// completes.
async fn linked_deadline<D: Unpin + 'static>(
    fd: RawFd,
    data: D,
    sqe: squeue::Entry,
    limit: Duration,
    shutdown_on_fallback: bool,
) -> (io::Result<u32>, D) {
    let timespec = Box::new(types::Timespec::from(limit));
    let ts_ptr: *const types::Timespec = &*timespec;
    let (op, timer) = submit_linked(
        (data, sqe.flags(squeue::Flags::IO_LINK)),
        (timespec, opcode::LinkTimeout::new(ts_ptr).build()),
    );
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
    fallback: Option<Pin<Box<super::rt::Sleep>>>,
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
                    this.fallback = Some(Box::pin(super::rt::sleep(this.limit)));
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
