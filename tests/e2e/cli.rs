//! The command line: `--version`, `--help`, `run`, `check` on a valid
//! config, the built-in demo (proxy and admin listener), signals (exit 0
//! and a `pool reuse` summary at exit) and `RUST_LOG`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crate::admin::{admin_get, parse_prometheus};
use crate::backend::Backend;
use crate::client::{get, Client};
use crate::harness::{bin, run_bin, strip_ansi, wait_until, Proxy, Refused, TempDir, WAIT};

fn text(out: &std::process::Output) -> String {
    strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn version_prints_the_package_version() {
    let out = run_bin(&["--version"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&out)
    );
}

#[test]
fn help_lists_the_subcommands() {
    let out = run_bin(&["--help"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    for word in ["--config", "check", "demo"] {
        assert!(t.contains(word), "--help does not mention {word}:\n{t}");
    }
}

#[test]
fn check_accepts_a_valid_config_and_prints_a_summary() {
    let refused = Refused::new();
    let builder = Proxy::builder().upstream("app", &[refused.addr], &[]);
    let dir = TempDir::new();
    let path = dir.write("ok.toml", &builder.config_text(crate::harness::free_port()));
    let out = run_bin(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).trim().is_empty(), "check printed no summary");
}

#[test]
fn run_subcommand_serves_like_the_default() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &[])
        .start_with(&["run"]);
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
}

/// Sums the numbers following `word` on every `pool reuse` line.
fn pool_reuse_count(log: &str, word: &str) -> Option<u64> {
    let mut total = None;
    for line in log.lines().filter(|l| l.contains("pool reuse")) {
        let at = line.find(word)? + word.len();
        let digits: String = line[at..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        *total.get_or_insert(0) += digits.parse::<u64>().ok()?;
    }
    total
}

fn exits_zero_on(signal: &str) {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &[])
        .env("RUST_LOG", "info")
        .start();
    let mut c = proxy.client();
    for _ in 0..20 {
        assert_eq!(c.roundtrip(&get("/")).status, 200);
    }
    drop(c);
    proxy.signal(signal);
    let status = proxy.wait_for_exit();
    assert_eq!(status.code(), Some(0), "exit after SIG{signal}: {status}");
    let log = strip_ansi(&proxy.stderr());
    assert!(
        log.lines().any(|l| l.contains("pool reuse")),
        "no `pool reuse` line at exit:\n{log}"
    );
    let hits = pool_reuse_count(&log, "hits");
    let misses = pool_reuse_count(&log, "misses");
    assert!(
        hits.is_some_and(|h| h >= 19) && misses.is_some_and(|m| m >= 1),
        "expected >= 19 hits and >= 1 miss for 20 sequential requests, got hits {hits:?} misses {misses:?}:\n{log}"
    );
}

#[test]
fn sigterm_exits_zero_and_logs_pool_reuse() {
    exits_zero_on("TERM");
}

#[test]
fn sigint_exits_zero_and_logs_pool_reuse() {
    exits_zero_on("INT");
}

/// A signal that arrives as soon as the proxy accepts connections must
/// still stop it cleanly. Ten tries, each signalled the moment a connect
/// succeeds; a proxy that installs its handlers late dies by the signal.
#[test]
fn sigterm_as_soon_as_listening_exits_zero() {
    let backend = Backend::echo();
    let builder = Proxy::builder().upstream("app", &[backend.addr], &[]);
    for i in 0..10 {
        let proxy = builder.spawn_only(&[]);
        let term = proxy.armed_signal("TERM");
        // A tight loop: a refused connect returns at once, and the window
        // being tested is shorter than any poll interval.
        let deadline = std::time::Instant::now() + crate::harness::WAIT;
        while std::net::TcpStream::connect(proxy.addr).is_err() {
            assert!(proxy.try_status().is_none(), "try {i}: proxy exited");
            assert!(
                std::time::Instant::now() < deadline,
                "try {i}: not listening"
            );
        }
        term.fire();
        let status = proxy.wait_for_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "try {i}: SIGTERM right after listening ended the proxy with {status}; \
             are the signal handlers installed only after the workers serve?"
        );
    }
}

#[test]
fn rust_log_off_silences_the_logs() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("app", &[backend.addr], &[])
        .env("RUST_LOG", "off")
        .start();
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_for_exit().code(), Some(0));
    let log = proxy.stderr();
    assert!(
        !log.contains("pool reuse"),
        "RUST_LOG=off still logged:\n{log}"
    );
}

/// The demo listens on the fixed ports 8080 and 9090 (admin). If something
/// else holds one, this fails loudly rather than testing the wrong server.
#[test]
fn demo_serves_on_8080_and_exits_on_sigterm() {
    for port in [8080, 9090] {
        drop(TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
            panic!("127.0.0.1:{port} is in use ({e}); free it to run the demo test")
        }));
    }
    let proxy = Proxy::spawn(
        TempDir::new(),
        &["demo".to_string()],
        &[],
        8080,
        "(ringlb demo)".to_string(),
    );
    proxy.wait_listening();
    let mut c = proxy.client();
    for i in 0..6 {
        let resp = c.roundtrip(&get("/"));
        assert_eq!(resp.status, 200, "demo request {i}: {}", resp.body_str());
    }
    drop(c);
    let printed = proxy.stderr();
    for url in ["http://127.0.0.1:9090/", "http://127.0.0.1:9090/metrics"] {
        assert!(
            printed.lines().any(|l| l.trim_end().ends_with(url)),
            "the demo did not print {url}:\n{printed}"
        );
    }
    let metrics =
        Client::connect(SocketAddr::from(([127, 0, 0, 1], 9090))).roundtrip(&admin_get("/metrics"));
    assert_eq!(metrics.status, 200, "{}", metrics.body_str());
    proxy.signal("TERM");
    assert_eq!(proxy.wait_for_exit().code(), Some(0));
}

/// A running `ringlb demo` whose stdout is read line by line; killed on
/// drop.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: TempDir,
    stderr: std::path::PathBuf,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let dir = TempDir::new();
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(bin())
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn ringlb demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
            _dir: dir,
            stderr,
        }
    }

    /// The rest of the first printed line that starts with `prefix`.
    fn printed(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.seen.iter().find_map(|l| l.strip_prefix(prefix)) {
                return l.trim().to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the demo printed no line starting with {prefix:?} within {WAIT:?}\nstdout:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://ADDR/PATH` as the address and the path.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url:?}"));
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = addr
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {url:?}: {e}"));
    (addr, path.to_string())
}

/// `ringlb demo` on free ports prints the proxy's, the status page's and
/// the metrics' URLs; what it serves through the proxy shows up in the
/// metrics read from the printed URL.
#[test]
fn demo_prints_the_admin_urls_and_its_metrics_count_the_requests() {
    let mut demo = Demo::start(&["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let proxy_url = demo.printed("ringlb demo: three backends behind ");
    let status_url = demo.printed("status page:");
    let metrics_url = demo.printed("metrics:");
    let (proxy, _) = split_url(&proxy_url);
    let (status_addr, status_path) = split_url(&status_url);
    let (metrics_addr, metrics_path) = split_url(&metrics_url);
    assert_ne!(proxy.port(), 0, "{proxy_url}");
    assert_ne!(status_addr.port(), 0, "{status_url}");
    assert_eq!(status_path, "/", "{status_url}");
    assert_eq!(metrics_addr, status_addr, "{metrics_url} vs {status_url}");
    assert_eq!(metrics_path, "/metrics", "{metrics_url}");

    let mut bodies = Vec::new();
    let mut c = Client::connect(proxy);
    for i in 0..6 {
        let resp = c.roundtrip(&get("/"));
        assert_eq!(resp.status, 200, "demo request {i}: {}", resp.body_str());
        bodies.push(resp.body_str());
    }
    drop(c);
    for name in ["backend-1", "backend-2", "backend-3"] {
        assert!(
            bodies.iter().any(|b| b.contains(name)),
            "{name} never answered: {bodies:?}"
        );
    }

    let served = || {
        let resp = Client::connect(metrics_addr).roundtrip(&admin_get(&metrics_path));
        assert_eq!(resp.status, 200, "{}", resp.body_str());
        parse_prometheus(&resp.body_str())
            .iter()
            .filter(|((name, labels), _)| {
                name == "ringlb_requests_total" && labels.contains("upstream=\"demo\"")
            })
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    // A request is counted after its last byte went out; allow a moment.
    wait_until(WAIT, || served() >= 6.0);
    assert_eq!(served(), 6.0, "requests counted by {metrics_url}");
}
