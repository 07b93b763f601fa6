//! Config reload (`POST /reload`, SIGHUP): new requests get the new
//! upstreams and routes, on new connections and on kept-alive ones (which
//! move between requests, not closed), a bad file or a restart-only
//! `[server]` change is refused and the running config stays, and metrics
//! continue; ten reloads under keep-alive load, adding and removing a
//! listener each time, lose no request. (Listener, certificate and admin
//! changes in detail: `reload_listeners`.)

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::{admin, metric, status};
use crate::backend::Backend;
use crate::client::{get, Client, Headers};
use crate::harness::{free_port, wait_until, Proxy, WAIT};
use crate::loadgen::{Load, LoadReport};

pub fn rewrite(proxy: &Proxy, edit: impl FnOnce(String) -> String) {
    let path = proxy.dir().join("ringlb.toml");
    let text = fs::read_to_string(&path).unwrap();
    let new = edit(text.clone());
    assert_ne!(new, text, "the edit changed nothing");
    fs::write(&path, new).unwrap();
}

pub fn version(proxy: &Proxy) -> u64 {
    status(proxy)["config"]["version"].as_u64().unwrap()
}

/// `POST /reload` answers that the new config was taken.
pub fn assert_reloaded(proxy: &Proxy) {
    let r = admin(proxy, "POST", "/reload");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "reloaded\n"),
        "stderr:\n{}",
        proxy.stderr()
    );
}

#[test]
fn post_reload_moves_new_and_kept_alive_traffic_between_requests() {
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
    assert_reloaded(&proxy);
    assert_eq!(version(&proxy), 2);

    // New connections reach the new backend (each worker applies the
    // update as a message, so allow it a moment).
    assert!(wait_until(WAIT, || {
        proxy.client().roundtrip(&get("/")).status == 200 && b.request_count() > 0
    }));
    let a_after = a.request_count();
    let b_before = b.request_count();
    // The old keep-alive connection was not dropped: its next request is
    // served on the new config (it moves between requests).
    assert_eq!(old.roundtrip(&get("/")).status, 200);
    assert_eq!(
        b.request_count(),
        b_before + 1,
        "the kept-alive connection's request"
    );
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
    let doc = status(&proxy);
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
        r.body_str().contains("server.workers changed; restart"),
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

/// `GET target` on a fresh connection; the answering backend's
/// `X-Backend`, or why there was none.
fn probe(proxy: &Proxy, target: &str) -> Result<String, String> {
    let mut c = Client::try_connect(proxy.addr).map_err(|e| format!("connect: {e}"))?;
    let r = c
        .try_read_response_after(&get(target))
        .map_err(|e| format!("{target}: {e}"))?;
    match (r.status, r.header("x-backend")) {
        (200, Some(name)) => Ok(name.to_string()),
        (status, _) => Err(format!("{target}: {status} {:?}", r.body_str())),
    }
}

/// The `[[routes]]` and `[upstreams.*]` part of the config of generation
/// `n` (0 is the one the proxy starts with): `/` to `app`, `/vK/` to `alt`
/// for every K up to `n`; `app` has a2 in odd generations, `alt` has b2 in
/// even ones, so each reload adds a backend to one upstream and removes
/// one from the other.
fn routes_and_upstreams(n: usize, [a1, a2, b1, b2]: [SocketAddr; 4]) -> String {
    let mut s = String::new();
    s.push_str("\n[[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n");
    for k in 1..=n {
        write!(
            s,
            "\n[[routes]]\npath_prefix = \"/v{k}/\"\nupstream = \"alt\"\n"
        )
        .unwrap();
    }
    let (app, alt) = if n % 2 == 1 {
        (vec![a1, a2], vec![b1])
    } else {
        (vec![a1], vec![b1, b2])
    };
    for (name, addrs) in [("app", app), ("alt", alt)] {
        let list: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        write!(
            s,
            "\n[upstreams.{name}]\nbackends = [{}]\n",
            list.join(", ")
        )
        .unwrap();
    }
    s
}

/// Ten reloads, alternately `POST /reload` and SIGHUP, while three
/// keep-alive clients send GETs. Each reload adds a route `/vN/` to `alt`
/// (before it, `/vN/` falls to `/` and `app`) and swaps a backend in each
/// upstream; odd reloads add a second listener and even ones remove it
/// (the load stays on the first). Clients retry a GET once on a fresh
/// connection only after the
/// keep-alive race (a reused connection ended before any response
/// byte); any other failure counts. No request may fail, every `/vN/` must reach
/// an `alt` backend after its reload, and the config version ends at 11.
#[test]
fn ten_reloads_under_load_lose_no_request_and_new_routes_take_effect() {
    const RELOADS: usize = 10;
    const CLIENTS: usize = 3;
    let (a1, a2, b1, b2) = (
        Backend::named("a1"),
        Backend::named("a2"),
        Backend::named("b1"),
        Backend::named("b2"),
    );
    let addrs = [a1.addr, a2.addr, b1.addr, b2.addr];
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a1.addr], &[])
        .upstream("alt", &[b1.addr, b2.addr], &[])
        .route("/", None, "app")
        .start();
    let path = proxy.dir().join("ringlb.toml");
    let original = fs::read_to_string(&path).unwrap();
    // The file is [server], routes, upstreams, [admin]; a reload rewrites
    // the routes and upstreams, and odd generations add a second listener
    // (even ones remove it) while the load runs on the first.
    let (server, rest) = original.split_at(original.find("\n[[routes]]").unwrap());
    let admin_part = &rest[rest.find("\n[admin]").unwrap()..];
    let extra = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let one = format!("listen = [\"{}\"]", proxy.addr);
    let two = format!("listen = [\"{}\", \"{extra}\"]", proxy.addr);
    assert!(server.contains(&one));
    let config = |n: usize| {
        let server = if n % 2 == 1 {
            server.replacen(&one, &two, 1)
        } else {
            server.to_string()
        };
        format!("{server}{}{admin_part}", routes_and_upstreams(n, addrs))
    };
    assert_eq!(config(0), original, "generation 0 must be the start config");

    let load = Load::retrying_races(proxy.addr, CLIENTS);
    let load_started = Instant::now();
    let mut reloaded_at: Vec<Instant> = Vec::new();
    assert!(
        wait_until(WAIT, || a1.proxied_count() >= 20),
        "the load does not reach the proxy"
    );

    let mut problems: Vec<String> = Vec::new();
    let mut took_effect = 0;
    for n in 1..=RELOADS {
        let prefix = format!("/v{n}/");
        // Before the reload /vN/ is not a route of its own yet.
        match probe(&proxy, &format!("{prefix}before")) {
            Ok(name) if name.starts_with('a') => {}
            other => problems.push(format!("reload {n}: before it, {prefix} gave {other:?}")),
        }
        fs::write(&path, config(n)).unwrap();
        reloaded_at.push(Instant::now());
        let how = if n % 2 == 1 {
            let r = admin(&proxy, "POST", "/reload");
            if (r.status, r.body_str().as_str()) != (200, "reloaded\n") {
                problems.push(format!(
                    "reload {n}: POST /reload: {} {:?}",
                    r.status,
                    r.body_str()
                ));
            }
            "POST /reload"
        } else {
            proxy.signal("HUP");
            "SIGHUP"
        };
        let started = Instant::now();
        let sent_before = load.sent();
        // Poll until the new route answers from an alt backend, and check
        // that backend saw that very request.
        let mut tries = 0;
        let mut last = Err(String::new());
        let ok = wait_until(WAIT, || {
            tries += 1;
            let target = format!("{prefix}probe{tries}");
            last = probe(&proxy, &target);
            let backend = match last.as_deref() {
                Ok("b1") => &b1,
                Ok("b2") => &b2,
                _ => return false,
            };
            backend.proxied().iter().any(|r| r.target == target)
        });
        let waited = started.elapsed();
        if ok {
            took_effect += 1;
        } else {
            problems.push(format!(
                "reload {n} ({how}): {prefix} did not reach alt within {WAIT:?}; last probe {last:?}"
            ));
        }
        let extra_ok = if n % 2 == 1 {
            wait_until(WAIT, || {
                Client::try_connect(extra)
                    .and_then(|mut c| c.try_read_response_after(&get("/extra")))
                    .is_ok_and(|r| r.status == 200)
            })
        } else {
            wait_until(WAIT, || {
                matches!(std::net::TcpStream::connect(extra),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            })
        };
        if !extra_ok {
            let want = if n % 2 == 1 { "added" } else { "removed" };
            problems.push(format!("reload {n} ({how}): listener {extra} not {want}"));
        }
        let v = version(&proxy);
        if v != n as u64 + 1 {
            problems.push(format!(
                "reload {n} ({how}): config version {v}, want {}",
                n + 1
            ));
        }
        thread::sleep(Duration::from_millis(100));
        eprintln!(
            "reload {n:2} ({how:12}): {prefix} answered from alt after {:.1} ms ({tries} probes), \
             load requests meanwhile and in the next 100 ms: {}",
            waited.as_secs_f64() * 1e3,
            load.sent() - sent_before
        );
    }
    let LoadReport {
        sent,
        errors,
        races,
    } = load.finish();
    let final_version = version(&proxy);
    let reloads_total = metric(&proxy, "ringlb_config_reloads_total");

    eprintln!("---- ten reloads under load ----");
    eprintln!(
        "requests sent: {sent}, failures: {}, keep-alive races retried: {}, reloads: {RELOADS} \
         (ringlb_config_reloads_total {reloads_total}), new routes that took effect: \
         {took_effect}/{RELOADS}, final config version: {final_version}",
        errors.len(),
        races.len()
    );
    eprintln!(
        "requests per backend (without health checks): a1 {}, a2 {}, b1 {}, b2 {}",
        a1.proxied_count(),
        a2.proxied_count(),
        b1.proxied_count(),
        b2.proxied_count()
    );
    // A request of a true keep-alive race never reached the proxy's
    // parser, so only its retry reaches a backend.
    let served: Vec<String> = [&a1, &a2, &b1, &b2]
        .iter()
        .flat_map(|b| b.proxied())
        .map(|r| r.target)
        .collect();
    let load_served: Vec<&String> = served.iter().filter(|t| t.starts_with("/load/")).collect();
    let mut distinct = load_served.clone();
    distinct.sort();
    distinct.dedup();
    eprintln!(
        "load requests the backends got: {} ({} distinct); sent minus races: {}",
        load_served.len(),
        distinct.len(),
        sent - races.len()
    );
    let mut forwarded_races = 0;
    for (at, r) in &races {
        let when = match reloaded_at.iter().rposition(|t| t <= at) {
            Some(i) => format!(
                "{:.1} ms after reload {} began",
                (*at - reloaded_at[i]).as_secs_f64() * 1e3,
                i + 1
            ),
            None => format!(
                "{:.1} ms after the load began, before any reload",
                (*at - load_started).as_secs_f64() * 1e3
            ),
        };
        let target = r.split(':').next().unwrap();
        let copies = served.iter().filter(|t| *t == target).count();
        if copies != 1 {
            forwarded_races += 1;
        }
        eprintln!("keep-alive race {when}: {r}; the backends got {target} {copies} time(s)");
    }
    for e in errors.iter().take(10) {
        eprintln!("failure: {e}");
    }
    for p in &problems {
        eprintln!("problem: {p}");
    }

    assert!(
        errors.is_empty(),
        "{} of {sent} requests failed, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        forwarded_races, 0,
        "a request the client saw die before any response byte reached a backend"
    );
    // Connections move to the new config between requests, so a reload
    // closes none: not even the keep-alive race may happen.
    assert!(
        races.is_empty(),
        "{} kept-alive connections were closed by a reload",
        races.len()
    );
    assert_eq!(took_effect, RELOADS);
    assert_eq!(final_version, RELOADS as u64 + 1);
}

#[test]
fn pooled_upstream_connections_survive_a_reload() {
    let a = Backend::echo();
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[a.addr], &[])
        .start();
    // One client connection stays on one worker, so its requests use that
    // worker's pool before and after the reload.
    let mut c = proxy.client();
    assert_eq!(c.roundtrip(&get("/")).status, 200);
    assert_eq!(a.connections(), 1);

    // Change the routes only; the backend stays.
    rewrite(&proxy, |t| {
        format!("{t}\n[[routes]]\npath_prefix = \"/more\"\nupstream = \"app\"\n")
    });
    assert_reloaded(&proxy);
    assert_eq!(version(&proxy), 2);
    for path in ["/", "/more/x", "/"] {
        assert_eq!(c.roundtrip(&get(path)).status, 200);
    }
    assert_eq!(a.request_count(), 4);
    assert_eq!(
        a.connections(),
        1,
        "the pooled connection to the kept backend was not reused after the reload"
    );
}
