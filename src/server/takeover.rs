//! Binary upgrade: a running ringlb hands its listening sockets to a new
//! process over a Unix socket (`server.upgrade_socket`, `SCM_RIGHTS`), so
//! no connection waiting in an accept queue is ever lost (HAProxy's
//! `expose-fd listeners`, Pingora's upgrade).
//!
//! The exchange, on a `SOCK_SEQPACKET` socket (one message per send, each
//! with its own descriptors):
//! 1. new → old: `RINGLB-TAKEOVER 1`.
//! 2. old → new: an [`Offer`] (JSON: per listener its configured and bound
//!    address and how many sockets follow; the admin listener's address),
//!    then the descriptors, at most [`FDS_PER_MESSAGE`] per message. The
//!    old process keeps serving.
//! 3. The new process adopts the sockets its config names (binding
//!    nothing it received), binds what is new, starts its workers, then
//!    sends `GO`. If it fails before that, it exits and the old one, having
//!    seen no `GO`, serves on untouched.
//! 4. old: stops accepting without shutting a socket down (that would reset
//!    the shared accept queue), waits for every worker's accept loops to
//!    end, answers `STOPPED`, then drains what is in flight and exits.
//! 5. new: drops the sockets of listeners its config no longer has, and
//!    serves the upgrade socket itself (a fresh socket renamed over the
//!    path, so there is no moment without one).
//!
//! Why `rustix` for the messages: std's ancillary-data API is unstable, and
//! rustix gives received descriptors as `OwnedFd`, with no unsafe code here.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};

const HELLO: &[u8] = b"RINGLB-TAKEOVER 1";
const GO: &[u8] = b"GO";
const STOPPED: &[u8] = b"STOPPED";
/// Descriptors per message, below the kernel's `SCM_MAX_FD` (253).
pub const FDS_PER_MESSAGE: usize = 200;
/// Each step of the exchange but the new process's start.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the old process waits for `GO` while the new one starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message (the offer).
const MAX_MESSAGE: usize = 64 * 1024;

/// What the old process offers, before the descriptors.
#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    pid: u32,
    listeners: Vec<OfferedListener>,
    /// The admin listener's configured address; its socket is the last
    /// descriptor.
    admin: Option<SocketAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OfferedListener {
    configured: SocketAddr,
    local: SocketAddr,
    sockets: usize,
}

/// One listener's sockets, as handed over.
pub struct Handed {
    pub configured: SocketAddr,
    pub local: SocketAddr,
    pub sockets: Vec<OwnedFd>,
}

/// What a running process hands over.
#[derive(Default)]
pub struct Handover {
    pub listeners: Vec<Handed>,
    /// `(configured address, socket)`.
    pub admin: Option<(SocketAddr, OwnedFd)>,
}

fn seqpacket() -> std::io::Result<Socket> {
    Socket::new(Domain::UNIX, Type::SEQPACKET, None)
}

fn send(socket: &Socket, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("ancillary buffer too small"));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    if sent != bytes.len() {
        return Err(std::io::Error::other("message cut short"));
    }
    Ok(())
}

/// One message and its descriptors; an empty message is end of stream.
fn receive(socket: &Socket) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = vec![0u8; MAX_MESSAGE];
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    // Interrupted: a signal, or io_uring task work for a ring this thread
    // made (the start-up probe); neither means the peer failed.
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(std::io::Error::other("descriptors cut short"));
    }
    bytes.truncate(received.bytes);
    Ok((bytes, fds))
}

/// The new process's side: connects to `path` and receives the old
/// process's sockets. Then [`Taker::complete`] tells it to stop.
pub struct Taker {
    socket: Socket,
    old_pid: u32,
}

impl Taker {
    pub fn connect(path: &Path) -> Result<(Taker, Handover), String> {
        let at = || format!("takeover on {}", path.display());
        let socket = seqpacket().map_err(|e| format!("{}: {e}", at()))?;
        let addr = SockAddr::unix(path).map_err(|e| format!("{}: {e}", at()))?;
        socket.connect(&addr).map_err(|e| {
            format!(
                "{}: no running ringlb answers there ({e}); start without --takeover",
                at()
            )
        })?;
        let step = || -> std::io::Result<(Offer, Vec<OwnedFd>)> {
            socket.set_read_timeout(Some(STEP_TIMEOUT))?;
            socket.set_write_timeout(Some(STEP_TIMEOUT))?;
            send(&socket, HELLO, &[])?;
            let (bytes, _) = receive(&socket)?;
            if bytes.is_empty() {
                return Err(std::io::Error::other("refused: the old process closed"));
            }
            let offer: Offer = serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("bad offer: {e}")))?;
            let wanted = offer.listeners.iter().map(|l| l.sockets).sum::<usize>()
                + usize::from(offer.admin.is_some());
            let mut fds = Vec::with_capacity(wanted);
            while fds.len() < wanted {
                let (bytes, more) = receive(&socket)?;
                if bytes.is_empty() {
                    return Err(std::io::Error::other(format!(
                        "the old process closed after {} of {wanted} sockets",
                        fds.len()
                    )));
                }
                fds.extend(more);
            }
            if fds.len() != wanted {
                return Err(std::io::Error::other(format!(
                    "{} sockets received, {wanted} announced",
                    fds.len()
                )));
            }
            Ok((offer, fds))
        };
        let (offer, fds) = step().map_err(|e| format!("{}: {e}", at()))?;
        let mut fds = fds.into_iter();
        let listeners = offer
            .listeners
            .iter()
            .map(|l| Handed {
                configured: l.configured,
                local: l.local,
                sockets: fds.by_ref().take(l.sockets).collect(),
            })
            .collect();
        let admin = offer.admin.zip(fds.next());
        tracing::info!(
            old_pid = offer.pid,
            listeners = offer.listeners.len(),
            "takeover: received the listening sockets"
        );
        Ok((
            Taker {
                socket,
                old_pid: offer.pid,
            },
            Handover { listeners, admin },
        ))
    }

    /// Tells the old process to stop accepting and waits until it has (it
    /// then finishes in flight and exits on its own). `Err` once this
    /// process serves already: the caller logs it and serves on.
    pub fn complete(self) -> Result<u32, String> {
        let old = self.old_pid;
        send(&self.socket, GO, &[])
            .map_err(|e| format!("cannot tell process {old} to stop: {e}"))?;
        match receive(&self.socket) {
            Ok((bytes, _)) if bytes == STOPPED => Ok(old),
            Ok(_) => Err(format!(
                "process {old} did not confirm that it stopped accepting"
            )),
            Err(e) => Err(format!(
                "process {old} did not confirm that it stopped accepting: {e}"
            )),
        }
    }
}

/// What the old process's side needs from the running server.
pub trait Giver: Send + Sync + 'static {
    /// The sockets to hand over now (duplicates; this process keeps its own).
    fn handover(&self) -> std::io::Result<Handover>;
    /// Stops accepting everywhere without shutting a socket down, and
    /// returns once no accept is pending.
    fn stop_accepting(&self);
    /// Lets the process drain and exit (after the new one was told).
    fn exit(&self);
}

/// Fails if a process answers on `path` (a second ringlb would share the
/// listeners through `SO_REUSEPORT` instead of taking them over).
pub fn check_unserved(path: &Path) -> Result<(), String> {
    let probe = seqpacket().map_err(|e| e.to_string())?;
    let addr = SockAddr::unix(path).map_err(|e| e.to_string())?;
    if probe.connect(&addr).is_ok() {
        return Err(format!(
            "{}: another ringlb serves it; start with --takeover to replace it",
            path.display()
        ));
    }
    Ok(())
}

/// The upgrade socket of a running process.
pub struct UpgradeSocket {
    path: PathBuf,
    /// The inode of our socket file: at exit the file is removed only if it
    /// is still ours (a new process renamed its own over it).
    inode: u64,
}

impl UpgradeSocket {
    /// Binds `path` (a fresh socket renamed over it, so a process that
    /// took over never leaves a moment without one) and serves takeovers
    /// on a thread `ringlb-upgrade`. `takeover`: this process just took
    /// over from the one serving `path`; otherwise someone answering there
    /// is an error.
    pub fn serve(path: &Path, takeover: bool, giver: Box<dyn Giver>) -> std::io::Result<Self> {
        if !takeover {
            check_unserved(path).map_err(std::io::Error::other)?;
        }
        let temp = path.with_file_name(format!(
            ".{}.{}",
            path.file_name()
                .map_or("ringlb-upgrade".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&temp);
        let socket = seqpacket()?;
        socket.bind(&SockAddr::unix(&temp)?)?;
        // Whoever connects gets the listeners and stops this process:
        // only our own user (checked again by peer credentials).
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
        socket.listen(4)?;
        std::fs::rename(&temp, path)?;
        let metadata = std::fs::metadata(path)?;
        let (inode, owner) = (metadata.ino(), metadata.uid());
        std::thread::Builder::new()
            .name("ringlb-upgrade".into())
            .spawn(move || serve_takeovers(&socket, owner, &*giver))?;
        tracing::info!(path = %path.display(), "upgrade socket ready");
        Ok(UpgradeSocket {
            path: path.to_path_buf(),
            inode,
        })
    }
}

impl Drop for UpgradeSocket {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `owner`: the uid of our socket file, i.e. ours; only it and root may
/// take over.
fn serve_takeovers(listener: &Socket, owner: u32, giver: &dyn Giver) {
    loop {
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade socket accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match rustix::net::sockopt::socket_peercred(&conn) {
            Ok(peer) if [owner, 0].contains(&peer.uid.as_raw()) => {}
            Ok(peer) => {
                tracing::warn!(uid = peer.uid.as_raw(), "takeover refused: another user");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "takeover refused: no peer credentials");
                continue;
            }
        }
        match hand_over(&conn, giver) {
            Ok(()) => return,
            Err(e) => tracing::warn!("takeover refused or abandoned, still serving: {e}"),
        }
    }
}

/// One takeover from the old process's side. `Ok` once it stopped
/// accepting; `Err` leaves everything as it was.
fn hand_over(conn: &Socket, giver: &dyn Giver) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    conn.set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| io("socket options", e))?;
    let (hello, _) = receive(conn).map_err(|e| io("no greeting", e))?;
    if hello != HELLO {
        return Err(format!(
            "unknown greeting {:?}",
            String::from_utf8_lossy(&hello)
        ));
    }
    let handover = giver
        .handover()
        .map_err(|e| io("cannot duplicate the sockets", e))?;
    let offer = Offer {
        pid: std::process::id(),
        listeners: handover
            .listeners
            .iter()
            .map(|h| OfferedListener {
                configured: h.configured,
                local: h.local,
                sockets: h.sockets.len(),
            })
            .collect(),
        admin: handover.admin.as_ref().map(|(addr, _)| *addr),
    };
    let json = serde_json::to_vec(&offer).map_err(|e| e.to_string())?;
    send(conn, &json, &[]).map_err(|e| io("cannot send the offer", e))?;
    let fds: Vec<BorrowedFd<'_>> = handover
        .listeners
        .iter()
        .flat_map(|h| h.sockets.iter().map(AsFd::as_fd))
        .chain(handover.admin.iter().map(|(_, fd)| fd.as_fd()))
        .collect();
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        send(conn, b"F", chunk).map_err(|e| io("cannot send the sockets", e))?;
    }
    conn.set_read_timeout(Some(START_TIMEOUT))
        .map_err(|e| io("socket options", e))?;
    let (go, _) = receive(conn).map_err(|e| io("the new process did not start", e))?;
    if go != GO {
        return Err("the new process gave up before starting".to_owned());
    }
    giver.stop_accepting();
    if let Err(e) = send(conn, STOPPED, &[]) {
        tracing::warn!(error = %e, "takeover: could not confirm the stop to the new process");
    }
    tracing::info!("takeover: a new process holds the listeners; draining and exiting");
    giver.exit();
    Ok(())
}
