//! A worker's state for one config generation: its config snapshot,
//! routes, per-upstream balancing state, connector (pool, TLS), filters,
//! spare buffers and metrics shard; and the hand-over to the next
//! generation on a reload.
//!
//! Invariants: shared by the worker's connection tasks through an `Rc`; no
//! `RefCell` borrow is held across an await. A connection moves to the
//! newest generation only between requests ([`Worker::newest`]); a request
//! in flight finishes on the generation it started on.

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access_log::WorkerLog;
use crate::cache::Zones;
use crate::config::{Config, ServerConfig};
use crate::gateway::shared::{ConnGuard, Shared};
use crate::http;
use crate::io::{Closer, Conn, SpareList, Transport};
use crate::metrics::WorkerMetrics;
use crate::route::RouteTable;
use crate::upstream::balance::{Picked, Picker};
use crate::upstream::connector::{Connector, SlotLimit, Target, TlsByUpstream};
use crate::upstream::retry::{RetryBudget, RetryPolicy};
use crate::upstream::{clock, Backend, BackendState};

use super::client::{Client, ListenerRemoved};
use super::filter::Filters;
use super::reject_log::log_refused_connection;

/// Spare relay buffers a worker keeps (at `buffer_size` each, 16 MiB at
/// the defaults).
const MAX_SPARE_BUFFERS: usize = 1024;

/// Roughly what an ended connection gives back (its task and state).
const CONNECTION_BYTES: usize = 2048;

/// Lines a second a worker logs for refused PROXY protocol headers.
const PROXY_WARNINGS_PER_SECOND: u32 = 3;

/// One upstream as a worker sees it.
pub(super) struct UpstreamRt {
    pub name: String,
    pub backends: Vec<Backend>,
    /// Global index of `backends[0]` in the connector's pool.
    pub first_slot: usize,
    /// The strategy's balancer, request key and sticky cookie.
    pub picker: Picker,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retry: RetryPolicy,
    /// This worker's retry budget for the upstream (core-local).
    pub budget: RetryBudget,
    /// `send_proxy_protocol`.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
}

impl UpstreamRt {
    /// Picks and admits a backend not yet `tried`; on a retry with every
    /// available backend tried already, one of them again (rather than
    /// giving up).
    pub fn pick(
        &mut self,
        key: Option<u64>,
        tried: &[usize],
        retrying: bool,
        now: u64,
    ) -> Option<Picked> {
        let picked = self
            .picker
            .pick_and_admit(&self.backends, key, &|i| tried.contains(&i), now);
        if picked.is_none() && retrying {
            return self
                .picker
                .pick_and_admit(&self.backends, key, &|_| false, now);
        }
        picked
    }

    /// Where backend `index` of this upstream (number `upstream`) is
    /// reached; with `send_proxy_protocol`, the header names `client` and
    /// the address it connected to (`destination`, asked only then).
    pub fn target(
        &self,
        upstream: usize,
        index: usize,
        client: SocketAddr,
        destination: impl FnOnce() -> SocketAddr,
    ) -> Target {
        Target {
            upstream,
            slot: self.first_slot + index,
            addr: self.backends[index].addr,
            connect_timeout: self.connect_timeout,
            send_proxy: self
                .send_proxy
                .map(|version| (version, client, destination())),
        }
    }
}

/// One `[[tcp]]` listener as a worker sees it (same index as
/// `Config::tcp`): its counters, shared by every worker and generation.
pub(super) struct TcpRt {
    pub stats: Arc<crate::tcp::stats::ListenerStats>,
    /// Sessions relayed, per upstream index this listener may choose.
    pub connections: Vec<(usize, Arc<std::sync::atomic::AtomicU64>)>,
}

/// A worker's upstreams (balancing state, retry budgets) and its retry
/// jitter: what the exchange works on, and no more of the worker.
pub(super) struct Upstreams {
    list: RefCell<Vec<UpstreamRt>>,
    rng: RefCell<fastrand::Rng>,
}

impl Upstreams {
    /// Upstream `u` (index in the config), borrowed until the guard drops;
    /// never held across an await.
    pub fn get(&self, u: usize) -> Ref<'_, UpstreamRt> {
        Ref::map(self.list.borrow(), |list| &list[u])
    }

    pub fn get_mut(&self, u: usize) -> RefMut<'_, UpstreamRt> {
        RefMut::map(self.list.borrow_mut(), |list| &mut list[u])
    }

    /// The retry jitter's random source.
    pub fn rng(&self) -> RefMut<'_, fastrand::Rng> {
        self.rng.borrow_mut()
    }
}

/// Spare relay buffers, so a request or a connection does not cost a
/// `buffer_size` allocation; and spare body buffers ([`BODY_READ`]), which
/// a body of more than `buffer_size` is read into while it streams. Those
/// that a whole sweep interval did not need are freed ([`Buffers::sweep`]),
/// so memory comes back when load goes.
pub(super) struct Buffers {
    relay: Spare,
    body: Spare,
    /// Memory given back to the allocator since the last sweep (ended
    /// connections), in bytes, roughly.
    freed: Cell<usize>,
}

/// The most a streaming body reads at once (when `buffer_size` is less):
/// a 64 KiB response then takes one read and one write, not four of each.
pub(super) const BODY_READ: usize = 64 * 1024;

/// Spare body buffers a worker keeps (16 MiB).
const MAX_SPARE_BODY_BUFFERS: usize = 256;

/// Spare buffers of one size.
struct Spare {
    list: RefCell<SpareList<Vec<u8>>>,
    size: usize,
}

impl Spare {
    fn new(size: usize, max: usize) -> Spare {
        Spare {
            list: RefCell::new(SpareList::new(max)),
            size,
        }
    }

    fn take(&self) -> Vec<u8> {
        self.list
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Whether `buf` is of this size (it may have grown a little).
    fn fits(&self, buf: &Vec<u8>) -> bool {
        (self.size..=2 * self.size).contains(&buf.capacity())
    }

    /// Keeps `buf`, emptied, unless enough are kept (then it is freed).
    fn keep(&self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.list.borrow_mut().keep(buf);
    }

    /// Frees the buffers unused since the last sweep; returns their bytes.
    fn sweep(&self) -> usize {
        let mut list = self.list.borrow_mut();
        let unused = list.sweep(false).count();
        list.shrink();
        unused * self.size
    }
}

impl Buffers {
    fn new(size: usize) -> Buffers {
        Buffers {
            relay: Spare::new(size, MAX_SPARE_BUFFERS),
            body: Spare::new(size.max(BODY_READ), MAX_SPARE_BODY_BUFFERS),
            freed: Cell::new(0),
        }
    }

    pub fn take(&self) -> Vec<u8> {
        self.relay.take()
    }

    /// A buffer of [`BODY_READ`] bytes (or `buffer_size`, if more).
    pub fn take_body(&self) -> Vec<u8> {
        self.body.take()
    }

    /// The size of [`Buffers::take_body`]'s buffers.
    pub fn body_size(&self) -> usize {
        self.body.size
    }

    /// Keeps `buf` for reuse if it is of either size (not one that grew
    /// for a large head, or the empty one of a connection woken from
    /// idle), unless enough are kept already.
    pub fn give(&self, buf: Vec<u8>) {
        // The larger size first: the two ranges may share a size.
        if self.body.size > self.relay.size && self.body.fits(&buf) {
            self.body.keep(buf);
        } else if self.relay.fits(&buf) {
            self.relay.keep(buf);
        }
    }

    /// Notes memory freed outside the pool (an ended connection's task).
    pub fn note_freed(&self, bytes: usize) {
        self.freed.set(self.freed.get() + bytes);
    }

    /// Frees the spare buffers unused since the last sweep; returns roughly
    /// how many bytes were freed since the last sweep, these included.
    fn sweep(&self) -> usize {
        self.freed.replace(0) + self.relay.sweep() + self.body.sweep()
    }
}

/// What the data path of one exchange uses of its worker: narrower than
/// the worker (no routes, no generations, no idle registry).
pub(super) struct Env<'w> {
    pub server: &'w ServerConfig,
    pub limits: &'w http::Limits,
    pub metrics: &'w WorkerMetrics,
    pub connector: &'w Connector,
    pub filters: &'w Filters,
    pub buffers: &'w Buffers,
    /// A graceful stop began.
    pub draining: &'w Cell<bool>,
}

/// Everything a worker owns for one config generation.
pub struct Worker {
    pub(super) config: Arc<Config>,
    /// The cache zones, shared by every worker and kept across reloads.
    pub(super) zones: Arc<Zones>,
    pub(super) routes: RouteTable,
    pub(super) upstreams: Upstreams,
    /// The `[[tcp]]` listeners, in config order.
    pub(super) tcp: Vec<TcpRt>,
    pub(super) connector: Connector,
    pub(super) filters: Filters,
    pub(super) buffers: Buffers,
    pub(super) limits: http::Limits,
    pub metrics: Arc<WorkerMetrics>,
    /// The process-wide tables of the edge limits (same for every worker
    /// and generation).
    pub(super) shared: Arc<Shared>,
    /// This worker's access log buffer, when `server.access_log` is set.
    pub(super) log: Option<RefCell<WorkerLog>>,
    /// A graceful stop began: no keep-alive, no waiting for new requests.
    draining: Cell<bool>,
    /// The worker built from a newer config by a reload: connections move
    /// to it between requests.
    successor: RefCell<Option<Rc<Worker>>>,
    /// Client connections idle between requests within their grace, with
    /// their listener's removed flag (their read ends when the stop
    /// begins, or when a reload removes their listener). Those idle past
    /// it are parked (see `park`).
    idle: RefCell<slab::Slab<(Closer, ListenerRemoved)>>,
    /// Lines a second for refused PROXY headers (the metric counts all).
    proxy_log: RefCell<crate::server::LogBudget>,
}

/// What every worker of the process shares besides the backends' states:
/// the edge limits' tables (kept across reloads) and the cache zones.
pub struct ProcessShared {
    pub zones: Arc<Zones>,
    pub shared: Arc<Shared>,
}

impl Worker {
    /// `backend_states[u][b]` is the shared state of backend `b` of
    /// upstream `u`; every worker gets the same `Arc`s. `tls` is every
    /// upstream's TLS, built when the config was planned.
    pub fn new(
        config: Arc<Config>,
        backend_states: &[Vec<Arc<BackendState>>],
        tls: TlsByUpstream,
        worker_index: usize,
        metrics: Arc<WorkerMetrics>,
        log: Option<WorkerLog>,
        process: ProcessShared,
    ) -> Worker {
        let ProcessShared { zones, shared } = process;
        let mut upstreams = Vec::new();
        let mut slots = Vec::new();
        let mut limits = Vec::new();
        for (u, up) in config.upstreams.iter().enumerate() {
            let backends: Vec<Backend> = up
                .backends
                .iter()
                .zip(&backend_states[u])
                .map(|(b, state)| Backend::new(b.addr, u32::from(b.weight.get()), state.clone()))
                .collect();
            let first_slot = slots.len();
            slots.extend(backends.iter().map(|_| (up.max_idle, up.idle_timeout)));
            limits.extend(backends.iter().map(|_| {
                up.max_connections.map(|max| SlotLimit {
                    max,
                    queue_timeout: up.queue_timeout,
                })
            }));
            upstreams.push(UpstreamRt {
                name: up.name.clone(),
                picker: Picker::new(up, &backends, worker_index),
                backends,
                first_slot,
                connect_timeout: up.connect_timeout,
                response_timeout: up.response_timeout,
                retry: RetryPolicy::new(&up.retry),
                budget: RetryBudget::new(up.retry.budget.get(), clock::now_nanos()),
                send_proxy: up.send_proxy_protocol,
            });
        }
        let tcp = config
            .tcp
            .iter()
            .map(|t| {
                let stats = shared.tcp.listener(&t.name);
                let mut chosen: Vec<usize> = t
                    .upstream
                    .into_iter()
                    .chain(t.sni_routes.upstreams())
                    .collect();
                chosen.sort_unstable();
                chosen.dedup();
                let connections = chosen
                    .into_iter()
                    .map(|u| (u, stats.connections(&config.upstreams[u].name)))
                    .collect();
                TcpRt { stats, connections }
            })
            .collect();
        let buffer_size = config.server.buffer_size;
        Worker {
            tcp,
            routes: RouteTable::from_config(&config),
            limits: http::Limits {
                max_head_bytes: config.server.max_head_bytes,
                max_headers: config.server.max_headers.get(),
            },
            upstreams: Upstreams {
                list: RefCell::new(upstreams),
                rng: RefCell::new(fastrand::Rng::new()),
            },
            connector: Connector::new(slots, limits, tls, metrics.clone(), buffer_size),
            filters: Filters::standard(),
            buffers: Buffers::new(buffer_size),
            config,
            zones,
            metrics,
            shared,
            log: log.map(RefCell::new),
            draining: Cell::new(false),
            successor: RefCell::new(None),
            idle: RefCell::new(slab::Slab::new()),
            proxy_log: RefCell::new(crate::server::LogBudget::new(PROXY_WARNINGS_PER_SECOND)),
        }
    }

    pub(super) fn proxy_log_budget(&self) -> RefMut<'_, crate::server::LogBudget> {
        self.proxy_log.borrow_mut()
    }

    /// The config this worker was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(super) fn env(&self) -> Env<'_> {
        Env {
            server: &self.config.server,
            limits: &self.limits,
            metrics: &self.metrics,
            connector: &self.connector,
            filters: &self.filters,
            buffers: &self.buffers,
            draining: &self.draining,
        }
    }

    /// Whether the graceful stop has begun on this worker.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Begins the graceful stop: responses from now on say
    /// `Connection: close`, and connections idle between requests are
    /// woken (their read sees end of stream) and closed.
    pub fn begin_drain(&self) {
        self.draining.set(true);
        for (_, (closer, _)) in self.idle.borrow().iter() {
            closer.shutdown_read();
        }
        super::park::wake_parked(self, None);
    }

    /// A reload removed a listener: its connections idle between requests
    /// on this worker are woken and closed (the others close after their
    /// current response).
    pub fn close_idle_from(&self, listener: &ListenerRemoved) {
        for (_, (closer, from)) in self.idle.borrow().iter() {
            if Rc::ptr_eq(from, listener) {
                closer.shutdown_read();
            }
        }
        super::park::wake_parked(self, Some(listener));
    }

    /// Registers a connection idle between requests, so a graceful stop or
    /// a removed listener can end its wait; `None` when it should close
    /// now instead of waiting.
    pub(super) fn register_idle(&self, client: &Client) -> Option<usize> {
        if client.winding_down(self.is_draining()) {
            return None;
        }
        let entry = (client.transport.closer(), client.listener_removed.clone());
        Some(self.idle.borrow_mut().insert(entry))
    }

    pub(super) fn unregister_idle(&self, key: usize) {
        self.idle.borrow_mut().remove(key);
    }

    /// After a reload: `next` serves every request that starts from now
    /// on, including the next request of connections open on this one.
    pub fn hand_over_to(&self, next: Rc<Worker>) {
        self.hand_over_pool(&next);
        *self.successor.borrow_mut() = Some(next);
    }

    /// Moves the idle pooled connections of every backend the new config
    /// keeps (same upstream name and address, same upstream TLS settings)
    /// to `next`'s pool.
    fn hand_over_pool(&self, next: &Worker) {
        let (old_ups, new_ups) = (self.upstreams.list.borrow(), next.upstreams.list.borrow());
        for (u, old_up) in old_ups.iter().enumerate() {
            let Some(v) = new_ups.iter().position(|n| n.name == old_up.name) else {
                continue;
            };
            if self.config.upstreams[u].tls != next.config.upstreams[v].tls {
                continue;
            }
            let new_up = &new_ups[v];
            for (i, backend) in old_up.backends.iter().enumerate() {
                let Some(j) = new_up.backends.iter().position(|b| b.addr == backend.addr) else {
                    continue;
                };
                self.connector.hand_over(
                    old_up.first_slot + i,
                    &next.connector,
                    new_up.first_slot + j,
                );
            }
        }
    }

    /// The worker of the newest config (this one unless a reload happened).
    pub(super) fn newest(self: &Rc<Self>) -> Rc<Worker> {
        let mut worker = self.clone();
        loop {
            let next = worker.successor.borrow().clone();
            match next {
                Some(next) => worker = next,
                None => return worker,
            }
        }
    }

    /// Whether requests are written to an access log.
    pub fn logs_requests(&self) -> bool {
        self.log.is_some()
    }

    /// Hands the access log buffer to the writer if its oldest line is due;
    /// run from a timer about every 100 ms.
    pub fn flush_log_if_due(&self) {
        if let Some(log) = &self.log {
            log.borrow_mut().flush_if_due(Instant::now());
        }
    }

    /// Hands the access log buffer to the writer now (at shutdown).
    pub fn flush_log(&self) {
        if let Some(log) = &self.log {
            log.borrow_mut().flush();
        }
    }

    /// Closes pooled connections past their idle timeout, and frees the
    /// spare buffers that went unused since the last call; run periodically.
    /// Returns roughly how many bytes this worker freed since the last call
    /// (the caller may then ask the allocator to return them).
    pub fn evict_idle(&self) -> usize {
        let evicted = self.connector.evict_idle();
        self.metrics.pool_stale.add(evicted as u64);
        self.buffers.sweep()
    }

    /// Whether a new connection from `peer` on `listener` may be served:
    /// the listener's `allow`/`deny`, then `max_connections_per_ip` of the
    /// server and of the listener. The slots taken are given back when
    /// the returned guards drop (when the connection ends); `None`: close
    /// it at once (counted and logged).
    pub(super) fn admit_connection(
        &self,
        peer: IpAddr,
        listener: SocketAddr,
    ) -> Option<[Option<ConnGuard>; 2]> {
        let server = &self.config.server;
        let listen = server
            .listen
            .iter()
            .chain(self.config.tcp.iter().map(|t| &t.listen))
            .find(|l| l.addr == listener);
        if listen
            .and_then(|l| l.access.as_deref())
            .is_some_and(|rules| !rules.permits(peer))
        {
            self.metrics.connections_denied.inc();
            log_refused_connection(peer, "client address denied by the listener's access rules");
            return None;
        }
        let limits = [
            (None, server.max_connections_per_ip),
            (
                Some(listener),
                listen.and_then(|l| l.max_connections_per_ip),
            ),
        ];
        let mut slots = [None, None];
        for (slot, (scope, limit)) in slots.iter_mut().zip(limits) {
            let Some(limit) = limit else { continue };
            match self.shared.acquire_conn(scope, peer, limit.get()) {
                Some(guard) => *slot = Some(guard),
                None => {
                    self.metrics.connections_per_ip_rejected.inc();
                    log_refused_connection(peer, "client address at max_connections_per_ip");
                    return None;
                }
            }
        }
        Some(slots)
    }

    /// A new client connection: counted, and with its transport (TLS on a
    /// TLS listener) and buffers; `None` when its TLS session cannot start.
    pub(super) fn accept_client(
        &self,
        conn: Conn,
        client_addr: std::net::SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        listener: std::net::SocketAddr,
        listener_removed: ListenerRemoved,
    ) -> Option<Client> {
        self.metrics.connections_accepted.inc();
        self.metrics.connections_open.inc();
        let buffer_size = self.config.server.buffer_size;
        let transport = match tls {
            None => Transport::plain(conn),
            Some(config) => match Transport::server(conn, config, buffer_size) {
                Ok(transport) => transport,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a TLS session");
                    self.metrics.connections_open.sub(1);
                    return None;
                }
            },
        };
        // Both buffers are full size: the relays swap them with upstream
        // buffers instead of copying.
        Some(Client::new(
            transport,
            client_addr,
            self.buffers.take(),
            self.buffers.take(),
            buffer_size,
            listener,
            listener_removed,
        ))
    }

    /// A client connection ended (on this worker, its last generation).
    pub(super) fn release_client(&self, client: Client) {
        self.buffers.give(client.buf);
        self.buffers.give(client.out);
        self.metrics.connections_open.sub(1);
        self.buffers.note_freed(CONNECTION_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_goes_back_to_the_spare_list_of_its_size() {
        let buffers = Buffers::new(16 * 1024);
        let relay = buffers.take();
        let body = buffers.take_body();
        assert_eq!(relay.capacity(), 16 * 1024);
        assert_eq!(body.capacity(), BODY_READ);
        let (relay_ptr, body_ptr) = (relay.as_ptr(), body.as_ptr());
        buffers.give(body);
        buffers.give(relay);
        // Neither size is handed out as the other.
        let (relay, body) = (buffers.take(), buffers.take_body());
        assert_eq!(relay.as_ptr(), relay_ptr);
        assert_eq!(body.as_ptr(), body_ptr);
        // A buffer of neither size (an idle connection's empty one) is freed.
        buffers.give(Vec::new());
        assert_eq!(buffers.take().capacity(), 16 * 1024);
    }

    #[test]
    fn a_sweep_frees_the_spare_buffers_the_last_interval_did_not_use() {
        let buffers = Buffers::new(16 * 1024);
        let taken: Vec<_> = (0..3).map(|_| buffers.take_body()).collect();
        taken.into_iter().for_each(|b| buffers.give(b));
        buffers.sweep();
        // All three were needed at once in that interval: none is freed.
        assert_eq!(buffers.body.list.borrow().len(), 3);
        // One of them is used in the next interval; two were not needed.
        let one = buffers.take_body();
        buffers.give(one);
        assert_eq!(buffers.sweep(), 2 * BODY_READ);
        assert_eq!(buffers.body.list.borrow().len(), 1);
    }

    #[test]
    fn with_a_buffer_size_above_the_body_read_both_sizes_are_one() {
        let buffers = Buffers::new(128 * 1024);
        assert_eq!(buffers.body_size(), 128 * 1024);
        let body = buffers.take_body();
        let ptr = body.as_ptr();
        buffers.give(body);
        let relay = buffers.take();
        assert_eq!(relay.as_ptr(), ptr);
    }
}
