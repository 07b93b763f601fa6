//! One connection as the proxy uses it: a [`Conn`], plain or TLS, read and
//! written as plaintext. It serves every side: client connections (TLS
//! termination), upstream connections and health checks (TLS to
//! backends), and tunnels (which split it into its halves).
//!
//! TLS is a sans-IO [`TlsSession`] whose ciphertext moves through the
//! connection's owned-buffer ops, so the io_uring rules hold: deadlines are
//! kernel-linked, no op is dropped.
//!
//! Invariants: ciphertext waiting in the session (handshake replies,
//! alerts) is sent before a read returns; a read returns only with
//! plaintext, at end of stream (TCP EOF or close_notify), or with an
//! error; a server-side handshake's outcome is reported once, passed or
//! failed, through [`Transport::take_handshake_outcome`].

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

use super::{Closer, Conn, NotifyDeadline, ParkedConn};
use crate::tls::TlsSession;

/// A connection and, when it speaks TLS, its session.
pub struct Transport {
    conn: Conn,
    tls: Option<Box<Tls>>,
}

/// The TLS layer of a [`Transport`].
pub struct Tls {
    session: TlsSession,
    /// Ciphertext scratch, both directions (never both at once).
    cipher: Vec<u8>,
    /// A server-side handshake's outcome, not yet taken.
    handshake: Option<bool>,
    /// `cipher`'s capacity when in use.
    buffer_size: usize,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn timed_out() -> io::Error {
    io::ErrorKind::TimedOut.into()
}

/// A [`Transport`] whose connection waits in no task (see
/// [`ParkedConn`]).
pub struct ParkedTransport {
    conn: ParkedConn,
    tls: Option<Box<Tls>>,
}

impl ParkedTransport {
    /// The transport again, for reads and writes.
    pub fn unpark(self) -> Transport {
        Transport {
            conn: self.conn.unpark(),
            tls: self.tls,
        }
    }

    /// See [`ParkedConn::notify_readable`].
    pub fn notify_readable(
        &self,
        limit: Duration,
        token: u64,
        on_ready: fn(u64, io::Result<u32>),
    ) -> NotifyDeadline {
        self.conn.notify_readable(limit, token, on_ready)
    }

    pub fn shutdown_read(&self) {
        self.conn.shutdown_read();
    }
}

impl Transport {
    /// The transport for a wait in no task; its TLS session (if any)
    /// stays as it is.
    pub fn park(self) -> ParkedTransport {
        ParkedTransport {
            conn: self.conn.park(),
            tls: self.tls,
        }
    }

    /// A plain connection.
    pub fn plain(conn: Conn) -> Transport {
        Transport { conn, tls: None }
    }

    /// TLS termination: the handshake runs within the first reads.
    pub fn server(
        conn: Conn,
        config: Arc<ServerConfig>,
        buffer_size: usize,
    ) -> io::Result<Transport> {
        let session = TlsSession::server(config).map_err(invalid)?;
        Ok(Transport {
            conn,
            tls: Some(Box::new(Tls::new(session, buffer_size))),
        })
    }

    /// TLS to a backend: runs the handshake on `conn` within `deadline`.
    /// On failure the connection is shut down.
    pub async fn client(
        conn: Conn,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        buffer_size: usize,
        deadline: Duration,
    ) -> io::Result<Transport> {
        let session = TlsSession::client(config, name).map_err(invalid)?;
        let mut tls = Tls::new(session, buffer_size);
        match tls.handshake(&conn, deadline).await {
            Ok(()) => Ok(Transport {
                conn,
                tls: Some(Box::new(tls)),
            }),
            Err(e) => {
                conn.shutdown(Shutdown::Both);
                Err(e)
            }
        }
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.peer_addr()
    }

    pub fn closer(&self) -> Closer {
        self.conn.closer()
    }

    pub fn shutdown(&self, how: Shutdown) {
        self.conn.shutdown(how);
    }

    /// Whether an idle connection is still usable (no EOF or error pending).
    pub fn is_reusable(&self) -> bool {
        self.conn.is_reusable()
    }

    /// The outcome of a server-side handshake that ended since the last
    /// call: `Some(true)` passed, `Some(false)` failed.
    pub fn take_handshake_outcome(&mut self) -> Option<bool> {
        self.tls.as_mut().and_then(|t| t.handshake.take())
    }

    /// Reads more plaintext, appending to `buf`; `Ok(0)` is end of stream.
    /// `deadline` bounds the whole call (a TLS handshake included).
    pub async fn read(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Option<Duration>,
    ) -> io::Result<usize> {
        match &mut self.tls {
            // Boxed: the TLS read (with its handshake writes) would
            // otherwise size every connection's future, plain ones included.
            Some(tls) => Box::pin(tls.read(&self.conn, buf, deadline)).await,
            None => {
                let (res, back) = self.conn.read(std::mem::take(buf), deadline).await;
                *buf = back;
                res
            }
        }
    }

    /// Writes the plaintext `buf[range]`; each send must progress within
    /// `deadline`. Hands `buf` back.
    pub async fn write_all(
        &mut self,
        buf: Vec<u8>,
        range: Range<usize>,
        deadline: Option<Duration>,
    ) -> (io::Result<()>, Vec<u8>) {
        match &mut self.tls {
            Some(tls) => {
                let res = tls.write(&self.conn, &buf[range], deadline).await;
                (res, buf)
            }
            None => self.conn.write_all(buf, range, deadline).await,
        }
    }

    /// Writes the shared `bytes` (a cached body); a plain connection sends
    /// them without a copy.
    pub async fn write_bytes(
        &mut self,
        bytes: bytes::Bytes,
        deadline: Option<Duration>,
    ) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => tls.write(&self.conn, &bytes, deadline).await,
            None => self.conn.write_all_bytes(bytes, deadline).await,
        }
    }

    /// Waits until the connection is readable, holding no buffer (see
    /// [`Conn::readable`]).
    pub async fn readable(&self, deadline: Option<Duration>) -> io::Result<()> {
        self.conn.readable(deadline).await
    }

    /// Frees the TLS ciphertext buffer while the connection is idle; the
    /// next read or write allocates it again.
    pub fn shed_buffer(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.cipher = Vec::new();
        }
    }

    /// Sends a TLS close_notify, if TLS (before a TCP half-close).
    pub async fn close_notify(&mut self, deadline: Duration) {
        if let Some(tls) = &mut self.tls {
            tls.close(&self.conn, deadline).await;
        }
    }

    /// The connection and its TLS layer, for the tunnel's two pumps.
    pub fn into_parts(self) -> (Conn, Option<Box<Tls>>) {
        (self.conn, self.tls)
    }

    /// Takes the TLS layer out, for the tunnel's two pumps; the transport
    /// is then unusable for plaintext and only shut down.
    pub fn take_tls(&mut self) -> Option<Box<Tls>> {
        self.tls.take()
    }
}

impl Tls {
    fn new(session: TlsSession, buffer_size: usize) -> Tls {
        Tls {
            session,
            cipher: Vec::with_capacity(buffer_size),
            handshake: None,
            buffer_size,
        }
    }

    /// The ciphertext buffer, emptied, at full size (it was shed while the
    /// connection was idle).
    fn take_cipher(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.cipher);
        buf.clear();
        if buf.capacity() == 0 {
            buf.reserve_exact(self.buffer_size);
        }
        buf
    }

    /// The client side's handshake, within `deadline`.
    async fn handshake(&mut self, conn: &Conn, deadline: Duration) -> io::Result<()> {
        let start = Instant::now();
        let mut plain = Vec::new();
        self.flush(conn, Some(deadline)).await?;
        while self.session.is_handshaking() {
            let left = deadline
                .checked_sub(start.elapsed())
                .ok_or_else(timed_out)?;
            let buf = self.take_cipher();
            let (res, buf) = conn.read(buf, Some(left)).await;
            self.cipher = buf;
            let n = res?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let received = self.session.receive(&self.cipher[..n], &mut plain);
            if self.session.wants_write() {
                self.flush(conn, Some(left)).await?;
            }
            received.map_err(invalid)?;
        }
        Ok(())
    }

    /// Reads and decrypts until plaintext is appended to `plain` (returns
    /// how much), or the peer ended the stream (`Ok(0)`).
    async fn read(
        &mut self,
        conn: &Conn,
        plain: &mut Vec<u8>,
        deadline: Option<Duration>,
    ) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            let left = match deadline {
                None => None,
                Some(d) => Some(d.checked_sub(start.elapsed()).ok_or_else(timed_out)?),
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
                        self.handshake = Some(false);
                    }
                    // The alert, best effort.
                    let _ = self.flush(conn, left).await;
                    return Err(invalid(e));
                }
            };
            if got.handshake_done {
                self.handshake = Some(true);
            }
            if self.session.wants_write() {
                self.flush(conn, left).await?;
            }
            if got.plaintext > 0 {
                return Ok(got.plaintext);
            }
            if n == 0 || got.peer_closed {
                if handshaking && n == 0 && self.session.is_handshaking() {
                    self.handshake = Some(false);
                }
                return Ok(0);
            }
        }
    }

    /// Encrypts `plain` and sends it.
    async fn write(
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

    /// Sends close_notify.
    async fn close(&mut self, conn: &Conn, deadline: Duration) {
        let mut out = self.take_cipher();
        let _ = self.session.close(&mut out);
        let len = out.len();
        let (_, out) = conn.write_all(out, 0..len, Some(deadline)).await;
        self.cipher = out;
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

    /// Decrypts `ciphertext` (empty: TCP EOF), appending plaintext to
    /// `plain`; returns the plaintext count and whether the peer closed.
    /// Records the session wants to send in reply (rare after the
    /// handshake) wait for the next [`Tls::encrypt`]. For the tunnel, where
    /// reads and writes run side by side and no borrow may be held across
    /// an op.
    pub fn decrypt(&mut self, ciphertext: &[u8], plain: &mut Vec<u8>) -> io::Result<(usize, bool)> {
        let got = self.session.receive(ciphertext, plain).map_err(invalid)?;
        Ok((got.plaintext, got.peer_closed || ciphertext.is_empty()))
    }

    /// Encrypts `plain` into `out` (with anything pending).
    pub fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.session.write_plaintext(plain, out).map_err(invalid)
    }

    /// Appends close_notify to `out`.
    pub fn close_into(&mut self, out: &mut Vec<u8>) {
        let _ = self.session.close(out);
    }
}

#[cfg(test)]
mod tests;
