//! TLS to backends (`tls = true`, `tls_ca`, `tls_server_name`): requests
//! reach a TLS backend, its connections are pooled and reused, bodies go
//! both ways, and a certificate that does not match the name is a 502.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use ringlb::tls::{CertKeyPaths, TlsListenConfig};
use rustls::{ServerConnection, StreamOwned};

use crate::client::{checksum, get, pattern, request};
use crate::harness::Proxy;

fn cert_path(file: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/certs")).join(file)
}

/// A keep-alive HTTPS backend with the `localhost`/`127.0.0.1` certificate:
/// answers 200 with `saw <request line> body <n>`.
struct TlsBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<(String, usize)>>>,
}

impl TlsBackend {
    fn start() -> TlsBackend {
        let config = ringlb::tls::load_server_config(&TlsListenConfig {
            default: CertKeyPaths {
                cert: cert_path("server.pem"),
                key: cert_path("server.key"),
            },
            sni: Vec::new(),
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (conns, reqs) = (connections.clone(), requests.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                conns.fetch_add(1, Ordering::SeqCst);
                let (config, reqs) = (config.clone(), reqs.clone());
                thread::spawn(move || {
                    let _ = serve(stream, config, &reqs);
                });
            }
        });
        TlsBackend {
            addr,
            connections,
            requests,
        }
    }
}

fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    reqs: &Mutex<Vec<(String, usize)>>,
) -> io::Result<()> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, stream);
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tls.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        tls.read_exact(&mut body)?;
        let line = head.lines().next().unwrap_or("").to_string();
        reqs.lock().unwrap().push((line.clone(), len));
        if head
            .to_ascii_lowercase()
            .contains("\r\nupgrade: echo-proto")
        {
            tls.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n",
            )?;
            tls.flush()?;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let n = tls.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                tls.write_all(&chunk[..n])?;
                tls.flush()?;
            }
        }
        let text = format!("saw {line} body {len}\n");
        write!(
            tls,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        tls.flush()?;
    }
}

fn proxy_to(backend: &TlsBackend, extra: &[&str]) -> Proxy {
    let ca = format!("tls_ca = \"{}\"", cert_path("ca.pem").display());
    let mut lines = vec!["tls = true", ca.as_str()];
    lines.extend_from_slice(extra);
    Proxy::builder()
        .upstream("app", &[backend.addr], &lines)
        .start()
}

#[test]
fn requests_reach_a_tls_backend_over_one_pooled_connection() {
    let backend = TlsBackend::start();
    let proxy = proxy_to(&backend, &[]);
    let mut c = proxy.client();
    for i in 0..5 {
        let r = c.roundtrip(&get(&format!("/r{i}")));
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(r.body_str(), format!("saw GET /r{i} HTTP/1.1 body 0\n"));
    }
    let big = pattern(300_000);
    let r = c.roundtrip(&request("POST", "/up", &[], &big));
    assert_eq!(r.body_str(), "saw POST /up HTTP/1.1 body 300000\n");
    assert_eq!(backend.requests.lock().unwrap().len(), 6);
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "the TLS connection was not pooled"
    );
}

#[test]
fn the_server_name_is_checked() {
    let backend = TlsBackend::start();
    // The certificate is for localhost and 127.0.0.1, not other.test.
    let wrong = proxy_to(&backend, &["tls_server_name = \"other.test\""]);
    let r = wrong.client().roundtrip(&get("/"));
    assert_eq!(r.status, 502, "{}", r.body_str());
    assert!(backend.requests.lock().unwrap().is_empty());

    let right = proxy_to(&backend, &["tls_server_name = \"localhost\""]);
    assert_eq!(right.client().roundtrip(&get("/")).status, 200);
}

#[test]
fn upgrade_to_a_tls_upstream_tunnels_both_ways() {
    let backend = TlsBackend::start();
    let proxy = proxy_to(&backend, &[]);
    let req = request(
        "GET",
        "/ws",
        &[("Connection", "Upgrade"), ("Upgrade", "echo-proto")],
        b"",
    );
    let mut c = proxy.client();
    let r = c.roundtrip(&req);
    assert_eq!(r.status, 101, "{}", r.body_str());
    for msg in [&b"hello"[..], &pattern(256 * 1024)[..]] {
        c.send(msg);
        let back = c.wire.read_exact_n(msg.len()).unwrap();
        assert_eq!(checksum(&back), checksum(msg));
    }
    c.wire.stream.shutdown(std::net::Shutdown::Write).unwrap();
    c.assert_closed();
}

#[test]
fn http_health_checks_run_over_tls() {
    let backend = TlsBackend::start();
    // Unhealthy until a check passes: traffic flows only once the HTTPS
    // checks succeed.
    let proxy = proxy_to(
        &backend,
        &[
            "[upstreams.app.health]",
            "type = \"http\"",
            "interval = \"50ms\"",
            "start = \"unhealthy\"",
            "rise = 1",
        ],
    );
    assert!(crate::harness::wait_until(crate::harness::WAIT, || {
        proxy.client().roundtrip(&get("/app")).status == 200
    }));
    let seen = backend.requests.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(line, _)| line == "GET /health HTTP/1.1"),
        "{seen:?}"
    );
}

#[test]
fn tls_upstream_connections_leak_no_fds() {
    let backend = TlsBackend::start();
    let good = proxy_to(&backend, &["max_idle = 0"]);
    let bad = proxy_to(
        &backend,
        &[
            "max_idle = 0",
            "passive_fall = 0",
            "tls_server_name = \"other.test\"",
        ],
    );
    let scenario = || {
        assert_eq!(good.client().roundtrip(&get("/")).status, 200);
        assert_eq!(bad.client().roundtrip(&get("/")).status, 502);
    };
    scenario();
    let (good_fds, bad_fds) = (good.settled_fd_count(), bad.settled_fd_count());
    thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(scenario);
        }
    });
    good.assert_fds_return_to(good_fds, "TLS upstream connections");
    bad.assert_fds_return_to(bad_fds, "failed TLS upstream handshakes");
}
