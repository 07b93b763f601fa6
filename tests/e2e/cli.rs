//! The command line: `--version`, `--help`, `run`, `check` on a valid
//! config, the built-in demo, signals (exit 0 and a `pool reuse` summary
//! at exit) and `RUST_LOG`.

use std::net::TcpListener;

use crate::backend::Backend;
use crate::client::get;
use crate::harness::{run_bin, strip_ansi, Proxy, Refused, TempDir};

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

/// The demo listens on the fixed port 8080. If something else holds it,
/// this fails loudly rather than testing the wrong server.
#[test]
fn demo_serves_on_8080_and_exits_on_sigterm() {
    drop(TcpListener::bind("127.0.0.1:8080").unwrap_or_else(|e| {
        panic!("127.0.0.1:8080 is in use ({e}); free it to run the demo test")
    }));
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
    proxy.signal("TERM");
    assert_eq!(proxy.wait_for_exit().code(), Some(0));
}
