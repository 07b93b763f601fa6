//! Config validation: `ringlb check` exits 1 and reports each problem as
//! `FILE:LINE:COL: key.path: message`; `run` refuses a bad config.

use crate::harness::{run_bin, run_check, TempDir};

/// A valid config, one entry per line (line N is `BASE[N - 1]`).
const BASE: [&str; 12] = [
    "[server]",
    "listen = [\"127.0.0.1:1\"]",
    "workers = 1",
    "head_timeout = \"10s\"",
    "",
    "[[routes]]",
    "path_prefix = \"/\"",
    "upstream = \"app\"",
    "",
    "[upstreams.app]",
    "backends = [{ addr = \"127.0.0.1:9\" }]",
    "strategy = \"round_robin\"",
];

/// BASE with line `line` (1-based) replaced.
fn config_with(line: usize, replacement: &str) -> String {
    let mut lines: Vec<&str> = BASE.to_vec();
    lines[line - 1] = replacement;
    lines.join("\n") + "\n"
}

/// Finds `PATH:LINE:COL: KEY: MESSAGE` in `output`; returns (col, key).
fn find_error(output: &str, path: &str, line: usize) -> Option<(usize, String)> {
    let prefix = format!("{path}:{line}:");
    output.lines().find_map(|l| {
        let rest = &l[l.find(&prefix)? + prefix.len()..];
        let (col, rest) = rest.split_once(": ")?;
        let (key, msg) = rest.split_once(": ")?;
        let col = col.parse().ok()?;
        (!msg.trim().is_empty()).then(|| (col, key.to_string()))
    })
}

/// Checks that `check` rejects BASE with line `line` replaced, pointing at
/// that line with a key accepted by `key_ok`.
fn rejects(line: usize, replacement: &str, key_ok: impl Fn(&str) -> bool) {
    let dir = TempDir::new();
    let text = config_with(line, replacement);
    let (code, out, path) = run_check(&dir, &text);
    assert_eq!(code, Some(1), "check on:\n{text}\nprinted:\n{out}");
    let (col, key) = find_error(&out, &path, line).unwrap_or_else(|| {
        panic!("no `{path}:{line}:COL: key: message` line for:\n{text}\nprinted:\n{out}")
    });
    assert!(
        (1..=replacement.len().max(1)).contains(&col),
        "column {col} outside line {line} ({replacement:?}):\n{out}"
    );
    assert!(key_ok(&key), "unexpected key path {key:?}:\n{out}");
}

#[test]
fn base_config_is_valid() {
    let dir = TempDir::new();
    let (code, out, _) = run_check(&dir, &(BASE.join("\n") + "\n"));
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn bad_duration_is_reported_with_line_and_key() {
    rejects(4, "head_timeout = \"ten seconds\"", |k| {
        k == "server.head_timeout"
    });
}

#[test]
fn bad_listen_address_is_reported() {
    rejects(2, "listen = [\"nowhere\"]", |k| {
        k.starts_with("server.listen")
    });
}

#[test]
fn wrong_type_is_reported() {
    rejects(3, "workers = \"two\"", |k| k == "server.workers");
}

#[test]
fn route_to_unknown_upstream_is_reported() {
    rejects(8, "upstream = \"nope\"", |k| {
        k.starts_with("routes") && k.ends_with("upstream")
    });
}

#[test]
fn backend_address_without_port_is_reported() {
    rejects(11, "backends = [{ addr = \"127.0.0.1\" }]", |k| {
        k.starts_with("upstreams.app.backends")
    });
}

#[test]
fn empty_backend_list_is_reported() {
    rejects(11, "backends = []", |k| k == "upstreams.app.backends");
}

#[test]
fn unknown_strategy_is_reported() {
    rejects(12, "strategy = \"whatever\"", |k| {
        k == "upstreams.app.strategy"
    });
}

#[test]
fn toml_syntax_error_is_reported_with_line() {
    let dir = TempDir::new();
    let text = config_with(3, "workers = = 2");
    let (code, out, path) = run_check(&dir, &text);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("{path}:3:")),
        "no {path}:3: in:\n{out}"
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = TempDir::new();
    let path = dir.path().join("absent.toml");
    let p = path.to_str().unwrap();
    let out = run_bin(&["check", "--config", p], &[]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(p), "the error does not name the file:\n{all}");
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = TempDir::new();
    let path = dir.write("bad.toml", &config_with(4, "head_timeout = \"soon\""));
    let out = run_bin(&["--config", path.to_str().unwrap()], &[]);
    assert!(!out.status.success(), "ran with an invalid config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.head_timeout"), "{err}");
}

/// A TLS upstream with an HTTP health check passes `check`.
#[test]
fn tls_upstream_with_http_health_check_is_valid() {
    let dir = TempDir::new();
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/ca.pem");
    let text = config_with(
        12,
        &format!("tls = true\ntls_ca = \"{ca}\"\n[upstreams.app.health]\ntype = \"http\""),
    );
    let (code, out, _) = run_check(&dir, &text);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(round_robin, tls)"), "{out}");
}
