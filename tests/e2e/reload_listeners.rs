//! What a reload does to listeners: kept ones keep their socket and
//! connections, new ones accept, removed ones stop accepting and their
//! connections drain (a request in flight finishes with
//! `Connection: close`, an idle keep-alive connection is closed);
//! certificates are re-read without disturbing a handshake in progress,
//! and sessions resume across the reload; a bad certificate refuses the
//! reload naming the file; the admin listener moves; `[server]` limits
//! apply to the next request.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};

use crate::admin::{admin, admin_get, status};
use crate::backend::{Backend, Reply, Resp};
use crate::client::{get, request, Client, Response};
use crate::harness::{free_port, wait_until, Proxy, TempDir, WAIT};
use crate::reload::{assert_reloaded, rewrite, version};
use crate::tls::{certs, leaf, read_response, Tls};

fn reload(proxy: &Proxy) -> Response {
    admin(proxy, "POST", "/reload")
}

/// Whether a TCP connect to `addr` is refused (nothing listens there).
fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

fn answers(addr: SocketAddr) -> bool {
    Client::try_connect(addr)
        .and_then(|mut c| c.try_read_response_after(&get("/")))
        .is_ok_and(|r| r.status == 200)
}

#[test]
fn reload_adds_keeps_and_removes_listeners_and_removed_ones_drain() {
    let backend = Backend::start(|req| {
        if req.target == "/slow" {
            Resp::new(200)
                .body("slow done")
                .delay(Duration::from_millis(1500))
                .into()
        } else {
            Reply::echo(req)
        }
    });
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    let first = proxy.addr;
    let second = SocketAddr::from(([127, 0, 0, 1], free_port()));

    // 1. Add a second listener; the first is kept with its connections.
    let mut kept = proxy.client();
    assert_eq!(kept.roundtrip(&get("/")).status, 200);
    let one = format!("listen = [\"{first}\"]");
    let both = format!("listen = [\"{first}\", \"{second}\"]");
    rewrite(&proxy, |t| t.replacen(&one, &both, 1));
    assert_reloaded(&proxy);
    assert!(wait_until(WAIT, || answers(second)), "the new listener");
    let r = kept.roundtrip(&get("/"));
    assert_eq!(r.status, 200);
    assert!(!r.closes(), "a kept listener's connection stays open");
    let doc = status(&proxy);
    assert_eq!(doc["listen"][0]["local"], first.to_string());
    assert_eq!(doc["listen"][1]["local"], second.to_string());

    // 2. Remove the first listener while one of its connections is idle
    //    and another has a request in flight.
    let mut idle = Client::connect(first);
    assert_eq!(idle.roundtrip(&get("/")).status, 200);
    let mut busy = Client::connect(first);
    busy.send(&get("/slow"));
    assert!(wait_until(WAIT, || backend
        .requests()
        .iter()
        .any(|r| r.target == "/slow")));
    let only_second = format!("listen = [\"{second}\"]");
    rewrite(&proxy, |t| t.replacen(&both, &only_second, 1));
    assert_reloaded(&proxy);
    // Every worker closed its socket: nothing listens on the port.
    assert!(wait_until(WAIT, || refused(first)), "the removed listener");
    // The request in flight finishes, and its connection closes after it.
    let r = busy.read_response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "slow done"));
    assert!(
        r.closes(),
        "the draining connection says close: {:?}",
        r.head
    );
    busy.assert_closed();
    // The idle keep-alive connection is closed.
    idle.assert_closed();
    kept.assert_closed();
    assert!(answers(second));

    // 3. The first address comes back: bound again.
    rewrite(&proxy, |t| t.replacen(&only_second, &both, 1));
    assert_reloaded(&proxy);
    assert!(wait_until(WAIT, || answers(first)));
    assert!(answers(second));
    assert_eq!(version(&proxy), 4);
}

/// Each added listener costs one socket per worker; removing it gives
/// them back (the fd closes, not only the port): three rounds, no growth.
#[test]
fn added_and_removed_listeners_leak_no_fds() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .workers(2)
        .upstream("app", &[backend.addr], &[])
        .start();
    let first = proxy.addr;
    let one = format!("listen = [\"{first}\"]");
    let baseline = proxy.settled_fd_count();
    for round in 0..3 {
        let extra = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let two = format!("listen = [\"{first}\", \"{extra}\"]");
        rewrite(&proxy, |t| t.replacen(&one, &two, 1));
        assert_reloaded(&proxy);
        assert!(
            wait_until(WAIT, || proxy.fd_count() == baseline + 2),
            "round {round}: one socket per worker: baseline {baseline}, now {}",
            proxy.fd_count()
        );
        rewrite(&proxy, |t| t.replacen(&two, &one, 1));
        assert_reloaded(&proxy);
        proxy.assert_fds_return_to(baseline, "removing a listener");
        assert!(refused(extra));
    }
}

#[test]
fn a_listener_that_cannot_bind_refuses_the_reload() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    // Held without SO_REUSEPORT: the proxy's bind must fail.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let first = proxy.addr;
    rewrite(&proxy, |t| {
        t.replacen(
            &format!("listen = [\"{first}\"]"),
            &format!("listen = [\"{first}\", \"{busy}\"]"),
            1,
        )
    });
    let r = reload(&proxy);
    assert_eq!(r.status, 500);
    assert!(
        r.body_str().contains(&format!("cannot listen on {busy}")),
        "{}",
        r.body_str()
    );
    assert_eq!(version(&proxy), 1);
    assert!(answers(first));
}

#[test]
fn the_admin_listener_moves_on_reload() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    let old = proxy.admin.unwrap();
    let new = SocketAddr::from(([127, 0, 0, 1], free_port()));
    rewrite(&proxy, |t| {
        t.replacen(
            &format!("[admin]\nlisten = \"{old}\""),
            &format!("[admin]\nlisten = \"{new}\""),
            1,
        )
    });
    // Asked on the old address, answered there, then it moves.
    assert_reloaded(&proxy);
    let healthz = |addr| {
        Client::try_connect(addr)
            .and_then(|mut c| c.try_read_response_after(&admin_get("/healthz")))
            .is_ok_and(|r| r.status == 200)
    };
    assert!(wait_until(WAIT, || healthz(new)), "the new admin address");
    assert!(wait_until(WAIT, || refused(old)), "the old admin address");
    let mut c = Client::connect(new);
    let r = c.roundtrip(&admin_get("/status"));
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["config"]["version"], 2);
}

#[test]
fn server_limits_apply_to_the_next_request_after_a_reload() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .server("max_headers = 20")
        .upstream("app", &[backend.addr], &[])
        .start();
    let headers: Vec<(String, String)> = (0..10)
        .map(|i| (format!("X-Field-{i}"), "v".to_string()))
        .collect();
    let fields: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let req = request("GET", "/", &fields, b"");
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&req).status, 200);
    rewrite(&proxy, |t| {
        t.replacen("max_headers = 20", "max_headers = 5", 1)
    });
    assert_reloaded(&proxy);
    // The same kept-alive connection: its next request is on the new
    // limits (connections move between requests).
    assert!(wait_until(WAIT, || {
        let mut fresh = proxy.client();
        fresh.roundtrip(&req).status == 431
    }));
    assert_eq!(c.roundtrip(&req).status, 431);
}

// ---- certificates ----

/// A client config trusting the dev CA, with its own session cache.
fn client_config() -> Arc<ClientConfig> {
    ringlb::tls::load_client_config(&certs().join("ca.pem")).unwrap()
}

fn tls_connect(config: &Arc<ClientConfig>, addr: SocketAddr, sni: &str) -> Tls {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    StreamOwned::new(conn, sock)
}

/// `GET /` over `tls`; the status once the whole response came.
fn tls_get(tls: &mut Tls) -> std::io::Result<u16> {
    tls.write_all(&get("/"))?;
    read_response(tls).map(|(status, _, _)| status)
}

fn peer_leaf(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0].clone()
}

#[test]
fn certificates_reload_without_disturbing_handshakes_in_progress() {
    let backend = Backend::echo();
    let files = TempDir::new();
    let copy = |from: &str, to: &str| {
        fs::copy(certs().join(from), files.path().join(to)).unwrap();
    };
    copy("server.pem", "live.pem");
    copy("server.key", "live.key");
    let table = format!(
        "{{ cert = \"{0}/live.pem\", key = \"{0}/live.key\" }}",
        files.path().display()
    );
    let proxy = Proxy::builder()
        .admin()
        .tls_listener(&table)
        .upstream("app", &[backend.addr], &[])
        .start();
    let addr = proxy.tls_addr.unwrap();

    // An established connection whose session (ticket) the client keeps.
    let resuming = client_config();
    let mut established = tls_connect(&resuming, addr, "localhost");
    assert_eq!(tls_get(&mut established).unwrap(), 200);
    assert_eq!(peer_leaf(&established), leaf("server.pem"));

    // A handshake in progress: the ClientHello is sent and the server's
    // first flight received, the client's Finished is not sent yet.
    let mut pending = tls_connect(&client_config(), addr, "localhost");
    pending.conn.write_tls(&mut pending.sock).unwrap();
    let mut got = 0;
    while got == 0 {
        got = pending.conn.read_tls(&mut pending.sock).unwrap();
    }
    pending.conn.process_new_packets().unwrap();
    // The server waits for the client's Finished, still queued here.
    assert!(pending.conn.wants_write());

    // The files now hold another certificate.
    copy("other.pem", "live.pem");
    copy("other.key", "live.key");
    assert_reloaded(&proxy);

    // The handshake in progress finishes on the certificate it began with.
    assert_eq!(tls_get(&mut pending).unwrap(), 200);
    assert_eq!(peer_leaf(&pending), leaf("server.pem"));
    // The established connection goes on.
    assert_eq!(tls_get(&mut established).unwrap(), 200);
    // New handshakes get the new certificate (valid for other.test only).
    assert!(
        wait_until(WAIT, || {
            let mut fresh = tls_connect(&client_config(), addr, "other.test");
            tls_get(&mut fresh).is_ok() && peer_leaf(&fresh) == leaf("other.pem")
        }),
        "the new certificate is not served"
    );
    // The session from before the reload resumes after it.
    let mut resumed = tls_connect(&resuming, addr, "localhost");
    assert_eq!(tls_get(&mut resumed).unwrap(), 200);
    assert_eq!(resumed.conn.handshake_kind(), Some(HandshakeKind::Resumed));

    // A broken certificate file refuses the reload, naming the file, and
    // the running certificates stay.
    fs::write(files.path().join("live.pem"), "not a certificate\n").unwrap();
    let r = reload(&proxy);
    assert_eq!(r.status, 500);
    assert!(r.body_str().contains("live.pem"), "{}", r.body_str());
    assert_eq!(version(&proxy), 2);
    let mut after = tls_connect(&client_config(), addr, "other.test");
    assert_eq!(tls_get(&mut after).unwrap(), 200);
    assert_eq!(peer_leaf(&after), leaf("other.pem"));
}
