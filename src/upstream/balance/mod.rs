//! Backend selection strategies for one upstream.
//!
//! Why a trait: `upstreams.NAME.strategy` picks one of several strategies,
//! and the proxy should ask "which backend next?" without knowing which.
//! One strategy per file, each with its own tests.
//!
//! Invariants: a balancer is core-local state (a worker owns its cursors;
//! `&mut self`, no atomics, no locks). It knows backends only by index
//! `0..n` into the upstream's `backends`; whether a backend may be used
//! right now (health, breaker, already tried by this request) is the
//! caller's `eligible` predicate, so balancers hold no shared state.

mod round_robin;
mod weighted;

pub use round_robin::RoundRobin;
pub use weighted::WeightedRoundRobin;

use crate::config::Strategy;

/// The balancer for `strategy` over backends with these `weights`, for the
/// worker numbered `worker` (which sets its start offset).
pub fn build(strategy: Strategy, weights: &[u32], worker: usize) -> Box<dyn Balancer> {
    match strategy {
        Strategy::RoundRobin => Box::new(RoundRobin::new(weights.len(), worker)),
        Strategy::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(weights, worker)),
    }
}

/// Picks the next backend of one upstream.
///
/// A simpler shape than pingora's `select(key) -> BackendIter`: fallbacks
/// are had by calling `next` again with a predicate that also excludes the
/// backends already tried.
pub trait Balancer {
    /// The index of the next backend for which `eligible(index)` is true,
    /// asking about each backend at most once; `None` if none is eligible
    /// (or the upstream has no backends).
    fn next(&mut self, eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}
