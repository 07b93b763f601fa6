//! TLS over an `io::Conn`: the plaintext side of a connection over a
//! sans-IO [`TlsSession`], with the ciphertext moved through the
//! connection's owned-buffer ops (so the io_uring rules hold: deadlines
//! are kernel-linked, no op is dropped). Server side for TLS termination
//! on a [`Client`](super::Client); client side for TLS to backends.
//!
//! Invariants: ciphertext waiting in the session (handshake replies,
//! alerts) is sent before a read returns; a read returns only with
//! plaintext, at end of stream (TCP EOF or close_notify), or with an
//! error; a handshake is counted once, passed or failed.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

use crate::io::Conn;
use crate::metrics::WorkerMetrics;
use crate::tls::TlsSession;

/// Reads more plaintext from `conn` into `buf` (appending): through `tls`
/// when the connection speaks TLS, straight from the socket otherwise.
/// `Ok(0)` is end of stream. Both sides of the proxy read this way.
pub(crate) async fn read_plaintext(
    conn: &Conn,
    tls: Option<&mut ClientTls>,
    buf: &mut Vec<u8>,
    deadline: Option<Duration>,
) -> io::Result<usize> {
    if let Some(tls) = tls {
        // Boxed: the TLS read (with its handshake writes) would otherwise
        // size every connection's future, plain ones included.
        return Box::pin(tls.read(conn, buf, deadline)).await;
    }
    let (res, back) = conn.read(std::mem::take(buf), deadline).await;
    *buf = back;
    res
}

/// Writes the plaintext `buf[range]` to `conn`: through `tls` when the
/// connection speaks TLS, straight to the socket otherwise. Hands `buf`
/// back. Both sides of the proxy write this way.
pub(crate) async fn write_plaintext(
    conn: &Conn,
    tls: Option<&mut ClientTls>,
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
    deadline: Option<Duration>,
) -> (io::Result<()>, Vec<u8>) {
    match tls {
        Some(tls) => {
            let res = tls.write(conn, &buf[range], deadline).await;
            (res, buf)
        }
        None => conn.write_all(buf, range, deadline).await,
    }
}

pub(crate) struct ClientTls {
    session: TlsSession,
    /// Ciphertext scratch, both directions (never both at once).
    cipher: Vec<u8>,
    /// Where handshakes are counted (client connections only).
    metrics: Option<Arc<WorkerMetrics>>,
    /// `cipher`'s capacity when in use.
    buffer_size: usize,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl ClientTls {
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        metrics: Arc<WorkerMetrics>,
        buffer_size: usize,
    ) -> io::Result<ClientTls> {
        Ok(ClientTls {
            session: TlsSession::server(config).map_err(invalid)?,
            cipher: Vec::with_capacity(buffer_size),
            metrics: Some(metrics),
            buffer_size,
        })
    }

    /// TLS to a backend: runs the handshake on `conn` within `deadline`.
    pub(crate) async fn connect(
        conn: &Conn,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        buffer_size: usize,
        deadline: Duration,
    ) -> io::Result<ClientTls> {
        let mut tls = ClientTls {
            session: TlsSession::client(config, name).map_err(invalid)?,
            cipher: Vec::with_capacity(buffer_size),
            metrics: None,
            buffer_size,
        };
        let start = Instant::now();
        let mut plain = Vec::new();
        tls.flush(conn, Some(deadline)).await?;
        while tls.session.is_handshaking() {
            let left = deadline
                .checked_sub(start.elapsed())
                .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
            let buf = tls.take_cipher();
            let (res, buf) = conn.read(buf, Some(left)).await;
            tls.cipher = buf;
            let n = res?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let received = tls.session.receive(&tls.cipher[..n], &mut plain);
            if tls.session.wants_write() {
                tls.flush(conn, Some(left)).await?;
            }
            received.map_err(invalid)?;
        }
        Ok(tls)
    }

    /// Frees the ciphertext buffer while the connection is idle; the next
    /// read or write allocates it again.
    pub(crate) fn shed_buffer(&mut self) {
        self.cipher = Vec::new();
    }

    /// The ciphertext buffer, emptied, at full size.
    fn take_cipher(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.cipher);
        buf.clear();
        if buf.capacity() == 0 {
            buf.reserve_exact(self.buffer_size);
        }
        buf
    }

    fn count_handshake(&self, ok: bool) {
        if let Some(m) = &self.metrics {
            m.tls_handshake(ok);
        }
    }

    /// Reads and decrypts until plaintext is appended to `plain` (returns
    /// how much), or the peer ended the stream (`Ok(0)`). `deadline` bounds
    /// the whole call, handshake included.
    pub(crate) async fn read(
        &mut self,
        conn: &Conn,
        plain: &mut Vec<u8>,
        deadline: Option<Duration>,
    ) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            let left = match deadline {
                None => None,
                Some(d) => Some(
                    d.checked_sub(start.elapsed())
                        .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?,
                ),
            };
            let buf = self.take_cipher();
            let (res, buf) = conn.read(buf, left).await;
            self.cipher = buf;
            let n = res?;
            let handshaking = self.session.is_handshaking();
            let got = match self.session.receive(&self.cipher[..n], plain) {
                Ok(got) => got,
                Err(e) => {
                    if handshaking {
                        self.count_handshake(false);
                    }
                    // The alert, best effort.
                    let _ = self.flush(conn, left).await;
                    return Err(invalid(e));
                }
            };
            if got.handshake_done {
                self.count_handshake(true);
            }
            if self.session.wants_write() {
                self.flush(conn, left).await?;
            }
            if got.plaintext > 0 {
                return Ok(got.plaintext);
            }
            if n == 0 || got.peer_closed {
                if handshaking && n == 0 && self.session.is_handshaking() {
                    self.count_handshake(false);
                }
                return Ok(0);
            }
        }
    }

    /// Encrypts `plain` and sends it; each send must progress within
    /// `deadline`.
    pub(crate) async fn write(
        &mut self,
        conn: &Conn,
        plain: &[u8],
        deadline: Option<Duration>,
    ) -> io::Result<()> {
        let mut out = self.take_cipher();
        let encrypted = self.session.write_plaintext(plain, &mut out);
        let len = out.len();
        let (res, out) = conn.write_all(out, 0..len, deadline).await;
        self.cipher = out;
        encrypted.map_err(invalid)?;
        res
    }

    /// Sends close_notify (before the TCP half-close).
    pub(crate) async fn close(&mut self, conn: &Conn, deadline: Duration) {
        let mut out = self.take_cipher();
        let _ = self.session.close(&mut out);
        let len = out.len();
        let (_, out) = conn.write_all(out, 0..len, Some(deadline)).await;
        self.cipher = out;
    }

    /// Decrypts `ciphertext` (empty: TCP EOF), appending plaintext to
    /// `plain`; returns the plaintext count and whether the peer closed.
    /// Records the session wants to send in reply (rare after the
    /// handshake) wait for the next [`ClientTls::encrypt`]. For the tunnel,
    /// where reads and writes run side by side and no borrow may be held
    /// across an op.
    pub(crate) fn decrypt(
        &mut self,
        ciphertext: &[u8],
        plain: &mut Vec<u8>,
    ) -> io::Result<(usize, bool)> {
        let got = self.session.receive(ciphertext, plain).map_err(invalid)?;
        Ok((got.plaintext, got.peer_closed || ciphertext.is_empty()))
    }

    /// Encrypts `plain` into `out` (with anything pending).
    pub(crate) fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.session.write_plaintext(plain, out).map_err(invalid)
    }

    /// Appends close_notify to `out`.
    pub(crate) fn close_into(&mut self, out: &mut Vec<u8>) {
        let _ = self.session.close(out);
    }

    async fn flush(&mut self, conn: &Conn, deadline: Option<Duration>) -> io::Result<()> {
        let mut out = self.take_cipher();
        let taken = self.session.take_ciphertext(&mut out);
        let len = out.len();
        let (res, out) = conn.write_all(out, 0..len, deadline).await;
        self.cipher = out;
        taken.map_err(invalid)?;
        res
    }
}
