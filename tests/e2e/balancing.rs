//! Balancing strategies end to end: three named backends (each answers with
//! `X-Backend: NAME`), the real proxy, and the sequence of backends that
//! served a run of requests.
//!
//! One client connection stays on one worker, so strategies with
//! core-local cursors (round robin, smooth weighted round robin) must show
//! their exact sequence over one connection. Strategies with randomness are
//! checked with loose statistical bounds (many standard deviations wide).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Resp};
use crate::client::{get, request, Client, Headers, Response};
use crate::harness::{wait_until, BackendSpec, Proxy, WAIT};

/// Backends `a`, `b`, `c`.
fn three() -> [Backend; 3] {
    [
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ]
}

fn addrs(bs: &[Backend]) -> Vec<std::net::SocketAddr> {
    bs.iter().map(|b| b.addr).collect()
}

/// A proxy with upstream `app` over `backends` and raw extra lines.
fn proxy(backends: &[Backend], extra: &[&str]) -> Proxy {
    Proxy::builder()
        .upstream("app", &addrs(backends), extra)
        .start()
}

/// The name of the backend that served `resp`; panics unless it is a 200
/// from a named backend.
fn name_of(resp: &Response) -> String {
    assert_eq!(resp.status, 200, "body: {:?}", resp.body_str());
    resp.header("x-backend")
        .unwrap_or_else(|| panic!("no X-Backend in a 200: {:?}", resp.head))
        .to_string()
}

/// Sends `GET target` on `c` and returns who served it.
fn served(c: &mut Client, req: &[u8]) -> String {
    name_of(&c.roundtrip(req))
}

fn counts(seq: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in seq {
        *m.entry(s.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn round_robin_cycles_through_three_backends_exactly() {
    let bs = three();
    let proxy = proxy(&bs, &["strategy = \"round_robin\""]);
    let mut c = proxy.client();
    let seq: Vec<String> = (0..30)
        .map(|i| served(&mut c, &get(&format!("/r{i}"))))
        .collect();
    let cycle = &seq[..3];
    assert_eq!(
        counts(cycle).len(),
        3,
        "first cycle not all distinct: {seq:?}"
    );
    for (i, s) in seq.iter().enumerate() {
        assert_eq!(s, &cycle[i % 3], "position {i} breaks the cycle: {seq:?}");
    }
    assert_eq!(bs.map(|b| b.proxied_count()), [10, 10, 10]);
}

#[test]
fn weighted_round_robin_gives_exact_shares_per_cycle() {
    let bs = three();
    let specs: Vec<BackendSpec> = bs
        .iter()
        .zip([1, 2, 3])
        .map(|(b, w)| BackendSpec {
            weight: Some(w),
            ..BackendSpec::from(b.addr)
        })
        .collect();
    let proxy = Proxy::builder()
        .upstream("app", &specs, &["strategy = \"weighted_round_robin\""])
        .start();
    let mut c = proxy.client();
    let seq: Vec<String> = (0..60)
        .map(|i| served(&mut c, &get(&format!("/w{i}"))))
        .collect();
    // The smooth sequence has period 6 = 1 + 2 + 3, so every window of six
    // consecutive picks (wherever the worker's cursor started) is one cycle.
    for start in 0..=seq.len() - 6 {
        let window = counts(&seq[start..start + 6]);
        let got: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|n| window.get(*n).copied().unwrap_or(0))
            .collect();
        assert_eq!(got, [1, 2, 3], "window at {start}: {seq:?}");
    }
    // Smooth: interleaved, never three of one backend in a row.
    for w in seq.windows(3) {
        assert!(
            !(w[0] == w[1] && w[1] == w[2]),
            "three in a row, not smooth: {seq:?}"
        );
    }
}

/// 300 requests over 10 connections (so both workers take part); returns
/// the count per backend name.
fn spread(proxy: &Proxy) -> BTreeMap<String, usize> {
    let mut seq = Vec::new();
    for conn in 0..10 {
        let mut c = proxy.client();
        for i in 0..30 {
            seq.push(served(&mut c, &get(&format!("/s{conn}/{i}"))));
        }
    }
    counts(&seq)
}

#[test]
fn random_reaches_every_backend() {
    let bs = three();
    let proxy = proxy(&bs, &["strategy = \"random\""]);
    let got = spread(&proxy);
    eprintln!("random over 300 requests: {got:?}");
    // Expected 100 each, sd about 8; 45 is over six sd below.
    for name in ["a", "b", "c"] {
        let n = got.get(name).copied().unwrap_or(0);
        assert!(n >= 45, "{name} got {n} of 300: {got:?}");
    }
}

#[test]
fn p2c_reaches_every_backend() {
    let bs = three();
    let proxy = proxy(&bs, &["strategy = \"p2c\""]);
    let got = spread(&proxy);
    eprintln!("p2c over 300 requests: {got:?}");
    for name in ["a", "b", "c"] {
        let n = got.get(name).copied().unwrap_or(0);
        assert!(n >= 45, "{name} got {n} of 300: {got:?}");
    }
}

/// A named backend that holds every proxied request until `release` is
/// set (at most [`WAIT`]), then answers 200.
fn holding(name: &'static str) -> (Backend, Arc<AtomicBool>) {
    let release = Arc::new(AtomicBool::new(false));
    let gate = release.clone();
    let backend = Backend::start(move |req| {
        let start = Instant::now();
        while !req.is_health_check() && !gate.load(Ordering::SeqCst) && start.elapsed() < WAIT {
            thread::sleep(Duration::from_millis(5));
        }
        Resp::new(200).header("X-Backend", name).body(name).into()
    });
    (backend, release)
}

/// Runs `body` while the slow backend `s` holds `held` requests in flight
/// (sent on their own connections through the proxy). Requests that land
/// on a fast backend on the way simply complete. Afterwards releases `s`
/// and checks every held request was answered by `s`.
fn with_requests_held(
    proxy: &Proxy,
    s: &Backend,
    release: &AtomicBool,
    held: usize,
    body: impl FnOnce(),
) {
    thread::scope(|scope| {
        let mut holders = Vec::new();
        for i in 0.. {
            assert!(
                i < 30,
                "30 requests sent and {held} not held by the slow backend"
            );
            if s.proxied_count() >= held {
                break;
            }
            let before = s.proxied_count();
            let handle = scope.spawn(move || {
                let mut c = proxy.client();
                name_of(&c.roundtrip(&get(&format!("/hold{i}"))))
            });
            // Either it lands on s (and stays there) or it completes.
            assert!(
                wait_until(WAIT, || s.proxied_count() > before || handle.is_finished()),
                "request {i} neither completed nor reached the slow backend"
            );
            if s.proxied_count() > before {
                holders.push(handle);
            } else {
                let who = handle.join().expect("client thread");
                assert_ne!(who, "s", "a request finished on s before release");
            }
        }
        body();
        release.store(true, Ordering::SeqCst);
        for h in holders {
            assert_eq!(h.join().expect("holder thread"), "s");
        }
    });
}

#[test]
fn least_connections_avoids_a_backend_holding_requests() {
    let (s, release) = holding("s");
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let proxy = Proxy::builder()
        .upstream(
            "app",
            &[a.addr, s.addr, b.addr],
            &["strategy = \"least_connections\""],
        )
        .start();
    with_requests_held(&proxy, &s, &release, 1, || {
        let s_before = s.proxied_count();
        let mut c = proxy.client();
        let seq: Vec<String> = (0..20)
            .map(|i| served(&mut c, &get(&format!("/n{i}"))))
            .collect();
        assert_eq!(
            s.proxied_count(),
            s_before,
            "busy backend got a request: {seq:?}"
        );
        // Ties between the idle two go round robin.
        assert_eq!(
            counts(&seq),
            BTreeMap::from([("a".to_string(), 10), ("b".to_string(), 10)]),
            "{seq:?}"
        );
    });
    // Released: s is idle again and takes its turn.
    let mut c = proxy.client();
    let seq: Vec<String> = (0..9)
        .map(|i| served(&mut c, &get(&format!("/m{i}"))))
        .collect();
    assert_eq!(counts(&seq).get("s"), Some(&3), "{seq:?}");
}

#[test]
fn p2c_never_picks_the_most_loaded_of_three() {
    let (s, release) = holding("s");
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let proxy = Proxy::builder()
        .upstream("app", &[a.addr, s.addr, b.addr], &["strategy = \"p2c\""])
        .start();
    // s holds one request, a and b none: s is the most loaded and can only
    // win a draw against itself, which distinct draws rule out.
    with_requests_held(&proxy, &s, &release, 1, || {
        let s_before = s.proxied_count();
        let mut c = proxy.client();
        let seq: Vec<String> = (0..40)
            .map(|i| served(&mut c, &get(&format!("/n{i}"))))
            .collect();
        assert_eq!(
            s.proxied_count(),
            s_before,
            "most loaded backend picked: {seq:?}"
        );
        let got = counts(&seq);
        assert!(got.contains_key("a") && got.contains_key("b"), "{got:?}");
    });
}

/// The backend serving each of `keys` as `X-User`, one connection for all.
fn map_users(proxy: &Proxy, keys: &[String]) -> Vec<String> {
    let mut c = proxy.client();
    keys.iter()
        .map(|k| served(&mut c, &request("GET", "/u", &[("X-User", k)], b"")))
        .collect()
}

#[test]
fn consistent_hash_on_a_header_is_stable_and_moves_only_the_removed_backends_keys() {
    let bs = three();
    let hash = [
        "strategy = \"consistent_hash\"",
        "hash_key = \"header:X-User\"",
    ];
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let proxy = proxy(&bs, &hash);
    let before = map_users(&proxy, &keys);

    // Same key, same backend: again, and on a fresh connection per request
    // (both workers build the same table).
    assert_eq!(map_users(&proxy, &keys), before, "second pass differs");
    for (i, k) in keys.iter().enumerate().step_by(10) {
        let mut c = proxy.client();
        let who = served(&mut c, &request("GET", "/u", &[("x-user", k)], b""));
        assert_eq!(who, before[i], "key {k} on a new connection");
    }
    let shares = counts(&before);
    eprintln!("consistent_hash shares of 300 keys: {shares:?}");
    assert!(shares.len() > 1, "every key on one backend: {shares:?}");
    for (name, n) in &shares {
        assert!(*n >= 50, "{name} holds only {n} of 300 keys: {shares:?}");
    }
    drop(proxy);

    // Backend c marked down in a new proxy over the same list.
    let specs = [
        BackendSpec::from(bs[0].addr),
        BackendSpec::from(bs[1].addr),
        BackendSpec {
            down: true,
            ..BackendSpec::from(bs[2].addr)
        },
    ];
    let proxy = Proxy::builder().upstream("app", &specs, &hash).start();
    let after = map_users(&proxy, &keys);
    let mut moved: HashMap<(String, String), usize> = HashMap::new();
    for (k, (was, now)) in keys.iter().zip(before.iter().zip(&after)) {
        if was == "c" {
            assert_ne!(now, "c", "key {k} still on the down backend");
        } else {
            assert_eq!(now, was, "key {k} moved though its backend stayed");
        }
        if was != now {
            *moved.entry((was.clone(), now.clone())).or_insert(0) += 1;
        }
    }
    let moved_total: usize = moved.values().sum();
    eprintln!(
        "after marking c down: {moved_total} of 300 keys moved ({:.1}%), all from c \
         (c held {}): {moved:?}",
        moved_total as f64 / 3.0,
        shares["c"]
    );
    assert_eq!(moved_total, shares["c"]);
}

#[test]
fn ip_hash_sends_every_request_from_one_ip_to_one_backend() {
    let bs = three();
    let proxy = proxy(&bs, &["strategy = \"ip_hash\""]);
    let mut seen = Vec::new();
    for i in 0..30 {
        // A fresh connection each time: both workers, many source ports.
        let mut c = proxy.client();
        seen.push(served(&mut c, &get(&format!("/ip{i}"))));
        seen.push(served(&mut c, &get(&format!("/ip{i}/again"))));
    }
    let got = counts(&seen);
    assert_eq!(got.len(), 1, "127.0.0.1 spread over {got:?}");
}

/// The `ringlb_backend=VALUE` pair of a sticky `Set-Cookie`, checked for
/// the documented shape `ringlb_backend=<16 hex>; Path=/; HttpOnly`.
fn sticky_pair(resp: &Response) -> Option<String> {
    let set = resp.headers_named("set-cookie");
    assert!(set.len() <= 1, "several Set-Cookie: {set:?}");
    let v = set.first()?;
    let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
    let value = pair
        .strip_prefix("ringlb_backend=")
        .unwrap_or_else(|| panic!("unexpected Set-Cookie {v:?}"));
    assert!(
        value.len() == 16
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "cookie value is not 16 lowercase hex digits: {v:?}"
    );
    assert_eq!(attrs.trim(), "Path=/; HttpOnly", "attributes of {v:?}");
    Some(pair.to_string())
}

fn with_cookie(pair: &str, target: &str) -> Vec<u8> {
    request(
        "GET",
        target,
        &[("Cookie", &format!("theme=dark; {pair}"))],
        b"",
    )
}

#[test]
fn sticky_cookie_pins_a_client_and_moves_it_when_its_backend_dies() {
    let bs = three();
    let proxy = proxy(
        &bs,
        &[
            "strategy = \"sticky_cookie\"",
            "[upstreams.app.health]",
            "interval = \"100ms\"",
            "timeout = \"100ms\"",
            "fall = 2",
            "rise = 2",
        ],
    );
    // Cookieless requests rotate and each gets the cookie of its backend.
    let mut cookie_of: BTreeMap<String, String> = BTreeMap::new();
    let mut c = proxy.client();
    for i in 0..6 {
        let r = c.roundtrip(&get(&format!("/first{i}")));
        let who = name_of(&r);
        let pair = sticky_pair(&r).expect("no Set-Cookie on a cookieless request");
        let old = cookie_of.insert(who.clone(), pair.clone());
        assert!(old.is_none_or(|o| o == pair), "{who} got two cookies");
    }
    assert_eq!(cookie_of.len(), 3, "{cookie_of:?}");
    let values: std::collections::BTreeSet<&String> = cookie_of.values().collect();
    assert_eq!(values.len(), 3, "cookies not distinct: {cookie_of:?}");

    // With its cookie, a client always lands on the same backend, on any
    // connection, and is not sent the cookie again.
    let (pinned, pair) = cookie_of
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    for i in 0..20 {
        let mut c = proxy.client();
        let r = c.roundtrip(&with_cookie(&pair, &format!("/pinned{i}")));
        assert_eq!(name_of(&r), pinned, "request {i} with the cookie");
        assert_eq!(
            sticky_pair(&r),
            None,
            "cookie re-sent though it named the backend"
        );
    }

    // The pinned backend dies: once it is ejected, the same cookie lands
    // elsewhere and the response carries the new backend's cookie.
    let victim = &bs[["a", "b", "c"].iter().position(|n| *n == pinned).unwrap()];
    victim.kill();
    let killed = Instant::now();
    let mut first = None;
    let moved = wait_until(WAIT, || {
        let r = proxy.client().roundtrip(&with_cookie(&pair, "/after-kill"));
        let ok = r.status == 200;
        if ok {
            first = Some(r);
        }
        ok
    });
    assert!(
        moved,
        "no 200 for the dead backend's cookie within {WAIT:?}"
    );
    eprintln!(
        "sticky: cookie re-pinned {:?} after the kill",
        killed.elapsed()
    );
    let r = first.unwrap();
    let now_on = name_of(&r);
    assert_ne!(now_on, pinned);
    assert_eq!(
        sticky_pair(&r).as_ref(),
        Some(&cookie_of[&now_on]),
        "new cookie"
    );
    for i in 0..10 {
        let r = proxy
            .client()
            .roundtrip(&with_cookie(&pair, &format!("/old{i}")));
        let who = name_of(&r);
        assert_ne!(who, pinned, "dead backend picked for request {i}");
        assert_eq!(sticky_pair(&r).as_ref(), Some(&cookie_of[&who]));
        let r = proxy
            .client()
            .roundtrip(&with_cookie(&cookie_of[&now_on], &format!("/new{i}")));
        assert_eq!(name_of(&r), now_on, "the new cookie does not stick");
        assert_eq!(sticky_pair(&r), None);
    }
}

#[test]
fn requests_with_a_key_header_missing_still_spread() {
    // consistent_hash without the key header: spread by table share.
    let bs = three();
    let proxy = proxy(
        &bs,
        &[
            "strategy = \"consistent_hash\"",
            "hash_key = \"header:X-User\"",
        ],
    );
    let got = spread(&proxy);
    eprintln!("consistent_hash without a key over 300 requests: {got:?}");
    assert!(got.len() > 1, "{got:?}");
}
