//! Listeners and connections over raw descriptors, driven by io_uring ops.
//!
//! Invariant: a descriptor is closed only when the last `Rc` to it drops, and
//! every in-flight op holds one, so a dropped `Conn` never closes an fd the
//! kernel is still using, and never leaks one either.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, types};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::op::{
    cqe_result, notify_with_deadline, submit, with_deadline, with_deadline_keep_open,
    NotifyDeadline,
};

/// A bound, listening socket not yet adopted by a worker: it can be made
/// on any thread (the server binds every worker's socket up front, so a
/// bind error refuses a start or a reload before anything changes) and
/// sent to the worker that will accept on it.
pub struct BoundSocket {
    fd: OwnedFd,
    local: SocketAddr,
}

impl BoundSocket {
    /// Binds `addr` with `SO_REUSEPORT` and `SO_REUSEADDR`, so every worker
    /// has its own accept queue on the same port and the kernel spreads
    /// connections.
    pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<BoundSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(clamp_backlog(backlog))?;
        BoundSocket::from_listening(socket)
    }

    /// `count` sockets on `addr`, one per worker. Port 0 is resolved by the
    /// first bind and the rest join it, so every worker serves one port.
    pub fn bind_group(
        addr: SocketAddr,
        backlog: u32,
        count: usize,
    ) -> io::Result<Vec<BoundSocket>> {
        let first = BoundSocket::bind(addr, backlog)?;
        let local = first.local;
        let mut group = vec![first];
        for _ in 1..count {
            group.push(BoundSocket::bind(local, backlog)?);
        }
        Ok(group)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Wraps a socket in the listening state, with its inet address.
    fn from_listening(socket: Socket) -> io::Result<BoundSocket> {
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        Ok(BoundSocket {
            fd: OwnedFd::from(socket),
            local,
        })
    }

    /// A listening TCP socket received from another process (a takeover).
    /// Nothing is bound: it keeps its address and accept queue.
    pub fn from_fd(fd: OwnedFd) -> io::Result<BoundSocket> {
        let socket = Socket::from(fd);
        if !socket.is_listener()? || socket.r#type()? != Type::STREAM {
            return Err(io::Error::other("not a listening stream socket"));
        }
        BoundSocket::from_listening(socket)
    }

    /// A second descriptor of the same socket, to hand it to a new process
    /// later; the socket stays open while either is.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

fn clamp_backlog(backlog: u32) -> i32 {
    backlog.min(i32::MAX as u32) as i32
}

/// A listening socket of one worker, bound with `SO_REUSEPORT`.
pub struct Listener {
    fd: Rc<OwnedFd>,
    local: SocketAddr,
}

impl Listener {
    /// Binds `addr` on the calling worker (see [`BoundSocket::bind`]).
    pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<Listener> {
        BoundSocket::bind(addr, backlog).map(Listener::adopt)
    }

    /// Accepts on a socket bound elsewhere.
    pub fn adopt(socket: BoundSocket) -> Listener {
        Listener {
            fd: Rc::new(socket.fd),
            local: socket.local,
        }
    }

    /// Changes the accept queue length of the listening socket
    /// (`listen(2)` again, which Linux allows on a listening socket).
    pub fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::listen(self.fd.as_raw_fd(), clamp_backlog(backlog)) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops listening: `shutdown(SHUT_RD)` takes the socket out of the
    /// listening state, so the pending accept op completes with an error
    /// (no op is dropped) and new connection attempts are refused. The
    /// kernel's backlog of not yet accepted connections is reset.
    pub fn stop_listening(&self) {
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RD) };
    }

    /// Accepts one connection and sets `TCP_NODELAY` on it.
    ///
    /// Call this from one loop that is never dropped: a dropped accept op
    /// would still take the next connection in the kernel, and its fd would
    /// be leaked.
    pub async fn accept(&self) -> io::Result<Conn> {
        self.accept_within(None).await
    }

    /// [`accept`](Self::accept) that gives up after `limit` with
    /// `ErrorKind::TimedOut`, having taken no connection (the kernel
    /// cancels the linked accept atomically). Unlike other deadlines it
    /// never shuts the socket down: the listening socket may be shared with
    /// another process (a takeover), whose accept queue that would destroy.
    pub async fn accept_within(&self, limit: Option<Duration>) -> io::Result<Conn> {
        let mut addr = Box::new(AcceptAddr {
            storage: MaybeUninit::zeroed(),
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        });
        let sqe = opcode::Accept::new(
            types::Fd(self.fd.as_raw_fd()),
            addr.storage.as_mut_ptr() as *mut libc::sockaddr,
            &mut addr.len,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        let data = (addr, self.fd.clone());
        let (res, (addr, _fd)) = match limit {
            None => {
                let (res, data) = submit(data, sqe).await;
                (cqe_result(res), data)
            }
            Some(limit) => with_deadline_keep_open(self.fd.as_raw_fd(), data, sqe, limit).await,
        };
        let raw = res? as RawFd;
        // SAFETY: the kernel just handed us this descriptor; we own it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the kernel wrote `len` bytes of a sockaddr into `storage`.
        let peer = unsafe { SockAddr::new(addr.storage.assume_init(), addr.len) }
            .as_socket()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let conn = Conn::from_fd(fd, peer);
        conn.set_nodelay()?;
        Ok(conn)
    }
}

struct AcceptAddr {
    storage: MaybeUninit<libc::sockaddr_storage>,
    len: libc::socklen_t,
}

/// See [`Conn::closer`].
pub struct Closer(Rc<OwnedFd>);

impl Closer {
    /// `shutdown(SHUT_RD)`: a pending read returns end of stream once the
    /// bytes already received are consumed.
    pub fn shutdown_read(&self) {
        // SAFETY: plain syscall on a descriptor we keep open.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RD) };
    }
}

/// A connected TCP stream (client or upstream side).
pub struct Conn {
    fd: Rc<OwnedFd>,
    peer: SocketAddr,
}

/// Connects to `addr`, with the connect bounded by a kernel-side timeout.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nodelay(true)?;
    let fd = Rc::new(OwnedFd::from(socket));
    let sockaddr = Box::new(SockAddr::from(addr));
    let sqe =
        opcode::Connect::new(types::Fd(fd.as_raw_fd()), sockaddr.as_ptr(), sockaddr.len()).build();
    let (res, _) = with_deadline(fd.as_raw_fd(), (sockaddr, fd.clone()), sqe, Some(timeout)).await;
    res?;
    Ok(Conn { fd, peer: addr })
}

/// A connection that waits in no task (an idle keep-alive connection):
/// its descriptor held outright where nothing else holds it, so a parked
/// connection costs no heap allocation of its own. See [`Conn::park`].
pub struct ParkedConn {
    /// Owned; or still shared when something held it as it parked (an
    /// abandoned op not yet completed).
    fd: Result<OwnedFd, Rc<OwnedFd>>,
    peer: SocketAddr,
}

impl ParkedConn {
    /// The connection again, for ops.
    pub fn unpark(self) -> Conn {
        let fd = match self.fd {
            Ok(fd) => Rc::new(fd),
            Err(shared) => shared,
        };
        Conn {
            fd,
            peer: self.peer,
        }
    }

    fn raw_fd(&self) -> RawFd {
        match &self.fd {
            Ok(fd) => fd.as_raw_fd(),
            Err(shared) => shared.as_raw_fd(),
        }
    }

    /// Has the worker's loop call `on_ready(token, _)` once the connection
    /// is readable (bytes, end of stream or an error: `Ok`), or `limit`
    /// passed first (`Err(TimedOut)`); no task waits meanwhile. Keep the
    /// returned deadline and this connection until that call: the poll
    /// names the descriptor. Consumes nothing, like [`Conn::readable`].
    pub fn notify_readable(
        &self,
        limit: Duration,
        token: u64,
        on_ready: fn(u64, io::Result<u32>),
    ) -> NotifyDeadline {
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let sqe = opcode::PollAdd::new(types::Fd(self.raw_fd()), mask).build();
        notify_with_deadline(self.raw_fd(), sqe, limit, token, on_ready)
    }

    /// `shutdown(SHUT_RD)`: a readiness wait completes (end of stream).
    pub fn shutdown_read(&self) {
        // SAFETY: plain syscall on a descriptor this connection keeps open.
        unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_RD) };
    }
}

impl Conn {
    /// The connection for a wait in no task (see [`ParkedConn`]).
    pub fn park(self) -> ParkedConn {
        let fd = Rc::try_unwrap(self.fd);
        ParkedConn {
            fd,
            peer: self.peer,
        }
    }

    fn from_fd(fd: OwnedFd, peer: SocketAddr) -> Conn {
        Conn {
            fd: Rc::new(fd),
            peer,
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of the connection (what a client connected to);
    /// `None` if the socket cannot say (it was reset).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        socket2::SockRef::from(&*self.fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A handle that can end a pending read on this connection from
    /// another task of the worker (graceful shutdown of idle keep-alive
    /// connections). It keeps the descriptor open while held.
    pub fn closer(&self) -> Closer {
        Closer(self.fd.clone())
    }

    fn set_nodelay(&self) -> io::Result<()> {
        socket2::SockRef::from(&*self.fd).set_nodelay(true)
    }

    /// Reads into the spare capacity of `buf` (appending), waiting at most
    /// `deadline`. `Ok(0)` is end of stream. On timeout nothing was consumed
    /// from the socket: the kernel cancelled the read before it took bytes.
    pub async fn read(
        &self,
        mut buf: Vec<u8>,
        deadline: Option<Duration>,
    ) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        let spare = buf.capacity() - buf.len();
        self.recv(buf, spare, 0, deadline).await
    }

    /// Reads what is waiting on the socket into the spare capacity of `buf`
    /// (appending) at once, without the ring: `Ok(None)` when nothing is
    /// (it would block). For a connection [`Conn::readable`] said has
    /// bytes, so its wait needs no read op (and no op's future) at all.
    pub fn try_read(&self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by
        // `buf`; recv writes at most that many, and only those it reports
        // are marked initialised below.
        let n = unsafe {
            libc::recv(
                self.raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let n = n as usize;
        // SAFETY: recv initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(Some(n))
    }

    /// Copies up to `limit` bytes waiting on the socket into `buf`
    /// (appending) without consuming them (`MSG_PEEK`), waiting at most
    /// `deadline` for the first. `Ok(0)` is end of stream. A reader that
    /// must not take bytes past a boundary (a PROXY header in front of a
    /// TLS ClientHello) looks first, then [`Conn::consume`]s exactly.
    pub async fn peek(
        &self,
        buf: Vec<u8>,
        limit: usize,
        deadline: Option<Duration>,
    ) -> (io::Result<usize>, Vec<u8>) {
        self.recv(buf, limit, libc::MSG_PEEK, deadline).await
    }

    /// Takes exactly `n` bytes off the socket, discarding them: bytes
    /// already seen by [`Conn::peek`], so they are there.
    pub async fn consume(&self, n: usize, deadline: Option<Duration>) -> io::Result<()> {
        let mut left = n;
        let mut scratch = Vec::with_capacity(n);
        while left > 0 {
            scratch.clear();
            let (res, buf) = self.recv(scratch, left, 0, deadline).await;
            scratch = buf;
            match res? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                got => left -= got,
            }
        }
        Ok(())
    }

    /// A `recv` with `flags` of at most `limit` bytes into `buf` (appending).
    async fn recv(
        &self,
        mut buf: Vec<u8>,
        limit: usize,
        flags: i32,
        deadline: Option<Duration>,
    ) -> (io::Result<usize>, Vec<u8>) {
        buf.reserve(limit);
        // SAFETY: the pointer is into `buf`'s spare capacity (at least
        // `limit` bytes), which the op's stable data owns until completion.
        let ptr = unsafe { buf.as_mut_ptr().add(buf.len()) };
        let len = u32::try_from(limit).unwrap_or(u32::MAX);
        let sqe = opcode::Recv::new(types::Fd(self.raw_fd()), ptr, len)
            .flags(flags)
            .build();
        let (res, (mut buf, _fd)) =
            with_deadline(self.raw_fd(), (buf, self.fd.clone()), sqe, deadline).await;
        match res {
            Ok(n) => {
                // SAFETY: the kernel initialised `n` bytes after `len`.
                unsafe { buf.set_len(buf.len() + n as usize) };
                (Ok(n as usize), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Waits until the connection is readable (bytes, end of stream or an
    /// error), at most `deadline`, without holding a buffer: an idle
    /// keep-alive connection then costs no read buffer while it waits.
    /// `IORING_OP_POLL_ADD` consumes nothing, so a timeout loses no bytes.
    pub async fn readable(&self, deadline: Option<Duration>) -> io::Result<()> {
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let sqe = opcode::PollAdd::new(types::Fd(self.raw_fd()), mask).build();
        let (res, _fd) = with_deadline(self.raw_fd(), self.fd.clone(), sqe, deadline).await;
        res.map(|_| ())
    }

    /// Writes all of `buf[range]`; each send must make progress within
    /// `deadline`.
    pub async fn write_all(
        &self,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
        deadline: Option<Duration>,
    ) -> (io::Result<()>, Vec<u8>) {
        self.send_all(buf, range, deadline).await
    }

    /// Writes all of `bytes`, a shared buffer (a cached body), without
    /// copying it: the op holds a reference until it completes.
    pub async fn write_all_bytes(
        &self,
        bytes: bytes::Bytes,
        deadline: Option<Duration>,
    ) -> io::Result<()> {
        let len = bytes.len();
        self.send_all(bytes, 0..len, deadline).await.0
    }

    /// Sends `buf[range]`, one `send` op after another until all went
    /// out; `buf` is any owned buffer whose bytes stay put when it moves
    /// (a `Vec`'s or a `Bytes`'s heap), handed back at the end.
    async fn send_all<B>(
        &self,
        buf: B,
        range: std::ops::Range<usize>,
        deadline: Option<Duration>,
    ) -> (io::Result<()>, B)
    where
        B: std::ops::Deref<Target = [u8]> + Unpin + 'static,
    {
        let mut buf = buf;
        let mut pos = range.start;
        while pos < range.end {
            // SAFETY: in-bounds pointer into `buf`'s heap bytes, kept alive
            // (and unmoved) by the op, which owns `buf` until completion.
            let ptr = unsafe { buf.as_ptr().add(pos) };
            let len = (range.end - pos) as u32;
            let sqe = opcode::Send::new(types::Fd(self.raw_fd()), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build();
            let (res, (b, _fd)) =
                with_deadline(self.raw_fd(), (buf, self.fd.clone()), sqe, deadline).await;
            buf = b;
            match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => pos += n as usize,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Half- or full-closes the connection. Used to close an idle connection
    /// (and to propagate end of stream through a tunnel) without an op.
    pub fn shutdown(&self, how: std::net::Shutdown) {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: plain syscall on a descriptor we own; errors (ENOTCONN
        // after a reset) are irrelevant on the way out.
        unsafe { libc::shutdown(self.raw_fd(), how) };
    }

    /// Whether a connection that sat idle in a pool is still usable: no
    /// end-of-stream, no error, and no unsolicited bytes waiting.
    pub fn is_reusable(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: non-blocking peek of one byte into a local.
        let n = unsafe {
            libc::recv(
                self.raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}
