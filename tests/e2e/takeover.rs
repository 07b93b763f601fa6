//! Binary upgrade by takeover: `ringlb run --takeover` receives the
//! running process's listening sockets over `server.upgrade_socket`,
//! starts on them and tells the old process to stop; a client making a
//! new connection for every request sees no error across several
//! takeovers, with a different worker count each time. A failed takeover
//! leaves the old process serving.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::admin::admin;
use crate::backend::Backend;
use crate::harness::{wait_until, Proxy, TempDir, WAIT};

/// Clients that open a new connection for every request, until stopped.
struct ConnectionLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl ConnectionLoad {
    fn start(addr: SocketAddr, clients: usize) -> ConnectionLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
                thread::spawn(move || {
                    // Bounded: a stuck test ends on its own.
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match one_request(addr) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => errors.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        ConnectionLoad {
            stop,
            ok,
            errors,
            threads,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (answered, errors).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

fn one_request(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("receive: {e}"))?;
    if out.starts_with(b"HTTP/1.1 200 ") {
        Ok(())
    } else {
        Err(format!(
            "answer: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(80)])
        ))
    }
}

/// A proxy with an upgrade socket in `shared` (which outlives each
/// process's own temp dir) and an admin listener.
fn first_proxy(backend: &Backend, shared: &TempDir) -> Proxy {
    let socket = shared.path().join("upgrade.sock");
    Proxy::builder()
        .admin()
        .server(&format!("upgrade_socket = \"{}\"", socket.display()))
        .server("shutdown_timeout = \"5s\"")
        .upstream("app", &[backend.addr], &[])
        .start()
}

/// Spawns `ringlb run --takeover` on `config` (the old process's config,
/// possibly edited); does not wait.
fn spawn_takeover(old: &Proxy, config: &str) -> Proxy {
    let dir = TempDir::new();
    let path = dir.write("ringlb.toml", config);
    let args = [
        "run".to_string(),
        "--takeover".to_string(),
        "--config".to_string(),
        path.display().to_string(),
    ];
    let port = old.addr.port();
    let mut proxy = Proxy::spawn(dir, &args, &[], port, config.to_string());
    proxy.admin = old.admin;
    proxy
}

fn config_of(proxy: &Proxy) -> String {
    fs::read_to_string(proxy.dir().join("ringlb.toml")).unwrap()
}

/// Runs one takeover of `old` and waits until the old process exited 0
/// and the new one logged that it took over.
fn take_over(old: &Proxy, config: &str) -> Proxy {
    let new = spawn_takeover(old, config);
    let done = wait_until(3 * WAIT, || {
        !new.log_events(&["takeover: the old process stopped accepting"])
            .is_empty()
            || new.try_status().is_some()
    });
    assert!(
        done && new.try_status().is_none(),
        "the takeover did not complete\nnew stderr:\n{}\nold stderr:\n{}",
        new.stderr(),
        old.stderr()
    );
    let status = old.wait_for_exit();
    assert!(status.success(), "old process: {status}\n{}", old.stderr());
    new.wait_listening();
    new
}

#[test]
fn three_takeovers_under_new_connection_load_lose_no_connection() {
    let backend = Backend::echo();
    let shared = TempDir::new();
    let first = first_proxy(&backend, &shared);
    let load = ConnectionLoad::start(first.addr, 4);
    assert!(wait_until(WAIT, || load.ok() >= 50), "load is flowing");
    let config = config_of(&first);
    // 2 workers, then 3 (more sockets are bound on the port), then 1
    // (that worker accepts on all three received sockets), then 2.
    let second = take_over(&first, &config.replace("workers = 2", "workers = 3"));
    let before = load.ok();
    assert!(wait_until(WAIT, || load.ok() >= before + 50));
    let third = take_over(&second, &config.replace("workers = 2", "workers = 1"));
    let before = load.ok();
    assert!(wait_until(WAIT, || load.ok() >= before + 50));
    let fourth = take_over(&third, &config);
    let before = load.ok();
    assert!(wait_until(WAIT, || load.ok() >= before + 50));
    let (ok, errors) = load.finish();
    assert!(
        errors.is_empty(),
        "{} errors in {} requests, first: {:?}",
        errors.len(),
        ok + errors.len(),
        errors.first()
    );
    println!("takeover: 3 takeovers, {ok} requests on new connections, 0 errors");
    // The last process serves everything, the admin listener included.
    assert_eq!(admin(&fourth, "GET", "/healthz").status, 200);
    let status: serde_json::Value =
        serde_json::from_slice(&admin(&fourth, "GET", "/status").body).unwrap();
    assert_eq!(status["workers"], 2);
    // And it can be taken over again: its upgrade socket is in place,
    // for this user only (whoever connects can stop the process).
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(shared.path().join("upgrade.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_failed_takeover_leaves_the_old_process_serving() {
    let backend = Backend::echo();
    let shared = TempDir::new();
    let old = first_proxy(&backend, &shared);
    let config = config_of(&old);

    // A config error: exits 1 before it reaches the old process.
    let bad = spawn_takeover(&old, &config.replace("workers = 2", "workers = 0"));
    let status = bad.wait_for_exit();
    assert_eq!(status.code(), Some(1), "{}", bad.stderr());

    // The sockets are received, but the new config cannot start (its
    // admin listener's address is taken): exits 1, no GO is sent.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = old.admin.unwrap().to_string();
    let busy_admin = config.replace(
        &format!("listen = \"{admin_addr}\""),
        &format!("listen = \"{}\"", taken.local_addr().unwrap()),
    );
    let refused = spawn_takeover(&old, &busy_admin);
    let status = refused.wait_for_exit();
    assert_eq!(status.code(), Some(1), "{}", refused.stderr());
    assert!(
        refused.stderr().contains("takeover failed"),
        "{}",
        refused.stderr()
    );
    assert!(wait_until(WAIT, || old
        .stderr()
        .contains("takeover refused or abandoned, still serving")));

    // The old process never stopped.
    assert!(old.try_status().is_none());
    assert_eq!(one_request(old.addr), Ok(()));
    assert_eq!(admin(&old, "GET", "/healthz").status, 200);

    // No process on the upgrade socket: nothing to take over.
    let lonely = TempDir::new();
    let elsewhere = config.replace(
        &shared.path().display().to_string(),
        &lonely.path().display().to_string(),
    );
    let orphan = spawn_takeover(&old, &elsewhere);
    let status = orphan.wait_for_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        orphan.stderr().contains("no running ringlb answers there"),
        "{}",
        orphan.stderr()
    );

    // A second process without --takeover is refused rather than sharing
    // the port behind the old one's back.
    let dir = TempDir::new();
    let path = dir.write("ringlb.toml", &config);
    let args = ["--config".to_string(), path.display().to_string()];
    let twin = Proxy::spawn(dir, &args, &[], old.addr.port(), config.clone());
    let status = twin.wait_for_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        twin.stderr().contains("start with --takeover"),
        "{}",
        twin.stderr()
    );

    // And a good takeover still works afterwards.
    let new = take_over(&old, &config);
    assert_eq!(one_request(new.addr), Ok(()));
}

/// A takeover applies the new config's listeners: one it adds is bound,
/// one it drops is closed once the old process stopped.
#[test]
fn a_takeover_binds_new_listeners_and_closes_dropped_ones() {
    let backend = Backend::echo();
    let shared = TempDir::new();
    let first = first_proxy(&backend, &shared);
    let config = config_of(&first);
    let port = first.addr.port();
    let one = format!("listen = [\"127.0.0.1:{port}\"]");
    let extra = SocketAddr::from(([127, 0, 0, 1], crate::harness::free_port()));
    let two = format!("listen = [\"127.0.0.1:{port}\", \"{extra}\"]");
    let with_extra = config.replacen(&one, &two, 1);
    assert_ne!(with_extra, config);
    let second = take_over(&first, &with_extra);
    assert_eq!(one_request(second.addr), Ok(()));
    assert_eq!(one_request(extra), Ok(()));
    let third = take_over(&second, &config);
    assert_eq!(one_request(third.addr), Ok(()));
    assert!(
        wait_until(WAIT, || TcpStream::connect(extra).is_err()),
        "the dropped listener still accepts"
    );
}

/// The "before" of `docs`' takeover note: a second process on the same
/// port (`SO_REUSEPORT`), then SIGTERM to the first, three times, under
/// the same load. Not a pass/fail test: it measures what the takeover
/// avoids (connections in the old process's accept queues are reset).
/// Run with `cargo test --test e2e reuseport_restart -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement for the takeover note, not a check"]
fn reuseport_restart_for_comparison() {
    let backend = Backend::echo();
    let old = Proxy::builder()
        .upstream("app", &[backend.addr], &[])
        .start();
    let config = config_of(&old);
    let load = ConnectionLoad::start(old.addr, 4);
    assert!(wait_until(WAIT, || load.ok() >= 50));
    let mut current = old;
    for _ in 0..3 {
        let dir = TempDir::new();
        let path = dir.write("ringlb.toml", &config);
        let args = ["--config".to_string(), path.display().to_string()];
        let next = Proxy::spawn(dir, &args, &[], current.addr.port(), config.clone());
        next.wait_listening();
        current.signal("TERM");
        current.wait_for_exit();
        let before = load.ok();
        assert!(wait_until(WAIT, || load.ok() >= before + 50));
        current = next;
    }
    let (ok, errors) = load.finish();
    println!(
        "reuseport restart: 3 restarts, {ok} requests answered, {} errors: {:?}",
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>()
    );
}
