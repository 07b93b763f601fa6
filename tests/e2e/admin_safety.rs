//! The admin listener against a hostile web page, a management network and
//! slow clients: cross-site and rebinding requests are refused, credentials
//! protect what they should, sources outside `allow` are refused, and slow
//! clients hold neither the listener nor `/healthz`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::admin::{admin, admin_with, metric, status};
use crate::backend::Backend;
use crate::client::{get, request, Client, Headers};
use crate::harness::{run_bin, wait_until, Proxy, TempDir, WAIT};

fn drained(proxy: &Proxy) -> bool {
    status(proxy)["upstreams"][0]["backends"][0]["draining"] == true
}

#[test]
fn cross_site_posts_and_foreign_hosts_are_refused() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    let drain = format!("/backends/app/{}/drain", backend.addr);
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    // What an HTML form on another site sends.
    let r = admin_with(
        &proxy,
        "POST",
        &drain,
        &[("Origin", "http://evil.example"), form],
    );
    assert_eq!(r.status, 403, "{}", r.body_str());
    // Without Origin, a form or text content type alone.
    for content_type in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
    ] {
        let r = admin_with(&proxy, "POST", &drain, &[("Content-Type", content_type)]);
        assert_eq!(r.status, 415, "{content_type}: {}", r.body_str());
        let r = admin_with(&proxy, "POST", "/reload", &[("Content-Type", content_type)]);
        assert_eq!(r.status, 415, "{content_type}: {}", r.body_str());
    }
    let r = admin_with(&proxy, "POST", &drain, &[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(r.status, 403);
    // A same-origin browser request without the custom header.
    let admin_addr = proxy.admin.unwrap().to_string();
    let origin = format!("http://{admin_addr}");
    let same = [
        ("Host", admin_addr.as_str()),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    assert_eq!(admin_with(&proxy, "POST", &drain, &same).status, 403);
    assert!(!drained(&proxy), "nothing above drained the backend");
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);

    // DNS rebinding: another name for this address.
    for path in ["/status", "/metrics", "/healthz"] {
        let r = admin_with(&proxy, "GET", path, &[("Host", "evil.example:80")]);
        assert_eq!(r.status, 421, "{path}: {}", r.body_str());
    }
    assert_eq!(
        admin_with(&proxy, "POST", &drain, &[("Host", "evil.example")]).status,
        421
    );
    // Its own address and localhost are served.
    let r = admin_with(&proxy, "GET", "/healthz", &[("Host", &admin_addr)]);
    assert_eq!(r.status, 200);

    // The status page's way: same origin, the custom header, JSON.
    let mut page = same.to_vec();
    page.push(("X-Ringlb-Admin", "1"));
    page.push(("Content-Type", "application/json"));
    let r = admin_with(&proxy, "POST", &drain, &page);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(drained(&proxy));
    assert!(metric(&proxy, "ringlb_admin_requests_denied_total") >= 13.0);
    assert!(!proxy
        .log_events(&["admin request refused", "status=403"])
        .is_empty());
}

#[test]
fn names_in_admin_hosts_are_served() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin_line("hosts = [\"lb1.mgmt.example\"]")
        .upstream("app", &[backend.addr], &[])
        .start();
    let r = admin_with(
        &proxy,
        "GET",
        "/status",
        &[("Host", "LB1.mgmt.example:9090")],
    );
    assert_eq!(r.status, 200);
    let r = admin_with(&proxy, "GET", "/status", &[("Host", "lb2.mgmt.example")]);
    assert_eq!(r.status, 421);
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// An htpasswd file with `ops:pw` (bcrypt, low cost to keep tests quick)
/// and a token file with `t0ken`, in `dir`.
fn credential_files(dir: &TempDir) -> (String, String) {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let users = dir.write("users", &format!("# ops team\nops:{hash}\n"));
    let token = dir.write("token", "t0ken\n");
    (users.display().to_string(), token.display().to_string())
}

#[test]
fn credentials_protect_writes_and_failures_are_counted_and_limited() {
    let backend = Backend::echo();
    let dir = TempDir::new();
    let (users, token) = credential_files(&dir);
    let proxy = Proxy::builder()
        .admin_line(&format!("users_file = \"{users}\""))
        .admin_line(&format!("token_file = \"{token}\""))
        .upstream("app", &[backend.addr], &[])
        .start();
    let drain = format!("/backends/app/{}/drain", backend.addr);
    // auth = "writes" by default: reads need nothing.
    assert_eq!(admin(&proxy, "GET", "/status").status, 200);
    assert_eq!(admin(&proxy, "GET", "/metrics").status, 200);
    let r = admin(&proxy, "POST", &drain);
    assert_eq!(r.status, 401);
    let challenges: Vec<String> = r
        .head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.clone())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic realm=")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer realm=")),
        "{challenges:?}"
    );
    let wrong = basic("ops", "guess");
    let r = admin_with(&proxy, "POST", &drain, &[("Authorization", &wrong)]);
    assert_eq!(r.status, 401);
    let r = admin_with(&proxy, "POST", &drain, &[("Authorization", "Bearer t0ke")]);
    assert_eq!(r.status, 401);
    assert!(!drained(&proxy));
    let right = basic("ops", "pw");
    let r = admin_with(&proxy, "POST", &drain, &[("Authorization", &right)]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(drained(&proxy));
    let enable = format!("/backends/app/{}/enable", backend.addr);
    let r = admin_with(
        &proxy,
        "POST",
        &enable,
        &[("Authorization", "Bearer t0ken")],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(!drained(&proxy));
    assert_eq!(metric(&proxy, "ringlb_admin_auth_failures_total"), 3.0);
    assert!(!proxy
        .log_events(&["admin credential refused", "wrong credentials"])
        .is_empty());

    // Too many failures from one source: 429, even with the right one.
    for _ in 0..ringlb::admin::MAX_FAILURES {
        admin_with(&proxy, "POST", &drain, &[("Authorization", "Bearer no")]);
    }
    let r = admin_with(&proxy, "POST", &drain, &[("Authorization", "Bearer t0ken")]);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // Logged a few times, not once per failure.
    let logged = proxy.log_events(&["admin credential refused"]).len();
    assert!(
        logged < 3 + ringlb::admin::MAX_FAILURES as usize,
        "{logged} lines"
    );
}

#[test]
fn auth_all_protects_reads_but_not_healthz() {
    let backend = Backend::echo();
    let dir = TempDir::new();
    let (_, token) = credential_files(&dir);
    let proxy = Proxy::builder()
        .admin_line(&format!("token_file = \"{token}\""))
        .admin_line("auth = \"all\"")
        .upstream("app", &[backend.addr], &[])
        .start();
    assert_eq!(admin(&proxy, "GET", "/status").status, 401);
    assert_eq!(admin(&proxy, "GET", "/metrics").status, 401);
    assert_eq!(admin(&proxy, "GET", "/healthz").status, 200);
    let r = admin_with(
        &proxy,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer t0ken")],
    );
    assert_eq!(r.status, 200);
}

/// A client connection from a chosen loopback source address.
fn client_from(source: [u8; 4], to: SocketAddr) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    Client {
        wire: crate::client::Wire::new(stream),
    }
}

#[test]
fn sources_outside_allow_are_refused() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin_line("allow = [\"127.0.0.1/32\"]")
        .upstream("app", &[backend.addr], &[])
        .start();
    assert_eq!(admin(&proxy, "GET", "/healthz").status, 200);
    let addr = proxy.admin.unwrap();
    let req = request("GET", "/status", &[("Host", "localhost")], b"");
    let r = client_from([127, 0, 0, 2], addr).roundtrip(&req);
    assert_eq!(r.status, 403, "{}", r.body_str());
    let r = client_from([127, 0, 0, 1], addr).roundtrip(&req);
    assert_eq!(r.status, 200);
}

#[test]
fn an_admin_off_loopback_without_credentials_is_a_config_error() {
    let backend = Backend::echo();
    let builder = Proxy::builder().upstream("app", &[backend.addr], &[]);
    let dir = TempDir::new();
    // Never bound: the config is refused before anything listens.
    let text = format!(
        "{}\n[admin]\nlisten = \"0.0.0.0:1\"\n",
        builder.config_text(1)
    );
    let config = dir.write("ringlb.toml", &text);
    let config = config.display().to_string();
    for command in ["check", "run"] {
        let out = run_bin(&[command, "--config", &config], &[]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("admin.listen: 0.0.0.0:1 is not a loopback address")
                && stderr.contains("admin.users_file")
                && stderr.contains("insecure_no_auth = true"),
            "{stderr}"
        );
        assert!(stderr.contains("ringlb.toml:"), "file:line:col: {stderr}");
    }
}

/// Every admin slot held by a client that sends one byte a second: the
/// listener still answers `/healthz` with 200 (never "busy" as 503),
/// other requests get 429, and each slow client is cut off with 408 at
/// the request deadline, not kept alive by its trickle.
#[test]
fn slow_clients_hold_neither_the_listener_nor_healthz() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    assert_eq!(admin(&proxy, "GET", "/healthz").status, 200);
    let addr = proxy.admin.unwrap();
    let slots = ringlb::admin::Limits::default().connections;
    // One more than the slots, so that every slot is held even if the
    // connection above has not quite given its back yet.
    let slow: Vec<TcpStream> = (0..slots + 1)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            s
        })
        .collect();
    let slow = Arc::new(slow);
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (slow, stop) = (slow.clone(), stop.clone());
        thread::spawn(move || {
            let head = b"GET /status HTTP/1.1\r\nHost: localhost\r\nX-Slow: 0123456789\r\n\r\n";
            for byte in head.iter().take(60) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                for mut s in slow.iter() {
                    let _ = s.write_all(&[*byte]);
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // Every slot is taken by now: accepts are in order and these come last.
    for _ in 0..10 {
        let r = admin(&proxy, "GET", "/healthz");
        assert_eq!((r.status, r.body_str().as_str()), (200, "ok\n"));
    }
    let r = admin(&proxy, "GET", "/metrics");
    assert_eq!(r.status, 429, "busy is not 503: {}", r.body_str());
    // Each slow client is answered 408 once its deadline passes, long
    // before its trickle could finish the head.
    let mut answers = Vec::new();
    for mut s in slow.iter() {
        s.set_read_timeout(Some(2 * WAIT)).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        answers.push(String::from_utf8_lossy(&out).into_owned());
    }
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    let cut = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408 "))
        .count();
    assert_eq!(cut, slots + 1, "{:?}", answers.first());
    assert!(wait_until(WAIT, || admin(&proxy, "GET", "/metrics").status == 200));
    assert!(metric(&proxy, "ringlb_admin_request_timeouts_total") >= slots as f64);
}

/// A reload applies `[admin]` credentials and checks from the next
/// request: adding a token makes writes need it, and removing it again
/// opens them.
#[test]
fn a_reload_applies_admin_credentials() {
    let backend = Backend::echo();
    let dir = TempDir::new();
    let (_, token) = credential_files(&dir);
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    let admin_addr = proxy.admin.unwrap();
    let listen = format!("listen = \"{admin_addr}\"");
    let with_token = format!("{listen}\ntoken_file = \"{token}\"");
    crate::reload::rewrite(&proxy, |t| t.replacen(&listen, &with_token, 1));
    assert_eq!(admin(&proxy, "POST", "/reload").status, 200);
    assert_eq!(admin(&proxy, "POST", "/reload").status, 401);
    let bearer = [("Authorization", "Bearer t0ken")];
    assert_eq!(admin_with(&proxy, "POST", "/reload", &bearer).status, 200);
    crate::reload::rewrite(&proxy, |t| t.replacen(&with_token, &listen, 1));
    assert_eq!(admin_with(&proxy, "POST", "/reload", &bearer).status, 200);
    assert_eq!(admin(&proxy, "POST", "/reload").status, 200);
}
