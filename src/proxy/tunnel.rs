//! The byte tunnel after a `101 Switching Protocols`.
//!
//! Two pumps run side by side on the same task. End of stream in one
//! direction is passed on as a half-close (after a TLS close_notify on a
//! TLS side), so protocols that half-close still work; an error or idle
//! timeout in either direction shuts both sockets down, which completes
//! the other pump's pending read.
//!
//! Either side may be TLS: its session sits in a `RefCell` shared by the
//! two pumps (one decrypts what it reads, the other encrypts what it
//! writes); no borrow is held across an op, and only the writing pump
//! writes to a socket, so records never interleave.

use std::cell::RefCell;
use std::net::Shutdown;
use std::time::Duration;

use crate::io::{Conn, Tls, Transport};
use crate::metrics::WorkerMetrics;

use super::client::Client;

/// One end of the tunnel.
struct Side<'a> {
    conn: &'a Conn,
    tls: Option<&'a RefCell<Box<Tls>>>,
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
    let client_side = || Side {
        conn: client_conn,
        tls: client_tls.as_ref(),
    };
    let upstream_side = || Side {
        conn: &upstream,
        tls: upstream_tls.as_ref(),
    };
    let to_upstream = pump(
        client_side(),
        upstream_side(),
        client_leftover,
        size,
        timeout,
    );
    let to_client = pump(
        upstream_side(),
        client_side(),
        upstream_leftover,
        size,
        timeout,
    );
    let (up, down) = tokio::join!(to_upstream, to_client);
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
    timeout: Duration,
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
                    let (res, back) = to.conn.write_all(buf, 0..len, Some(timeout)).await;
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
                            let (res, back) = to.conn.write_all(out, 0..len, Some(timeout)).await;
                            out = back;
                            res
                        }
                    }
                }
            };
            if res.is_err() {
                break;
            }
            delivered += buf.len() as u64;
            buf.clear();
        }
        let read = match from.tls {
            None => {
                let (res, back) = from.conn.read(buf, Some(timeout)).await;
                buf = back;
                res.map(|n| (n, n == 0))
            }
            Some(tls) => {
                cipher.clear();
                let (res, back) = from.conn.read(cipher, Some(timeout)).await;
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
                        None => to.conn.write_all(data, 0..len, Some(timeout)).await,
                        Some(tls) => {
                            out.clear();
                            let _ = tls.borrow_mut().encrypt(&data, &mut out);
                            let len = out.len();
                            to.conn
                                .write_all(std::mem::take(&mut out), 0..len, Some(timeout))
                                .await
                        }
                    };
                    if res.is_err() {
                        break;
                    }
                    delivered += len as u64;
                }
                if let Some(tls) = to.tls {
                    out.clear();
                    tls.borrow_mut().close_into(&mut out);
                    let len = out.len();
                    let _ = to
                        .conn
                        .write_all(std::mem::take(&mut out), 0..len, Some(timeout))
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
