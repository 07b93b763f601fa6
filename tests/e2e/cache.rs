//! The response cache (issue 13), end to end: the real proxy and real
//! backends on 127.0.0.1. Hits, misses, expiry, what is never shared,
//! `Vary`, conditional requests and revalidation, coalescing, stale
//! entries while the backend is down, purge, warming, framings, reload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{admin, metric};
use crate::backend::{Backend, Request, Resp};
use crate::client::{request, Headers, Response};
use crate::harness::{wait_until, Proxy, WAIT};
use crate::reload::rewrite;

/// A zone and one caching route `/` to `app` with these extra `cache`
/// keys (after `zone = "main"`).
fn caching_proxy(backend: &Backend, cache_keys: &str) -> Proxy {
    caching_builder(backend, cache_keys).start()
}

fn caching_builder(backend: &Backend, cache_keys: &str) -> crate::harness::ProxyBuilder {
    let cache = format!("cache = {{ zone = \"main\"{cache_keys} }}");
    Proxy::builder()
        .workers(2)
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route_with("/", None, "app", &[cache.as_str()])
        .toml("[cache.zones.main]\nmax_size = \"16MiB\"\nmax_object = \"1MiB\"")
}

/// A backend whose body names how many requests it has answered, with
/// `headers` on every response.
fn counting(headers: &'static [(&'static str, &'static str)]) -> Backend {
    let served = Arc::new(AtomicUsize::new(0));
    Backend::start(move |req: &Request| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        let mut resp = Resp::new(200).header("Content-Type", "text/plain");
        for (k, v) in headers {
            resp = resp.header(k, v);
        }
        resp.body(format!("{} #{n}", req.target)).into()
    })
}

fn get(proxy: &Proxy, target: &str, headers: &[(&str, &str)]) -> Response {
    proxy
        .client()
        .roundtrip(&request("GET", target, headers, b""))
}

fn cache_status(resp: &Response) -> &str {
    resp.head.header("x-cache-status").unwrap_or("-")
}

#[test]
fn misses_are_stored_hits_served_and_expired_entries_fetched_again() {
    let backend = counting(&[("Cache-Control", "max-age=1")]);
    let proxy = caching_proxy(&backend, "");
    let first = get(&proxy, "/a?x=1", &[]);
    assert_eq!((first.status, cache_status(&first)), (200, "MISS"));
    assert_eq!(first.body_str(), "/a?x=1 #1");
    for _ in 0..5 {
        let hit = get(&proxy, "/a?x=1", &[]);
        assert_eq!((hit.status, cache_status(&hit)), (200, "HIT"));
        assert_eq!(hit.body_str(), "/a?x=1 #1");
        assert!(hit.head.header("age").is_some());
        assert_eq!(hit.head.header("content-length"), Some("9"));
    }
    // Another query is another key.
    assert_eq!(get(&proxy, "/a?x=2", &[]).body_str(), "/a?x=2 #2");
    assert_eq!(backend.proxied_count(), 2);
    // After max-age, the entry is fetched again.
    std::thread::sleep(Duration::from_millis(2100));
    let again = get(&proxy, "/a?x=1", &[]);
    assert_eq!(cache_status(&again), "EXPIRED");
    assert_eq!(again.body_str(), "/a?x=1 #3");
    assert_eq!(get(&proxy, "/a?x=1", &[]).body_str(), "/a?x=1 #3");
    assert_eq!(metric(&proxy, "ringlb_cache_hits_total"), 6.0);
    assert_eq!(metric(&proxy, "ringlb_cache_misses_total"), 3.0);
    assert!(metric(&proxy, "ringlb_cache_size_bytes") > 0.0);
}

#[test]
fn private_responses_are_never_served_to_another_client() {
    let backend = Backend::start(|req: &Request| {
        let who = req.header("x-user").unwrap_or("nobody").to_owned();
        let resp = Resp::new(200).body(format!("for {who}"));
        match req.target.as_str() {
            "/private" => resp.header("Cache-Control", "private, max-age=60"),
            "/no-store" => resp.header("Cache-Control", "no-store"),
            "/cookie" => resp.header("Set-Cookie", format!("session={who}").as_str()),
            _ => resp.header("Cache-Control", "max-age=60"),
        }
        .into()
    });
    let proxy = caching_proxy(&backend, "");
    for path in ["/private", "/no-store", "/cookie"] {
        let alice = get(&proxy, path, &[("X-User", "alice")]);
        let bob = get(&proxy, path, &[("X-User", "bob")]);
        assert_eq!(alice.body_str(), "for alice", "{path}");
        assert_eq!(
            bob.body_str(),
            "for bob",
            "{path}: alice's response went to bob"
        );
        assert_eq!(cache_status(&bob), "BYPASS", "{path}");
    }
    // A request with credentials is not stored unless the response says
    // a shared cache may.
    let alice = get(
        &proxy,
        "/auth",
        &[("X-User", "alice"), ("Authorization", "Basic YTpi")],
    );
    let bob = get(
        &proxy,
        "/auth",
        &[("X-User", "bob"), ("Authorization", "Basic Yjpj")],
    );
    assert_eq!(
        (alice.body_str(), bob.body_str()),
        ("for alice".into(), "for bob".into())
    );
    assert_eq!(backend.proxied_count(), 8);
}

#[test]
fn vary_keeps_one_variant_per_header_value() {
    let backend = Backend::start(|req: &Request| {
        let lang = req.header("accept-language").unwrap_or("none").to_owned();
        Resp::new(200)
            .header("Cache-Control", "max-age=60")
            .header("Vary", "Accept-Language")
            .body(format!("in {lang}"))
            .into()
    });
    let proxy = caching_proxy(&backend, "");
    let en = [("Accept-Language", "en")];
    let de = [("Accept-Language", "de")];
    assert_eq!(get(&proxy, "/v", &en).body_str(), "in en");
    assert_eq!(get(&proxy, "/v", &de).body_str(), "in de");
    for _ in 0..3 {
        assert_eq!(get(&proxy, "/v", &en).body_str(), "in en");
        assert_eq!(get(&proxy, "/v", &de).body_str(), "in de");
        assert_eq!(get(&proxy, "/v", &[]).body_str(), "in none");
    }
    assert_eq!(backend.proxied_count(), 3);
    // `Vary: *` is never stored.
    let star = Backend::fixed(
        Resp::new(200)
            .header("Cache-Control", "max-age=60")
            .header("Vary", "*")
            .body("x"),
    );
    let proxy = caching_proxy(&star, "");
    get(&proxy, "/s", &[]);
    assert_eq!(cache_status(&get(&proxy, "/s", &[])), "BYPASS");
    assert_eq!(star.proxied_count(), 2);
}

#[test]
fn conditional_requests_get_304_and_stale_entries_are_revalidated() {
    let backend = Backend::start(|req: &Request| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Resp::new(304)
                .header("ETag", "\"v1\"")
                .header("Cache-Control", "max-age=1")
                .no_body()
                .into();
        }
        Resp::new(200)
            .header("ETag", "\"v1\"")
            .header("Cache-Control", "max-age=1")
            .header("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")
            .body("version one")
            .into()
    });
    let proxy = caching_proxy(&backend, "");
    assert_eq!(get(&proxy, "/e", &[]).body_str(), "version one");
    // The client's own conditions, answered from the cache.
    let nm = get(&proxy, "/e", &[("If-None-Match", "\"v1\"")]);
    assert_eq!((nm.status, cache_status(&nm)), (304, "HIT"));
    assert_eq!(nm.head.header("etag"), Some("\"v1\""));
    let ims = get(
        &proxy,
        "/e",
        &[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    );
    assert_eq!(ims.status, 304);
    let changed = get(&proxy, "/e", &[("If-None-Match", "\"v0\"")]);
    assert_eq!(
        (changed.status, changed.body_str()),
        (200, "version one".into())
    );
    assert_eq!(backend.proxied_count(), 1);
    // Expired: the proxy asks with the stored validators, the backend
    // says 304, and the client gets the stored body.
    std::thread::sleep(Duration::from_millis(2100));
    let revalidated = get(&proxy, "/e", &[]);
    assert_eq!(
        (
            revalidated.status,
            cache_status(&revalidated),
            revalidated.body_str()
        ),
        (200, "REVALIDATED", "version one".into())
    );
    let asked = backend.proxied();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].header("if-none-match"), Some("\"v1\""));
    assert!(asked[1].header("if-modified-since").is_some());
    // Fresh again after the 304.
    assert_eq!(cache_status(&get(&proxy, "/e", &[])), "HIT");
    assert_eq!(backend.proxied_count(), 2);
}

#[test]
fn concurrent_misses_make_one_backend_request() {
    let backend = Backend::start(|_req: &Request| {
        Resp::new(200)
            .header("Cache-Control", "max-age=60")
            .body("slow and shared")
            .delay(Duration::from_millis(500))
            .into()
    });
    let proxy = caching_proxy(&backend, "");
    let addr = proxy.addr;
    let clients: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = crate::client::Client::connect(addr);
                c.roundtrip(&request("GET", "/hot", &[], b""))
            })
        })
        .collect();
    for c in clients {
        let resp = c.join().unwrap();
        assert_eq!(
            (resp.status, resp.body_str()),
            (200, "slow and shared".into())
        );
    }
    assert_eq!(
        backend.proxied_count(),
        1,
        "50 concurrent misses, one fetch"
    );
    let coalesced = metric(&proxy, "ringlb_cache_coalesced_total");
    let hits = metric(&proxy, "ringlb_cache_hits_total");
    // Each request that waited for the fetch is a hit, counted as
    // coalesced too.
    assert_eq!(hits, 49.0);
    assert!(
        coalesced > 0.0 && coalesced <= 49.0,
        "coalesced {coalesced}"
    );
}

#[test]
fn stale_entries_are_served_while_every_backend_is_down() {
    let backend = counting(&[("Cache-Control", "max-age=1")]);
    let proxy = caching_proxy(&backend, ", stale_if_error = \"1m\"");
    assert_eq!(get(&proxy, "/s", &[]).body_str(), "/s #1");
    std::thread::sleep(Duration::from_millis(2100));
    backend.kill();
    let stale = get(&proxy, "/s", &[]);
    assert_eq!(
        (stale.status, cache_status(&stale), stale.body_str()),
        (200, "STALE", "/s #1".into())
    );
    // Without an entry, the failure is the client's answer.
    assert_eq!(get(&proxy, "/other", &[]).status, 502);
}

#[test]
fn stale_is_not_served_past_its_bound_or_without_one() {
    let backend = counting(&[("Cache-Control", "max-age=1")]);
    let proxy = caching_proxy(&backend, "");
    get(&proxy, "/s", &[]);
    std::thread::sleep(Duration::from_millis(2100));
    backend.kill();
    assert_eq!(get(&proxy, "/s", &[]).status, 502, "no stale_if_error");
}

#[test]
fn purge_by_key_prefix_and_all() {
    let backend = counting(&[("Cache-Control", "max-age=600")]);
    let proxy = caching_proxy(&backend, "");
    for path in ["/api/1", "/api/2", "/web/1"] {
        get(&proxy, path, &[]);
        assert_eq!(cache_status(&get(&proxy, path, &[])), "HIT");
    }
    // The client helper sends `Host: test.local`.
    let purged = admin(
        &proxy,
        "POST",
        "/cache/main/purge?key=http://test.local/api/1",
    );
    assert_eq!(
        (purged.status, purged.body_str()),
        (200, "main: purged 1 entries\n".into())
    );
    assert_eq!(cache_status(&get(&proxy, "/api/1", &[])), "MISS");
    assert_eq!(cache_status(&get(&proxy, "/api/2", &[])), "HIT");
    assert_eq!(
        admin(&proxy, "POST", "/cache/main/purge?prefix=/api/").status,
        200
    );
    assert_eq!(cache_status(&get(&proxy, "/api/2", &[])), "MISS");
    assert_eq!(cache_status(&get(&proxy, "/web/1", &[])), "HIT");
    assert_eq!(admin(&proxy, "POST", "/cache/main/purge?all").status, 200);
    assert_eq!(cache_status(&get(&proxy, "/web/1", &[])), "MISS");
    assert_eq!(admin(&proxy, "POST", "/cache/nope/purge?all").status, 404);
    assert!(metric(&proxy, "ringlb_cache_invalidations_total") >= 3.0);
}

#[test]
fn warm_paths_are_fetched_at_start_and_after_a_reload() {
    let backend = counting(&[("Cache-Control", "max-age=600")]);
    let proxy = caching_proxy(&backend, ", warm = [\"/w1\", \"/w2\"]");
    assert!(
        wait_until(WAIT, || backend.proxied_count() == 2),
        "warming fetched {}",
        backend.proxied_count()
    );
    // A route without `host` is warmed with the listener's address as Host.
    let host = proxy.addr.to_string();
    let h = [("Host", host.as_str())];
    assert_eq!(cache_status(&get(&proxy, "/w1", &h)), "HIT");
    assert_eq!(cache_status(&get(&proxy, "/w2", &h)), "HIT");
    rewrite(&proxy, |t| t.replace("\"/w2\"]", "\"/w2\", \"/w3\"]"));
    proxy.signal("HUP");
    assert!(wait_until(WAIT, || backend
        .proxied()
        .iter()
        .any(|r| r.target == "/w3")));
    assert!(wait_until(WAIT, || cache_status(&get(&proxy, "/w3", &h)) == "HIT"));
    // The zone kept its entries across the reload.
    assert_eq!(cache_status(&get(&proxy, "/w1", &h)), "HIT");
}

#[test]
fn chunked_and_close_delimited_bodies_are_stored_whole() {
    let chunked = Backend::fixed(
        Resp::new(200)
            .header("Cache-Control", "max-age=60")
            .chunked(&[b"hello ", b"chunked ", b"world"], &[]),
    );
    let proxy = caching_proxy(&chunked, "");
    let first = get(&proxy, "/c", &[]);
    assert_eq!(first.body_str(), "hello chunked world");
    let hit = get(&proxy, "/c", &[]);
    assert_eq!(
        (cache_status(&hit), hit.body_str()),
        ("HIT", "hello chunked world".into())
    );
    assert_eq!(hit.head.header("content-length"), Some("19"));
    assert!(hit.head.header("transfer-encoding").is_none());

    let closing = Backend::fixed(
        Resp::new(200)
            .header("Cache-Control", "max-age=60")
            .close_delimited("until the end"),
    );
    let proxy = caching_proxy(&closing, "");
    assert_eq!(get(&proxy, "/d", &[]).body_str(), "until the end");
    let hit = get(&proxy, "/d", &[]);
    assert_eq!(
        (cache_status(&hit), hit.body_str()),
        ("HIT", "until the end".into())
    );
    assert_eq!(closing.proxied_count(), 1);
}

#[test]
fn head_is_answered_from_the_get_entry_and_large_objects_pass_through() {
    let backend = Backend::start(|req: &Request| {
        let size = if req.target == "/big" { 2 << 20 } else { 10 };
        Resp::new(200)
            .header("Cache-Control", "max-age=60")
            .body(vec![b'x'; size])
            .into()
    });
    let proxy = caching_proxy(&backend, "");
    get(&proxy, "/small", &[]);
    let head = proxy
        .client()
        .roundtrip(&request("HEAD", "/small", &[], b""));
    assert_eq!((head.status, cache_status(&head)), (200, "HIT"));
    assert_eq!(head.head.header("content-length"), Some("10"));
    assert!(head.body.is_empty());
    // Over max_object (1 MiB): relayed whole, not stored.
    for _ in 0..2 {
        let big = get(&proxy, "/big", &[]);
        assert_eq!(big.body.len(), 2 << 20);
    }
    assert_eq!(backend.proxied_count(), 3);
}

#[test]
fn a_reload_can_turn_the_cache_off_and_on() {
    let backend = counting(&[("Cache-Control", "max-age=600")]);
    let proxy = caching_proxy(&backend, "");
    get(&proxy, "/r", &[]);
    assert_eq!(cache_status(&get(&proxy, "/r", &[])), "HIT");
    rewrite(&proxy, |t| t.replace("cache = { zone = \"main\" }", ""));
    proxy.signal("HUP");
    assert!(wait_until(WAIT, || cache_status(&get(&proxy, "/r", &[])) == "-"));
    rewrite(&proxy, |t| {
        t.replace(
            "upstream = \"app\"\n",
            "upstream = \"app\"\ncache = { zone = \"main\", status_header = true }\n",
        )
    });
    proxy.signal("HUP");
    // The zone kept the entry while no route used it.
    assert!(wait_until(WAIT, || cache_status(&get(&proxy, "/r", &[])) == "HIT"));
    assert_eq!(get(&proxy, "/r", &[]).body_str(), "/r #1");
}

#[test]
fn the_access_log_names_the_cache_status() {
    let backend = counting(&[("Cache-Control", "max-age=600")]);
    let builder = caching_builder(&backend, "");
    let proxy = builder
        .server("access_log = { path = \"access.log\", format = \"json\" }")
        .start();
    get(&proxy, "/l", &[]);
    get(&proxy, "/l", &[]);
    let log = proxy.dir().join("access.log");
    assert!(wait_until(WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("\"cache\":\"MISS\"") && text.contains("\"cache\":\"HIT\"")
    }));
}

#[test]
fn concurrent_requests_for_an_expired_entry_make_one_backend_request() {
    let backend = Backend::start(|_req: &Request| {
        Resp::new(200)
            .header("Cache-Control", "max-age=1")
            .body("refreshed")
            .delay(Duration::from_millis(300))
            .into()
    });
    let proxy = caching_proxy(&backend, "");
    get(&proxy, "/x", &[]);
    std::thread::sleep(Duration::from_millis(2100));
    let addr = proxy.addr;
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = crate::client::Client::connect(addr);
                c.roundtrip(&request("GET", "/x", &[], b""))
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap().body_str(), "refreshed");
    }
    assert_eq!(backend.proxied_count(), 2, "the first fill and one refresh");
}

#[test]
fn purge_method_from_trusted_proxies_only() {
    let backend = counting(&[("Cache-Control", "max-age=600")]);
    let purge = |proxy: &Proxy| {
        proxy
            .client()
            .roundtrip(&request("PURGE", "/p?q=1", &[], b""))
    };
    let untrusted = caching_proxy(&backend, "");
    get(&untrusted, "/p?q=1", &[]);
    assert_eq!(purge(&untrusted).status, 403);
    assert_eq!(cache_status(&get(&untrusted, "/p?q=1", &[])), "HIT");

    let trusted = caching_builder(&backend, "")
        .server("trusted_proxies = [\"127.0.0.0/8\"]")
        .start();
    get(&trusted, "/p?q=1", &[]);
    assert_eq!(cache_status(&get(&trusted, "/p?q=1", &[])), "HIT");
    assert_eq!(purge(&trusted).status, 204);
    assert_eq!(cache_status(&get(&trusted, "/p?q=1", &[])), "MISS");
    // The backend never saw a PURGE.
    assert!(backend.proxied().iter().all(|r| r.method == "GET"));
}

#[test]
fn concurrent_misses_of_a_new_vary_variant_make_one_backend_request() {
    let backend = Backend::start(|req: &Request| {
        let coding = req.headers_named("accept-encoding").join(",");
        Resp::new(200)
            .header("Cache-Control", "max-age=600")
            .header("Vary", "Accept-Encoding")
            .body(format!("for {coding}"))
            .delay(Duration::from_millis(300))
            .into()
    });
    let proxy = caching_proxy(&backend, "");
    let first = get(&proxy, "/v", &[("Accept-Encoding", "gzip")]);
    assert_eq!(first.body_str(), "for gzip");
    // The key is known, with one variant; 20 concurrent requests for a new
    // one make one fetch, the others wait for it.
    let addr = proxy.addr;
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = crate::client::Client::connect(addr);
                c.roundtrip(&request("GET", "/v", &[("Accept-Encoding", "br")], b""))
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap().body_str(), "for br");
    }
    assert_eq!(backend.proxied_count(), 2, "one fetch per variant");
    let again = get(&proxy, "/v", &[("Accept-Encoding", "gzip")]);
    assert_eq!(
        (cache_status(&again), again.body_str().as_str()),
        ("HIT", "for gzip")
    );
}
