//! The runtime on its own: tasks, wakes from other threads, timers,
//! panics, and the ops' data kept until their completion. No test asserts
//! a time: only orders and outcomes.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, types};

use super::{block_on, sleep, spawn, submit, timeout, Elapsed};

const ENTRIES: u32 = 64;

#[test]
fn spawned_tasks_run_and_their_handles_give_the_output() {
    let out = block_on(ENTRIES, async {
        let a = spawn(async { 1 });
        let b = spawn(async { 2 });
        a.await.unwrap() + b.await.unwrap()
    });
    assert_eq!(out, 3);
}

#[test]
fn a_wake_from_another_thread_reaches_a_sleeping_runtime() {
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    let sender = std::thread::spawn(move || {
        // Long enough for the runtime to be asleep in io_uring_enter.
        std::thread::sleep(Duration::from_millis(100));
        tx.send(7).unwrap();
    });
    let got = block_on(ENTRIES, async { rx.await.unwrap() });
    sender.join().unwrap();
    assert_eq!(got, 7);
}

#[test]
fn many_wakes_from_other_threads_all_arrive() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    tx.send(t * 1000 + i).unwrap();
                    if i % 50 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let got = block_on(ENTRIES, async move {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(got, 1000);
}

#[test]
fn timers_fire_in_deadline_order() {
    let order = block_on(ENTRIES, async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, ms) in [("c", 60), ("a", 10), ("b", 30)] {
            let order = order.clone();
            tasks.push(spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                order.borrow_mut().push(name);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        Rc::try_unwrap(order).unwrap().into_inner()
    });
    assert_eq!(order, ["a", "b", "c"]);
}

#[test]
fn a_timeout_ends_a_future_that_never_completes_and_keeps_one_that_does() {
    block_on(ENTRIES, async {
        let never = std::future::pending::<()>();
        assert!(matches!(
            timeout(Duration::from_millis(20), never).await,
            Err(Elapsed)
        ));
        assert_eq!(
            timeout(Duration::from_secs(30), async { 5 }).await.unwrap(),
            5
        );
    });
}

#[test]
fn a_dropped_sleep_leaves_no_timer_behind() {
    block_on(ENTRIES, async {
        drop(timeout(Duration::from_millis(5), sleep(Duration::from_secs(3600))).await);
        // Were the hour-long timer still registered, the runtime would
        // still end here: only a leak would show, so check the table.
        super::with_core(|core| assert!(core.timers.borrow().is_empty()));
    });
}

#[test]
fn a_panicking_task_is_dropped_and_the_runtime_goes_on() {
    let out = block_on(ENTRIES, async {
        let bad = spawn(async {
            panic!("this task panics on purpose");
        });
        assert!(bad.await.is_err());
        spawn(async { 9 }).await.unwrap()
    });
    assert_eq!(out, 9);
}

/// A pipe's read end: a read op on it stays in flight until the test
/// writes.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn a_dropped_op_keeps_its_buffer_until_the_kernel_completes_it() {
    let (read_end, write_end) = pipe();
    let read_end = Rc::new(read_end);
    block_on(ENTRIES, async {
        let mut buf = vec![0u8; 16];
        let sqe = opcode::Read::new(types::Fd(read_end.as_raw_fd()), buf.as_mut_ptr(), 16).build();
        let op = submit((buf, read_end.clone()), sqe);
        // Let the runtime submit it, then drop the future: the op stays
        // in flight with its buffer and descriptor.
        sleep(Duration::from_millis(10)).await;
        drop(op);
        assert_eq!(Rc::strong_count(&read_end), 2, "the op still holds the fd");
        // SAFETY: a 5-byte write to a pipe we own.
        assert_eq!(
            unsafe { libc::write(write_end.as_raw_fd(), b"hello".as_ptr().cast(), 5) },
            5
        );
        // The completion frees the buffer and the descriptor's `Rc`.
        for _ in 0..1000 {
            if Rc::strong_count(&read_end) == 1 {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(Rc::strong_count(&read_end), 1, "the completion released it");
    });
}

#[test]
fn a_stopping_runtime_cancels_its_ops_and_frees_their_data() {
    let (read_end, _write_end) = pipe();
    let read_end = Rc::new(read_end);
    let held = read_end.clone();
    block_on(ENTRIES, async move {
        let mut buf = vec![0u8; 16];
        let sqe = opcode::Read::new(types::Fd(held.as_raw_fd()), buf.as_mut_ptr(), 16).build();
        // A task left waiting on a read nobody will satisfy.
        let _waiting = spawn(async move { submit((buf, held), sqe).await });
        sleep(Duration::from_millis(10)).await;
    });
    // The runtime cancelled the read and dropped its data on the way out.
    assert_eq!(Rc::strong_count(&read_end), 1);
}

thread_local! {
    /// What the notify ops of this thread's test reported.
    static NOTIFIED: RefCell<Vec<(u64, Result<u32, std::io::ErrorKind>)>> =
        const { RefCell::new(Vec::new()) };
}

fn record(token: u64, res: std::io::Result<u32>) {
    NOTIFIED.with(|n| n.borrow_mut().push((token, res.map_err(|e| e.kind()))));
}

fn poll_in(fd: &OwnedFd) -> io_uring::squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), libc::POLLIN as u32).build()
}

#[test]
fn a_notify_op_calls_its_function_once_it_completes() {
    let (read_end, write_end) = pipe();
    let got = block_on(ENTRIES, async move {
        super::submit_notify(poll_in(&read_end), 7, record);
        sleep(Duration::from_millis(10)).await;
        // Nothing to read yet: not called.
        assert!(NOTIFIED.with(|n| n.borrow().is_empty()));
        // SAFETY: a 1-byte write to a pipe we own.
        assert_eq!(
            unsafe { libc::write(write_end.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
        for _ in 0..1000 {
            if NOTIFIED.with(|n| !n.borrow().is_empty()) {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
        NOTIFIED.with(|n| std::mem::take(&mut *n.borrow_mut()))
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 7);
    assert!(got[0].1.is_ok(), "{got:?}");
}

#[test]
fn a_stopping_runtime_cancels_a_notify_op_without_calling_it() {
    let (read_end, _write_end) = pipe();
    block_on(ENTRIES, async {
        super::submit_notify(poll_in(&read_end), 9, record);
        sleep(Duration::from_millis(10)).await;
    });
    assert!(NOTIFIED.with(|n| n.borrow().is_empty()));
}
