//! Resilience end to end: active health checks, passive ejection, the
//! circuit breaker, retries and their budget, panic mode.
//!
//! Behaviour bounded by a configured interval (ejection within `fall ×
//! interval`, recovery within `rise × interval`, a breaker open for
//! `open_for`) is asserted with [`SLACK`]× slack, with small intervals so
//! the tests stay fast; the slack is wide because CI shares two cores with
//! the build, and the bounds still separate "the checker did it" from "a
//! 10 s passive cooldown did it" or "it never happened". When a proxy decision can only be seen in its log (an attempt
//! on a backend whose port is closed reaches no process), the test reads
//! the proxy's timestamped log lines.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::admin::metric;
use crate::backend::{Backend, Reply, Resp};
use crate::client::{get, pattern, request, Headers, Response};
use crate::harness::{wait_until, Proxy, Refused, WAIT};
use crate::loadgen::{Load, LoadReport};

/// How many times a configured interval a bounded event may take.
const SLACK: u32 = 8;

/// A backend answering `NAME` with the status in the returned switch,
/// which the test may flip at any time.
fn switchable(name: &'static str, status: u16) -> (Backend, Arc<AtomicU16>) {
    let switch = Arc::new(AtomicU16::new(status));
    let s = switch.clone();
    let backend = Backend::start(move |_| {
        Resp::new(s.load(Ordering::SeqCst))
            .header("X-Backend", name)
            .body(name)
            .into()
    });
    (backend, switch)
}

/// `GET target` on a fresh connection (local error replies close it).
fn fetch(proxy: &Proxy, target: &str) -> Response {
    proxy.client().roundtrip(&get(target))
}

/// Asserts `resp` is the proxy's own 503 for an upstream without an
/// available backend.
fn assert_no_backend_503(resp: &Response) {
    assert_eq!(resp.status, 503, "body: {:?}", resp.body_str());
    assert!(
        resp.body_str().contains("no backend available"),
        "503 without the reason: {:?}",
        resp.body_str()
    );
    assert!(resp.closes(), "local 503 without Connection: close");
    assert_eq!(resp.header("x-backend"), None, "503 came from a backend");
}

/// Log lines of failed connects to `addr`, with their times.
fn connect_failures(proxy: &Proxy, addr: SocketAddr) -> Vec<SystemTime> {
    proxy
        .log_events(&["upstream connect failed", &format!("backend={addr} ")])
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

/// `later - earlier` in signed milliseconds.
fn ms_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

#[test]
fn killing_a_backend_under_load_loses_no_request_and_it_comes_back() {
    kill_one_of_three_under_load("passive ejection and active checks", &[], &[]);
}

#[test]
fn killing_a_backend_under_load_with_active_checks_only() {
    // No passive ejection: taking b out is the checker's job alone, within
    // fall × interval; retries hide the failed attempts until then. A third
    // of all requests need a retry meanwhile, more than the default budget
    // (0.2 per request, by design) allows, so the budget is raised.
    kill_one_of_three_under_load(
        "active checks only",
        &["passive_fall = 0"],
        &["budget = 1.0"],
    );
}

/// Three backends under continuous keep-alive GET load with health checks
/// (100 ms interval, fall 2, rise 2) and retries (3 attempts, 5 ms
/// backoff); backend b crashes, then comes back on the same port. No
/// request may fail; b must be out of rotation within 3 × fall ×
/// interval and back within 3 × rise × interval (+ one interval).
fn kill_one_of_three_under_load(label: &str, upstream: &[&str], retry: &[&str]) {
    const INTERVAL: Duration = Duration::from_millis(100);
    const FALL: u32 = 2;
    const RISE: u32 = 2;
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let mut lines: Vec<&str> = upstream.to_vec();
    lines.extend([
        "[upstreams.app.health]",
        "interval = \"100ms\"",
        "timeout = \"100ms\"",
        "fall = 2",
        "rise = 2",
        "[upstreams.app.retry]",
        "attempts = 3",
        "backoff = \"5ms\"",
    ]);
    lines.extend(retry);
    let proxy = Proxy::builder()
        .upstream("app", &[a.addr, b.addr, c.addr], &lines)
        .start();
    let load = Load::start(proxy.addr, 3);
    assert!(
        wait_until(WAIT, || [&a, &b, &c]
            .iter()
            .all(|x| x.proxied_count() >= 20)),
        "load does not reach every backend"
    );

    // Crash b.
    b.kill();
    let (killed, killed_wall) = (Instant::now(), SystemTime::now());
    let eject_bound = INTERVAL * FALL * SLACK;
    // Well past the bound, so attempts after it would have been seen.
    thread::sleep(eject_bound + Duration::from_millis(600));

    b.restart();
    let (restarted, restarted_wall) = (Instant::now(), SystemTime::now());
    let back = wait_until(WAIT, || b.proxied().iter().any(|r| r.at > restarted));
    let back_after = b
        .proxied()
        .iter()
        .filter(|r| r.at > restarted)
        .map(|r| r.at - restarted)
        .min();
    // Some more load with b back in rotation.
    thread::sleep(Duration::from_millis(300));
    let LoadReport { sent, errors, .. } = load.finish();

    let before_restart: Vec<Instant> = b
        .proxied()
        .iter()
        .map(|r| r.at)
        .filter(|at| *at < restarted)
        .collect();
    let last_before = before_restart.iter().max().copied();
    // The tool's own guarantee: a killed backend takes no request.
    assert!(
        before_restart.iter().all(|at| *at <= killed),
        "b served a request while killed"
    );
    let attempts: Vec<SystemTime> = connect_failures(&proxy, b.addr)
        .into_iter()
        .filter(|t| *t < restarted_wall)
        .collect();
    let last_attempt_ms = attempts
        .iter()
        .map(|t| ms_between(killed_wall, *t))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let first_event = |needles: &[&str]| {
        proxy
            .log_events(needles)
            .into_iter()
            .map(|(t, _)| t)
            .find(|t| *t >= killed_wall)
    };
    let b_field = format!("backend={} ", b.addr);
    let unhealthy = first_event(&["backend unhealthy", &b_field]);
    let ejected = first_event(&["ejected after consecutive failures", &b_field]);
    let healthy = first_event(&["backend healthy", &b_field]);

    eprintln!("---- kill one of three backends under load ({label}) ----");
    eprintln!("requests sent: {sent}, failed: {}", errors.len());
    eprintln!(
        "b's last request before the kill: {:.1} ms relative to the kill",
        last_before.map_or(f64::NAN, |t| -(killed - t).as_secs_f64() * 1e3)
    );
    eprintln!(
        "failed attempts on b after the kill: {}, the last {:.1} ms after the kill (bound {} ms)",
        attempts.len(),
        last_attempt_ms.unwrap_or(f64::NAN),
        eject_bound.as_millis()
    );
    eprintln!(
        "b passively ejected {:.1} ms after the kill; marked unhealthy by the checker {:.1} ms after",
        ejected.map_or(f64::NAN, |t| ms_between(killed_wall, t)),
        unhealthy.map_or(f64::NAN, |t| ms_between(killed_wall, t))
    );
    eprintln!(
        "b restarted: marked healthy {:.1} ms later, first request {:.1} ms later (bound {} ms)",
        healthy.map_or(f64::NAN, |t| ms_between(restarted_wall, t)),
        back_after.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        (INTERVAL * RISE * SLACK + INTERVAL).as_millis()
    );

    assert!(
        errors.is_empty(),
        "{} of {sent} requests failed, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        ejected.is_some() || unhealthy.is_some(),
        "b was never taken out of rotation (no ejection or unhealthy log line)"
    );
    if let Some(ms) = last_attempt_ms {
        assert!(
            ms <= eject_bound.as_secs_f64() * 1e3,
            "the proxy still tried b {ms:.1} ms after the kill (bound {eject_bound:?})"
        );
    }
    assert!(back, "b got no traffic within {WAIT:?} of its restart");
    let back_after = back_after.unwrap();
    // 3× the configured rise time, plus one poll period of the checker.
    let rise_bound = INTERVAL * RISE * SLACK + INTERVAL;
    assert!(
        back_after <= rise_bound,
        "b got traffic again only {back_after:?} after its restart (bound {rise_bound:?})"
    );
}

#[test]
fn breaker_opens_answers_locally_probes_and_closes() {
    const OPEN_FOR: Duration = Duration::from_millis(300);
    let (backend, status) = switchable("x", 500);
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[backend.addr],
            &[
                "passive_fall = 0",
                "[upstreams.app.breaker]",
                "failures = 3",
                "successes = 2",
                "open_for = \"300ms\"",
            ],
        )
        .start();
    // The breaker opens after a request was sent, so it stays open until
    // at least that send + `open_for`. Requests answered before then, with
    // a margin for the breaker's millisecond clock, must be refused.
    let refused_until = |opened_after: Instant, count: usize| {
        let deadline = opened_after + OPEN_FOR - Duration::from_millis(20);
        let mut refused = 0;
        while Instant::now() + Duration::from_millis(100) < deadline {
            let r = fetch(&proxy, "/while-open");
            assert!(
                Instant::now() < deadline,
                "a request took too long to tell open from half-open"
            );
            assert_no_backend_503(&r);
            refused += 1;
        }
        assert!(refused > 0, "no request fit in the open window");
        assert_eq!(
            backend.proxied_count(),
            count,
            "the open breaker let a request through"
        );
    };

    // Closed: three failures reach the backend and are relayed.
    let mut last_sent = Instant::now();
    for i in 0..3 {
        last_sent = Instant::now();
        assert_eq!(fetch(&proxy, &format!("/fail{i}")).status, 500);
    }
    let opened_by = Instant::now();
    assert_eq!(backend.proxied_count(), 3);
    // Open: refused without contacting the backend.
    refused_until(last_sent, 3);

    // After `open_for`, one probe goes through; its failure reopens at once.
    thread::sleep(
        (opened_by + OPEN_FOR + Duration::from_millis(30))
            .saturating_duration_since(Instant::now()),
    );
    let probe_sent = Instant::now();
    assert_eq!(fetch(&proxy, "/probe-fails").status, 500);
    let reopened_by = Instant::now();
    assert_eq!(backend.proxied_count(), 4);
    refused_until(probe_sent, 4);

    // The backend recovers: after `open_for`, two probe successes close it.
    status.store(200, Ordering::SeqCst);
    thread::sleep(
        (reopened_by + OPEN_FOR + Duration::from_millis(30))
            .saturating_duration_since(Instant::now()),
    );
    for i in 0..2 {
        let r = fetch(&proxy, &format!("/probe-ok{i}"));
        assert_eq!(r.status, 200, "probe {i}: {:?}", r.body_str());
    }
    assert_eq!(backend.proxied_count(), 6);
    let mut c = proxy.client();
    for i in 0..10 {
        assert_eq!(c.roundtrip(&get(&format!("/ok{i}"))).status, 200);
    }
    assert_eq!(backend.proxied_count(), 16);

    // Closed again, not half-open: a half-open breaker would reopen on the
    // first failure; a closed one needs three.
    status.store(500, Ordering::SeqCst);
    for i in 0..3 {
        assert_eq!(
            fetch(&proxy, &format!("/fail-again{i}")).status,
            500,
            "failure {i}"
        );
    }
    assert_eq!(backend.proxied_count(), 19);
    assert_no_backend_503(&fetch(&proxy, "/open-again"));
    assert_eq!(backend.proxied_count(), 19);
    let opened = proxy.log_events(&["breaker Open", &format!("backend={} ", backend.addr)]);
    assert_eq!(opened.len(), 3, "breaker openings logged: {opened:?}");
}

#[test]
fn panic_mode_sends_traffic_through_an_open_breaker() {
    let (backend, status) = switchable("x", 500);
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[backend.addr],
            &[
                "passive_fall = 0",
                "panic_mode = true",
                "[upstreams.app.breaker]",
                "failures = 3",
                "open_for = \"30s\"",
            ],
        )
        .start();
    for i in 0..3 {
        assert_eq!(fetch(&proxy, &format!("/fail{i}")).status, 500);
    }
    let field = format!("backend={} ", backend.addr);
    assert!(
        wait_until(WAIT, || !proxy
            .log_events(&["breaker Open", &field])
            .is_empty()),
        "the breaker did not open after 3 failures"
    );
    // Open for 30 s, and still every request reaches the backend.
    for i in 0..5 {
        let r = fetch(&proxy, &format!("/panic{i}"));
        assert_eq!(
            (r.status, r.header("x-backend")),
            (500, Some("x")),
            "request {i}: {:?}",
            r.body_str()
        );
    }
    assert_eq!(backend.proxied_count(), 8);
    status.store(200, Ordering::SeqCst);
    let r = fetch(&proxy, "/panic-ok");
    assert_eq!((r.status, r.body_str().as_str()), (200, "x"));
    assert_eq!(backend.proxied_count(), 9);
}

#[test]
fn retry_budget_caps_retries_when_every_backend_fails() {
    const N: usize = 200;
    const BUDGET: f64 = 0.2;
    // From src/upstream/retry.rs: each worker's bucket starts with 10
    // tokens, gains 10 a second (capped at 100), each request deposits
    // `budget` and each retry takes one. One client connection stays on one
    // worker, so over T seconds since the proxy started:
    //   retries <= budget·N + 10 + 10·T.
    let bs: Vec<Backend> = (0..3)
        .map(|_| Backend::fixed(Resp::new(503).body("busy")))
        .collect();
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let started = Instant::now();
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &addrs,
            &[
                "passive_fall = 0",
                "[upstreams.app.retry]",
                "attempts = 3",
                "on = [\"503\"]",
                "budget = 0.2",
                "backoff = \"0s\"",
            ],
        )
        .start();
    let mut c = proxy.client();
    for i in 0..N {
        let r = c.roundtrip(&get(&format!("/b{i}")));
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (503, "busy"),
            "request {i}"
        );
    }
    let t = started.elapsed().as_secs_f64();
    let total: usize = bs.iter().map(Backend::proxied_count).sum();
    let retries = total - N;
    let upper = (BUDGET * N as f64 + 10.0 + 10.0 * t).floor() as usize;
    // Every request wants two retries; until the bucket runs dry each gets
    // them, after that it holds under one token, so at least all but one
    // of the tokens ever deposited were spent.
    let lower = (2 * N).min((BUDGET * N as f64) as usize + 10 - 1);
    eprintln!(
        "retry budget: {N} requests, {total} reached backends, {retries} retries \
         in {t:.2} s (allowed {lower}..={upper}; without a budget {})",
        2 * N
    );
    assert!(total >= N);
    assert!(
        (lower..=upper).contains(&retries),
        "{retries} retries, expected {lower}..={upper}"
    );
}

/// Retries only (no passive ejection), three attempts, no backoff, and a
/// budget that never refuses: what the retry tests below isolate.
const RETRY_ELSEWHERE: &[&str] = &[
    "passive_fall = 0",
    "[upstreams.app.retry]",
    "attempts = 3",
    "budget = 1.0",
    "backoff = \"0s\"",
];

#[test]
fn a_retry_goes_to_another_backend() {
    const N: usize = 40;
    let a = Backend::fixed(Resp::new(502).header("X-Backend", "a").body("a"));
    let b = Backend::named("b");
    let proxy = Proxy::builder()
        .upstream("app", &[a.addr, b.addr], RETRY_ELSEWHERE)
        .start();
    let mut c = proxy.client();
    for i in 0..N {
        // Half on one connection, half on fresh ones (both workers).
        let r = if i % 2 == 0 {
            c.roundtrip(&get(&format!("/r{i}")))
        } else {
            fetch(&proxy, &format!("/r{i}"))
        };
        assert_eq!(
            (r.status, r.header("x-backend")),
            (200, Some("b")),
            "request {i}: {:?}",
            r.body_str()
        );
    }
    let per_target = |bk: &Backend| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for r in bk.proxied() {
            *m.entry(r.target).or_insert(0) += 1;
        }
        m
    };
    let (on_a, on_b) = (per_target(&a), per_target(&b));
    assert_eq!(on_b.len(), N, "b did not see every request: {on_b:?}");
    assert!(
        on_b.values().all(|n| *n == 1),
        "b saw a request twice: {on_b:?}"
    );
    assert!(
        on_a.values().all(|n| *n == 1),
        "a was retried on itself: {on_a:?}"
    );
    assert!(
        !on_a.is_empty(),
        "a never got a first attempt, nothing was retried"
    );
    eprintln!(
        "retry to another backend: a got {} first attempts of {N}",
        on_a.len()
    );
}

#[test]
fn a_post_that_reached_a_backend_is_not_retried_but_a_get_is() {
    // a reads the whole request, then resets without answering.
    let a = Backend::start(|_| Reply::Reset);
    let b = Backend::named("b");
    let proxy = Proxy::builder()
        .upstream("app", &[a.addr, b.addr], RETRY_ELSEWHERE)
        .start();
    let body = pattern(100);
    let targets =
        |bk: &Backend| -> HashSet<String> { bk.proxied().into_iter().map(|r| r.target).collect() };
    let mut posts_on_a = 0;
    for i in 0..30 {
        if posts_on_a == 3 {
            break;
        }
        let target = format!("/post{i}");
        let r = proxy
            .client()
            .roundtrip(&request("POST", &target, &[], &body));
        if targets(&a).contains(&target) {
            posts_on_a += 1;
            assert_eq!(r.status, 502, "{target} reached a: {:?}", r.body_str());
            assert!(!targets(&b).contains(&target), "{target} was replayed on b");
        } else {
            assert_eq!(
                (r.status, r.header("x-backend")),
                (200, Some("b")),
                "{target}"
            );
        }
    }
    assert_eq!(posts_on_a, 3, "30 POSTs and a did not get 3 of them");
    for i in 0..10 {
        let target = format!("/get{i}");
        let r = fetch(&proxy, &target);
        assert_eq!(
            (r.status, r.header("x-backend")),
            (200, Some("b")),
            "{target}: {:?}",
            r.body_str()
        );
    }
    let gets_on_a = targets(&a).iter().filter(|t| t.starts_with("/get")).count();
    assert!(gets_on_a > 0, "no GET hit a, nothing was retried");
}

#[test]
fn a_post_whose_connect_failed_is_sent_to_another_backend() {
    let down = Refused::new();
    let b = Backend::echo();
    let proxy = Proxy::builder()
        .upstream("app", &[down.addr, b.addr], RETRY_ELSEWHERE)
        .start();
    let body = pattern(1000);
    for i in 0..10 {
        let target = format!("/post{i}");
        let r = proxy
            .client()
            .roundtrip(&request("POST", &target, &[], &body));
        assert_eq!(r.status, 200, "{target}: {:?}", r.body_str());
    }
    let posts = b.proxied();
    assert_eq!(posts.len(), 10, "every POST once on b");
    for (i, p) in posts.iter().enumerate() {
        assert_eq!(
            (p.method.as_str(), p.target.clone()),
            ("POST", format!("/post{i}"))
        );
        assert_eq!(p.body, body, "body of {}", p.target);
    }
    let refused = connect_failures(&proxy, down.addr).len();
    assert!(refused > 0, "no POST was tried on the down backend first");
    eprintln!("POST after a connect failure: {refused} of 10 went to the down backend first");
}

#[test]
fn passive_ejection_stops_attempts_and_a_probe_brings_the_backend_back() {
    const COOLDOWN: Duration = Duration::from_millis(300);
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    a.kill();
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[a.addr, b.addr],
            &["passive_fall = 2", "passive_cooldown = \"300ms\""],
        )
        .start();
    let burst_start = Instant::now();
    let statuses: Vec<u16> = (0..20)
        .map(|i| fetch(&proxy, &format!("/burst{i}")).status)
        .collect();
    let burst = burst_start.elapsed();
    let failed = statuses.iter().filter(|s| **s == 502).count();
    assert!(
        statuses.iter().all(|s| *s == 502 || *s == 200),
        "{statuses:?}"
    );
    // Two failures eject a; a probe may go out once per cool-down after.
    let allowed = 2 + (burst.as_millis() / COOLDOWN.as_millis()) as usize;
    eprintln!(
        "passive ejection: {failed} failed of 20 in {burst:?} (allowed {allowed}): {statuses:?}"
    );
    assert!(
        (2..=allowed).contains(&failed),
        "{failed} requests failed on the dead backend, expected 2..={allowed}: {statuses:?}"
    );
    let field = format!("backend={} ", a.addr);
    let ejections = proxy.log_events(&["ejected after consecutive failures", &field]);
    assert_eq!(ejections.len(), 1, "{ejections:?}");
    let ejected_at = ejections[0].0;

    // a comes back: after the cool-down one probe finds it healthy.
    a.restart();
    let restarted = Instant::now();
    let mut statuses = Vec::new();
    let back = wait_until(WAIT, || {
        statuses.push(fetch(&proxy, "/after").status);
        a.proxied_count() > 0
    });
    assert!(back, "a got no probe within {WAIT:?}");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let probe = a.proxied()[0].at;
    let probe_wall = SystemTime::now() - probe.elapsed();
    eprintln!(
        "passive recovery: probe {:.1} ms after the ejection, {:.1} ms after the restart",
        ms_between(ejected_at, probe_wall),
        (probe - restarted).as_secs_f64() * 1e3
    );
    assert!(
        ms_between(ejected_at, probe_wall) >= COOLDOWN.as_secs_f64() * 1e3 - 20.0,
        "probe before the cool-down ended"
    );
    assert!(
        !proxy
            .log_events(&["restored by a probe", &field])
            .is_empty(),
        "no 'restored by a probe' log line"
    );
    let mut c = proxy.client();
    let who: Vec<String> = (0..10)
        .map(|i| {
            let r = c.roundtrip(&get(&format!("/back{i}")));
            assert_eq!(r.status, 200);
            r.header("x-backend").unwrap().to_string()
        })
        .collect();
    assert_eq!(who.iter().filter(|w| *w == "a").count(), 5, "{who:?}");
}

#[test]
fn every_backend_unhealthy_is_503_without_an_attempt() {
    let (x, y) = (Refused::new(), Refused::new());
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[x.addr, y.addr],
            &[
                "[upstreams.app.health]",
                "interval = \"100ms\"",
                "timeout = \"100ms\"",
                "fall = 1",
            ],
        )
        .start();
    let down = |addr: SocketAddr| {
        !proxy
            .log_events(&["backend unhealthy", &format!("backend={addr} ")])
            .is_empty()
    };
    assert!(
        wait_until(WAIT, || down(x.addr) && down(y.addr)),
        "the checker did not mark both backends unhealthy"
    );
    for _ in 0..3 {
        assert_no_backend_503(&fetch(&proxy, "/"));
    }
    let tried = connect_failures(&proxy, x.addr).len() + connect_failures(&proxy, y.addr).len();
    assert_eq!(tried, 0, "the proxy tried an unhealthy backend");
}

#[test]
fn every_backend_ejected_is_503_and_panic_mode_still_tries() {
    // Passive only: each dead backend is ejected by its first failure.
    let (x, y) = (Refused::new(), Refused::new());
    let start = |panic: bool| {
        Proxy::builder()
            .upstream(
                "app",
                &[x.addr, y.addr],
                &["passive_fall = 1", &format!("panic_mode = {panic}")],
            )
            .start()
    };
    let proxy = start(false);
    let statuses: Vec<u16> = (0..5).map(|_| fetch(&proxy, "/").status).collect();
    assert_eq!(statuses, [502, 502, 503, 503, 503]);
    assert_no_backend_503(&fetch(&proxy, "/"));
    drop(proxy);

    let proxy = start(true);
    let statuses: Vec<u16> = (0..5).map(|_| fetch(&proxy, "/").status).collect();
    assert_eq!(statuses, [502; 5], "panic mode must still try a backend");
    let tried = connect_failures(&proxy, x.addr).len() + connect_failures(&proxy, y.addr).len();
    assert_eq!(tried, 5);
}

#[test]
fn a_retry_with_no_untried_backend_left_relays_the_backend_answer() {
    // One backend, answering 502; retries on 502 are configured but there
    // is no other backend to retry on. The client must get the backend's
    // own answer (or a retry of it), not a made-up "no backend available".
    let only = Backend::fixed(
        Resp::new(502)
            .header("X-Backend", "only")
            .body("from the backend"),
    );
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[only.addr],
            &[
                "passive_fall = 0",
                "[upstreams.app.retry]",
                "attempts = 3",
                "backoff = \"0s\"",
            ],
        )
        .start();
    let r = fetch(&proxy, "/once");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (502, "from the backend"),
        "backend got {} attempt(s)",
        only.proxied_count()
    );
}

#[test]
fn retries_that_run_out_of_backends_relay_the_last_answer() {
    // The default `attempts = 3` over two backends that both answer 502:
    // after both were tried, the client must get a backend's 502, not a
    // made-up 503 "no backend available".
    let (a, b) = (
        Backend::fixed(Resp::new(502).header("X-Backend", "a").body("from a")),
        Backend::fixed(Resp::new(502).header("X-Backend", "b").body("from b")),
    );
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[a.addr, b.addr],
            &[
                "passive_fall = 0",
                "[upstreams.app.retry]",
                "backoff = \"0s\"",
            ],
        )
        .start();
    let r = fetch(&proxy, "/both-fail");
    assert_eq!(
        (r.status, r.header("x-backend").is_some()),
        (502, true),
        "a got {}, b got {} attempt(s); body {:?}",
        a.proxied_count(),
        b.proxied_count(),
        r.body_str()
    );
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid`; returns the old limits.
fn set_nofile_soft(pid: u32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall on valid pointers to local structs.
    let got = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(got, 0, "prlimit get: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit set: {}", std::io::Error::last_os_error());
    old
}

/// Upstream connects that fail with EMFILE are the proxy's shortage, not
/// the backend's: the client gets a 503 naming it, the metric counts it,
/// the backend is not ejected, and once the pressure goes requests pass.
#[test]
fn out_of_fds_on_upstream_connect_is_not_the_backends_fault() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .workers(1)
        .admin()
        .upstream("app", &[backend.addr], &[])
        .start();
    // The admin listener is up before the limit goes down.
    assert_eq!(metric(&proxy, "ringlb_local_errors_total"), 0.0);
    // A soft limit that leaves exactly one free fd number: the accept takes
    // it, the upstream connect's socket gets EMFILE. The admin connection
    // of the metric read above closes on its own time: wait until the
    // proxy's descriptors stop changing, or a number it frees later would
    // let the connect through.
    let fds = || -> std::collections::BTreeSet<u64> {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .expect("read /proc/pid/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    };
    let mut open = fds();
    let settled = wait_until(WAIT, || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = fds();
        std::mem::replace(&mut open, now) == open
    });
    assert!(settled, "the proxy's descriptors kept changing");
    let mut free = (0u64..).filter(|fd| !open.contains(fd));
    let (_first_free, second_free) = (free.next().unwrap(), free.next().unwrap());
    let old = set_nofile_soft(proxy.pid(), second_free);
    // More than passive_fall (3) in a row: without the fix the backend
    // would be ejected.
    for i in 0..5 {
        let resp = proxy.client().roundtrip(&get(&format!("/fd{i}")));
        assert_eq!(resp.status, 503, "request {i}: {}", resp.body_str());
        assert!(resp.body_str().contains("EMFILE"), "{}", resp.body_str());
    }
    // No fd left at all: the accept fails, the loop warns (rate-limited)
    // and backs off, and the client is served once an fd is free again.
    let open: std::collections::BTreeSet<u64> =
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .expect("read /proc/pid/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    let lowest_free = (0u64..).find(|fd| !open.contains(fd)).unwrap();
    set_nofile_soft(proxy.pid(), lowest_free);
    let mut waiting = proxy.client();
    waiting.send(&get("/waited"));
    assert!(
        wait_until(WAIT, || proxy.stderr().contains("accept failed")),
        "no accept failure logged"
    );
    set_nofile_soft(proxy.pid(), old.rlim_cur);
    assert_eq!(waiting.read_response().status, 200);
    assert!(metric(&proxy, "ringlb_accept_errors_total") >= 1.0);
    for i in 0..3 {
        let resp = proxy.client().roundtrip(&get(&format!("/after{i}")));
        assert_eq!(resp.status, 200, "after the pressure: {}", resp.body_str());
    }
    assert_eq!(metric(&proxy, "ringlb_local_errors_total"), 5.0);
    assert_eq!(metric(&proxy, "ringlb_backend_healthy"), 1.0);
    assert_eq!(
        metric(&proxy, "ringlb_upstream_connect_failures_total"),
        0.0
    );
}
