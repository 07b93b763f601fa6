//! The admin listener wired into the running proxy: `/metrics` counts
//! exactly what was served, `/status` shows the backends, drain and enable
//! steer traffic, `/healthz` answers, `/reload` is refused for now.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::client::{get, request, Client, Headers, Response};
use crate::harness::{wait_until, Proxy, WAIT};

/// `GET path` as an operator's tool sends it to the admin listener.
pub fn admin_get(path: &str) -> Vec<u8> {
    request("GET", path, &[("Host", "localhost")], b"")
}

/// One request to the proxy's admin listener (retried until it binds: the
/// admin listener starts after the workers' listeners).
pub fn admin(proxy: &Proxy, method: &str, path: &str) -> Response {
    admin_with(proxy, method, path, &[])
}

/// Like [`admin`] with more headers (`Host: localhost` unless given).
pub fn admin_with(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let addr = proxy.admin.expect("a proxy built with .admin()");
    let mut all = headers.to_vec();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        all.push(("Host", "localhost"));
    }
    let deadline = Instant::now() + WAIT;
    loop {
        match Client::try_connect(addr) {
            Ok(mut c) => return c.roundtrip(&request(method, path, &all, b"")),
            Err(e) if Instant::now() >= deadline => panic!(
                "admin listener {addr} not reachable: {e}\nstderr:\n{}",
                proxy.stderr()
            ),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Parses Prometheus text format 0.0.4 strictly enough to catch a broken
/// exposition: every family has HELP and TYPE before its samples, every
/// sample line is `name{labels} value` with a float value. Returns
/// `(name, labels) -> value`.
pub fn parse_prometheus(text: &str) -> BTreeMap<(String, String), f64> {
    let mut samples = BTreeMap::new();
    let mut typed: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("family name");
            assert!(name.starts_with("ringlb_"), "{line}");
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().expect("type");
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&t),
                        "bad type: {line}"
                    );
                    typed.push(name.to_string());
                }
                _ => panic!("bad comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "unclosed labels: {line:?}");
                (n, l.trim_end_matches('}'))
            }
            None => (series, ""),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.iter().any(|t| t == f))
            .unwrap_or(name);
        assert!(
            typed.iter().any(|t| t == family),
            "sample before its TYPE: {line:?}"
        );
        samples.insert((name.to_string(), labels.to_string()), value);
    }
    samples
}

/// The sum of every sample of the metric family `name` (0 when absent).
pub fn metric(proxy: &Proxy, name: &str) -> f64 {
    parse_prometheus(&admin(proxy, "GET", "/metrics").body_str())
        .into_iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

/// The `/status` document.
pub fn status(proxy: &Proxy) -> serde_json::Value {
    serde_json::from_slice(&admin(proxy, "GET", "/status").body).expect("status is JSON")
}

fn requests_total(proxy: &Proxy) -> f64 {
    let r = admin(proxy, "GET", "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    parse_prometheus(&r.body_str())
        .iter()
        .filter(|((name, _), _)| name == "ringlb_requests_total")
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_parse_and_count_exactly_the_requests_served() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route("/app", None, "app")
        .start();
    let before = requests_total(&proxy);
    let mut c = proxy.client();
    for _ in 0..7 {
        assert_eq!(c.roundtrip(&get("/app/x")).status, 200);
    }
    // No route: a local 404, counted without an upstream.
    assert_eq!(proxy.client().roundtrip(&get("/nowhere")).status, 404);
    // The count lands after the last byte went out; allow it a moment.
    assert!(wait_until(WAIT, || requests_total(&proxy) - before >= 8.0));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(requests_total(&proxy) - before, 8.0);

    let text = admin(&proxy, "GET", "/metrics").body_str();
    let samples = parse_prometheus(&text);
    let by_backend = format!(
        "backend=\"{}\",method=\"GET\",status=\"2xx\",upstream=\"app\"",
        backend.addr
    );
    let got = samples
        .iter()
        .find(|((n, l), _)| n == "ringlb_requests_total" && sorted_labels(l) == by_backend)
        .map(|(_, v)| *v);
    assert_eq!(got, Some(7.0), "per-backend series missing in:\n{text}");
    let series = |name: &str| samples.keys().any(|(n, _)| n == name);
    for name in [
        "ringlb_request_duration_seconds_bucket",
        "ringlb_requests_in_flight",
        "ringlb_client_connections_open",
        "ringlb_upstream_connections_opened_total",
        "ringlb_backend_healthy",
    ] {
        assert!(series(name), "{name} missing in:\n{text}");
    }
}

/// `a="1",b="2"` with the labels sorted by name.
fn sorted_labels(labels: &str) -> String {
    let mut parts: Vec<&str> = labels.split(',').collect();
    parts.sort_unstable();
    parts.join(",")
}

#[test]
fn status_lists_the_backends_and_healthz_is_ok() {
    let a = Backend::echo();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr, b.addr], &[])
        .start();
    let r = admin(&proxy, "GET", "/healthz");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok\n"));
    let r = admin(&proxy, "GET", "/status");
    assert_eq!(r.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("status is JSON");
    assert_eq!(doc["workers"], 2);
    assert_eq!(doc["draining"], false);
    let up = &doc["upstreams"][0];
    assert_eq!(up["name"], "app");
    let addrs: Vec<&str> = up["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["addr"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, [a.addr.to_string(), b.addr.to_string()]);
    assert_eq!(up["backends"][0]["healthy"], true);
    assert_eq!(up["backends"][0]["draining"], false);
}

#[test]
fn drain_stops_traffic_to_a_backend_and_enable_restores_it() {
    let a = Backend::echo();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr, b.addr], &[])
        .start();
    let drain = format!("/backends/app/{}/drain", a.addr);
    let r = admin(&proxy, "POST", &drain);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let doc = status(&proxy);
    assert_eq!(doc["upstreams"][0]["backends"][0]["draining"], true);
    let (a0, b0) = (a.request_count(), b.request_count());
    for _ in 0..10 {
        assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    }
    assert_eq!(a.request_count(), a0, "a drained backend got requests");
    assert_eq!(b.request_count(), b0 + 10);

    let enable = format!("/backends/app/{}/enable", a.addr);
    assert_eq!(admin(&proxy, "POST", &enable).status, 200);
    for _ in 0..10 {
        assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    }
    assert!(a.request_count() > a0, "enabled backend got no requests");

    // Unknown upstream or backend: 404; GET on a POST endpoint: 405.
    assert_eq!(
        admin(&proxy, "POST", "/backends/nope/1.2.3.4:5/drain").status,
        404
    );
    assert_eq!(
        admin(&proxy, "POST", "/backends/app/1.2.3.4:5/drain").status,
        404
    );
    assert_eq!(admin(&proxy, "GET", &drain).status, 405);
}

#[test]
fn health_check_results_are_counted() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream(
            "app",
            &[backend.addr],
            &[
                "[upstreams.app.health]",
                "type = \"tcp\"",
                "interval = \"50ms\"",
            ],
        )
        .start();
    let series = format!(
        "backend=\"{}\",result=\"ok\",upstream=\"app\"",
        backend.addr
    );
    let ok_checks = || {
        let text = admin(&proxy, "GET", "/metrics").body_str();
        parse_prometheus(&text)
            .iter()
            .find(|((n, l), _)| n == "ringlb_health_checks_total" && sorted_labels(l) == series)
            .map_or(0.0, |(_, v)| *v)
    };
    assert!(wait_until(WAIT, || ok_checks() >= 2.0));
}
