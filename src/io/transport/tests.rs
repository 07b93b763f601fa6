//! A `Transport` pair on loopback: plaintext both ways over TLS, and the
//! server side's handshake outcome, reported once, passed or failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Transport;
use crate::io::{connect, run_worker, spawn, Listener};
use crate::tls::{self, CertKeyPaths, TlsListenConfig};

const WAIT: Duration = Duration::from_secs(5);

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

fn server_config() -> Arc<rustls::ServerConfig> {
    tls::load_server_config(&TlsListenConfig {
        default: CertKeyPaths {
            cert: cert("server.pem"),
            key: cert("server.key"),
        },
        sni: Vec::new(),
    })
    .unwrap()
}

/// Reads from `t` until `buf` holds `want` bytes or the stream ends.
async fn read_to(t: &mut Transport, buf: &mut Vec<u8>, want: usize) {
    while buf.len() < want {
        if t.read(buf, Some(WAIT)).await.unwrap() == 0 {
            return;
        }
    }
}

/// Runs a TLS server on loopback and a client that checks the name
/// `name`; returns the server's handshake outcomes (first take, second
/// take) and whether the client got its answer.
fn exchange(name: &str) -> (Option<bool>, Option<bool>, bool) {
    let name = tls::server_name(name).unwrap();
    run_worker(async move {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr();
        let server = spawn(async move {
            let conn = listener.accept().await.unwrap();
            let mut t = Transport::server(conn, server_config(), 4096).unwrap();
            assert!(t.is_tls());
            let mut buf = Vec::new();
            // Ends with "ping", or with an error or end of stream when
            // the client refused the certificate.
            let got = loop {
                match t.read(&mut buf, Some(WAIT)).await {
                    Ok(0) | Err(_) => break false,
                    Ok(_) if buf.len() >= 4 => break true,
                    Ok(_) => {}
                }
            };
            let outcome = t.take_handshake_outcome();
            if got {
                assert_eq!(buf, b"ping");
                let (res, _) = t.write_all(b"pong".to_vec(), 0..4, Some(WAIT)).await;
                res.unwrap();
            }
            (outcome, t.take_handshake_outcome())
        });
        let ca = tls::load_client_config(&cert("ca.pem")).unwrap();
        let conn = connect(addr, WAIT).await.unwrap();
        let answered = match Transport::client(conn, ca, name, 4096, WAIT).await {
            Ok(mut t) => {
                let (res, _) = t.write_all(b"ping".to_vec(), 0..4, Some(WAIT)).await;
                res.unwrap();
                let mut buf = Vec::new();
                read_to(&mut t, &mut buf, 4).await;
                assert_eq!(buf, b"pong");
                true
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                false
            }
        };
        let (first, second) = server.await.unwrap();
        (first, second, answered)
    })
}

#[test]
fn tls_both_ways_and_the_handshake_is_reported_once() {
    assert_eq!(exchange("localhost"), (Some(true), None, true));
}

#[test]
fn a_refused_certificate_is_a_failed_handshake_on_both_sides() {
    assert_eq!(exchange("other.test"), (Some(false), None, false));
}

#[test]
fn plain_transport_reads_and_writes_the_socket() {
    run_worker(async {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr();
        let server = spawn(async move {
            let mut t = Transport::plain(listener.accept().await.unwrap());
            let mut buf = Vec::new();
            read_to(&mut t, &mut buf, 5).await;
            assert_eq!(t.take_handshake_outcome(), None);
            buf
        });
        let mut t = Transport::plain(connect(addr, WAIT).await.unwrap());
        assert!(!t.is_tls());
        let (res, _) = t.write_all(b"xhellox".to_vec(), 1..6, Some(WAIT)).await;
        res.unwrap();
        assert_eq!(server.await.unwrap(), b"hello");
    });
}
