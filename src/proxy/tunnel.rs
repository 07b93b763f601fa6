//! The byte tunnel after a `101 Switching Protocols`, and the relay of a
//! `[[tcp]]` session (`relay`).
//!
//! Two pumps run side by side on the same task. End of stream in one
//! direction is passed on as a half-close (after a TLS close_notify on a
//! TLS side), so protocols that half-close still work; an error in either
//! direction shuts both sockets down, which completes the other pump's
//! pending read. The idle timeout is the session's, not an op's: a third
//! future watches the time of the last byte either way, and only when
//! neither direction moved for that long does it shut both sockets down.
//! So a stream that flows one way (a download, server push) is never cut
//! because the other way is quiet, and no op carries a kernel deadline
//! (a deadline's cancel would take every op on that descriptor, the other
//! pump's write included).
//!
//! Why read and write rather than `splice`: a spike (branch `splice`,
//! perf/RESULTS.md 2026-12-04T15:10Z) relayed through a pipe with
//! `IORING_OP_SPLICE`; io_uring runs every splice on an io-wq kernel thread,
//! and it lost on 12 B and on 64 KiB, 0.56 and 0.70 of the copy's requests
//! per CPU-second.
//!
//! Either side may be TLS: its session sits in a `RefCell` shared by the
//! two pumps (one decrypts what it reads, the other encrypts what it
//! writes); no borrow is held across an op, and only the writing pump
//! writes to a socket, so records never interleave.

use std::cell::{Cell, RefCell};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::io::{Conn, Tls, Transport};
use crate::metrics::WorkerMetrics;

use super::client::Client;

/// One end of the tunnel.
#[derive(Clone, Copy)]
pub(super) struct Side<'a> {
    pub conn: &'a Conn,
    pub tls: Option<&'a RefCell<Box<Tls>>>,
}

/// What a relay shares between its pumps and its idle watch.
pub(super) struct Flow<'a> {
    /// When the last byte moved either way.
    last: Cell<Instant>,
    /// Live byte counters to add each direction's payload to as it moves
    /// (client to upstream, upstream to client), if any.
    counters: Option<(&'a AtomicU64, &'a AtomicU64)>,
}

impl<'a> Flow<'a> {
    pub fn new(counters: Option<(&'a AtomicU64, &'a AtomicU64)>) -> Flow<'a> {
        Flow {
            last: Cell::new(Instant::now()),
            counters,
        }
    }

    fn moved(&self, toward_upstream: bool, bytes: usize) {
        self.last.set(Instant::now());
        if let Some((up, down)) = self.counters {
            let counter = if toward_upstream { up } else { down };
            counter.fetch_add(bytes as u64, Relaxed);
        }
    }
}

/// Relays `client` and `upstream` both ways until both directions ended,
/// or neither moved a byte for `idle`; the leftovers are what each side
/// sent before the relay began (they go first). Returns the payload
/// bytes delivered to the upstream and to the client.
pub(super) async fn relay(
    client: Side<'_>,
    upstream: Side<'_>,
    leftovers: (Vec<u8>, Vec<u8>),
    size: usize,
    idle: Duration,
    flow: &Flow<'_>,
) -> (u64, u64) {
    let to_upstream = pump(client, upstream, leftovers.0, size, flow, true);
    let to_client = pump(upstream, client, leftovers.1, size, flow, false);
    let both = async { tokio::join!(to_upstream, to_client) };
    tokio::pin!(both);
    tokio::select! {
        biased;
        done = &mut both => done,
        () = idle_watch(flow, idle, [client.conn, upstream.conn]) => both.await,
    }
}

/// Returns once neither direction moved for `idle`, having shut both
/// sockets down (which ends the pumps' pending ops).
async fn idle_watch(flow: &Flow<'_>, idle: Duration, conns: [&Conn; 2]) {
    loop {
        let quiet = flow.last.get().elapsed();
        if quiet >= idle {
            for conn in conns {
                conn.shutdown(Shutdown::Both);
            }
            return;
        }
        crate::io::sleep(idle - quiet).await;
    }
}

/// Runs the tunnel between `client` and `upstream` until both directions
/// ended; `upstream_leftover` is what the backend sent after its 101.
pub(super) async fn run(
    timeout: Duration,
    metrics: &WorkerMetrics,
    client: &mut Client,
    upstream: Transport,
    upstream_leftover: Vec<u8>,
) {
    let client_leftover = std::mem::take(&mut client.buf);
    // Already counted as read when they arrived with the heads.
    let already_read = (client_leftover.len() as u64, upstream_leftover.len() as u64);
    let size = client.buffer_size;
    let (upstream, upstream_tls) = upstream.into_parts();
    let client_tls = client.transport.take_tls().map(RefCell::new);
    let upstream_tls = upstream_tls.map(RefCell::new);
    let client_conn = client.transport.conn();
    let client_side = Side {
        conn: client_conn,
        tls: client_tls.as_ref(),
    };
    let upstream_side = Side {
        conn: &upstream,
        tls: upstream_tls.as_ref(),
    };
    let flow = Flow::new(None);
    let (up, down) = relay(
        client_side,
        upstream_side,
        (client_leftover, upstream_leftover),
        size,
        timeout,
        &flow,
    )
    .await;
    upstream.shutdown(Shutdown::Both);
    client_conn.shutdown(Shutdown::Both);
    // Counted once the tunnel ends, like the access log line it goes into;
    // bytes to the client go through `client.sent` (counted by the caller).
    metrics
        .bytes_from_clients
        .add(up.saturating_sub(already_read.0));
    metrics.bytes_to_upstreams.add(up);
    metrics
        .bytes_from_upstreams
        .add(down.saturating_sub(already_read.1));
    client.sent += down;
}

/// Relays `from` to `to` until either ends; returns the payload bytes
/// delivered (plaintext, on a TLS side).
async fn pump(
    from: Side<'_>,
    to: Side<'_>,
    mut buf: Vec<u8>,
    size: usize,
    flow: &Flow<'_>,
    toward_upstream: bool,
) -> u64 {
    let mut delivered = 0u64;
    buf.reserve(size.saturating_sub(buf.len()));
    let mut cipher = Vec::with_capacity(if from.tls.is_some() { size } else { 0 });
    let mut out = Vec::new();
    loop {
        if !buf.is_empty() {
            let res = match to.tls {
                None => {
                    let len = buf.len();
                    let (res, back) = to.conn.write_all(buf, 0..len, None).await;
                    buf = back;
                    res
                }
                Some(tls) => {
                    out.clear();
                    let sealed = tls.borrow_mut().encrypt(&buf, &mut out);
                    match sealed {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let len = out.len();
                            let (res, back) = to.conn.write_all(out, 0..len, None).await;
                            out = back;
                            res
                        }
                    }
                }
            };
            if res.is_err() {
                break;
            }
            flow.moved(toward_upstream, buf.len());
            delivered += buf.len() as u64;
            buf.clear();
        }
        let read = match from.tls {
            None => {
                let (res, back) = from.conn.read(buf, None).await;
                buf = back;
                res.map(|n| (n, n == 0))
            }
            Some(tls) => {
                cipher.clear();
                let (res, back) = from.conn.read(cipher, None).await;
                cipher = back;
                match res {
                    Ok(n) => tls.borrow_mut().decrypt(&cipher[..n], &mut buf),
                    Err(e) => Err(e),
                }
            }
        };
        match read {
            Ok((_, true)) => {
                // End of stream: pass on what came with it, then half-close.
                if !buf.is_empty() {
                    let len = buf.len();
                    let data = std::mem::take(&mut buf);
                    let (res, _) = match to.tls {
                        None => to.conn.write_all(data, 0..len, None).await,
                        Some(tls) => {
                            out.clear();
                            let _ = tls.borrow_mut().encrypt(&data, &mut out);
                            let len = out.len();
                            to.conn
                                .write_all(std::mem::take(&mut out), 0..len, None)
                                .await
                        }
                    };
                    if res.is_err() {
                        break;
                    }
                    flow.moved(toward_upstream, len);
                    delivered += len as u64;
                }
                if let Some(tls) = to.tls {
                    out.clear();
                    tls.borrow_mut().close_into(&mut out);
                    let len = out.len();
                    let _ = to
                        .conn
                        .write_all(std::mem::take(&mut out), 0..len, None)
                        .await;
                }
                to.conn.shutdown(Shutdown::Write);
                return delivered;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    from.conn.shutdown(Shutdown::Both);
    to.conn.shutdown(Shutdown::Both);
    delivered
}
