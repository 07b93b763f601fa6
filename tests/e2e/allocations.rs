//! The request path allocates nothing once warm: the binary counts the heap
//! allocations of its worker threads (`ringlb_worker_heap_allocations_total`),
//! and keep-alive GETs through the proxy must not move that count by one per
//! request. A functional check, not a timing one.

use crate::admin::metric;
use crate::backend::Backend;
use crate::client::get;
use crate::harness::Proxy;

const HEAP: &str = "ringlb_worker_heap_allocations_total";

#[test]
fn a_warm_keep_alive_get_allocates_nothing() {
    let backend = Backend::echo();
    let proxy = Proxy::builder()
        .workers(1)
        .upstream("app", &[backend.addr], &[])
        .admin()
        .start();
    let mut client = proxy.client();
    // Warm-up: the worker's pooled backend connection, its spare buffers
    // and the recycled exchange slot now exist.
    for _ in 0..100 {
        assert_eq!(client.roundtrip(&get("/warm")).status, 200);
    }
    let before = metric(&proxy, HEAP);
    assert!(before > 0.0, "the worker's allocations are counted at all");
    const REQUESTS: f64 = 2000.0;
    for _ in 0..REQUESTS as usize {
        assert_eq!(client.roundtrip(&get("/items?page=2")).status, 200);
    }
    let made = metric(&proxy, HEAP) - before;
    // The worker's timers (pool sweep, deadline watchdog) allocate a few
    // times a second whatever the load; one allocation per request would
    // be 2000.
    assert!(
        made < REQUESTS / 50.0,
        "{made} heap allocations on the worker for {REQUESTS} keep-alive GETs"
    );
}
