//! The process-wide tables of the edge limits: rate-limit cells, open
//! connections per client address, and the per-route rate-limit counter.
//!
//! Why process-wide: a limit that each worker kept alone would let N
//! workers through N times over. Workers share nothing but these atomics
//! (no lock, no message on the request path), like the backends' states.
//!
//! Invariants:
//! - Bounded: each table is a fixed number of cells, allocated on first
//!   use; a key is hashed (a random seed per process, so a client cannot
//!   aim at a cell) to one cell. Two keys that land in one cell share it:
//!   their limit is shared, so a collision can only make a limit stricter,
//!   never looser. With [`RATE_CELLS`] cells, 10,000 busy keys collide
//!   with another about 14 % of the time.
//! - Made once per process and kept across reloads: a reload neither
//!   resets a rate limit nor forgets open connections.
//! - A connection slot is released by [`ConnGuard`]'s drop, so every path
//!   that ends a connection gives it back.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::cidr::canonical;

/// Rate-limit cells (8 bytes each: 512 KiB).
pub const RATE_CELLS: usize = 1 << 16;
/// Connection-count cells (4 bytes each: 256 KiB).
pub const CONN_CELLS: usize = 1 << 16;
/// Routes with their own `ringlb_rate_limited_total` series; later routes
/// share the last one.
pub const ROUTE_SERIES: usize = 4096;

/// The edge limits' shared state; one per process.
pub struct Shared {
    seed: ahash::RandomState,
    rate: OnceLock<Box<[AtomicU64]>>,
    conns: OnceLock<Box<[AtomicU32]>>,
    rate_limited: OnceLock<Box<[AtomicU64]>>,
    /// The `[[tcp]]` listeners' counters (also process-wide, kept across
    /// reloads by listener name).
    pub tcp: crate::tcp::stats::TcpStats,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

fn cells<T: Default>(n: usize) -> Box<[T]> {
    (0..n).map(|_| T::default()).collect()
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            seed: ahash::RandomState::new(),
            rate: OnceLock::new(),
            conns: OnceLock::new(),
            rate_limited: OnceLock::new(),
            tcp: crate::tcp::stats::TcpStats::default(),
        }
    }

    /// The hash of `key` with this process's seed.
    pub fn hash(&self, key: impl Hash) -> u64 {
        self.seed.hash_one(key)
    }

    /// The rate-limit cell of a key's hash.
    pub fn rate_cell(&self, hash: u64) -> &AtomicU64 {
        let table = self.rate.get_or_init(|| cells(RATE_CELLS));
        &table[(hash as usize) % RATE_CELLS]
    }

    /// Counts one request of route `route` refused by its rate limit.
    pub fn count_rate_limited(&self, route: usize) {
        let table = self.rate_limited.get_or_init(|| cells(ROUTE_SERIES));
        table[route.min(ROUTE_SERIES - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(route, count)` of every route with a refusal.
    pub fn rate_limited(&self) -> Vec<(usize, u64)> {
        let Some(table) = self.rate_limited.get() else {
            return Vec::new();
        };
        table
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
            .filter(|&(_, c)| c > 0)
            .collect()
    }

    /// The Prometheus text of the per-route rate-limit counter.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(
            "# HELP ringlb_rate_limited_total Requests refused with 429 by a route's rate_limit.\n\
             # TYPE ringlb_rate_limited_total counter\n",
        );
        for (route, count) in self.rate_limited() {
            let _ = writeln!(
                out,
                "ringlb_rate_limited_total{{route=\"{route}\"}} {count}"
            );
        }
    }

    /// Takes one of the `limit` connection slots of `ip` (counted per
    /// `scope`: `None` for the server's limit, a listener's address for
    /// its own); `None` when `ip` holds `limit` already.
    pub fn acquire_conn(
        self: &Arc<Self>,
        scope: Option<SocketAddr>,
        ip: IpAddr,
        limit: u32,
    ) -> Option<ConnGuard> {
        let table = self.conns.get_or_init(|| cells(CONN_CELLS));
        let index = (self.hash((scope, canonical(ip))) as usize) % CONN_CELLS;
        let cell = &table[index];
        let before = cell
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        debug_assert!(before < limit);
        Some(ConnGuard {
            shared: self.clone(),
            index,
        })
    }

    /// Connections counted in `ip`'s cell for `scope` now.
    pub fn conns_of(&self, scope: Option<SocketAddr>, ip: IpAddr) -> u32 {
        let Some(table) = self.conns.get() else {
            return 0;
        };
        let index = (self.hash((scope, canonical(ip))) as usize) % CONN_CELLS;
        table[index].load(Ordering::Acquire)
    }
}

/// One counted connection; gives its slot back when dropped.
pub struct ConnGuard {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(table) = self.shared.conns.get() {
            table[self.index].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_bounded_per_scope_and_given_back() {
        let shared = Arc::new(Shared::new());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = shared.acquire_conn(None, ip, 2).unwrap();
        let b = shared.acquire_conn(None, ip, 2).unwrap();
        assert!(shared.acquire_conn(None, ip, 2).is_none());
        // The mapped form is the same client.
        assert!(shared
            .acquire_conn(None, "::ffff:192.0.2.1".parse().unwrap(), 2)
            .is_none());
        // A listener's own count is apart from the server's.
        let listener: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let c = shared.acquire_conn(Some(listener), ip, 1).unwrap();
        assert!(shared.acquire_conn(Some(listener), ip, 1).is_none());
        assert_eq!(shared.conns_of(None, ip), 2);
        drop(a);
        assert_eq!(shared.conns_of(None, ip), 1);
        let _a = shared.acquire_conn(None, ip, 2).unwrap();
        drop((b, c));
        assert_eq!(shared.conns_of(Some(listener), ip), 0);
        assert_eq!(shared.conns_of(None, ip), 1);
    }

    #[test]
    fn rate_limited_counts_per_route_and_renders() {
        let shared = Shared::new();
        let mut text = String::new();
        shared.render_metrics(&mut text);
        assert!(!text.contains("route="));
        shared.count_rate_limited(3);
        shared.count_rate_limited(3);
        shared.count_rate_limited(usize::MAX);
        assert_eq!(shared.rate_limited(), vec![(3, 2), (ROUTE_SERIES - 1, 1)]);
        text.clear();
        shared.render_metrics(&mut text);
        assert!(text.contains("ringlb_rate_limited_total{route=\"3\"} 2\n"));
    }
}
