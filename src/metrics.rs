//! Per-worker counters, summed only when read, and their Prometheus text.
//!
//! Each worker owns one [`WorkerMetrics`] shard and is its only writer, so a
//! counter increment is a plain load and store (no locked instruction, no
//! cache line shared with another core). Readers on other threads sum the
//! shards with relaxed loads; a reading may lag by a few increments.
//!
//! Invariants:
//! - One writer thread per shard. Threads other than the workers that
//!   count something (the health checker, the reload handler on the main
//!   thread) take their own shard from [`Registry::new_shard`].
//! - Per-upstream and per-backend series are indexed by the position of
//!   the upstream in `Config::upstreams` and of the backend in its list,
//!   fixed by the [`Layout`] a shard is created with. An index outside the
//!   layout is ignored, never a panic.
//! - A reload that changes the layout starts a new generation of shards
//!   ([`Registry::next_generation`]); old generations stay and are summed
//!   into the series with the same upstream name and backend address, so
//!   counters never go backwards across a reload. Shards nobody holds any
//!   more (their worker generation is gone) are folded into one per
//!   generation at the next reload, so reloads do not grow the registry.
//! - Gauges (`*_open`, `*_in_flight`) are counters that the same shard
//!   increments and decrements; each shard's value is never negative.
//!
//! The text format (Prometheus 0.0.4) is written by hand in [`prometheus`]:
//! the values are sums over shards computed at scrape time, which a client
//! library built around registered metric objects would only get through
//! custom collectors.

pub mod prometheus;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;

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
        /// One worker's shard of counters: the process-wide ones as fields,
        /// the per-upstream ones behind [`WorkerMetrics::upstream`].
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct WorkerMetrics {
            $($(#[$doc])* pub $name: Counter,)*
            /// One entry per upstream of the layout, then one for requests
            /// that matched no route.
            upstreams: Box<[UpstreamMetrics]>,
        }

        /// A sum of the process-wide counters over all shards at one moment.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Totals { $(pub $name: u64,)* }

        impl Totals {
            fn add(&mut self, m: &WorkerMetrics) { $(self.$name = self.$name.wrapping_add(m.$name.get());)* }
        }

        impl WorkerMetrics {
            /// Adds `other`'s process-wide counters to this shard's.
            fn absorb_fields(&self, other: &WorkerMetrics) { $(self.$name.add(other.$name.get());)* }
        }
    };
}

worker_metrics! {
    /// Client connections accepted.
    connections_accepted,
    /// Client connections currently open (gauge).
    connections_open,
    /// Of those, the ones idle past the grace and parked: waiting with no
    /// task and no buffer (gauge).
    connections_parked,
    /// Requests whose head was parsed.
    requests,
    /// Requests being served now (gauge).
    requests_in_flight,
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
    /// failed, or to another backend by the retry policy (all upstreams;
    /// [`WorkerMetrics::retry`] also counts per upstream).
    retries,
    /// Retries the policy allowed but the retry budget refused.
    retries_refused,
    /// Bytes read from clients and written to clients.
    bytes_from_clients,
    bytes_to_clients,
    /// Bytes written to and read from backends.
    bytes_to_upstreams,
    bytes_from_upstreams,
    /// TLS handshakes completed with clients, and those that failed.
    tls_handshakes,
    tls_handshake_failures,
    /// Config reloads applied, and those rejected (the old config stays).
    config_reloads,
    config_reload_failures,
    /// Upstream connects that failed for a local shortage, by kind (see
    /// [`LocalShortage`]); not counted against the backend.
    local_errors_emfile,
    local_errors_enfile,
    local_errors_enobufs,
    local_errors_eaddrnotavail,
    /// Accepts that failed (out of fds or memory); the loop backs off.
    accept_errors,
    /// Connections over `max_connections` rejected (`overload = "reject"`).
    overload_rejections,
    /// Connections closed at once: their address held
    /// `max_connections_per_ip` already (server or listener).
    connections_per_ip_rejected,
    /// Connections closed at once by a listener's `allow`/`deny`.
    connections_denied,
    /// PROXY protocol headers accepted on `proxy_protocol` listeners.
    proxy_protocol_headers,
    /// Connections closed unread: the peer is not in `trusted`.
    proxy_protocol_untrusted,
    /// Connections closed: a malformed or truncated PROXY header.
    proxy_protocol_malformed,
    /// Connections closed: no complete PROXY header within the timeout.
    proxy_protocol_timeouts,
}

/// A local resource shortage: the proxy's, not the backend's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalShortage {
    /// EMFILE: the process's fd limit.
    Emfile,
    /// ENFILE: the system's fd limit.
    Enfile,
    /// ENOBUFS (or ENOMEM): no socket buffer memory.
    Enobufs,
    /// EADDRNOTAVAIL: no ephemeral port left.
    Eaddrnotavail,
}

impl LocalShortage {
    pub const ALL: [LocalShortage; 4] = [
        LocalShortage::Emfile,
        LocalShortage::Enfile,
        LocalShortage::Enobufs,
        LocalShortage::Eaddrnotavail,
    ];

    /// The shortage an OS error number means, if it is one.
    pub fn from_errno(errno: i32) -> Option<LocalShortage> {
        match errno {
            libc::EMFILE => Some(LocalShortage::Emfile),
            libc::ENFILE => Some(LocalShortage::Enfile),
            libc::ENOBUFS | libc::ENOMEM => Some(LocalShortage::Enobufs),
            libc::EADDRNOTAVAIL => Some(LocalShortage::Eaddrnotavail),
            _ => None,
        }
    }

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            LocalShortage::Emfile => "emfile",
            LocalShortage::Enfile => "enfile",
            LocalShortage::Enobufs => "enobufs",
            LocalShortage::Eaddrnotavail => "eaddrnotavail",
        }
    }

    /// What the client's 503 says.
    pub fn reason(self) -> &'static str {
        match self {
            LocalShortage::Emfile => "proxy out of file descriptors (EMFILE)",
            LocalShortage::Enfile => "proxy host out of file descriptors (ENFILE)",
            LocalShortage::Enobufs => "proxy out of socket buffers (ENOBUFS)",
            LocalShortage::Eaddrnotavail => "proxy out of ephemeral ports (EADDRNOTAVAIL)",
        }
    }
}

/// HTTP methods as counted: the common ones, and everything else. The
/// discriminant is the index in [`Method::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Options,
        Method::Other,
    ];

    /// Buckets a request method (case-sensitive, as RFC 9110 says).
    pub fn from_bytes(method: &[u8]) -> Method {
        match method {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"PATCH" => Method::Patch,
            b"OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "other",
        }
    }
}

/// Status classes as counted; `other` is anything outside 100..=599.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// Upper bounds of the request duration histogram, in microseconds
/// (1 ms to 30 s; `+Inf` is implicit).
pub const DURATION_BUCKETS_US: [u64; 13] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];
const BUCKETS: usize = DURATION_BUCKETS_US.len() + 1;

const CELLS_PER_BACKEND: usize = STATUS_CLASSES.len() * Method::ALL.len();

/// One upstream's counters in one shard. Aligned so that two shards'
/// arrays never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct UpstreamMetrics {
    /// `[backend][status class][method]`, flattened; the last backend slot
    /// is "no backend" (a local reply: no route, none available, ...).
    requests: Box<[Counter]>,
    duration_buckets: [Counter; BUCKETS],
    duration_sum_us: Counter,
    retries: Counter,
    retries_refused: Counter,
    connects: Counter,
    connect_failures: Counter,
    connections_open: Counter,
    /// `[backend][ok, failed]`, flattened.
    health_checks: Box<[Counter]>,
}

impl UpstreamMetrics {
    fn new(backends: usize) -> UpstreamMetrics {
        let counters = |n: usize| (0..n).map(|_| Counter::default()).collect();
        UpstreamMetrics {
            requests: counters((backends + 1) * CELLS_PER_BACKEND),
            health_checks: counters(backends * 2),
            ..UpstreamMetrics::default()
        }
    }

    fn backends(&self) -> usize {
        self.requests.len() / CELLS_PER_BACKEND - 1
    }

    /// Adds `other`'s counters (same layout) to these.
    fn absorb(&self, other: &UpstreamMetrics) {
        let add_all = |mine: &[Counter], theirs: &[Counter]| {
            for (m, t) in mine.iter().zip(theirs) {
                m.add(t.get());
            }
        };
        add_all(&self.requests, &other.requests);
        add_all(&self.duration_buckets, &other.duration_buckets);
        add_all(&self.health_checks, &other.health_checks);
        for (m, t) in [
            (&self.duration_sum_us, &other.duration_sum_us),
            (&self.retries, &other.retries),
            (&self.retries_refused, &other.retries_refused),
            (&self.connects, &other.connects),
            (&self.connect_failures, &other.connect_failures),
            (&self.connections_open, &other.connections_open),
        ] {
            m.add(t.get());
        }
    }
}

/// Names of the upstreams and backends, in config order: what shards are
/// indexed by and what the labels say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub upstreams: Vec<UpstreamLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLayout {
    pub name: String,
    /// Backend addresses as labels (`ip:port`).
    pub backends: Vec<String>,
}

impl Layout {
    pub fn from_config(config: &Config) -> Layout {
        Layout {
            upstreams: config
                .upstreams
                .iter()
                .map(|u| UpstreamLayout {
                    name: u.name.clone(),
                    backends: u.backends.iter().map(|b| b.addr.to_string()).collect(),
                })
                .collect(),
        }
    }
}

impl WorkerMetrics {
    /// A shard with per-upstream counters for `layout`.
    pub fn new(layout: &Layout) -> WorkerMetrics {
        let upstreams = layout
            .upstreams
            .iter()
            .map(|u| UpstreamMetrics::new(u.backends.len()))
            .chain(std::iter::once(UpstreamMetrics::new(0)))
            .collect();
        WorkerMetrics {
            upstreams,
            ..WorkerMetrics::default()
        }
    }

    /// Adds every counter of `other`, a shard of the same layout that
    /// nobody writes any more, to this one.
    fn absorb(&self, other: &WorkerMetrics) {
        self.absorb_fields(other);
        for (mine, theirs) in self.upstreams.iter().zip(other.upstreams.iter()) {
            mine.absorb(theirs);
        }
    }

    pub fn count_status(&self, status: u16) {
        match status {
            200..=299 => self.responses_2xx.inc(),
            300..=399 => self.responses_3xx.inc(),
            400..=499 => self.responses_4xx.inc(),
            500..=599 => self.responses_5xx.inc(),
            _ => {}
        }
    }

    fn upstream(&self, upstream: Option<usize>) -> Option<&UpstreamMetrics> {
        let unrouted = self.upstreams.len().checked_sub(1)?;
        self.upstreams.get(upstream.unwrap_or(unrouted))
    }

    /// Records one finished request: `upstream` is `None` when no route
    /// matched, `backend` is `None` when no backend was reached (a local
    /// reply). `duration` runs from the first byte of the request head to
    /// the last byte of the response. Feeds `ringlb_requests_total` and
    /// `ringlb_request_duration_seconds`; call [`WorkerMetrics::count_status`]
    /// separately for the status totals (as today).
    pub fn request(
        &self,
        upstream: Option<usize>,
        backend: Option<usize>,
        status: u16,
        method: Method,
        duration: Duration,
    ) {
        let Some(u) = self.upstream(upstream) else {
            return;
        };
        let backends = u.backends();
        let slot = match backend {
            Some(b) if b < backends => b,
            Some(_) => return,
            None => backends,
        };
        let cell =
            slot * CELLS_PER_BACKEND + status_class(status) * Method::ALL.len() + method as usize;
        u.requests[cell].inc();
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = DURATION_BUCKETS_US.partition_point(|&bound| bound < us);
        u.duration_buckets[bucket].inc();
        u.duration_sum_us.add(us);
    }

    /// A request started (gauge `ringlb_requests_in_flight`); pair with
    /// [`WorkerMetrics::request_finished`].
    pub fn request_started(&self) {
        self.requests_in_flight.inc();
    }

    pub fn request_finished(&self) {
        self.requests_in_flight.sub(1);
    }

    /// A retry to `upstream` (also counted in the process-wide `retries`).
    pub fn retry(&self, upstream: usize) {
        self.retries.inc();
        if let Some(u) = self.upstream(Some(upstream)) {
            u.retries.inc();
        }
    }

    /// A retry the budget refused.
    /// An upstream connect that failed for a local shortage.
    pub fn local_error(&self, kind: LocalShortage) {
        match kind {
            LocalShortage::Emfile => &self.local_errors_emfile,
            LocalShortage::Enfile => &self.local_errors_enfile,
            LocalShortage::Enobufs => &self.local_errors_enobufs,
            LocalShortage::Eaddrnotavail => &self.local_errors_eaddrnotavail,
        }
        .inc();
    }

    pub fn retry_refused(&self, upstream: usize) {
        self.retries_refused.inc();
        if let Some(u) = self.upstream(Some(upstream)) {
            u.retries_refused.inc();
        }
    }

    /// A new connection to a backend of `upstream` was opened (`ok`) or
    /// failed to open. An opened one counts as open until
    /// [`WorkerMetrics::upstream_closed`].
    pub fn upstream_connect(&self, upstream: usize, ok: bool) {
        if let Some(u) = self.upstream(Some(upstream)) {
            if ok {
                u.connects.inc();
                u.connections_open.inc();
            } else {
                u.connect_failures.inc();
            }
        }
    }

    pub fn upstream_closed(&self, upstream: usize) {
        if let Some(u) = self.upstream(Some(upstream)) {
            u.connections_open.sub(1);
        }
    }

    /// One active health check of a backend, passed or failed.
    pub fn health_check(&self, upstream: usize, backend: usize, ok: bool) {
        if let Some(u) = self.upstream(Some(upstream)) {
            if let Some(c) = u.health_checks.get(backend * 2 + usize::from(!ok)) {
                c.inc();
            }
        }
    }

    /// A TLS handshake with a client finished or failed.
    pub fn tls_handshake(&self, ok: bool) {
        if ok {
            self.tls_handshakes.inc();
        } else {
            self.tls_handshake_failures.inc();
        }
    }

    /// A config reload was applied or rejected.
    pub fn config_reload(&self, ok: bool) {
        if ok {
            self.config_reloads.inc();
        } else {
            self.config_reload_failures.inc();
        }
    }
}

/// Shards created for one layout.
#[derive(Debug, Clone)]
struct Generation {
    layout: Arc<Layout>,
    shards: Vec<Arc<WorkerMetrics>>,
}

/// All shards, for whoever reports.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Oldest first; the last one is current.
    generations: Vec<Generation>,
}

impl Default for Registry {
    /// A registry with an empty layout (process-wide counters only).
    fn default() -> Registry {
        Registry::new(Layout::default())
    }
}

impl Registry {
    pub fn new(layout: Layout) -> Registry {
        Registry {
            generations: vec![Generation {
                layout: Arc::new(layout),
                shards: Vec::new(),
            }],
        }
    }

    /// The layout new shards get.
    pub fn layout(&self) -> &Layout {
        &self.current().layout
    }

    fn current(&self) -> &Generation {
        // `new` makes one and `next_generation` only adds.
        &self.generations[self.generations.len() - 1]
    }

    /// A new shard for one writer thread, with the current layout.
    pub fn new_shard(&mut self) -> Arc<WorkerMetrics> {
        let last = self.generations.len() - 1;
        let generation = &mut self.generations[last];
        let shard = Arc::new(WorkerMetrics::new(&generation.layout));
        generation.shards.push(shard.clone());
        shard
    }

    /// After a reload: later shards use `layout`; series of the old shards
    /// continue under the same upstream name and backend address. A no-op
    /// when the layout is unchanged (keep using the current shards).
    pub fn next_generation(&mut self, layout: Layout) {
        self.fold_retired();
        if *self.current().layout != layout {
            self.generations.push(Generation {
                layout: Arc::new(layout),
                shards: Vec::new(),
            });
        }
    }

    /// Folds the shards nobody writes any more (only the registry holds
    /// them: their worker, connections and health checker are gone) into
    /// one per generation, so reloads do not grow the registry. Every sum
    /// stays the same.
    fn fold_retired(&mut self) {
        for generation in &mut self.generations {
            let mut retired = Vec::new();
            let mut live = Vec::new();
            for mut shard in generation.shards.drain(..) {
                // `get_mut` (not a relaxed `strong_count`) synchronizes
                // with the last writer's drop, so its final values are seen.
                if Arc::get_mut(&mut shard).is_some() {
                    retired.push(shard);
                } else {
                    live.push(shard);
                }
            }
            generation.shards = live;
            let mut retired = retired.into_iter();
            if let Some(folded) = retired.next() {
                for shard in retired {
                    folded.absorb(&shard);
                }
                generation.shards.push(folded);
            }
        }
    }

    /// How many shards are kept (live ones, and one folded per generation).
    pub fn shard_count(&self) -> usize {
        self.generations.iter().map(|g| g.shards.len()).sum()
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in self.generations.iter().flat_map(|g| &g.shards) {
            totals.add(shard);
        }
        totals
    }

    /// Everything summed, per-upstream series in the current layout.
    pub fn snapshot(&self) -> Snapshot {
        let layout = self.current().layout.clone();
        let mut upstreams: Vec<UpstreamTotals> = layout
            .upstreams
            .iter()
            .map(|u| UpstreamTotals::new(u.name.clone(), u.backends.clone()))
            .collect();
        upstreams.push(UpstreamTotals::new(String::new(), Vec::new()));
        for generation in &self.generations {
            // Where each old upstream and backend lands now, by name.
            let map: Vec<Option<(usize, Vec<Option<usize>>)>> = generation
                .layout
                .upstreams
                .iter()
                .map(|old| {
                    let now = layout.upstreams.iter().position(|u| u.name == old.name)?;
                    let backends = old
                        .backends
                        .iter()
                        .map(|b| layout.upstreams[now].backends.iter().position(|n| n == b))
                        .collect();
                    Some((now, backends))
                })
                .chain(std::iter::once(Some((layout.upstreams.len(), Vec::new()))))
                .collect();
            for shard in &generation.shards {
                for (old, u) in shard.upstreams.iter().enumerate() {
                    if let Some(Some((now, backends))) = map.get(old) {
                        upstreams[*now].add(u, backends);
                    }
                }
            }
        }
        Snapshot {
            totals: self.totals(),
            upstreams,
        }
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

/// All shards summed at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub totals: Totals,
    /// Config order, then one entry with an empty name for requests that
    /// matched no route.
    pub upstreams: Vec<UpstreamTotals>,
}

/// One upstream's counters summed over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTotals {
    pub name: String,
    pub backends: Vec<String>,
    /// `[backend + 1 (no backend last)][status class][method]`, flattened;
    /// read with [`UpstreamTotals::requests`].
    requests: Vec<u64>,
    /// Non-cumulative counts per bucket of [`DURATION_BUCKETS_US`], then +Inf.
    pub duration_buckets: [u64; BUCKETS],
    pub duration_sum_us: u64,
    pub retries: u64,
    pub retries_refused: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub connections_open: u64,
    /// `[backend][ok, failed]`, flattened.
    health_checks: Vec<u64>,
}

impl UpstreamTotals {
    fn new(name: String, backends: Vec<String>) -> UpstreamTotals {
        UpstreamTotals {
            requests: vec![0; (backends.len() + 1) * CELLS_PER_BACKEND],
            health_checks: vec![0; backends.len() * 2],
            name,
            backends,
            duration_buckets: [0; BUCKETS],
            duration_sum_us: 0,
            retries: 0,
            retries_refused: 0,
            connects: 0,
            connect_failures: 0,
            connections_open: 0,
        }
    }

    /// Adds one shard's counters; `backends[old]` is where an old backend
    /// index lands now (`None`: gone, dropped).
    fn add(&mut self, u: &UpstreamMetrics, backends: &[Option<usize>]) {
        let old_backends = u.backends();
        let now_backends = self.backends.len();
        for old in 0..=old_backends {
            let now = if old == old_backends {
                Some(now_backends)
            } else {
                backends.get(old).copied().flatten()
            };
            let Some(now) = now else { continue };
            for cell in 0..CELLS_PER_BACKEND {
                self.requests[now * CELLS_PER_BACKEND + cell] +=
                    u.requests[old * CELLS_PER_BACKEND + cell].get();
            }
            if old < old_backends {
                for r in 0..2 {
                    self.health_checks[now * 2 + r] += u.health_checks[old * 2 + r].get();
                }
            }
        }
        for (sum, c) in self.duration_buckets.iter_mut().zip(&u.duration_buckets) {
            *sum += c.get();
        }
        self.duration_sum_us += u.duration_sum_us.get();
        self.retries += u.retries.get();
        self.retries_refused += u.retries_refused.get();
        self.connects += u.connects.get();
        self.connect_failures += u.connect_failures.get();
        self.connections_open = self.connections_open.wrapping_add(u.connections_open.get());
    }

    /// Requests to `backend` (`None`: answered without a backend) with a
    /// status in class `class` (index into [`STATUS_CLASSES`]) and `method`.
    pub fn requests(&self, backend: Option<usize>, class: usize, method: Method) -> u64 {
        let slot = backend.unwrap_or(self.backends.len());
        let m = method as usize;
        self.requests
            .get(slot * CELLS_PER_BACKEND + class * Method::ALL.len() + m)
            .copied()
            .unwrap_or(0)
    }

    /// All requests of this upstream.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// Passed and failed health checks of `backend`.
    pub fn health_checks(&self, backend: usize) -> (u64, u64) {
        let at = |i: usize| self.health_checks.get(i).copied().unwrap_or(0);
        (at(backend * 2), at(backend * 2 + 1))
    }

    /// Requests counted in the duration histogram.
    pub fn duration_count(&self) -> u64 {
        self.duration_buckets.iter().sum()
    }
}

/// What the exposition shows of a backend's shared state. Implemented by
/// whoever owns that state (`upstream::BackendState`), so this module does
/// not depend on its API.
pub trait BackendView {
    fn healthy(&self) -> bool;
    /// 0 closed, 1 open, 2 half-open.
    fn breaker_state(&self) -> u8;
    fn in_flight(&self) -> u64;
    fn draining(&self) -> bool {
        false
    }
}

impl<T: BackendView + ?Sized> BackendView for Arc<T> {
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
    fn breaker_state(&self) -> u8 {
        (**self).breaker_state()
    }
    fn in_flight(&self) -> u64 {
        (**self).in_flight()
    }
    fn draining(&self) -> bool {
        (**self).draining()
    }
}

#[cfg(test)]
mod tests;
