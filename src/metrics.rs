//! Per-worker counters, summed only when read.
//!
//! Each worker owns one [`WorkerMetrics`] shard and is its only writer, so a
//! counter increment is a plain load and store (no locked instruction, no
//! cache line shared with another core). Readers on other threads sum the
//! shards with relaxed loads; a reading may lag by a few increments.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A counter with a single writer thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Only the owning worker may call this.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! worker_metrics {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// One worker's shard of counters.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct WorkerMetrics { $($(#[$doc])* pub $name: Counter,)* }

        /// A sum over all shards at one moment.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Totals { $(pub $name: u64,)* }

        impl Totals {
            fn add(&mut self, m: &WorkerMetrics) { $(self.$name += m.$name.get();)* }
        }
    };
}

worker_metrics! {
    /// Client connections accepted.
    connections_accepted,
    /// Client connections currently open.
    connections_open,
    /// Requests whose head was parsed.
    requests,
    /// Responses written by status class, 1xx excluded.
    responses_2xx,
    responses_3xx,
    responses_4xx,
    responses_5xx,
    /// Upstream connections taken from the pool.
    pool_hits,
    /// Upstream connections that had to be opened.
    pool_misses,
    /// Pooled connections found closed or expired and dropped.
    pool_stale,
    /// Requests sent again: on a fresh connection after a pooled one
    /// failed, or to another backend by the retry policy.
    retries,
    /// Retries the policy allowed but the retry budget refused.
    retries_refused,
    /// Bytes read from clients and written to clients.
    bytes_from_clients,
    bytes_to_clients,
}

impl WorkerMetrics {
    pub fn count_status(&self, status: u16) {
        match status {
            200..=299 => self.responses_2xx.inc(),
            300..=399 => self.responses_3xx.inc(),
            400..=499 => self.responses_4xx.inc(),
            500..=599 => self.responses_5xx.inc(),
            _ => {}
        }
    }
}

/// All workers' shards, for whoever reports.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    shards: Vec<Arc<WorkerMetrics>>,
}

impl Registry {
    pub fn new_shard(&mut self) -> Arc<WorkerMetrics> {
        let shard = Arc::new(WorkerMetrics::default());
        self.shards.push(shard.clone());
        shard
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in &self.shards {
            totals.add(shard);
        }
        totals
    }
}

impl Totals {
    /// Share of upstream requests served on a reused connection.
    pub fn pool_reuse_ratio(&self) -> f64 {
        let all = self.pool_hits + self.pool_misses;
        if all == 0 {
            0.0
        } else {
            self.pool_hits as f64 / all as f64
        }
    }
}
