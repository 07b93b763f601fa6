//! The PROXY protocol header of a connection on a listener with
//! `proxy_protocol.accept`: read before anything else (before a TLS
//! handshake), within the header timeout, from trusted peers only.
//!
//! Invariants: no byte after the header is consumed: the socket is peeked,
//! and only bytes the parser says are header are taken off it; the bytes
//! looked at are bounded by [`proxy_protocol::MAX_HEADER_BYTES`]; every
//! refusal is counted by reason and closes the connection unanswered.

use std::net::SocketAddr;
use std::time::Instant;

use crate::config::ProxyProtocolAccept;
use crate::io::Conn;
use crate::proxy_protocol::{self, MAX_HEADER_BYTES};

use super::worker::Worker;

/// Why a connection's header was refused.
#[derive(Debug)]
enum Refusal {
    /// The peer is not in `trusted`.
    Untrusted,
    /// Malformed, truncated (end of stream inside it), or an error.
    Malformed(String),
    /// The header did not arrive within the timeout.
    Timeout,
}

impl Worker {
    /// Reads the connection's PROXY header: `Some(client address)` (the
    /// header's source, or the peer's own for LOCAL and UNKNOWN), or
    /// `None` when it was refused (counted, logged); the caller closes.
    pub async fn accept_proxy_header(
        &self,
        conn: &Conn,
        accept: &ProxyProtocolAccept,
    ) -> Option<SocketAddr> {
        let peer = conn.peer_addr();
        let refusal = if accept.trusts(peer.ip()) {
            match read_header(conn, accept).await {
                Ok(header) => {
                    self.metrics.proxy_protocol_headers.inc();
                    return Some(header.client_addr(peer));
                }
                Err(refusal) => refusal,
            }
        } else {
            Refusal::Untrusted
        };
        conn.shutdown(std::net::Shutdown::Both);
        let reason = match &refusal {
            Refusal::Untrusted => {
                self.metrics.proxy_protocol_untrusted.inc();
                "untrusted"
            }
            Refusal::Malformed(_) => {
                self.metrics.proxy_protocol_malformed.inc();
                "malformed"
            }
            Refusal::Timeout => {
                self.metrics.proxy_protocol_timeouts.inc();
                "timeout"
            }
        };
        if let Some(suppressed) = self.proxy_log_budget().admit(Instant::now()) {
            let detail = match refusal {
                Refusal::Malformed(detail) => detail,
                _ => String::new(),
            };
            tracing::warn!(%peer, reason, detail, suppressed, "PROXY protocol header refused; connection closed");
        }
        None
    }
}

async fn read_header(
    conn: &Conn,
    accept: &ProxyProtocolAccept,
) -> Result<proxy_protocol::Header, Refusal> {
    let started = Instant::now();
    // Header bytes already taken off the socket.
    let mut taken: Vec<u8> = Vec::new();
    let mut seen = Vec::with_capacity(MAX_HEADER_BYTES);
    loop {
        let left = accept
            .timeout
            .checked_sub(started.elapsed())
            .ok_or(Refusal::Timeout)?;
        seen.clear();
        seen.extend_from_slice(&taken);
        let room = MAX_HEADER_BYTES - taken.len();
        let (res, buf) = conn.peek(seen, room, Some(left)).await;
        seen = buf;
        match res {
            Ok(0) => return Err(Refusal::Malformed("end of stream inside the header".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Refusal::Timeout),
            Err(e) => return Err(Refusal::Malformed(e.to_string())),
        }
        match proxy_protocol::parse(&seen) {
            Ok(Some(header)) => {
                consume(conn, header.len - taken.len(), left).await?;
                return Ok(header);
            }
            // Every byte seen is header: take them, so the next peek waits
            // for more instead of seeing the same ones again.
            Ok(None) => {
                consume(conn, seen.len() - taken.len(), left).await?;
                taken.clone_from(&seen);
            }
            Err(e) => return Err(Refusal::Malformed(e.to_string())),
        }
    }
}

async fn consume(conn: &Conn, n: usize, left: std::time::Duration) -> Result<(), Refusal> {
    conn.consume(n, Some(left))
        .await
        .map_err(|e| Refusal::Malformed(e.to_string()))
}
