//! The rise/fall tracker, table-driven, and the checker thread against real
//! loopback backends (std sockets), polled with generous waits.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering::SeqCst};
use std::time::Duration;

const PASS: CheckResult = CheckResult::Passed(Some(200));

#[test]
fn tracker_needs_fall_failures_and_rise_passes_in_a_row() {
    let mut t = HealthTracker::new(2, 3, true);
    assert_eq!(t.observe(CheckResult::Timeout, 1), None);
    assert_eq!(t.observe(CheckResult::Refused, 2), None);
    assert_eq!(t.observe(PASS, 3), None, "a pass breaks the streak");
    assert_eq!(t.observe(CheckResult::BadStatus(500), 4), None);
    assert_eq!(t.observe(CheckResult::Reset, 5), None);
    let down = t.observe(CheckResult::Malformed, 6).unwrap();
    assert_eq!(
        down,
        Transition {
            healthy: false,
            reason: CheckResult::Malformed
        }
    );
    assert_eq!((t.is_healthy(), t.since()), (false, 6));
    assert_eq!(t.observe(CheckResult::Timeout, 7), None);
    assert_eq!(t.observe(PASS, 8), None);
    assert_eq!(t.observe(CheckResult::Timeout, 9), None);
    assert_eq!(t.observe(PASS, 10), None);
    let up = t.observe(CheckResult::Passed(None), 11).unwrap();
    assert!(up.healthy);
}

#[test]
fn tracker_rise_and_fall_of_one_flip_at_once() {
    let mut t = HealthTracker::new(1, 1, false);
    assert!(t.observe(PASS, 0).unwrap().healthy);
    assert!(!t.observe(CheckResult::Refused, 0).unwrap().healthy);
    t.force_unhealthy(5);
    assert!(!t.is_healthy());
}

#[test]
fn reasons_read_well() {
    assert_eq!(
        CheckResult::BadStatus(503).to_string(),
        "unexpected status 503"
    );
    assert_eq!(CheckResult::Refused.to_string(), "connection refused");
    assert_eq!(
        CheckResult::from_io(&io::ErrorKind::TimedOut.into()),
        CheckResult::Timeout
    );
}

/// A loopback backend answering every request with `status`, until `stop`.
fn backend(
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        while !stop.load(SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut req = Vec::new();
                    let mut buf = [0u8; 512];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(req.starts_with(b"GET /ready HTTP/1.1\r\n"));
                    let reply = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        status.load(SeqCst)
                    );
                    let _ = s.write_all(reply.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        // The listener drops here: further connects are refused.
    });
    (addr, thread)
}

fn config(addr: SocketAddr, health: &str) -> Arc<Config> {
    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
         [upstreams.a]\nbackends = [{{ addr = \"{addr}\" }}]\n\
         [upstreams.a.health]\ninterval = \"50ms\"\ntimeout = \"1s\"\nrise = 2\nfall = 2\n{health}\n"
    );
    Arc::new(Config::from_toml_str(&src, std::path::Path::new("t.toml")).unwrap())
}

fn states(config: &Config) -> Arc<Vec<Vec<Arc<BackendState>>>> {
    Arc::new(
        config
            .upstreams
            .iter()
            .map(|u| {
                let policy = super::super::BackendPolicy::from_upstream(u);
                u.backends
                    .iter()
                    .map(|_| Arc::new(BackendState::new(policy)))
                    .collect()
            })
            .collect(),
    )
}

#[track_caller]
fn wait_for(state: &BackendState, want: Health) {
    for _ in 0..1_000 {
        if state.health() == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("backend never became {want:?}, is {:?}", state.health());
}

/// The upstreams' TLS as a start or reload plans it (none here).
fn no_tls(config: &Config) -> crate::upstream::connector::TlsByUpstream {
    crate::upstream::connector::UpstreamTls::plan(config).unwrap()
}

#[test]
fn http_checker_follows_the_backend() {
    let status = Arc::new(AtomicU16::new(200));
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, server) = backend(status.clone(), stop.clone());
    let config = config(addr, "path = \"/ready\"\nexpect_status = \"200-299\"");
    let states = states(&config);
    let state = states[0][0].clone();
    let checkers = spawn_checkers(config.clone(), states, no_tls(&config), Default::default())
        .unwrap()
        .expect("one upstream has checks");
    assert_eq!(state.health(), Health::Healthy);

    status.store(500, SeqCst);
    wait_for(&state, Health::Unhealthy);
    status.store(204, SeqCst);
    wait_for(&state, Health::Healthy);

    // Passive ejection while checks pass: the checker brings it back.
    for _ in 0..3 {
        let _ = state.record_outcome(
            crate::upstream::Outcome::Reset,
            Duration::ZERO,
            clock::now_nanos(),
        );
    }
    assert_eq!(state.health(), Health::Ejected);
    wait_for(&state, Health::Healthy);

    // The backend goes away: refused.
    stop.store(true, SeqCst);
    server.join().unwrap();
    wait_for(&state, Health::Unhealthy);
    checkers.stop().unwrap();
}

#[test]
fn tcp_checker_starting_unhealthy_rises() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = config(addr, "type = \"tcp\"\nstart = \"unhealthy\"");
    let states = states(&config);
    let state = states[0][0].clone();
    assert_eq!(state.health(), Health::Unhealthy);
    let checkers = spawn_checkers(config.clone(), states, no_tls(&config), Default::default())
        .unwrap()
        .unwrap();
    // The kernel completes the handshakes from the backlog; nobody accepts.
    wait_for(&state, Health::Healthy);
    drop(listener);
    wait_for(&state, Health::Unhealthy);
    checkers.stop().unwrap();
}

#[test]
fn no_health_tables_no_thread() {
    let src = "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
               [upstreams.a]\nbackends = [{ addr = \"10.0.0.1:80\" }]\n";
    let config = Arc::new(Config::from_toml_str(src, std::path::Path::new("t")).unwrap());
    let states = states(&config);
    assert!(
        spawn_checkers(config.clone(), states, no_tls(&config), Default::default())
            .unwrap()
            .is_none()
    );
}
