//! systemd's readiness protocol (`sd_notify`): `READY=1`, `RELOADING=1`,
//! `STOPPING=1` and `STATUS=...` as datagrams to `$NOTIFY_SOCKET`.
//!
//! Why by hand: it is one datagram on a Unix socket; std has
//! `UnixDatagram` and abstract addresses, so no crate and no unsafe.
//!
//! Invariants: when `NOTIFY_SOCKET` is unset (not started by systemd, or
//! `Type=` is not `notify`) every call is a no-op returning `Ok(false)`. A
//! path starting with `@` is an abstract-namespace address (the `@` stands
//! for the leading NUL byte). The variable is left in the environment
//! (children are not started, so it cannot leak to them).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Listeners are open and serving.
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// A reload started; send [`ready`] when it is done (or failed).
pub fn reloading() -> io::Result<bool> {
    notify("RELOADING=1")
}

/// The service is shutting down (graceful drain started).
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// A one-line status for `systemctl status`.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", text.replace('\n', " ")))
}

/// Sends `state` (newline-separated `KEY=value` lines) to `$NOTIFY_SOCKET`.
/// `Ok(false)`: the variable is unset, nothing sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => {
            let socket = socket.to_str().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8")
            })?;
            notify_to(socket, state).map(|()| true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` to the notify socket named `socket` (a path, or `@name`
/// for the abstract namespace).
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short notify datagram",
        ));
    }
    Ok(())
}

fn socket_addr(socket: &str) -> io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None if socket.starts_with('/') => SocketAddr::from_pathname(socket),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {socket:?} is neither an absolute path nor @abstract"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_gets_each_state() {
        let dir = std::env::temp_dir().join(format!("ringlb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let socket = path.to_str().unwrap();
        for state in ["READY=1", "RELOADING=1", "STOPPING=1", "STATUS=ok"] {
            notify_to(socket, state).unwrap();
            assert_eq!(recv(&server), state);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ringlb-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(&format!("@{name}"), "READY=1").unwrap();
        assert_eq!(recv(&server), "READY=1");
    }

    #[test]
    fn bad_socket_names_are_errors() {
        assert!(notify_to("relative/path", "READY=1").is_err());
        // Nobody listens there.
        assert!(notify_to("/nonexistent/ringlb/notify.sock", "READY=1").is_err());
    }
}
