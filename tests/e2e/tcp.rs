//! The L4 mode: `[[tcp]]` listeners relaying raw TCP to real TCP backends.
//! Bytes both ways with half-close, balancing and a retry on connect
//! failure, the PROXY protocol in and out, SNI routing on a real rustls
//! ClientHello, the session idle timeout, metrics and access log lines,
//! reloads that add and remove listeners, a graceful stop that drains
//! sessions, config errors, and no descriptor left behind.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::admin::{admin, parse_prometheus};
use crate::harness::{check_fails, free_port, wait_until, Proxy, ProxyBuilder, TempDir, WAIT};
use crate::reload::rewrite;

/// A raw TCP server on loopback: each connection handled by `handle` on
/// its own thread; counts connections.
struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let handle = Arc::new(handle);
        let count = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let handle = handle.clone();
                thread::spawn(move || handle(stream));
            }
        });
        RawServer { addr, accepted }
    }

    /// Reads until the client half-closes, then answers with a digest of
    /// what it read and `tag`, and closes.
    fn digest(tag: &'static str) -> RawServer {
        RawServer::start(move |mut s| {
            let mut all = Vec::new();
            if s.read_to_end(&mut all).is_ok() {
                let reply = format!("{tag} {} {}", all.len(), checksum(&all));
                let _ = s.write_all(reply.as_bytes());
            }
        })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// A proxy with the default HTTP listener and upstreams, plus `[[tcp]]`
/// tables given with `TCPPORT` standing for a free port; returns the
/// proxy and that port's address.
fn with_tcp(builder: ProxyBuilder, tcp: &str) -> (Proxy, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = builder
        .toml(&tcp.replace("TCPPORT", &addr.port().to_string()))
        .start();
    (proxy, addr)
}

/// Sends `payload`, half-closes, and returns everything the other end
/// sent back until it closed.
fn exchange(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_all(&mut s)
}

fn metrics_text(proxy: &Proxy) -> String {
    admin(proxy, "GET", "/metrics").body_str()
}

/// One series' value (`name{labels}` exactly as exposed), 0 when absent.
fn series(proxy: &Proxy, name: &str, labels: &str) -> f64 {
    parse_prometheus(&metrics_text(proxy))
        .get(&(name.to_string(), labels.to_string()))
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn bytes_go_both_ways_whole_and_a_half_close_is_passed_on() {
    let backend = RawServer::digest("got");
    let (proxy, tcp) = with_tcp(
        Proxy::builder()
            .admin()
            .upstream("app", &[backend.addr], &[]),
        "[[tcp]]\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"app\"",
    );
    // 4 MiB of varied bytes: more than any buffer, in many reads.
    let payload: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let reply = exchange(tcp, &payload);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        format!("got {} {}", payload.len(), checksum(&payload)),
        "the backend saw every byte, then the half-close, and its answer came back"
    );

    // A server that speaks first (SMTP, a database greeting).
    let greeter = RawServer::start(|mut s| {
        let _ = s.write_all(b"220 hello\r\n");
        let mut line = [0u8; 6];
        if s.read_exact(&mut line).is_ok() {
            let _ = s.write_all(&line);
        }
    });
    let (proxy2, tcp2) = with_tcp(
        Proxy::builder()
            .admin()
            .upstream("mail", &[greeter.addr], &[]),
        "[[tcp]]\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"mail\"",
    );
    let mut s = TcpStream::connect(tcp2).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut greeting = [0u8; 11];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(
        read_all(&mut s),
        b"QUIT\r\n",
        "then the backend's close ends the session"
    );

    let listener = format!("listener=\"{tcp}\"");
    assert!(wait_until(WAIT, || series(
        &proxy,
        "ringlb_tcp_connections_open",
        &listener
    ) == 0.0));
    assert_eq!(
        series(
            &proxy,
            "ringlb_tcp_bytes_total",
            &format!("{listener},direction=\"from_client\"")
        ),
        payload.len() as f64
    );
    assert_eq!(
        series(
            &proxy,
            "ringlb_tcp_bytes_total",
            &format!("{listener},direction=\"to_client\"")
        ),
        reply.len() as f64
    );
    assert_eq!(
        series(
            &proxy,
            "ringlb_tcp_connections_total",
            &format!("{listener},upstream=\"app\"")
        ),
        1.0
    );
    drop(proxy2);
}

#[test]
fn sessions_are_balanced_and_a_refused_connect_is_retried_on_another_backend() {
    let a = RawServer::digest("a");
    let b = RawServer::digest("b");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (proxy, tcp) = with_tcp(
        Proxy::builder()
            .admin()
            .server("access_log = { path = \"access.log\" }")
            .upstream(
                "app",
                &[a.addr, dead, b.addr],
                &["retry = { attempts = 3 }", "passive_fall = 1000"],
            ),
        "[[tcp]]\nname = \"db\"\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"app\"",
    );
    for i in 0..30 {
        let reply = String::from_utf8(exchange(tcp, b"x")).unwrap();
        let sum = checksum(b"x");
        assert!(
            reply == format!("a 1 {sum}") || reply == format!("b 1 {sum}"),
            "session {i}: {reply:?}"
        );
    }
    assert_eq!(
        a.accepted() + b.accepted(),
        30,
        "every session reached a live backend"
    );
    assert!(
        a.accepted() >= 5 && b.accepted() >= 5,
        "round robin: a {} b {}",
        a.accepted(),
        b.accepted()
    );
    assert_eq!(
        series(
            &proxy,
            "ringlb_tcp_connections_total",
            "listener=\"db\",upstream=\"app\""
        ),
        30.0
    );
    assert_eq!(
        series(
            &proxy,
            "ringlb_tcp_refused_total",
            "listener=\"db\",reason=\"connect_failed\""
        ),
        0.0
    );

    // Every backend down: the session is closed and counted.
    drop(proxy);
    let (proxy, tcp) = with_tcp(
        Proxy::builder()
            .admin()
            .upstream("app", &[dead], &["retry = { attempts = 2 }"]),
        "[[tcp]]\nname = \"gone\"\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"app\"",
    );
    assert_eq!(exchange(tcp, b"x"), b"", "closed without a byte");
    assert!(wait_until(WAIT, || {
        series(
            &proxy,
            "ringlb_tcp_refused_total",
            "listener=\"gone\",reason=\"connect_failed\"",
        ) == 1.0
    }));
}

#[test]
fn ip_hash_keeps_each_client_address_on_one_backend() {
    let servers: Vec<RawServer> = (0..3)
        .map(|_| {
            RawServer::start(|mut s| {
                let addr = s.local_addr().unwrap();
                let _ = s.write_all(addr.to_string().as_bytes());
            })
        })
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let (_proxy, tcp) = with_tcp(
        Proxy::builder().upstream("app", &addrs, &["strategy = \"ip_hash\""]),
        "[[tcp]]\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"app\"",
    );
    let mut seen_backends = std::collections::BTreeSet::new();
    for source in 2..10u8 {
        let mut first = None;
        for _ in 0..4 {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket
                .bind(&SocketAddr::from(([127, 0, 0, source], 0)).into())
                .unwrap();
            socket.connect(&tcp.into()).unwrap();
            let mut s: TcpStream = socket.into();
            let got = String::from_utf8(read_all(&mut s)).unwrap();
            assert_eq!(
                *first.get_or_insert_with(|| got.clone()),
                got,
                "source 127.0.0.{source}"
            );
        }
        seen_backends.insert(first.unwrap());
    }
    assert!(
        seen_backends.len() >= 2,
        "8 addresses over 3 backends: {seen_backends:?}"
    );
}

#[test]
fn proxy_protocol_comes_in_and_goes_out() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let backend = RawServer::start(move |mut s| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        // The header, then the client's bytes.
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Ok(Some(header)) = ringlb::proxy_protocol::parse(&buf) {
                if buf.len() >= header.len + 5 {
                    let source = header
                        .addresses
                        .map(|(src, _)| src.to_string())
                        .unwrap_or_default();
                    let rest = String::from_utf8_lossy(&buf[header.len..]).into_owned();
                    record
                        .lock()
                        .unwrap()
                        .push(format!("{:?} {source} {rest}", header.version));
                    let _ = s.write_all(b"ok");
                    break;
                }
            }
        }
    });
    let (_proxy, tcp) = with_tcp(
        Proxy::builder().upstream("app", &[backend.addr], &["send_proxy_protocol = \"v2\""]),
        "[[tcp]]\nlisten = { addr = \"127.0.0.1:TCPPORT\", proxy_protocol = { accept = true, trusted = [\"127.0.0.0/8\"] } }\nupstream = \"app\"",
    );
    let mut s = TcpStream::connect(tcp).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 50000 5432\r\nhello")
        .unwrap();
    assert_eq!(read_all(&mut s), b"ok");
    assert_eq!(*seen.lock().unwrap(), ["V2 192.0.2.7:50000 hello"]);

    // Without the header, the listener closes the connection unread.
    let mut s = TcpStream::connect(tcp).unwrap();
    s.write_all(b"hello without a header\r\n").unwrap();
    assert_eq!(read_all(&mut s), b"");
    assert_eq!(backend.accepted(), 1);
}

/// The first flight of a real rustls client for `name`.
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn sni_routes_choose_the_upstream_and_pass_the_hello_on_untouched() {
    // (backend, the bytes it received)
    type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let received: Received = Arc::default();
    let recorder = |tag: &'static str| {
        let received = received.clone();
        RawServer::start(move |mut s| {
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            received.lock().unwrap().push((tag.to_string(), all));
            let _ = s.write_all(tag.as_bytes());
        })
    };
    let (db, web, other) = (recorder("db"), recorder("web"), recorder("other"));
    let (proxy, tcp) = with_tcp(
        Proxy::builder()
            .admin()
            .server("access_log = { path = \"access.log\", format = \"json\" }")
            .upstream("db", &[db.addr], &[])
            .upstream("web", &[web.addr], &[])
            .upstream("other", &[other.addr], &[]),
        "[[tcp]]\nname = \"tls\"\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"other\"\n\
         client_hello_timeout = \"1s\"\n\
         sni_routes = [{ sni = \"db.example.com\", upstream = \"db\" }, { sni = \"*.example.com\", upstream = \"web\" }]",
    );
    for (name, want) in [
        ("db.example.com", "db"),
        ("WWW.example.com", "web"),
        ("example.org", "other"),
        ("192.0.2.1", "other"),
    ] {
        let hello = client_hello(name);
        // In two pieces: the proxy reads until the hello is whole.
        let mut s = TcpStream::connect(tcp).unwrap();
        s.write_all(&hello[..7]).unwrap();
        thread::sleep(Duration::from_millis(50));
        s.write_all(&hello[7..]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(String::from_utf8(read_all(&mut s)).unwrap(), want, "{name}");
        let got = received.lock().unwrap().pop().unwrap();
        assert_eq!(
            got,
            (want.to_string(), hello),
            "{name}: the hello arrives as sent"
        );
    }
    // Not TLS: closed, nothing reaches a backend.
    assert_eq!(exchange(tcp, b"GET / HTTP/1.1\r\n\r\n"), b"");
    // Silent past client_hello_timeout: closed.
    let mut s = TcpStream::connect(tcp).unwrap();
    assert_eq!(read_all(&mut s), b"");
    assert!(received.lock().unwrap().is_empty());
    assert!(wait_until(WAIT, || {
        series(
            &proxy,
            "ringlb_tcp_refused_total",
            "listener=\"tls\",reason=\"bad_client_hello\"",
        ) == 2.0
    }));
    // The access log names the SNI and the upstream.
    let log = proxy.dir().join("access.log");
    assert!(wait_until(WAIT, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        >= 6));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let db_line = lines
        .iter()
        .find(|l| l["sni"] == "db.example.com")
        .expect("the db session's line");
    assert_eq!(db_line["protocol"], "tcp");
    assert_eq!(db_line["listener"], "tls");
    assert_eq!(db_line["upstream"], "db");
    assert_eq!(db_line["backend"], db.addr.to_string());
    assert_eq!(db_line["status"], "ok");
    assert_eq!(db_line["bytes_sent"], 2);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["status"] == "bad_client_hello")
            .count(),
        2
    );

    // Without a default upstream, an unknown name is refused.
    drop(proxy);
    let (proxy, tcp) = with_tcp(
        Proxy::builder().admin().upstream("db", &[db.addr], &[]),
        "[[tcp]]\nname = \"strict\"\nlisten = \"127.0.0.1:TCPPORT\"\n\
         sni_routes = [{ sni = \"db.example.com\", upstream = \"db\" }]",
    );
    assert_eq!(exchange(tcp, &client_hello("web.example.com")), b"");
    assert!(wait_until(WAIT, || {
        series(
            &proxy,
            "ringlb_tcp_refused_total",
            "listener=\"strict\",reason=\"no_sni_route\"",
        ) == 1.0
    }));
}

#[test]
fn a_quiet_session_is_closed_at_the_idle_timeout_but_a_one_way_stream_is_not() {
    // Streams 15 chunks 200 ms apart (3 s, past the 1 s idle timeout)
    // while the client sends nothing after its first line.
    let streamer = RawServer::start(|mut s| {
        let mut first = [0u8; 5];
        if s.read_exact(&mut first).is_err() {
            return;
        }
        if &first == b"quiet" {
            // Holds the connection open and silent.
            let _ = s.read_to_end(&mut Vec::new());
            return;
        }
        for i in 0..15 {
            if s.write_all(format!("chunk{i:02}\n").as_bytes()).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let (proxy, tcp) = with_tcp(
        Proxy::builder().admin().upstream("app", &[streamer.addr], &[]),
        "[[tcp]]\nname = \"s\"\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"app\"\nidle_timeout = \"1s\"",
    );
    let mut stream = TcpStream::connect(tcp).unwrap();
    stream.write_all(b"start").unwrap();
    let got = read_all(&mut stream);
    assert_eq!(got.len(), 15 * 8, "{}", String::from_utf8_lossy(&got));

    let mut quiet = TcpStream::connect(tcp).unwrap();
    quiet.write_all(b"quiet").unwrap();
    assert_eq!(
        read_all(&mut quiet),
        b"",
        "closed by the proxy, not by the read timeout"
    );
    assert!(wait_until(WAIT, || series(
        &proxy,
        "ringlb_tcp_connections_open",
        "listener=\"s\""
    ) == 0.0));
}

#[test]
fn a_reload_adds_and_removes_tcp_listeners_and_open_sessions_drain() {
    // Echoes each line back, until the client closes.
    let echo = RawServer::start(|mut s| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let first = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let second = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[echo.addr], &[])
        .toml(&format!(
            "[[tcp]]\nname = \"one\"\nlisten = \"{first}\"\nupstream = \"app\""
        ))
        .start();
    let mut open = TcpStream::connect(first).unwrap();
    open.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = [0u8; 4];
    open.write_all(b"abc\n").unwrap();
    open.read_exact(&mut line).unwrap();

    rewrite(&proxy, |t| {
        t.replace(
            &format!("name = \"one\"\nlisten = \"{first}\""),
            &format!("name = \"two\"\nlisten = \"{second}\""),
        )
    });
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(
        wait_until(
            WAIT,
            || matches!(TcpStream::connect(first), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        ),
        "the removed listener stops accepting"
    );
    let mut new = TcpStream::connect(second).unwrap();
    new.set_read_timeout(Some(WAIT)).unwrap();
    new.write_all(b"new\n").unwrap();
    new.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"new\n");
    // The session on the removed listener goes on.
    open.write_all(b"old\n").unwrap();
    open.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"old\n");
    let status = crate::admin::status(&proxy);
    assert_eq!(status["tcp"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(status["tcp"][0]["name"], "two");
    assert_eq!(status["tcp"][0]["local"], second.to_string());
    assert_eq!(status["tcp"][0]["upstream"], "app");
    let text = metrics_text(&proxy);
    assert!(
        text.contains("ringlb_tcp_connections_open{listener=\"one\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ringlb_tcp_connections_open{listener=\"two\"} 1"),
        "{text}"
    );
}

#[test]
fn a_graceful_stop_waits_for_open_sessions() {
    let echo = RawServer::start(|mut s| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let (proxy, tcp) = with_tcp(
        Proxy::builder()
            .server("shutdown_timeout = \"20s\"")
            .upstream("app", &[echo.addr], &[]),
        "[[tcp]]\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"app\"",
    );
    let mut s = TcpStream::connect(tcp).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = [0u8; 4];
    s.write_all(b"one\n").unwrap();
    s.read_exact(&mut line).unwrap();
    proxy.signal("TERM");
    assert!(
        wait_until(WAIT, || TcpStream::connect(tcp).is_err()),
        "no new sessions after SIGTERM"
    );
    thread::sleep(Duration::from_millis(300));
    assert!(
        proxy.try_status().is_none(),
        "still running for the open session"
    );
    s.write_all(b"two\n").unwrap();
    s.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"two\n");
    drop(s);
    assert_eq!(proxy.wait_for_exit().code(), Some(0));
}

#[test]
fn sessions_leave_no_descriptor_behind() {
    let backend = RawServer::digest("got");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (proxy, tcp) = with_tcp(
        Proxy::builder()
            .admin()
            .upstream("app", &[backend.addr], &[])
            .upstream("down", &[dead], &[]),
        "[[tcp]]\nlisten = \"127.0.0.1:TCPPORT\"\nupstream = \"app\"\n\
         sni_routes = [{ sni = \"down.example.com\", upstream = \"down\" }]",
    );
    let baseline = proxy.settled_fd_count();
    for _ in 0..20 {
        // Not TLS (closed before any connect), refused at connect, and
        // relayed to the default upstream.
        assert_eq!(exchange(tcp, b"not tls"), b"");
        assert_eq!(exchange(tcp, &client_hello("down.example.com")), b"");
        assert_eq!(
            String::from_utf8(exchange(tcp, &client_hello("app.example.com")))
                .unwrap()
                .split(' ')
                .next(),
            Some("got")
        );
    }
    proxy.assert_fds_return_to(baseline, "tcp sessions");
}

#[test]
fn check_names_the_key_of_a_bad_tcp_table() {
    let dir = TempDir::new();
    let base = "[server]\nlisten = [\"127.0.0.1:18080\"]\n[[routes]]\nupstream = \"app\"\n\
                [upstreams.app]\nbackends = [{ addr = \"127.0.0.1:9\" }]\n\
                [upstreams.sticky]\nbackends = [{ addr = \"127.0.0.1:9\" }]\nstrategy = \"sticky_cookie\"\n";
    for (tcp, key, says) in [
        ("[[tcp]]\nlisten = \"127.0.0.1:18081\"\nupstream = \"nope\"", "tcp[0].upstream", "nope"),
        ("[[tcp]]\nlisten = \"127.0.0.1:18080\"\nupstream = \"app\"", "tcp[0].listen", "127.0.0.1:18080"),
        ("[[tcp]]\nlisten = \"127.0.0.1:18081\"\nupstream = \"sticky\"", "tcp[0].upstream", "sticky_cookie"),
        ("[[tcp]]\nlisten = \"127.0.0.1:18081\"", "tcp[0].upstream", "sni_routes"),
        (
            "[[tcp]]\nlisten = { addr = \"127.0.0.1:18081\", tls = { cert = \"a\", key = \"b\" } }\nupstream = \"app\"",
            "tcp[0].listen.tls",
            "passes through",
        ),
        (
            "[[tcp]]\nlisten = \"127.0.0.1:18081\"\nupstream = \"app\"\nsni_routes = [{ sni = \"a b\", upstream = \"app\" }]",
            "tcp[0].sni_routes[0].sni",
            "DNS name",
        ),
        ("[[tcp]]\nlisten = \"127.0.0.1:18081\"\nupstream = \"app\"\nidle_timeout = \"0s\"", "tcp[0].idle_timeout", ""),
        (
            "[[tcp]]\nlisten = \"127.0.0.1:18081\"\nupstream = \"app\"\n[[tcp]]\nlisten = \"127.0.0.1:18082\"\nname = \"127.0.0.1:18081\"\nupstream = \"app\"",
            "tcp[1].name",
            "taken",
        ),
        ("[[tcp]]\nlisten = \"127.0.0.1:18081\"\nupstream = \"app\"\nport = 1", "tcp", "port"),
    ] {
        let (path, all) = check_fails(&dir, &format!("{base}{tcp}\n"));
        let line = all
            .lines()
            .find(|l| l.starts_with(&path))
            .unwrap_or_else(|| panic!("no line naming the file in:\n{all}"));
        // file:line:col: key: message
        let after_location = line.splitn(4, ':').nth(3).unwrap_or("");
        assert!(after_location.trim_start().starts_with(key), "want key {key} in {line:?}");
        assert!(line.contains(says), "want {says:?} in {line:?}");
    }

    // A config of [[tcp]] listeners alone: no HTTP listener, no routes.
    let path = dir.write(
        "l4.toml",
        "[server]\nlisten = []\n[upstreams.app]\nbackends = [{ addr = \"127.0.0.1:9\" }]\n\
         [[tcp]]\nlisten = \"127.0.0.1:18081\"\nupstream = \"app\"\n",
    );
    let out = crate::harness::run_bin(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
