//! Backends and everything that chooses or reaches them.
//!
//! The only state shared between workers is [`BackendState`], one block of
//! atomics per backend. Balancer cursors and the connection [`pool`] are per
//! worker and never shared.

pub mod balance;
pub mod pool;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// What every worker knows about one backend, written without locks.
///
/// `healthy` and `draining` are read on every pick; the counters are
/// written once per request. The health checker and the breaker (another
/// issue) will write here too.
#[derive(Debug)]
pub struct BackendState {
    healthy: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl BackendState {
    /// Whether a balancer may pick this backend for a new request.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Relaxed) && !self.draining.load(Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }

    /// A draining backend gets no new requests; in-flight ones finish.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Marks a request as started; the guard marks it finished on drop.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.requests.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        InFlightGuard(self.clone())
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }
}

/// Decrements the backend's in-flight count when the request ends, however
/// it ends.
pub struct InFlightGuard(Arc<BackendState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One backend as a worker sees it: its address, weight and shared state.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    pub state: Arc<BackendState>,
}
