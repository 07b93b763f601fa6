//! The worker's runtime: one io_uring ring, the tasks that wait on it, and
//! their timers, all on one thread.
//!
//! Why our own and not tokio-uring's: tokio-uring parks in `epoll_wait` on
//! the ring's descriptor and submits with a second syscall, so its ring
//! cannot use `IORING_SETUP_DEFER_TASKRUN`, and every completion wakes the
//! ring's poll queue. Here each loop turn is one `io_uring_enter` that
//! submits what the tasks queued, runs the kernel's deferred completions
//! in the worker's own context, and sleeps there when nothing is ready
//! (until the next timer). That is the wakeup mode of `uring-limit`.
//!
//! Ops keep tokio-uring's contract: an op's data (its buffers and the `Rc`
//! of its descriptor) lives until the kernel reports it complete, even if
//! its future is dropped first. A *notify* op has no future at all: its
//! completion calls a plain function with the caller's token (a parked
//! connection's readiness, which so needs no task).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

/// How many tasks a turn polls before it goes back to the ring, so a
/// burst of ready tasks does not starve completions and timers.
const TASKS_PER_TURN: usize = 256;

/// `user_data` of the remote-wake eventfd's read.
const WAKE_READ: u64 = u64::MAX;
/// `user_data` of ops whose completion nobody waits for (the cancels at
/// shutdown).
const UNTRACKED: u64 = u64::MAX - 1;

/// `IORING_ENTER_GETEVENTS` (the io-uring crate keeps its constants private).
const ENTER_GETEVENTS: u32 = 1;

/// The task key of `block_on`'s own future.
const MAIN_TASK: u32 = u32::MAX;

/// How long a stopping runtime waits for its cancelled ops to complete
/// before it leaks their buffers rather than free memory the kernel may
/// still write.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

thread_local! {
    /// The runtime running on this thread, while one runs.
    static CORE: Cell<*const Core> = const { Cell::new(std::ptr::null()) };
}

/// Task ids are never reused across runtimes of one process, so a stale
/// waker at worst polls a task once more, which futures allow.
static NEXT_GENERATION: AtomicU32 = AtomicU32::new(1);

#[derive(Clone, Copy)]
struct TaskId {
    key: u32,
    generation: u32,
}

/// What a waker holds: enough to queue its task from any thread.
struct Header {
    id: TaskId,
    queued: AtomicBool,
    /// The address of the owning [`Core`]; a wake on its thread queues
    /// the task directly, any other goes through `remote`.
    owner: usize,
    remote: Arc<Remote>,
}

/// Wakes from other threads (a reload's channel, the signal thread).
struct Remote {
    queue: Mutex<Vec<TaskId>>,
    pending: AtomicBool,
    eventfd: OwnedFd,
}

impl Remote {
    fn push(&self, id: TaskId) {
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push(id);
            queue.len() == 1
        };
        self.pending.store(true, Ordering::Release);
        if first {
            let one: u64 = 1;
            // SAFETY: an 8-byte write to an eventfd we own.
            unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

struct TaskSlot {
    generation: u32,
    header: Arc<Header>,
    /// `None` while the task is being polled.
    future: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

/// One op's state in the runtime.
enum OpSlot {
    /// In flight; the waker of the future that waits for it.
    Waiting(Option<Waker>),
    /// Completed; the future has not taken the result yet.
    Done(i32),
    /// In flight, its future dropped: the data stays here until the
    /// kernel is done with it.
    Abandoned(#[allow(dead_code)] Box<dyn Any>),
    /// In flight with no future: its completion calls `on_done(token, _)`
    /// (see [`submit_notify`]).
    Notify { token: u64, on_done: OnDone },
}

/// What a [`submit_notify`] op calls when it completes: the caller's token
/// and the op's result (`ECANCELED` reported as `TimedOut`: the op's
/// deadline cancelled it).
pub(crate) type OnDone = fn(u64, io::Result<u32>);

struct Core {
    ring: RefCell<IoUring>,
    ops: RefCell<Slab<OpSlot>>,
    tasks: RefCell<Slab<TaskSlot>>,
    ready: RefCell<VecDeque<TaskId>>,
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    timer_seq: Cell<u64>,
    /// The time as of this turn (see [`now`]).
    now: Cell<Instant>,
    remote: Arc<Remote>,
    /// The eventfd read's buffer; the read is always in flight.
    wake_buf: Box<u64>,
    generation: u32,
    /// Completed notify ops whose calls wait for the ring to be released.
    notified: RefCell<Vec<(OnDone, u64, i32)>>,
    /// Set as the runtime stops: notify ops are cancelled, not called.
    stopping: Cell<bool>,
}

fn with_core<R>(f: impl FnOnce(&Core) -> R) -> R {
    let core = CORE.with(|c| c.get());
    assert!(!core.is_null(), "no io runtime on this thread");
    // SAFETY: set only while `block_on` keeps the core alive on this thread.
    f(unsafe { &*core })
}

fn try_core() -> Option<&'static Core> {
    let core = CORE.with(|c| c.get());
    // SAFETY: as in `with_core`; callers do not keep the reference past
    // the current call.
    (!core.is_null()).then(|| unsafe { &*core })
}

// ---- wakers ----

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_waker, wake, wake_by_ref, drop_waker);

unsafe fn clone_waker(ptr: *const ()) -> RawWaker {
    // SAFETY: `ptr` came from `Arc::into_raw` or a live `Arc`'s pointer.
    unsafe { Arc::increment_strong_count(ptr.cast::<Header>()) };
    RawWaker::new(ptr, &VTABLE)
}

unsafe fn wake(ptr: *const ()) {
    // SAFETY: this waker owned one count.
    let header = unsafe { Arc::from_raw(ptr.cast::<Header>()) };
    schedule(&header);
}

unsafe fn wake_by_ref(ptr: *const ()) {
    // SAFETY: the waker holds a count while it is borrowed.
    schedule(unsafe { &*ptr.cast::<Header>() });
}

unsafe fn drop_waker(ptr: *const ()) {
    // SAFETY: this waker owned one count.
    drop(unsafe { Arc::from_raw(ptr.cast::<Header>()) });
}

fn schedule(header: &Header) {
    if header.queued.swap(true, Ordering::AcqRel) {
        return;
    }
    match try_core() {
        Some(core) if core as *const Core as usize == header.owner => {
            core.ready.borrow_mut().push_back(header.id)
        }
        _ => header.remote.push(header.id),
    }
}

// ---- tasks ----

/// Why a task ended without its output: it panicked, or the runtime
/// stopped first.
#[derive(Debug)]
pub struct JoinError;

struct JoinState<T> {
    output: Cell<Option<T>>,
    finished: Cell<bool>,
    waiter: Cell<Option<Waker>>,
}

/// Marks the task finished when its future ends or is dropped (a panic,
/// the runtime stopping), so a joiner never waits forever.
struct Finish<T>(Rc<JoinState<T>>);

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        self.0.finished.set(true);
        if let Some(waiter) = self.0.waiter.take() {
            waiter.wake();
        }
    }
}

/// Awaits a task spawned with [`spawn`]. Dropping it detaches the task.
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.state.finished.get() {
            self.state.waiter.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        Poll::Ready(self.state.output.take().ok_or(JoinError))
    }
}

/// Spawns a task on this thread's runtime.
pub fn spawn<F: Future + 'static>(future: F) -> JoinHandle<F::Output> {
    let state = Rc::new(JoinState {
        output: Cell::new(None),
        finished: Cell::new(false),
        waiter: Cell::new(None),
    });
    let task = Task {
        future,
        finish: Some(Finish(state.clone())),
    };
    with_core(|core| core.spawn(Box::pin(task)));
    JoinHandle { state }
}

/// A spawned future and where its output goes. Written by hand: an
/// `async` block that awaits a captured future keeps the capture and the
/// awaited copy side by side, twice the future's size for the task's
/// whole life.
struct Task<F: Future> {
    future: F,
    finish: Option<Finish<F::Output>>,
}

impl<F: Future> Future for Task<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `future` is structurally pinned: it is never moved out
        // of the task, and `Task` has no `Drop` of its own that moves it.
        let this = unsafe { self.get_unchecked_mut() };
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let output = std::task::ready!(future.poll(cx));
        if let Some(finish) = this.finish.take() {
            finish.0.output.set(Some(output));
        }
        Poll::Ready(())
    }
}

impl Core {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()>>>) {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id = TaskId {
            key: entry.key() as u32,
            generation: self.generation,
        };
        let header = Arc::new(Header {
            id,
            queued: AtomicBool::new(true),
            owner: self as *const Core as usize,
            remote: self.remote.clone(),
        });
        entry.insert(TaskSlot {
            generation: self.generation,
            header,
            future: Some(future),
        });
        drop(tasks);
        self.ready.borrow_mut().push_back(id);
    }

    fn run_task(&self, id: TaskId) {
        let (mut future, header) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(id.key as usize) else {
                return;
            };
            if slot.generation != id.generation {
                return;
            }
            let Some(future) = slot.future.take() else {
                return;
            };
            slot.header.queued.store(false, Ordering::Release);
            (future, Arc::as_ptr(&slot.header))
        };
        // The slot keeps its `Arc` while the task runs (only this function
        // removes slots), so the waker can borrow it without a count.
        // SAFETY: the vtable's functions take an `Arc<Header>` pointer.
        let waker = ManuallyDrop::new(unsafe {
            Waker::from_raw(RawWaker::new(header.cast::<()>(), &VTABLE))
        });
        let mut cx = Context::from_waker(&waker);
        let done =
            match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                Ok(Poll::Ready(())) => true,
                Ok(Poll::Pending) => false,
                Err(_) => {
                    tracing::error!("a worker task panicked; it is dropped");
                    true
                }
            };
        if done {
            drop(future);
            let slot = self.tasks.borrow_mut().remove(id.key as usize);
            drop(slot);
        } else if let Some(slot) = self.tasks.borrow_mut().get_mut(id.key as usize) {
            slot.future = Some(future);
        }
    }

    // ---- the ring ----

    fn push(&self, sqe: &squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: the caller keeps what the entry points into alive
            // until its completion (the op's data, see `submit`).
            if unsafe { ring.submission().push(sqe) }.is_ok() {
                return;
            }
            // Full: hand what is queued to the kernel and try again.
            if let Err(e) = ring.submit() {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ) {
                    panic!("io_uring submit failed: {e}");
                }
            }
        }
    }

    /// Makes room for `n` entries pushed back to back (a linked pair must
    /// reach the kernel in one submission).
    fn reserve(&self, n: usize) {
        let mut ring = self.ring.borrow_mut();
        let free = {
            let sq = ring.submission();
            sq.capacity() - sq.len()
        };
        if free < n {
            let _ = ring.submit();
        }
    }

    fn arm_wake_read(&self) {
        let sqe = opcode::Read::new(
            types::Fd(self.remote.eventfd.as_raw_fd()),
            (&*self.wake_buf as *const u64).cast_mut().cast(),
            8,
        )
        .build()
        .user_data(WAKE_READ);
        self.push(&sqe);
    }

    /// One `io_uring_enter`: submits, runs deferred completions, and if
    /// `wait`, sleeps until a completion or the next timer.
    fn enter(&self, wait: bool) {
        let ring = self.ring.borrow();
        let timeout = if wait {
            self.timers
                .borrow()
                .keys()
                .next()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()))
        } else {
            None
        };
        let submitter = ring.submitter();
        let res = match (wait, timeout) {
            (false, _) => {
                let to_submit = ring_sq_len(&ring);
                // SAFETY: no argument; GETEVENTS with no minimum only runs
                // the deferred completions.
                unsafe { submitter.enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None) }
            }
            (true, None) => submitter.submit_and_wait(1),
            (true, Some(timeout)) => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                _ => panic!("io_uring_enter failed: {e}"),
            }
        }
    }

    /// Hands each completion to its op; whether there were any.
    fn reap(&self) -> bool {
        let mut ring = self.ring.borrow_mut();
        let mut rearm = false;
        let mut any = false;
        for cqe in ring.completion() {
            any = true;
            match cqe.user_data() {
                WAKE_READ => rearm = true,
                UNTRACKED => {}
                key => self.complete(key as usize, &cqe),
            }
        }
        drop(ring);
        if rearm {
            self.arm_wake_read();
        }
        self.call_notified();
        any
    }

    /// Calls the completed notify ops (outside every borrow of the core:
    /// a call may spawn a task or submit ops).
    fn call_notified(&self) {
        loop {
            let Some((on_done, token, res)) = self.notified.borrow_mut().pop() else {
                return;
            };
            if self.stopping.get() {
                continue;
            }
            let res = match res {
                r if r == -libc::ECANCELED => Err(io::ErrorKind::TimedOut.into()),
                r if r < 0 => Err(io::Error::from_raw_os_error(-r)),
                r => Ok(r as u32),
            };
            on_done(token, res);
        }
    }

    fn complete(&self, key: usize, cqe: &cqueue::Entry) {
        let mut ops = self.ops.borrow_mut();
        let Some(slot) = ops.get_mut(key) else {
            return;
        };
        match slot {
            OpSlot::Waiting(waker) => {
                let waker = waker.take();
                *slot = OpSlot::Done(cqe.result());
                drop(ops);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            OpSlot::Abandoned(_) => {
                let data = ops.remove(key);
                drop(ops);
                // Closes the descriptor if this op held its last `Rc`.
                drop(data);
            }
            OpSlot::Notify { token, on_done } => {
                let call = (*on_done, *token, cqe.result());
                ops.remove(key);
                drop(ops);
                self.notified.borrow_mut().push(call);
            }
            OpSlot::Done(_) => {}
        }
    }

    fn take_remote(&self) {
        if self.remote.pending.swap(false, Ordering::Acquire) {
            let woken =
                std::mem::take(&mut *self.remote.queue.lock().unwrap_or_else(|e| e.into_inner()));
            self.ready.borrow_mut().extend(woken);
        }
    }

    fn fire_timers(&self) {
        let now = self.now.get();
        loop {
            let waker = {
                let mut timers = self.timers.borrow_mut();
                match timers.first_entry() {
                    Some(entry) if entry.key().0 <= now => entry.remove(),
                    _ => break,
                }
            };
            waker.wake();
        }
    }

    fn in_flight(&self) -> usize {
        self.ops.borrow().len()
    }
}

fn ring_sq_len(ring: &IoUring) -> u32 {
    // SAFETY: reading the queue's length does not touch its entries.
    unsafe { ring.submission_shared().len() as u32 }
}

/// Builds this thread's ring with the best wakeup mode the kernel has.
fn build_ring(entries: u32) -> io::Result<IoUring> {
    let mut defer = IoUring::builder();
    defer.setup_single_issuer().setup_defer_taskrun();
    if let Ok(ring) = defer.build(entries) {
        return Ok(ring);
    }
    let mut coop = IoUring::builder();
    coop.setup_coop_taskrun().setup_taskrun_flag();
    if let Ok(ring) = coop.build(entries) {
        tracing::info!("io_uring DEFER_TASKRUN not available; using COOP_TASKRUN");
        return Ok(ring);
    }
    tracing::info!("io_uring DEFER_TASKRUN and COOP_TASKRUN not available; using a plain ring");
    IoUring::new(entries)
}

/// Runs `future` on a new runtime on this thread, until it completes.
/// Then drops the tasks still running, cancels their ops, and waits for
/// the kernel to finish with their buffers.
pub fn block_on<F: Future>(entries: u32, future: F) -> F::Output {
    assert!(
        CORE.with(|c| c.get()).is_null(),
        "an io runtime already runs on this thread"
    );
    let ring = build_ring(entries).unwrap_or_else(|e| panic!("cannot set up io_uring: {e}"));
    // SAFETY: plain syscall; the descriptor is checked before use.
    let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(
        eventfd >= 0,
        "cannot create an eventfd: {}",
        io::Error::last_os_error()
    );
    let core = Box::new(Core {
        ring: RefCell::new(ring),
        ops: RefCell::new(Slab::new()),
        tasks: RefCell::new(Slab::new()),
        ready: RefCell::new(VecDeque::new()),
        timers: RefCell::new(BTreeMap::new()),
        timer_seq: Cell::new(0),
        now: Cell::new(Instant::now()),
        remote: Arc::new(Remote {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            // SAFETY: a fresh descriptor we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(eventfd) },
        }),
        wake_buf: Box::new(0),
        generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        notified: RefCell::new(Vec::new()),
        stopping: Cell::new(false),
    });
    CORE.with(|c| c.set(&*core));
    core.arm_wake_read();

    // The main future is polled in place (it need not be `'static`); its
    // waker queues a reserved task id.
    let main_id = TaskId {
        key: MAIN_TASK,
        generation: core.generation,
    };
    let main_header = Arc::new(Header {
        id: main_id,
        queued: AtomicBool::new(true),
        owner: &*core as *const Core as usize,
        remote: core.remote.clone(),
    });
    // SAFETY: the vtable's functions take an `Arc<Header>` pointer, and
    // `into_raw` hands this waker one count.
    let main_waker = unsafe {
        Waker::from_raw(RawWaker::new(
            Arc::into_raw(main_header.clone()).cast::<()>(),
            &VTABLE,
        ))
    };
    let mut main = std::pin::pin!(future);
    core.ready.borrow_mut().push_back(main_id);
    let output = 'turns: loop {
        core.take_remote();
        for _ in 0..TASKS_PER_TURN {
            let Some(id) = core.ready.borrow_mut().pop_front() else {
                break;
            };
            if id.key != MAIN_TASK {
                core.run_task(id);
            } else if id.generation == core.generation {
                main_header.queued.store(false, Ordering::Release);
                if let Poll::Ready(output) =
                    main.as_mut().poll(&mut Context::from_waker(&main_waker))
                {
                    break 'turns output;
                }
            }
        }
        let idle = core.ready.borrow().is_empty() && !core.remote.pending.load(Ordering::Acquire);
        core.enter(idle);
        core.reap();
        core.now.set(Instant::now());
        core.fire_timers();
    };
    shutdown(&core);
    CORE.with(|c| c.set(std::ptr::null()));
    output
}

fn shutdown(core: &Core) {
    core.stopping.set(true);
    // Drop every task; their in-flight ops become abandoned.
    loop {
        let future = {
            let mut tasks = core.tasks.borrow_mut();
            let Some(key) = tasks.iter().next().map(|(k, _)| k) else {
                break;
            };
            tasks.remove(key).future
        };
        drop(future);
    }
    core.ready.borrow_mut().clear();
    core.timers.borrow_mut().clear();
    // The eventfd read is the one op that is not in `ops`.
    let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
        .build()
        .user_data(UNTRACKED);
    core.push(&cancel);
    let until = Instant::now() + SHUTDOWN_WAIT;
    while core.in_flight() > 0 && Instant::now() < until {
        core.enter(false);
        if !core.reap() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // An op submitted after the cancel (by a drop) is cancelled too.
        if core.in_flight() > 0 {
            core.push(&cancel);
        }
    }
    if core.in_flight() > 0 {
        tracing::warn!(
            "{} io_uring ops did not complete at shutdown; their buffers are leaked",
            core.in_flight()
        );
        std::mem::forget(std::mem::take(&mut *core.ops.borrow_mut()));
    }
}

// ---- ops ----

/// An op in flight: resolves to the raw CQE result and the op's data.
pub(crate) struct InFlight<D: 'static> {
    key: usize,
    data: Option<D>,
}

/// Submits one entry. `data` must own everything the entry points into;
/// the runtime keeps it alive until the completion arrives, even if the
/// future is dropped.
pub(crate) fn submit<D: 'static>(data: D, sqe: squeue::Entry) -> InFlight<D> {
    with_core(|core| core.submit(data, sqe))
}

/// Submits `first` linked to `second` (`IO_LINK` is the caller's), both in
/// one submission.
pub(crate) fn submit_linked<D: 'static, E: 'static>(
    first: (D, squeue::Entry),
    second: (E, squeue::Entry),
) -> (InFlight<D>, InFlight<E>) {
    with_core(|core| {
        core.reserve(2);
        (
            core.submit(first.0, first.1),
            core.submit(second.0, second.1),
        )
    })
}

/// Submits one entry that no future waits for: its completion calls
/// `on_done(token, result)` from the runtime's loop. What the entry points
/// into (a polled descriptor) is the caller's to keep alive until then.
/// For a wait that should hold no task (an idle connection's readiness).
/// A stopping runtime cancels it without the call.
pub(crate) fn submit_notify(sqe: squeue::Entry, token: u64, on_done: OnDone) {
    with_core(|core| {
        let key = core
            .ops
            .borrow_mut()
            .insert(OpSlot::Notify { token, on_done });
        core.push(&sqe.user_data(key as u64));
    });
}

/// [`submit_notify`] with `IO_LINK` (the caller's) to `second`, both in
/// one submission; `second`'s data lives until its completion.
pub(crate) fn submit_notify_linked<E: 'static>(
    first: (squeue::Entry, u64, OnDone),
    second: (E, squeue::Entry),
) {
    with_core(|core| core.reserve(2));
    submit_notify(first.0, first.1, first.2);
    // Dropped at once: the runtime keeps `second.0` until the completion.
    drop(submit(second.0, second.1));
}

impl Core {
    fn submit<D: 'static>(&self, data: D, sqe: squeue::Entry) -> InFlight<D> {
        let key = self.ops.borrow_mut().insert(OpSlot::Waiting(None));
        self.push(&sqe.user_data(key as u64));
        InFlight {
            key,
            data: Some(data),
        }
    }
}

impl<D: 'static> Unpin for InFlight<D> {}

impl<D: 'static> Future for InFlight<D> {
    type Output = (i32, D);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let res = with_core(|core| {
            let mut ops = core.ops.borrow_mut();
            match &mut ops[this.key] {
                OpSlot::Done(res) => {
                    let res = *res;
                    ops.remove(this.key);
                    Some(res)
                }
                OpSlot::Waiting(waker) => {
                    match waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    None
                }
                OpSlot::Abandoned(_) | OpSlot::Notify { .. } => {
                    unreachable!("an op polled after it was dropped")
                }
            }
        });
        match res {
            Some(res) => {
                let data = this.data.take().expect("an op polled after it completed");
                Poll::Ready((res, data))
            }
            None => Poll::Pending,
        }
    }
}

impl<D: 'static> Drop for InFlight<D> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else {
            return;
        };
        let Some(core) = try_core() else {
            // No runtime to keep the data until the kernel is done: leak it.
            std::mem::forget(data);
            return;
        };
        let mut ops = core.ops.borrow_mut();
        match ops.get_mut(self.key) {
            Some(slot @ OpSlot::Waiting(_)) => *slot = OpSlot::Abandoned(Box::new(data)),
            Some(OpSlot::Done(_)) => {
                ops.remove(self.key);
                drop(ops);
                drop(data);
            }
            _ => {}
        }
    }
}

// ---- time ----

/// The time as of the worker's current loop turn: read once per turn
/// rather than by every request step. Outside a runtime, the clock.
pub fn now() -> Instant {
    match try_core() {
        Some(core) => core.now.get(),
        None => Instant::now(),
    }
}

/// Completes `duration` from now.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
    }
}

/// The future of [`sleep`].
pub struct Sleep {
    deadline: Instant,
    entry: Option<(Instant, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        with_core(|core| {
            let mut timers = core.timers.borrow_mut();
            if core.now.get() >= this.deadline {
                if let Some(entry) = this.entry.take() {
                    timers.remove(&entry);
                }
                return Poll::Ready(());
            }
            match this.entry {
                Some(entry) => {
                    if let Some(waker) = timers.get_mut(&entry) {
                        if !waker.will_wake(cx.waker()) {
                            *waker = cx.waker().clone();
                        }
                    } else {
                        // Fired but the deadline had not passed by the
                        // turn's clock: wait again.
                        timers.insert(entry, cx.waker().clone());
                    }
                }
                None => {
                    let seq = core.timer_seq.get();
                    core.timer_seq.set(seq + 1);
                    let entry = (this.deadline, seq);
                    timers.insert(entry, cx.waker().clone());
                    this.entry = Some(entry);
                }
            }
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(entry), Some(core)) = (self.entry.take(), try_core()) {
            core.timers.borrow_mut().remove(&entry);
        }
    }
}

/// The error of [`timeout`]: the time ran out first.
#[derive(Debug)]
pub struct Elapsed;

/// Runs `future` for at most `duration`. Only for futures that lose
/// nothing when dropped (never an io_uring op: give the op a deadline).
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(sleep(duration));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

#[cfg(test)]
mod tests;
