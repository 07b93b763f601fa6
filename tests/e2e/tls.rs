//! TLS termination on a listener: the handshake with a rustls client
//! trusting `certs/ca.pem`, keep-alive requests on one TLS connection,
//! `X-Forwarded-Proto: https`, SNI choosing the certificate, a 1 MiB
//! response, and Upgrade refused over TLS (not supported yet).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, StreamOwned};

use crate::admin::{admin, metric, parse_prometheus};
use crate::backend::{Backend, Resp};
use crate::client::{checksum, get, pattern, request};
use crate::harness::{Proxy, WAIT};

pub const SERVER_TLS: &str = "{ cert = \"CERTS/server.pem\", key = \"CERTS/server.key\" }";
const WITH_SNI: &str = "{ cert = \"CERTS/server.pem\", key = \"CERTS/server.key\", \
                        sni = [{ cert = \"CERTS/other.pem\", key = \"CERTS/other.key\" }] }";

pub type Tls = StreamOwned<ClientConnection, TcpStream>;

pub fn certs() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/certs"))
}

pub fn connect(addr: SocketAddr, sni: &str) -> Tls {
    let config = ringlb::tls::load_client_config(&certs().join("ca.pem")).unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.set_write_timeout(Some(WAIT)).unwrap();
    StreamOwned::new(conn, sock)
}

pub fn leaf(file: &str) -> CertificateDer<'static> {
    ringlb::tls::load_certs(&certs().join(file))
        .unwrap()
        .remove(0)
}

/// One response with a Content-Length body: (status, head, body).
pub fn read_response(tls: &mut Tls) -> io::Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a Content-Length response");
    let mut body = vec![0; len];
    tls.read_exact(&mut body)?;
    Ok((status, head, body))
}

fn roundtrip(tls: &mut Tls, req: &[u8]) -> (u16, String, Vec<u8>) {
    tls.write_all(req).unwrap();
    read_response(tls).unwrap()
}

#[test]
fn handshake_keep_alive_and_forwarded_proto() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .tls_listener(SERVER_TLS)
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut tls = connect(proxy.tls_addr.unwrap(), "localhost");
    for i in 0..3 {
        let (status, head, body) = roundtrip(&mut tls, &get(&format!("/r{i}")));
        assert_eq!(status, 200, "{head}");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("header x-forwarded-proto: https"), "{body}");
        assert!(body.contains(&format!("target /r{i}")), "{body}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    assert_eq!(
        tls.conn.peer_certificates().unwrap()[0],
        leaf("server.pem"),
        "the default certificate"
    );
    assert_eq!(backend.request_count(), 3);
    // One handshake, counted.
    let text = admin(&proxy, "GET", "/metrics").body_str();
    let handshakes = parse_prometheus(&text)
        .into_iter()
        .find(|((n, _), _)| n == "ringlb_tls_handshakes_total")
        .map(|(_, v)| v);
    assert_eq!(handshakes, Some(1.0), "{text}");
    // The plain listener still speaks plain HTTP.
    assert_eq!(proxy.client().roundtrip(&get("/plain")).status, 200);
    let seen = backend.requests();
    let proto = |i: usize| {
        seen[i]
            .head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-proto"))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(proto(0).as_deref(), Some("https"));
    assert_eq!(proto(3).as_deref(), Some("http"));
}

#[test]
fn sni_picks_the_certificate() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .tls_listener(WITH_SNI)
        .upstream("app", &[backend.addr], &[])
        .start();
    let addr = proxy.tls_addr.unwrap();
    for (sni, cert) in [
        ("www.other.test", "other.pem"),
        ("other.test", "other.pem"),
        ("localhost", "server.pem"),
    ] {
        let mut tls = connect(addr, sni);
        let (status, _, _) = roundtrip(&mut tls, &get("/"));
        assert_eq!(status, 200, "{sni}");
        assert_eq!(
            tls.conn.peer_certificates().unwrap()[0],
            leaf(cert),
            "{sni}"
        );
    }
}

#[test]
fn one_mebibyte_response_and_upload_over_tls() {
    let big = pattern(1 << 20);
    let sum = checksum(&big);
    let backend = Backend::fixed(Resp::new(200).body(big.clone()));
    let proxy = Proxy::builder()
        .tls_listener(SERVER_TLS)
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut tls = connect(proxy.tls_addr.unwrap(), "localhost");
    let (status, _, body) = roundtrip(&mut tls, &get("/big"));
    assert_eq!((status, body.len()), (200, 1 << 20));
    assert_eq!(checksum(&body), sum);
    // And a 1 MiB request body on the same connection.
    let (status, _, body) = roundtrip(&mut tls, &request("POST", "/up", &[], &big));
    assert_eq!((status, body.len()), (200, 1 << 20));
    let seen = backend.last_request();
    assert_eq!((seen.body.len(), checksum(&seen.body)), (1 << 20, sum));
}

#[test]
fn upgrade_over_tls_tunnels_both_ways() {
    let backend = Backend::start(|_| {
        crate::backend::Reply::Upgrade(vec![
            ("Connection".into(), "Upgrade".into()),
            ("Upgrade".into(), "echo-proto".into()),
        ])
    });
    let proxy = Proxy::builder()
        .tls_listener(SERVER_TLS)
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut tls = connect(proxy.tls_addr.unwrap(), "localhost");
    let req = request(
        "GET",
        "/ws",
        &[("Connection", "Upgrade"), ("Upgrade", "echo-proto")],
        b"",
    );
    tls.write_all(&req).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut byte).unwrap(), 1, "closed before the 101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for msg in [&b"hello"[..], &pattern(256 * 1024)[..]] {
        tls.write_all(msg).unwrap();
        let mut back = vec![0; msg.len()];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(checksum(&back), checksum(msg));
    }
    // The client closes; the tunnel closes.
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn a_failed_handshake_is_counted_and_closes() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .tls_listener(SERVER_TLS)
        .upstream("app", &[backend.addr], &[])
        .start();
    // Plain HTTP to the TLS port: not a ClientHello.
    let mut sock = TcpStream::connect(proxy.tls_addr.unwrap()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(&get("/")).unwrap();
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    assert!(!rest.starts_with(b"HTTP/"), "answered in plain text");
    let failures = || metric(&proxy, "ringlb_tls_handshake_failures_total");
    assert!(crate::harness::wait_until(WAIT, || failures() == 1.0));
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn tls_connections_and_failed_handshakes_leak_no_fds() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .tls_listener(SERVER_TLS)
        // No pooling: every upstream connection closes with its request.
        .upstream("app", &[backend.addr], &["max_idle = 0"])
        .start();
    let addr = proxy.tls_addr.unwrap();
    let scenario = || {
        let mut tls = connect(addr, "localhost");
        assert_eq!(roundtrip(&mut tls, &get("/")).0, 200);
        drop(tls);
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let _ = sock.write_all(b"not a client hello\r\n\r\n");
        let _ = sock.read_to_end(&mut Vec::new());
    };
    // Warm up: pooled upstream connections are part of the baseline.
    for _ in 0..3 {
        scenario();
    }
    let baseline = proxy.settled_fd_count();
    std::thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(scenario);
        }
    });
    proxy.assert_fds_return_to(baseline, "TLS connections and failed handshakes");
}

/// A TLS connection idle past the proxy's idle grace sheds its buffers
/// (its ciphertext buffer included); later requests are served whole.
#[test]
fn tls_requests_after_idle_are_served_whole() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .tls_listener(SERVER_TLS)
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut tls = connect(proxy.tls_addr.unwrap(), "localhost");
    for i in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let long = "v".repeat(3000 * (i + 1));
        let req = crate::client::request("GET", &format!("/idle{i}"), &[("X-Long", &long)], b"");
        let (status, head, body) = roundtrip(&mut tls, &req);
        assert_eq!(status, 200, "{head}");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!("target /idle{i}")), "{body}");
    }
}
