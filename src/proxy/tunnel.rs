//! The byte tunnel after a `101 Switching Protocols`.
//!
//! Two pumps run side by side on the same task. End of stream in one
//! direction is passed on as a half-close, so protocols that half-close
//! still work; an error or idle timeout in either direction shuts both
//! sockets down, which completes the other pump's pending read.

use std::net::Shutdown;
use std::time::Duration;

use crate::io::Conn;

use super::{Client, Worker};

pub(super) async fn run(
    worker: &Worker,
    client: &mut Client,
    upstream: Conn,
    upstream_leftover: Vec<u8>,
) {
    let timeout = worker.config.server.tunnel_timeout;
    let client_leftover = std::mem::take(&mut client.buf);
    let size = client.buffer_size;
    let to_upstream = pump(&client.conn, &upstream, client_leftover, size, timeout);
    let to_client = pump(&upstream, &client.conn, upstream_leftover, size, timeout);
    tokio::join!(to_upstream, to_client);
    upstream.shutdown(Shutdown::Both);
    client.conn.shutdown(Shutdown::Both);
}

async fn pump(from: &Conn, to: &Conn, mut buf: Vec<u8>, size: usize, timeout: Duration) {
    buf.reserve(size.saturating_sub(buf.len()));
    loop {
        if !buf.is_empty() {
            let len = buf.len();
            let (res, back) = to.write_all(buf, 0..len, Some(timeout)).await;
            buf = back;
            buf.clear();
            if res.is_err() {
                break;
            }
        }
        let (res, back) = from.read(buf, Some(timeout)).await;
        buf = back;
        match res {
            Ok(0) => {
                to.shutdown(Shutdown::Write);
                return;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    from.shutdown(Shutdown::Both);
    to.shutdown(Shutdown::Both);
}
