//! `proxy_protocol = { accept = true, trusted = [...] }` on a listener: a
//! real PROXY v1 or v2 header sent by the test over loopback makes its
//! source the client address (X-Forwarded-For at the backend, the access
//! log); untrusted peers, malformed or truncated headers and a header that
//! never completes are closed unanswered and counted; a TLS listener
//! reads the header before the handshake; a reload turns it off.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::admin::{admin, metric, parse_prometheus};
use crate::backend::Backend;
use crate::client::{get, Client, Headers};
use crate::harness::{wait_until, Proxy, WAIT};
use crate::reload::rewrite;

const ACCEPT_LOOPBACK: &str =
    "proxy_protocol = { accept = true, trusted = [\"127.0.0.0/8\"], timeout = \"1s\" }";

fn v1(source: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 {port} 80\r\n").into_bytes()
}

/// A v2 PROXY header from `source` to `[::1]:443` with one AUTHORITY TLV.
fn v2_ipv6(source: [u8; 16], port: u16) -> Vec<u8> {
    let mut h = ringlb::proxy_protocol::V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36 + 3 + 5]);
    h.extend_from_slice(&source);
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(&[0x02, 0, 5]);
    h.extend_from_slice(b"a.com");
    h
}

fn v2_local() -> Vec<u8> {
    let mut h = Vec::new();
    ringlb::proxy_protocol::encode_v2(None, &mut h);
    h
}

/// A client connection whose first bytes are `header`.
/// A proxy with an admin listener whose listener accepts PROXY headers
/// from loopback, in front of `backend`.
fn accepting(backend: &Backend) -> crate::harness::ProxyBuilder {
    Proxy::builder()
        .admin()
        .listen_fields(ACCEPT_LOOPBACK)
        .upstream("app", &[backend.addr], &[])
}

fn client_with(proxy: &Proxy, header: &[u8]) -> Client {
    let mut c = proxy.client();
    c.send(header);
    c
}

fn rejections(proxy: &Proxy, reason: &str) -> f64 {
    let text = admin(proxy, "GET", "/metrics").body_str();
    parse_prometheus(&text)
        .get(&(
            "ringlb_proxy_protocol_rejections_total".to_string(),
            format!("reason=\"{reason}\""),
        ))
        .copied()
        .unwrap_or(0.0)
}

/// Reads until the proxy closes the connection; what it sent, or `None`
/// if the read failed otherwise (a reset counts as closed).
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the proxy did not close the connection: {e}"),
        }
    }
}

fn access_log(proxy: &Proxy) -> Vec<String> {
    fs::read_to_string(proxy.dir().join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn v1_and_v2_sources_become_the_client_address() {
    let backend = Backend::echo();
    let proxy = accepting(&backend)
        .server("access_log = { path = \"access.log\" }")
        .start();

    // v1, and a second request on the same connection keeps the address.
    let mut c = client_with(&proxy, &v1("192.0.2.7", 50000));
    assert_eq!(c.roundtrip(&get("/one")).status, 200);
    assert_eq!(c.roundtrip(&get("/two")).status, 200);
    // v2 over IPv6, the header arriving in two pieces.
    let source = "2001:db8::9"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let header = v2_ipv6(source, 40000);
    let mut c = proxy.client();
    c.send(&header[..10]);
    thread::sleep(Duration::from_millis(100));
    c.send(&header[10..]);
    assert_eq!(c.roundtrip(&get("/three")).status, 200);
    // v2 LOCAL: the peer's own address stands.
    let mut c = client_with(&proxy, &v2_local());
    assert_eq!(c.roundtrip(&get("/four")).status, 200);

    let xff: Vec<String> = backend
        .requests()
        .iter()
        .filter(|r| !r.is_health_check())
        .map(|r| r.headers_named("x-forwarded-for").join(","))
        .collect();
    assert_eq!(xff, ["192.0.2.7", "192.0.2.7", "2001:db8::9", "127.0.0.1"]);

    assert!(
        wait_until(WAIT, || access_log(&proxy).len() >= 4),
        "{:?}",
        access_log(&proxy)
    );
    // Two workers write their own lines, so the file's order is not the
    // requests' order; each line is found by its request.
    let lines = access_log(&proxy);
    for (path, client) in [
        ("/one", "192.0.2.7"),
        ("/two", "192.0.2.7"),
        ("/three", "2001:db8::9"),
        ("/four", "127.0.0.1"),
    ] {
        let request = format!("\"GET {path} HTTP/1.1\" 200");
        let line = lines
            .iter()
            .find(|l| l.contains(&request))
            .unwrap_or_else(|| panic!("no access log line for {path}: {lines:?}"));
        assert_eq!(line.split(' ').next(), Some(client), "{line}");
    }
    assert!(metric(&proxy, "ringlb_proxy_protocol_headers_total") >= 3.0);
}

#[test]
fn untrusted_malformed_truncated_and_slow_headers_are_closed_and_counted() {
    let backend = Backend::echo();
    let proxy = accepting(&backend).start();
    let malformed = rejections(&proxy, "malformed");
    let cases: [&[u8]; 4] = [
        // No header at all: a plain request.
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 80\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 not-an-address 127.0.0.1 1 80\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\0\x0c",
    ];
    for bytes in cases {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        let _ = s.write_all(bytes);
        assert_eq!(
            read_until_closed(&mut s),
            b"",
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // Truncated: the client ends its stream inside the header.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 ").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    assert!(wait_until(WAIT, || rejections(&proxy, "malformed") >= malformed + 5.0));

    // Slowloris: half a header, then nothing; closed at the 1 s timeout.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7").unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    assert!(wait_until(WAIT, || rejections(&proxy, "timeout") >= 1.0));
    assert_eq!(backend.request_count(), 0, "nothing reached the backend");
}

#[test]
fn a_peer_outside_trusted_is_closed_unread() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .listen_fields("proxy_protocol = { accept = true, trusted = [\"10.0.0.0/8\"] }")
        .upstream("app", &[backend.addr], &[])
        .start();
    let before = rejections(&proxy, "untrusted");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    // The proxy may close before the bytes are all written: ignore a
    // failed write, what matters is that nothing is answered.
    let _ = s.write_all(&[v1("192.0.2.7", 1), get("/")].concat());
    assert_eq!(read_until_closed(&mut s), b"");
    assert!(wait_until(WAIT, || rejections(&proxy, "untrusted") > before));
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn a_tls_listener_reads_the_header_before_the_handshake() {
    let backend = Backend::echo();
    let tls_table = "{ cert = \"CERTS/server.pem\", key = \"CERTS/server.key\" }, \
                     proxy_protocol = { accept = true, trusted = [\"127.0.0.1\"] }";
    let proxy = Proxy::builder()
        .tls_listener(tls_table)
        .upstream("app", &[backend.addr], &[])
        .start();
    let addr: SocketAddr = proxy.tls_addr.unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(&v1("198.51.100.4", 1234)).unwrap();
    let config = ringlb::tls::load_client_config(&crate::tls::certs().join("ca.pem")).unwrap();
    let name = ServerName::try_from("localhost".to_string()).unwrap();
    let conn = ClientConnection::new(Arc::clone(&config), name).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(&get("/tls")).unwrap();
    let (status, _, _) = crate::tls::read_response(&mut tls).unwrap();
    assert_eq!(status, 200);
    let seen = backend.requests();
    assert_eq!(seen[0].headers_named("x-forwarded-for"), ["198.51.100.4"]);
    assert_eq!(seen[0].headers_named("x-forwarded-proto"), ["https"]);
}

/// The status of `GET path` on a new connection starting with `header`;
/// `None` if the proxy closed it instead.
fn try_get(proxy: &Proxy, header: &[u8], path: &str) -> Option<u16> {
    let mut c = Client::try_connect(proxy.addr).ok()?;
    c.try_send(header).ok()?;
    c.try_read_response_after(&get(path)).ok().map(|r| r.status)
}

#[test]
fn a_reload_turns_proxy_protocol_off_and_on() {
    let backend = Backend::echo();
    let proxy = accepting(&backend).start();
    let mut c = client_with(&proxy, &v1("192.0.2.1", 1));
    assert_eq!(c.roundtrip(&get("/")).status, 200);

    rewrite(&proxy, |t| t.replace("accept = true", "accept = false"));
    assert_eq!(admin(&proxy, "POST", "/reload").status, 200);
    assert!(wait_until(WAIT, || try_get(&proxy, b"", "/plain") == Some(200)));
    let xff = backend
        .requests()
        .last()
        .unwrap()
        .headers_named("x-forwarded-for")
        .join(",");
    assert_eq!(xff, "127.0.0.1");

    rewrite(&proxy, |t| t.replace("accept = false", "accept = true"));
    assert_eq!(admin(&proxy, "POST", "/reload").status, 200);
    assert!(wait_until(WAIT, || {
        try_get(&proxy, &v1("192.0.2.2", 1), "/again") == Some(200)
            && backend
                .requests()
                .last()
                .unwrap()
                .headers_named("x-forwarded-for")
                == ["192.0.2.2"]
    }));
}

/// A backend that expects a PROXY header on each connection, then answers
/// HTTP/1.1 requests on it with `200 ok`; it records each connection's
/// header (`None` when the header was malformed).
struct ProxyBackend {
    addr: SocketAddr,
    headers: Arc<std::sync::Mutex<Vec<Option<ringlb::proxy_protocol::Header>>>>,
}

impl ProxyBackend {
    fn start() -> ProxyBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let headers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = headers.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                thread::spawn(move || serve_after_header(stream, &seen));
            }
        });
        ProxyBackend { addr, headers }
    }

    fn headers(&self) -> Vec<Option<ringlb::proxy_protocol::Header>> {
        self.headers.lock().unwrap().clone()
    }
}

fn serve_after_header(
    mut stream: TcpStream,
    seen: &std::sync::Mutex<Vec<Option<ringlb::proxy_protocol::Header>>>,
) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header = loop {
        match ringlb::proxy_protocol::parse(&buf) {
            Ok(Some(header)) => break header,
            Ok(None) => {}
            Err(_) => {
                seen.lock().unwrap().push(None);
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    buf.drain(..header.len);
    seen.lock().unwrap().push(Some(header));
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn send_proxy_protocol_v2_opens_one_connection_per_request_with_the_client_address() {
    let backend = ProxyBackend::start();
    let proxy = Proxy::builder()
        .listen_fields(ACCEPT_LOOPBACK)
        .upstream(
            "app",
            &[backend.addr],
            &[
                "send_proxy_protocol = \"v2\"",
                "health = { type = \"tcp\", interval = \"200ms\" }",
            ],
        )
        .start();
    let mut c = client_with(&proxy, &v1("192.0.2.9", 4321));
    assert_eq!(c.roundtrip(&get("/a")).status, 200);
    assert_eq!(c.roundtrip(&get("/b")).status, 200);
    // The TCP health checks send a v2 LOCAL header.
    assert!(wait_until(WAIT, || backend
        .headers()
        .iter()
        .any(|h| h.as_ref().is_some_and(|h| h.addresses.is_none()))));
    let headers = backend.headers();
    assert!(
        headers.iter().all(Option::is_some),
        "a malformed header: {headers:?}"
    );
    let from_client: Vec<(SocketAddr, SocketAddr)> = headers
        .iter()
        .flatten()
        .filter_map(|h| h.addresses)
        .collect();
    let want = ("192.0.2.9:4321".parse().unwrap(), proxy.addr);
    assert_eq!(from_client, [want, want], "one new connection per request");
    assert!(headers
        .iter()
        .flatten()
        .all(|h| h.version == ringlb::proxy_protocol::Version::V2));
}

#[test]
fn send_proxy_protocol_v1_carries_the_peer_address() {
    let backend = ProxyBackend::start();
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &["send_proxy_protocol = \"v1\""])
        .start();
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&get("/")).status, 200);
    let headers = backend.headers();
    let header = headers
        .iter()
        .flatten()
        .find(|h| h.addresses.is_some())
        .expect("a header");
    assert_eq!(header.version, ringlb::proxy_protocol::Version::V1);
    let (source, destination) = header.addresses.unwrap();
    assert_eq!(source.ip().to_string(), "127.0.0.1");
    assert_eq!(destination, proxy.addr);
}

#[test]
fn a_reload_changes_send_proxy_protocol() {
    let backend = ProxyBackend::start();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &["send_proxy_protocol = \"v1\""])
        .start();
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    rewrite(&proxy, |t| {
        t.replace(
            "send_proxy_protocol = \"v1\"",
            "send_proxy_protocol = \"v2\"",
        )
    });
    assert_eq!(admin(&proxy, "POST", "/reload").status, 200);
    assert!(wait_until(WAIT, || {
        try_get(&proxy, b"", "/") == Some(200)
            && backend.headers().last().is_some_and(|h| {
                h.as_ref()
                    .is_some_and(|h| h.version == ringlb::proxy_protocol::Version::V2)
            })
    }));
}
