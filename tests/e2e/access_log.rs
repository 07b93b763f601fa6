//! `server.access_log`: one line per request with the client, request
//! line, status, body bytes, duration, backend, attempts and request id;
//! and `X-Request-ID`: kept when the client sent one, else generated,
//! forwarded to the backend and echoed to the client.

use std::fs;
use std::thread;
use std::time::Duration;

use crate::backend::Backend;
use crate::client::{get, request, Headers};
use crate::harness::{wait_until, Proxy, WAIT};

fn log_lines(proxy: &Proxy) -> Vec<String> {
    fs::read_to_string(proxy.dir().join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits for `n` lines, then makes sure no more arrive.
fn wait_for_lines(proxy: &Proxy, n: usize) -> Vec<String> {
    assert!(
        wait_until(WAIT, || log_lines(proxy).len() >= n),
        "log has {:?}\nstderr:\n{}",
        log_lines(proxy),
        proxy.stderr()
    );
    thread::sleep(Duration::from_millis(300));
    let lines = log_lines(proxy);
    assert_eq!(lines.len(), n, "{lines:#?}");
    lines
}

#[test]
fn combined_format_one_line_per_request_with_request_ids() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("access_log = { path = \"access.log\" }")
        .upstream("app", &[backend.addr], &[])
        .start();
    let mut c = proxy.client();
    let r1 = c.roundtrip(&request(
        "GET",
        "/a?x=1",
        &[
            ("User-Agent", "tester/1.0"),
            ("Referer", "http://ref.example/"),
        ],
        b"",
    ));
    assert_eq!(r1.status, 200);
    let generated = r1.header("x-request-id").expect("echoed id").to_string();
    assert_eq!(generated.len(), 24, "{generated}");
    let seen = backend.requests();
    assert_eq!(seen[0].headers_named("x-request-id"), [generated.as_str()]);

    let r2 = c.roundtrip(&request(
        "POST",
        "/b",
        &[("X-Request-ID", "abc-123")],
        b"hello",
    ));
    assert_eq!(r2.status, 200);
    assert_eq!(r2.headers_named("x-request-id"), ["abc-123"]);
    assert_eq!(
        backend.requests()[1].headers_named("x-request-id"),
        ["abc-123"],
        "the client's id is forwarded once, unchanged"
    );

    let lines = wait_for_lines(&proxy, 2);
    let first = &lines[0];
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    let want = format!(
        "\"GET /a?x=1 HTTP/1.1\" 200 {} \"http://ref.example/\" \"tester/1.0\" rt=",
        r1.body.len()
    );
    assert!(first.contains(&want), "{first}\nwant {want}");
    assert!(
        first.ends_with(&format!(
            " upstream={} attempts=1 rid={generated}",
            backend.addr
        )),
        "{first}"
    );
    let second = &lines[1];
    assert!(
        second.contains(&format!(
            "\"POST /b HTTP/1.1\" 200 {} \"-\" \"-\"",
            r2.body.len()
        )),
        "{second}"
    );
    assert!(second.ends_with(" attempts=1 rid=abc-123"), "{second}");
}

#[test]
fn json_format_with_local_replies() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("access_log = { path = \"access.log\", format = \"json\" }")
        .upstream("app", &[backend.addr], &[])
        .route("/app", None, "app")
        .start();
    let r1 = proxy.client().roundtrip(&get("/app/one"));
    assert_eq!(r1.status, 200);
    // No route: a local 404 still carries (and logs) a request id.
    let r2 = proxy.client().roundtrip(&get("/elsewhere"));
    assert_eq!(r2.status, 404);
    let id404 = r2.header("x-request-id").expect("id on a local reply");

    let lines = wait_for_lines(&proxy, 2);
    let mut docs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // Two connections may land on two workers: no order between them.
    docs.sort_by_key(|d| d["target"].as_str().unwrap().to_string());
    let d = &docs[0];
    assert_eq!(d["method"], "GET");
    assert_eq!(d["target"], "/app/one");
    assert_eq!(d["version"], "HTTP/1.1");
    assert_eq!(d["status"], 200);
    assert_eq!(d["bytes"], r1.body.len());
    assert_eq!(d["backend"], backend.addr.to_string());
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["request_id"], r1.header("x-request-id").unwrap());
    assert!(d["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(d["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(d["time"].as_str().unwrap().ends_with('Z'));
    let d = &docs[1];
    assert_eq!(d["status"], 404);
    assert_eq!(d["target"], "/elsewhere");
    assert_eq!(d["backend"], serde_json::Value::Null);
    assert_eq!(d["attempts"], 0);
    assert_eq!(d["bytes"], r2.body.len());
    assert_eq!(d["request_id"], id404);
}

#[test]
fn sighup_reopens_the_log_after_a_rename_and_keeps_serving() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .server("access_log = { path = \"access.log\" }")
        .upstream("app", &[backend.addr], &[])
        .start();
    assert_eq!(proxy.client().roundtrip(&get("/before")).status, 200);
    wait_for_lines(&proxy, 1);
    let log = proxy.dir().join("access.log");
    fs::rename(&log, proxy.dir().join("access.log.1")).unwrap();
    proxy.signal("HUP");
    assert!(wait_until(WAIT, || log.exists()), "not reopened");
    assert!(proxy.try_status().is_none(), "SIGHUP ended the proxy");
    assert_eq!(proxy.client().roundtrip(&get("/after")).status, 200);
    let lines = wait_for_lines(&proxy, 1);
    assert!(lines[0].contains("\"GET /after HTTP/1.1\""), "{lines:?}");
    let old = fs::read_to_string(proxy.dir().join("access.log.1")).unwrap();
    assert_eq!(old.lines().count(), 1);
    // SIGHUP also reloaded the (unchanged) config.
    assert!(wait_until(WAIT, || proxy
        .stderr()
        .contains("config reloaded")));
}
