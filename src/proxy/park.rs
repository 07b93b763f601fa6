//! Client connections idle past the grace, parked: no task, no future, no
//! buffer. What such a connection keeps (its transport, addresses, counts
//! and holds) sits in one entry of its worker thread's table of parked
//! connections, and a readiness poll in the ring names the entry. When the
//! client sends again (or closes, or the keep-alive timeout passes, or a
//! graceful stop shuts the read side), the poll's completion takes the
//! entry out and spawns a task that reads the first bytes and serves on.
//!
//! Why: an idle connection is the common case at the edge (10,000 of them
//! per worker is ordinary), and a task for each costs its whole future
//! (the request loop's, about 1 KB) plus the runtime's records. Here it
//! costs its table entry (about 250 bytes, in one contiguous table rather
//! than scattered over the heap), the poll's slot and its deadline.
//!
//! Invariants: an entry leaves the table only through its poll's
//! completion (or with the thread), so a token never names a reused entry
//! while its poll is in flight; the entry owns the descriptor the poll
//! names; the deadline (watchdog registration) is dropped before anything
//! else can submit an op on the descriptor.

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::io::{NotifyDeadline, ParkedTransport};

use super::client::{Client, Holds, ListenerRemoved};
use super::session::serve_requests;
use super::worker::Worker;

/// One parked connection.
struct Parked {
    /// Dropped before anything else, as the poll completes.
    deadline: NotifyDeadline,
    conn: ParkedConn,
}

/// What [`Client`] keeps across requests.
struct ParkedConn {
    worker: Rc<Worker>,
    transport: ParkedTransport,
    client_addr: SocketAddr,
    listener: SocketAddr,
    listener_removed: ListenerRemoved,
    buffer_size: usize,
    sent: u64,
    holds: Holds,
    /// When the keep-alive timeout (or the head timeout, before the
    /// first request) ends.
    until: Instant,
    /// No request came on it yet.
    first: bool,
}

thread_local! {
    /// The worker thread's parked connections; the key is the poll's token.
    static PARKED: RefCell<Slab<Parked>> = const { RefCell::new(Slab::new()) };
}

/// Parks a connection idle past the grace (its buffers given back) for
/// up to `rest`. A wait between requests is not begun when the
/// connection is winding down (a graceful stop, a removed listener): it
/// closes instead. The wait before a first request keeps its head
/// timeout.
pub(super) fn park(worker: Rc<Worker>, client: Client, holds: Holds, rest: Duration, first: bool) {
    if !first && client.winding_down(worker.is_draining()) {
        client.transport.shutdown(Shutdown::Both);
        close(&worker, client, holds);
        return;
    }
    let until = Instant::now() + rest;
    let Client {
        transport,
        client_addr,
        buffer_size,
        sent,
        listener,
        listener_removed,
        buf,
        out,
        ..
    } = client;
    worker.buffers.give(buf);
    worker.buffers.give(out);
    let transport = transport.park();
    worker.metrics.connections_parked.inc();
    PARKED.with(|parked| {
        let mut parked = parked.borrow_mut();
        let entry = parked.vacant_entry();
        let deadline = transport.notify_readable(rest, entry.key() as u64, on_readable);
        entry.insert(Parked {
            deadline,
            conn: ParkedConn {
                worker,
                transport,
                client_addr,
                listener,
                listener_removed,
                buffer_size,
                sent,
                holds,
                until,
                first,
            },
        });
    });
}

/// The poll's completion: the connection is readable, or its wait ended.
fn on_readable(token: u64, ready: io::Result<u32>) {
    let Some(Parked { deadline, conn }) =
        PARKED.with(|p| p.borrow_mut().try_remove(token as usize))
    else {
        return;
    };
    // Before any other op on the descriptor (see the module's invariants).
    drop(deadline);
    drop(crate::io::spawn(resume(conn, ready)));
}

/// Takes the connection back into a task: reads the first bytes of its
/// next request and serves on; or closes it (end of stream, the timeout,
/// a reset); or parks it again (readable, yet nothing came).
async fn resume(parked: ParkedConn, ready: io::Result<u32>) {
    let ParkedConn {
        worker,
        transport,
        client_addr,
        listener,
        listener_removed,
        buffer_size,
        sent,
        holds,
        until,
        first,
    } = parked;
    worker.metrics.connections_parked.sub(1);
    let mut client = Client::new(
        transport.unpark(),
        client_addr,
        Vec::new(),
        Vec::new(),
        buffer_size,
        listener,
        listener_removed,
    );
    client.sent = sent;
    let woke = match ready {
        Ok(_) => first_bytes(&worker, &mut client, until).await,
        Err(e) => Err(e),
    };
    match woke {
        Ok(Some(0)) => close(&worker, client, holds),
        Ok(Some(n)) => {
            worker.metrics.bytes_from_clients.add(n as u64);
            serve_requests(worker, client, holds, first).await;
        }
        Ok(None) => {
            let rest = until.saturating_duration_since(Instant::now());
            if rest.is_zero() {
                client.transport.shutdown(Shutdown::Both);
                close(&worker, client, holds);
            } else {
                park(worker, client, holds, rest, first);
            }
        }
        Err(_) => {
            // The keep-alive timeout or a reset: close without a word, as
            // nginx does.
            client.transport.shutdown(Shutdown::Both);
            close(&worker, client, holds);
        }
    }
}

/// Reads the first bytes of a readable connection into fresh buffers:
/// `Some(0)` is end of stream, `None` nothing there after all (the bytes
/// went, or a spurious wakeup). The read is not a ring op: the bytes are
/// there.
async fn first_bytes(
    worker: &Worker,
    client: &mut Client,
    until: Instant,
) -> io::Result<Option<usize>> {
    let buffers = &worker.buffers;
    if client.transport.is_tls() {
        client.buf = buffers.take();
        client.out = buffers.take();
        // Boxed: a TLS read's future is large, and only a TLS connection
        // waking from idle needs it.
        let left = until.saturating_duration_since(Instant::now());
        return Box::pin(client.fill(Some(left))).await.map(Some);
    }
    let mut buf = buffers.take();
    match client.transport.conn().try_read(&mut buf) {
        Ok(Some(n)) if n > 0 => {
            client.buf = buf;
            client.out = buffers.take();
            Ok(Some(n))
        }
        other => {
            buffers.give(buf);
            other
        }
    }
}

fn close(worker: &Worker, client: Client, holds: Holds) {
    worker.release_client(client);
    drop(holds);
}

/// Ends the waits between requests of `worker`'s parked connections (of
/// those from `listener` only, if given): their read side is shut, so
/// their polls complete and they close. For a graceful stop and a removed
/// listener; a wait before a first request keeps its head timeout.
pub(super) fn wake_parked(worker: &Worker, listener: Option<&ListenerRemoved>) {
    PARKED.with(|parked| {
        for (_, p) in parked.borrow().iter() {
            let p = &p.conn;
            let on_worker = std::ptr::eq(Rc::as_ptr(&p.worker), worker);
            let from = listener.is_none_or(|l| Rc::ptr_eq(l, &p.listener_removed));
            if on_worker && from && !p.first {
                p.transport.shutdown_read();
            }
        }
    });
}

/// Frees the table once no connection is parked (it keeps the size of its
/// peak otherwise); returns roughly how many bytes that freed.
pub fn sweep_parked() -> usize {
    PARKED.with(|parked| {
        let mut parked = parked.borrow_mut();
        if !parked.is_empty() || parked.capacity() == 0 {
            return 0;
        }
        let bytes = parked.capacity() * std::mem::size_of::<Parked>();
        *parked = Slab::new();
        bytes
    })
}

/// Drops what is still parked on this thread, once its runtime has
/// stopped (no poll's completion can come any more): closes those
/// connections and gives back their holds.
pub fn drop_parked() {
    let parked = PARKED.with(|parked| std::mem::take(&mut *parked.borrow_mut()));
    drop(parked);
}
