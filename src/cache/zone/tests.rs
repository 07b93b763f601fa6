use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::cache::policy::Lifetime;

fn object(body: &str) -> Object {
    Object {
        status: 200,
        head: Bytes::from_static(b"HTTP/1.1 200 OK\r\n"),
        body: Bytes::copy_from_slice(body.as_bytes()),
        stored_at: SystemTime::now(),
        life: Lifetime {
            fresh: Duration::from_secs(60),
            initial_age: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        },
        etag: None,
        last_modified: None,
        vary: None,
    }
}

fn varied(body: &str) -> Object {
    Object {
        vary: Some("accept-encoding".into()),
        ..object(body)
    }
}

fn h(list: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
    list.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
}

fn body(found: Found) -> Option<Bytes> {
    match found {
        Found::Object(o) => Some(o.body.clone()),
        _ => None,
    }
}

/// The first lookup of `key`, which finds nothing and so leads its fetch.
async fn lead(zone: &Arc<Zone>, key: &[u8], headers: Vec<(&'static str, &'static [u8])>) -> Leader {
    let Found::Lead(leader) = zone.lookup(key, headers, Duration::from_secs(1)).await else {
        panic!("a miss leads");
    };
    leader
}

/// The request fields of a client that accepts `coding`.
fn accepts(coding: &'static str) -> Vec<(&'static str, &'static [u8])> {
    h(&[("Accept-Encoding", coding)])
}

#[test]
fn a_miss_leads_and_the_fill_is_found() {
    crate::io::run_worker(async {
        let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
        let key = b"GET http://a/x";
        let leader = lead(&zone, key, h(&[])).await;
        assert!(zone.fill(Some(leader), key, h(&[]), Arc::new(object("hello"))));
        let found = zone.lookup(key, h(&[]), Duration::from_secs(1)).await;
        assert_eq!(body(found).as_deref(), Some(&b"hello"[..]));
        assert!(zone.size_bytes() > 5);
        assert_eq!(zone.entries(), 1);
    });
}

#[test]
fn variants_are_kept_apart() {
    crate::io::run_worker(async {
        let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
        let key = b"GET http://a/x";
        let gzip = accepts("gzip");
        let br = accepts("br");
        let leader = lead(&zone, key, gzip.clone()).await;
        zone.fill(Some(leader), key, gzip.clone(), Arc::new(varied("g")));
        // The other variant is not there: its fetch is led on its own,
        // then stored beside the first.
        let Found::Lead(leader) = zone.lookup(key, br.clone(), Duration::from_secs(1)).await else {
            panic!("a missing variant leads its fetch");
        };
        zone.fill(Some(leader), key, br.clone(), Arc::new(varied("b")));
        let g = zone.lookup(key, gzip.clone(), Duration::from_secs(1)).await;
        assert_eq!(body(g).as_deref(), Some(&b"g"[..]));
        let b = zone.lookup(key, br.clone(), Duration::from_secs(1)).await;
        assert_eq!(body(b).as_deref(), Some(&b"b"[..]));
        assert_eq!(
            zone.peek(key, br).map(|o| o.body.clone()).as_deref(),
            Some(&b"b"[..])
        );
        // Purging the key removes the marker and both variants.
        assert_eq!(zone.purge_prefix(key), 3);
        assert_eq!(zone.entries(), 0);
        assert_eq!(zone.stats.invalidations.load(Ordering::Relaxed), 3);
    });
}

#[test]
fn an_object_over_max_object_is_not_stored_and_waiters_pass() {
    crate::io::run_worker(async {
        let zone = Arc::new(Zone::new("z", 1 << 20, 100));
        let key = b"GET http://a/big";
        let leader = lead(&zone, key, h(&[])).await;
        assert!(!zone.fill(
            Some(leader),
            key,
            h(&[]),
            Arc::new(object(&"x".repeat(200)))
        ));
        assert!(matches!(
            zone.lookup(key, h(&[]), Duration::from_secs(1)).await,
            Found::Pass
        ));
    });
}

#[test]
fn the_zone_is_bounded_by_size_and_counts_evictions() {
    let zone = Zone::new("z", 64 * 1024, 8 * 1024);
    for i in 0..200 {
        let key = format!("GET http://a/{i}");
        zone.fill(
            None,
            key.as_bytes(),
            h(&[]),
            Arc::new(object(&"x".repeat(4000))),
        );
    }
    assert!(zone.size_bytes() <= 64 * 1024, "{}", zone.size_bytes());
    assert!(zone.evictions() > 0);
}

#[test]
fn purge_by_url_prefix_and_all() {
    let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
    for k in [
        "GET http://a/api/1",
        "HEAD http://a/api/2",
        "GET http://a/web/1",
    ] {
        zone.fill(None, k.as_bytes(), h(&[]), Arc::new(object("x")));
    }
    assert_eq!(zone.purge(&Purge::UrlPrefix("http://a/api/".into())), 2);
    assert_eq!(zone.entries(), 1);
    assert_eq!(zone.purge_all(), 1);
    assert_eq!(zone.entries(), 0);
}

/// Leads the fetch of `key` on a thread of its own (as on another
/// worker); returns once it leads, and `then` ends the lead a second later.
fn lead_on_a_thread(
    zone: &Arc<Zone>,
    key: &'static [u8],
    then: impl FnOnce(&Arc<Zone>, Leader) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let (led_tx, led_rx) = std::sync::mpsc::channel();
    let zone = zone.clone();
    let thread = std::thread::spawn(move || {
        crate::io::run_worker(async {
            let Found::Lead(leader) = zone.lookup(key, h(&[]), Duration::from_secs(5)).await else {
                panic!("the first miss leads");
            };
            led_tx.send(()).unwrap();
            crate::io::sleep(Duration::from_secs(1)).await;
            then(&zone, leader);
        })
    });
    led_rx.recv().unwrap();
    thread
}

/// Concurrent misses on two threads (as on two workers): one leads, the
/// other waits and gets the leader's object.
#[test]
fn concurrent_misses_coalesce_across_threads() {
    let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
    let key: &'static [u8] = b"GET http://a/slow";
    // The "fetch": long enough for the other thread to be waiting.
    let leader = lead_on_a_thread(&zone, key, |zone, leader| {
        zone.fill(Some(leader), key, h(&[]), Arc::new(object("fetched once")));
    });
    let waiter_zone = zone.clone();
    let waiter = std::thread::spawn(move || {
        crate::io::run_worker(async {
            body(
                waiter_zone
                    .lookup(key, h(&[]), Duration::from_secs(30))
                    .await,
            )
        })
    });
    leader.join().unwrap();
    assert_eq!(
        waiter.join().unwrap().as_deref(),
        Some(&b"fetched once"[..])
    );
    assert_eq!(zone.stats.coalesced.load(Ordering::Relaxed), 1);
}

#[test]
fn a_bounded_wait_gives_up_and_passes() {
    crate::io::run_worker(async {
        let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
        let key = b"GET http://a/stuck";
        let _leader = lead(&zone, key, h(&[])).await;
        // The leader never fills: a second lookup gives up after its bound.
        let second = zone.lookup(key, h(&[]), Duration::from_millis(20)).await;
        assert!(matches!(second, Found::Pass));
    });
}

/// A leader whose fetch failed (dropped without a fill) releases its
/// waiters at once; they fetch without leading.
#[test]
fn a_dropped_leader_releases_its_waiters() {
    let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
    let key: &'static [u8] = b"GET http://a/fails";
    let leader = lead_on_a_thread(&zone, key, |_, leader| drop(leader));
    // A bound far longer than the test: only the drop can end the wait.
    let found = crate::io::run_worker(zone.lookup(key, h(&[]), Duration::from_secs(3600)));
    leader.join().unwrap();
    assert!(matches!(found, Found::Pass));
    // Nobody leads now: the next lookup leads again.
    let next = crate::io::run_worker(zone.lookup(key, h(&[]), Duration::from_secs(1)));
    assert!(matches!(next, Found::Lead(_)));
}

#[test]
fn a_reload_keeps_zones_by_name_and_resizes_them() {
    use crate::config::CacheZoneConfig;
    let z = |name: &str, max_size: u64| CacheZoneConfig {
        name: name.to_owned(),
        max_size,
        max_object: 1 << 16,
    };
    let first = Zones::plan(&[z("a", 1 << 20), z("b", 1 << 20)], None);
    first
        .get(0)
        .unwrap()
        .fill(None, b"GET http://a/", h(&[]), Arc::new(object("kept")));
    let second = Zones::plan(&[z("a", 2 << 20), z("c", 1 << 20)], Some(&first));
    let a = second.by_name("a").unwrap();
    assert!(Arc::ptr_eq(a, first.get(0).unwrap()), "the same zone");
    assert_eq!(a.entries(), 1, "its entries stay");
    assert_eq!(a.max_size(), 2 << 20);
    assert!(second.by_name("b").is_none());
    assert!(!Arc::ptr_eq(
        second.by_name("c").unwrap(),
        first.get(1).unwrap()
    ));
}

#[test]
fn purge_by_url_url_prefix_path_prefix_and_all() {
    let zone = Zone::new("z", 1 << 20, 1 << 16);
    let keys = [
        "GET http://a/api/1",
        "GET http://a/api/1\nx-tenant:t",
        "GET http://a/api/10",
        "GET http://b/api/2",
        "GET https://a/web/1",
    ];
    for k in keys {
        zone.fill(None, k.as_bytes(), h(&[]), Arc::new(object("x")));
    }
    assert_eq!(
        zone.purge(&Purge::Url("http://a/api/1".into())),
        2,
        "not /api/10"
    );
    assert_eq!(zone.purge(&Purge::UrlPrefix("http://a/".into())), 1);
    assert_eq!(zone.purge(&Purge::PathPrefix("/api/".into())), 1);
    assert_eq!(zone.entries(), 1);
    assert_eq!(zone.purge(&Purge::All), 1);
    assert_eq!(zone.stats.invalidations.load(Ordering::Relaxed), 5);
}

#[test]
fn concurrent_misses_of_a_new_variant_make_one_fetch() {
    crate::io::run_worker(async {
        let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
        let key = b"GET http://a/x";
        let gzip = accepts("gzip");
        let br = accepts("br");
        let zstd = accepts("zstd");
        let leader = lead(&zone, key, gzip.clone()).await;
        zone.fill(Some(leader), key, gzip.clone(), Arc::new(varied("g")));

        // A second request for the new variant waits for the first's fetch.
        let Found::Lead(leader) = zone.lookup(key, br.clone(), Duration::from_secs(1)).await else {
            panic!("the first miss of a variant leads");
        };
        let waiter = zone.lookup(key, br.clone(), Duration::from_secs(5));
        let filler = async {
            tokio::task::yield_now().await;
            zone.fill(Some(leader), key, br.clone(), Arc::new(varied("b")));
        };
        let (found, ()) = tokio::join!(waiter, filler);
        assert_eq!(body(found).as_deref(), Some(&b"b"[..]));
        assert_eq!(zone.stats.coalesced.load(Ordering::Relaxed), 1);

        // A variant whose response may not be stored releases its waiters
        // (they fetch for themselves) and hides no other variant.
        let Found::Lead(leader) = zone.lookup(key, zstd.clone(), Duration::from_secs(1)).await
        else {
            panic!("the first miss of a variant leads");
        };
        let waiter = zone.lookup(key, zstd.clone(), Duration::from_secs(5));
        let passer = async {
            tokio::task::yield_now().await;
            zone.pass(Some(leader), key);
        };
        let (found, ()) = tokio::join!(waiter, passer);
        assert!(matches!(found, Found::Pass));
        let g = zone.lookup(key, gzip, Duration::from_secs(1)).await;
        assert_eq!(body(g).as_deref(), Some(&b"g"[..]));
        let b = zone.lookup(key, br, Duration::from_secs(1)).await;
        assert_eq!(body(b).as_deref(), Some(&b"b"[..]));
    });
}

#[test]
fn a_request_that_waited_for_the_key_joins_its_variant_fetch() {
    crate::io::run_worker(async {
        let zone = Arc::new(Zone::new("z", 1 << 20, 1 << 16));
        let key = b"GET http://a/x";
        let gzip = accepts("gzip");
        let br = accepts("br");
        // The key's first fetch (gzip) is in flight when a br request comes.
        let leader = lead(&zone, key, gzip.clone()).await;
        let waiter = zone.lookup(key, br.clone(), Duration::from_secs(5));
        let filler = async {
            tokio::task::yield_now().await;
            zone.fill(Some(leader), key, gzip.clone(), Arc::new(varied("g")));
        };
        let (found, ()) = tokio::join!(waiter, filler);
        // The key turned out to vary: the br request leads its variant's
        // fetch, so that other br requests can wait for it.
        assert!(matches!(found, Found::Lead(_)));
    });
}
