//! Config reload (`POST /reload`, SIGHUP): new connections get the new
//! upstreams and routes, keep-alive connections of the old config are
//! closed after their response, a bad file or a `[server]` change is
//! refused and the running config stays, and metrics continue.

use std::fs;

use crate::admin::{admin, parse_prometheus};
use crate::backend::Backend;
use crate::client::get;
use crate::harness::{wait_until, Proxy, WAIT};

fn rewrite(proxy: &Proxy, edit: impl FnOnce(String) -> String) {
    let path = proxy.dir().join("ringlb.toml");
    let text = fs::read_to_string(&path).unwrap();
    let new = edit(text.clone());
    assert_ne!(new, text, "the edit changed nothing");
    fs::write(&path, new).unwrap();
}

fn metric(proxy: &Proxy, name: &str) -> f64 {
    parse_prometheus(&admin(proxy, "GET", "/metrics").body_str())
        .into_iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

fn version(proxy: &Proxy) -> u64 {
    let doc: serde_json::Value =
        serde_json::from_slice(&admin(proxy, "GET", "/status").body).unwrap();
    doc["config"]["version"].as_u64().unwrap()
}

#[test]
fn post_reload_moves_new_traffic_and_closes_old_keep_alive_connections() {
    let a = Backend::echo();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr], &[])
        .start();
    let mut old = proxy.client();
    for _ in 0..3 {
        assert_eq!(old.roundtrip(&get("/")).status, 200);
    }
    assert_eq!(a.request_count(), 3);
    assert!(wait_until(WAIT, || metric(&proxy, "ringlb_requests_total") >= 3.0));

    rewrite(&proxy, |t| {
        t.replace(&a.addr.to_string(), &b.addr.to_string())
    });
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!((r.status, r.body_str().as_str()), (200, "reloaded\n"));
    assert_eq!(version(&proxy), 2);

    // The old keep-alive connection is closed (it was idle).
    old.assert_closed();
    // New connections reach the new backend (each worker applies the
    // update as a message, so allow it a moment).
    assert!(wait_until(WAIT, || {
        proxy.client().roundtrip(&get("/")).status == 200 && b.request_count() > 0
    }));
    let a_after = a.request_count();
    for _ in 0..6 {
        assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    }
    assert_eq!(
        a.request_count(),
        a_after,
        "the old backend still got requests"
    );
    // The series of the removed backend is gone; the new one counts.
    assert!(wait_until(WAIT, || metric(&proxy, "ringlb_requests_total") >= 6.0));
    assert_eq!(metric(&proxy, "ringlb_config_reloads_total"), 1.0);
    let doc: serde_json::Value =
        serde_json::from_slice(&admin(&proxy, "GET", "/status").body).unwrap();
    assert_eq!(
        doc["upstreams"][0]["backends"][0]["addr"],
        b.addr.to_string()
    );
}

#[test]
fn a_bad_file_or_a_server_change_is_refused_and_the_old_config_stays() {
    let a = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr], &[])
        .start();
    let path = proxy.dir().join("ringlb.toml");
    let good = fs::read_to_string(&path).unwrap();

    fs::write(
        &path,
        good.replace("backends = [", "backends = [{ addr = \"nope\" }, "),
    )
    .unwrap();
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 500, "{}", r.body_str());
    assert!(r.body_str().contains("ringlb.toml:"), "{}", r.body_str());
    assert!(
        r.body_str().contains("invalid socket address"),
        "{}",
        r.body_str()
    );

    fs::write(&path, good.replace("workers = 2", "workers = 1")).unwrap();
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 500);
    assert!(
        r.body_str().contains("[server] changed; restart"),
        "{}",
        r.body_str()
    );

    assert_eq!(version(&proxy), 1);
    assert_eq!(metric(&proxy, "ringlb_config_reload_failures_total"), 2.0);
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 200);
    assert_eq!(a.request_count(), 1);
}

#[test]
fn sighup_reloads_routes() {
    let a = Backend::echo();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr], &[])
        .upstream("other", &[b.addr], &[])
        .route("/", None, "app")
        .start();
    assert_eq!(proxy.client().roundtrip(&get("/x")).status, 200);
    assert_eq!(b.request_count(), 0);
    rewrite(&proxy, |t| {
        t.replace("upstream = \"app\"", "upstream = \"other\"")
    });
    proxy.signal("HUP");
    assert!(wait_until(WAIT, || {
        proxy.client().roundtrip(&get("/x")).status == 200 && b.request_count() > 0
    }));
    assert!(proxy.try_status().is_none());
    assert_eq!(version(&proxy), 2);
    assert!(wait_until(WAIT, || proxy
        .stderr()
        .contains("config reloaded")));
}
