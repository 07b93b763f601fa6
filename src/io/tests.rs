//! Proofs of the cancellation rules on real loopback sockets: a timed-out
//! read loses no bytes, and neither timeouts nor dropped connections leak
//! descriptors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::{connect, run_worker, Listener};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Asserts that the process's descriptor count comes back to `expected`
/// or below. Other tests of this binary (the admin's, the health
/// checker's) open and close sockets on their own threads without taking
/// [`fd_counting`]: theirs come and go (and may have been counted in
/// `expected`), a leak stays. So the count is read again for up to 10 s
/// before the test fails; no time is asserted.
fn assert_fds_return_to(expected: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut now = open_fds();
    while now > expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = open_fds();
    }
    assert!(
        now <= expected,
        "descriptors leaked: {now} open, {expected} expected"
    );
}

/// The fd count is per process and tests run on parallel threads, so the
/// tests that count descriptors take turns.
static FD_COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fd_counting() -> std::sync::MutexGuard<'static, ()> {
    FD_COUNTING.lock().unwrap_or_else(|e| e.into_inner())
}

fn peer_pair() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The watchdog's deadline (cancel by descriptor).
#[test]
fn timed_out_read_loses_no_bytes() {
    timed_out_read_loses_no_bytes_with(false);
}

/// The kernel-linked timeout, used where the kernel cannot cancel by
/// descriptor.
#[test]
fn timed_out_read_loses_no_bytes_with_a_linked_timeout() {
    timed_out_read_loses_no_bytes_with(true);
}

fn timed_out_read_loses_no_bytes_with(linked: bool) {
    let _turn = fd_counting();
    let (listener, addr) = peer_pair();
    let writer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Wait until the proxy side's first read has timed out, then send.
        let mut go = [0u8; 1];
        s.read_exact(&mut go).unwrap();
        s.write_all(b"hello after the deadline").unwrap();
        s
    });
    run_worker(async move {
        if linked {
            super::op::use_linked_deadlines();
        }
        let conn = connect(addr, Duration::from_secs(2)).await.unwrap();
        let (res, buf) = conn
            .read(Vec::with_capacity(64), Some(Duration::from_millis(50)))
            .await;
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(buf.is_empty());
        let (res, _) = conn
            .write_all(b"g".to_vec(), 0..1, Some(Duration::from_secs(2)))
            .await;
        res.unwrap();
        let mut buf = buf;
        while buf.len() < 24 {
            let (res, b) = conn.read(buf, Some(Duration::from_secs(2))).await;
            assert!(res.unwrap() > 0);
            buf = b;
        }
        assert_eq!(&buf, b"hello after the deadline");
    });
    drop(writer.join().unwrap());
}

#[test]
fn timeouts_and_drops_leak_no_fds() {
    let _turn = fd_counting();
    let (listener, addr) = peer_pair();
    let keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(listener.accept().unwrap().0);
        }
        held
    });
    let before = open_fds();
    run_worker(async move {
        for _ in 0..20 {
            let conn = connect(addr, Duration::from_secs(2)).await.unwrap();
            let (res, _) = conn
                .read(Vec::with_capacity(16), Some(Duration::from_millis(10)))
                .await;
            assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
            conn.shutdown(std::net::Shutdown::Both);
        }
    });
    // The peer sees end of stream on every connection: they were closed.
    for mut s in keep.join().unwrap() {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0);
    }
    // `before` counted the test's own listener, which the thread dropped.
    assert_fds_return_to(before - 1);
}

#[test]
fn accept_loop_leaks_no_fds() {
    let _turn = fd_counting();
    let before = open_fds();
    run_worker(async {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr();
        let client = std::thread::spawn(move || {
            for _ in 0..10 {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"x").unwrap();
            }
        });
        for _ in 0..10 {
            let conn = listener.accept().await.unwrap();
            let (res, buf) = conn
                .read(Vec::with_capacity(8), Some(Duration::from_secs(2)))
                .await;
            assert_eq!(res.unwrap(), 1);
            assert_eq!(buf, b"x");
        }
        client.join().unwrap();
    });
    assert_fds_return_to(before);
}

#[test]
fn stop_listening_fails_the_pending_accept_and_refuses_new_connections() {
    let _turn = fd_counting();
    run_worker(async {
        let listener =
            std::rc::Rc::new(Listener::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap());
        let addr = listener.local_addr();
        let accepting = listener.clone();
        let pending = super::spawn(async move { accepting.accept().await.map(|_| ()) });
        // Let the accept op reach the kernel, then stop listening.
        crate::io::sleep(Duration::from_millis(50)).await;
        listener.stop_listening();
        let res = pending.await.unwrap();
        assert!(res.is_err(), "the pending accept must fail, not hang");
        assert!(TcpStream::connect(addr).is_err(), "still accepting");
    });
}

#[test]
fn closer_ends_a_pending_read() {
    let _turn = fd_counting();
    let (listener, addr) = peer_pair();
    let peer = std::thread::spawn(move || listener.accept().unwrap().0);
    run_worker(async move {
        let conn = connect(addr, Duration::from_secs(2)).await.unwrap();
        let closer = conn.closer();
        let reader = super::spawn(async move {
            let (res, _) = conn
                .read(Vec::with_capacity(64), Some(Duration::from_secs(5)))
                .await;
            res.unwrap()
        });
        crate::io::sleep(Duration::from_millis(50)).await;
        closer.shutdown_read();
        assert_eq!(reader.await.unwrap(), 0, "read sees end of stream");
    });
    drop(peer.join().unwrap());
}

#[test]
fn readable_waits_without_a_buffer_and_consumes_nothing() {
    let _turn = fd_counting();
    let (listener, addr) = peer_pair();
    let writer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut go = [0u8; 1];
        s.read_exact(&mut go).unwrap();
        s.write_all(b"ping").unwrap();
        // Then end of stream: a readable wait must see that too.
        s.read_exact(&mut go).unwrap();
    });
    run_worker(async move {
        let conn = connect(addr, Duration::from_secs(2)).await.unwrap();
        // Nothing sent yet: the wait times out.
        let res = conn.readable(Some(Duration::from_millis(50))).await;
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        let (res, _) = conn
            .write_all(b"g".to_vec(), 0..1, Some(Duration::from_secs(2)))
            .await;
        res.unwrap();
        conn.readable(Some(Duration::from_secs(2))).await.unwrap();
        // The wait consumed nothing: the read gets every byte.
        let mut buf = Vec::with_capacity(16);
        while buf.len() < 4 {
            let (res, b) = conn.read(buf, Some(Duration::from_secs(2))).await;
            assert!(res.unwrap() > 0);
            buf = b;
        }
        assert_eq!(&buf, b"ping");
        let (res, _) = conn
            .write_all(b"g".to_vec(), 0..1, Some(Duration::from_secs(2)))
            .await;
        res.unwrap();
        conn.readable(Some(Duration::from_secs(2))).await.unwrap();
        let (res, _) = conn
            .read(Vec::with_capacity(16), Some(Duration::from_secs(2)))
            .await;
        assert_eq!(res.unwrap(), 0);
    });
    writer.join().unwrap();
}

/// A second runtime on the same thread still gets its deadlines: the
/// first one's ticker died with it. Both run on a thread of their own, so
/// that a deadline that never fires fails the test instead of hanging it.
#[test]
fn deadlines_fire_in_a_second_runtime_on_one_thread() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let (listener, addr) = peer_pair();
            run_worker(async move {
                let conn = connect(addr, Duration::from_secs(2)).await.unwrap();
                let (res, _) = conn
                    .read(Vec::with_capacity(8), Some(Duration::from_millis(50)))
                    .await;
                assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
            });
            drop(listener);
        }
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the second runtime's read deadline never fired"
    );
}

thread_local! {
    /// What the parked connection's readiness calls reported.
    static READY: std::cell::RefCell<Vec<(u64, Result<u32, std::io::ErrorKind>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn note_ready(token: u64, res: std::io::Result<u32>) {
    READY.with(|r| r.borrow_mut().push((token, res.map_err(|e| e.kind()))));
}

/// Waits (bounded) for the next readiness call.
async fn next_ready() -> (u64, Result<u32, std::io::ErrorKind>) {
    for _ in 0..5000 {
        if let Some(got) = READY.with(|r| r.borrow_mut().pop()) {
            return got;
        }
        crate::io::sleep(Duration::from_millis(1)).await;
    }
    panic!("no readiness call came");
}

/// A parked connection's readiness wait: it times out when nothing comes,
/// is called when bytes come, and consumes none of them; the descriptor
/// is owned by the parked connection meanwhile, and nothing leaks.
fn parked_connection_is_called_when_readable_with(linked: bool) {
    let _turn = fd_counting();
    let before = open_fds();
    let (listener, addr) = peer_pair();
    let writer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut go = [0u8; 1];
        s.read_exact(&mut go).unwrap();
        s.write_all(b"ping").unwrap();
    });
    run_worker(async move {
        if linked {
            super::op::use_linked_deadlines();
        }
        let conn = connect(addr, Duration::from_secs(2)).await.unwrap();
        let parked = conn.park();
        let deadline = parked.notify_readable(Duration::from_millis(50), 3, note_ready);
        assert_eq!(next_ready().await, (3, Err(std::io::ErrorKind::TimedOut)));
        drop(deadline);
        let conn = parked.unpark();
        let (res, _) = conn
            .write_all(b"g".to_vec(), 0..1, Some(Duration::from_secs(2)))
            .await;
        res.unwrap();
        let parked = conn.park();
        let deadline = parked.notify_readable(Duration::from_secs(5), 4, note_ready);
        let (token, res) = next_ready().await;
        assert_eq!(token, 4);
        assert!(res.is_ok(), "{res:?}");
        drop(deadline);
        // The wait consumed nothing.
        let conn = parked.unpark();
        let mut buf = Vec::with_capacity(16);
        while buf.len() < 4 {
            let (res, b) = conn.read(buf, Some(Duration::from_secs(2))).await;
            assert!(res.unwrap() > 0);
            buf = b;
        }
        assert_eq!(&buf, b"ping");
    });
    writer.join().unwrap();
    assert_fds_return_to(before);
}

#[test]
fn parked_connection_is_called_when_readable() {
    parked_connection_is_called_when_readable_with(false);
}

#[test]
fn parked_connection_is_called_when_readable_with_a_linked_timeout() {
    parked_connection_is_called_when_readable_with(true);
}
