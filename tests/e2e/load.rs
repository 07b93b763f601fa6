//! Load and resources: many concurrent keep-alive clients all get answers,
//! and large bodies stream through without the proxy's memory growing by
//! the size of the body.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use crate::backend::{Backend, Resp};
use crate::client::{checksum, get, pattern, request, Client};
use crate::harness::Proxy;

#[test]
fn five_hundred_concurrent_keepalive_clients() {
    const CLIENTS: usize = 500;
    const REQUESTS: usize = 4;
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    let barrier = Barrier::new(CLIENTS);
    let failures: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (proxy, barrier) = (&proxy, &barrier);
                s.spawn(move || {
                    let conn = Client::try_connect(proxy.addr);
                    // Everyone connects before anyone sends.
                    barrier.wait();
                    let mut c = conn.map_err(|e| format!("client {i}: connect: {e}"))?;
                    for r in 0..REQUESTS {
                        let path = format!("/c{i}/r{r}");
                        let resp = c
                            .try_read_response_after(&get(&path))
                            .map_err(|e| format!("client {i} request {r}: {e}"))?;
                        if resp.status != 200
                            || !resp.body_str().contains(&format!("target {path}\n"))
                        {
                            return Err(format!("client {i} request {r}: {}", resp.status));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("client thread panicked").err())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(backend.request_count(), CLIENTS * REQUESTS);
}

const BIG: usize = 10 * 1024 * 1024;
/// Buffering a whole 10 MiB body would need at least 10 MiB; streaming
/// with 16 KiB buffers needs far less. This bound tells the two apart.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;

/// Runs `transfer` while sampling the proxy's RSS; returns the peak growth
/// in KiB over the RSS measured just before.
fn peak_rss_growth(proxy: &Proxy, transfer: impl FnOnce()) -> u64 {
    let before = proxy.rss_kib();
    let peak = AtomicU64::new(before);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(proxy.rss_kib(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(10));
            }
        });
        transfer();
        done.store(true, Ordering::SeqCst);
    });
    peak.fetch_max(proxy.rss_kib(), Ordering::SeqCst);
    let growth = peak.load(Ordering::SeqCst).saturating_sub(before);
    eprintln!("proxy RSS before {before} KiB, peak growth {growth} KiB");
    growth
}

#[test]
fn ten_megabyte_upload_streams_with_bounded_memory() {
    let backend = Backend::echo();
    let proxy = Proxy::simple(&[backend.addr]);
    // Warm up buffers and the pool with a smaller upload.
    let warm = pattern(1024 * 1024);
    assert_eq!(
        proxy
            .client()
            .roundtrip(&request("POST", "/", &[], &warm))
            .status,
        200
    );
    let data = pattern(BIG);
    let growth = peak_rss_growth(&proxy, || {
        let mut c = proxy.client();
        c.send(&request(
            "POST",
            "/up",
            &[("Content-Length", &BIG.to_string())],
            b"",
        ));
        for piece in data.chunks(64 * 1024) {
            c.wire.stream.write_all(piece).unwrap();
        }
        let resp = c.read_response();
        assert_eq!(resp.status, 200);
        let text = resp.body_str();
        assert!(text.contains(&format!("body-length {BIG}\n")), "{text}");
        assert!(
            text.contains(&format!("body-checksum {:016x}\n", checksum(&data))),
            "{text}"
        );
    });
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "proxy RSS grew by {growth} KiB during a 10 MiB upload"
    );
}

#[test]
fn ten_megabyte_download_streams_with_bounded_memory() {
    let data = pattern(BIG);
    let backend = Backend::fixed(Resp::new(200).body(data.clone()));
    let proxy = Proxy::simple(&[backend.addr]);
    let mut c = proxy.client();
    // Warm up with one full download on the same connection.
    assert_eq!(c.roundtrip(&get("/")).body.len(), BIG);
    let growth = peak_rss_growth(&proxy, || {
        c.send(&get("/"));
        // A slow start: the backend writes while the client does not read,
        // so a proxy that buffered instead of applying backpressure would
        // swell now.
        thread::sleep(Duration::from_millis(500));
        let resp = c.read_response();
        assert_eq!(resp.body.len(), BIG);
        assert_eq!(checksum(&resp.body), checksum(&data));
    });
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "proxy RSS grew by {growth} KiB during a 10 MiB download"
    );
}
