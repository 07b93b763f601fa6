//! Reaching a backend: a worker's pool of idle connections, TCP connect and
//! the TLS handshake (the role of Pingora's `TransportConnector`).
//!
//! Why one place: the proxy and the health checker both connect to
//! backends, plain or over TLS; and whether a pooled connection may be
//! reused, what it counts in the metrics and when it is closed are one
//! policy.
//!
//! Invariants: a connection is either in use (an [`UpstreamConn`]) or idle in
//! the pool with no op in flight; it counts in its upstream's open gauge for
//! as long as it exists; the TLS client configs are built once per config
//! generation, by [`UpstreamTls::plan`] while a reload is planned, so a CA
//! file that cannot be loaded refuses the reload instead of failing
//! connections later.

use crate::proxy_protocol::{self, Version};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::pool::{Checkout, Liveness, Pool, Reusable};
use crate::config::Config;
use crate::io::{connect, Transport};
use crate::metrics::{LocalShortage, WorkerMetrics};

/// TLS to one upstream's backends, built from its config.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
    /// `tls_server_name`; `None`: the backend's IP address.
    name: Option<ServerName<'static>>,
}

/// Every upstream's TLS, by upstream index (`None`: plain).
pub type TlsByUpstream = Arc<Vec<Option<UpstreamTls>>>;

impl UpstreamTls {
    /// Builds the TLS client config of every `tls = true` upstream of
    /// `config`, loading each CA file once. Part of planning a start or a
    /// reload: an error names the upstream and refuses the config.
    pub fn plan(config: &Config) -> Result<TlsByUpstream, String> {
        let mut all = Vec::with_capacity(config.upstreams.len());
        for up in &config.upstreams {
            let Some(t) = &up.tls else {
                all.push(None);
                continue;
            };
            let ca = crate::tls::load_client_config(&t.ca)
                .map_err(|e| format!("upstreams.{}.tls_ca: {e}", up.name))?;
            let name = match &t.server_name {
                None => None,
                Some(n) => Some(
                    crate::tls::server_name(n)
                        .map_err(|e| format!("upstreams.{}.tls_server_name: {e}", up.name))?,
                ),
            };
            all.push(Some(UpstreamTls { config: ca, name }));
        }
        Ok(Arc::new(all))
    }
}

/// Connects to `addr` within `timeout`, TLS handshake included when `tls`
/// is given. The one way to reach a backend, for requests and checks.
///
/// `preamble` (a PROXY protocol header) is written first, before a TLS
/// handshake, within the same timeout.
pub async fn connect_to(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    timeout: Duration,
    buffer_size: usize,
    preamble: &[u8],
) -> io::Result<Transport> {
    let started = Instant::now();
    let conn = connect(addr, timeout).await?;
    if !preamble.is_empty() {
        let left = timeout.saturating_sub(started.elapsed());
        let (written, _) = conn
            .write_all(preamble.to_vec(), 0..preamble.len(), Some(left))
            .await;
        written?;
    }
    match tls {
        None => Ok(Transport::plain(conn)),
        Some(tls) => {
            let name = tls.name.clone().unwrap_or_else(|| addr.ip().into());
            let left = timeout.saturating_sub(started.elapsed());
            Transport::client(conn, tls.config.clone(), name, buffer_size, left).await
        }
    }
}

/// Why no connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// Refused, reset, or the TLS handshake failed.
    Failed,
    TimedOut,
    /// Every connection `max_connections` allows was in use for the whole
    /// `queue_timeout`: the backend's capacity as configured, not its
    /// failure.
    QueueTimeout,
    /// A local shortage (fds, buffers, ephemeral ports): not the backend's
    /// fault, so not counted against it.
    Local(LocalShortage),
}

/// Where a connection goes: the backend's address and its pool slot.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub upstream: usize,
    /// The backend's index in the worker's pool (all upstreams' backends
    /// numbered together).
    pub slot: usize,
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// With `send_proxy_protocol`: the header's version and the client's
    /// and the address it connected to. Such a connection is new for
    /// each request and never pooled.
    pub send_proxy: Option<(Version, SocketAddr, SocketAddr)>,
}

/// A connection to a backend, in use. Dropping it closes it; a clean one
/// goes back with [`Connector::release`].
pub struct UpstreamConn {
    pub transport: Transport,
    /// Taken from the pool (rather than connected for this request).
    pub reused: bool,
    /// Whether it may go back to the pool (not if it began with a PROXY
    /// header for one client).
    poolable: bool,
    slot: usize,
    /// Keeps the connection counted as open until dropped.
    open: OpenGuard,
    /// Its place under the backend's `max_connections`, if it has one.
    limit: Option<LimitGuard>,
}

/// `max_connections` and `queue_timeout` of one pool slot (backend).
#[derive(Debug, Clone, Copy)]
pub struct SlotLimit {
    pub max: usize,
    pub queue_timeout: Duration,
}

/// What a limited slot counts: its open connections, and the requests
/// waiting for one, oldest first.
#[derive(Default)]
struct SlotCount {
    open: usize,
    waiting: VecDeque<Rc<Waiting>>,
}

/// A request waiting under `max_connections`, and what it was given.
#[derive(Default)]
struct Waiting {
    given: RefCell<Given>,
    waker: RefCell<Option<Waker>>,
}

#[derive(Default)]
enum Given {
    #[default]
    Nothing,
    /// A place: a connection closed, and its count passed to this request.
    Place,
    /// A connection a finished request handed over.
    Conn(Idle),
}

impl Waiting {
    fn give(&self, what: Given) {
        *self.given.borrow_mut() = what;
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// The counts of a connector's limited slots.
struct Limits {
    limits: Vec<Option<SlotLimit>>,
    counts: RefCell<Vec<SlotCount>>,
}

impl Limits {
    /// A connection of `slot` closed: its place goes to the oldest waiting
    /// request, or is freed.
    fn closed(&self, slot: usize) {
        let next = {
            let mut counts = self.counts.borrow_mut();
            let count = &mut counts[slot];
            let next = count.waiting.pop_front();
            if next.is_none() {
                count.open -= 1;
            }
            next
        };
        if let Some(next) = next {
            next.give(Given::Place);
        }
    }
}

/// One connection's place under its slot's `max_connections`; dropping it
/// (the connection closed) frees the place.
struct LimitGuard {
    limits: Rc<Limits>,
    slot: usize,
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        self.limits.closed(self.slot);
    }
}

/// Takes a waiting request out of its queue if it gives up (timed out, or
/// its client went away); a place or a connection given meanwhile is
/// passed on (the connection is closed, which passes its place).
struct Queued {
    limits: Rc<Limits>,
    slot: usize,
    waiting: Rc<Waiting>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.limits.counts.borrow_mut()[self.slot]
            .waiting
            .retain(|w| !Rc::ptr_eq(w, &self.waiting));
        let given = std::mem::take(&mut *self.waiting.given.borrow_mut());
        match given {
            Given::Nothing => {}
            Given::Place => self.limits.closed(self.slot),
            Given::Conn(idle) => drop(idle),
        }
    }
}

/// What the pool holds: an idle connection and its gauge guard.
pub struct Idle {
    transport: Transport,
    open: OpenGuard,
    limit: Option<LimitGuard>,
}

impl Reusable for Idle {
    fn is_reusable(&self) -> bool {
        self.transport.is_reusable()
    }
}

/// Counts one connection in its upstream's
/// `ringlb_upstream_connections_open` while it exists, in use or pooled.
struct OpenGuard {
    metrics: Arc<WorkerMetrics>,
    upstream: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.metrics.upstream_closed(self.upstream);
    }
}

/// A worker's way to its backends: the pool, and connect with TLS.
pub struct Connector {
    pool: RefCell<Pool<Idle>>,
    tls: TlsByUpstream,
    metrics: Arc<WorkerMetrics>,
    buffer_size: usize,
    limits: Rc<Limits>,
}

/// How a request under `max_connections` gets its connection.
enum Admitted {
    /// Connect a new one, in this place (`None`: the slot has no limit).
    Connect(Option<LimitGuard>),
    /// One a finished request handed over.
    Handed(Idle),
}

impl Connector {
    /// `slots[i]` is `(max_idle, idle_timeout)` for pool slot `i`, and
    /// `limits[i]` its `max_connections`, if any.
    pub fn new(
        slots: Vec<(usize, Duration)>,
        limits: Vec<Option<SlotLimit>>,
        tls: TlsByUpstream,
        metrics: Arc<WorkerMetrics>,
        buffer_size: usize,
    ) -> Connector {
        let counts = limits.iter().map(|_| SlotCount::default()).collect();
        Connector {
            pool: RefCell::new(Pool::new(slots)),
            tls,
            metrics,
            buffer_size,
            limits: Rc::new(Limits {
                limits,
                counts: RefCell::new(counts),
            }),
        }
    }

    /// A place under `target`'s `max_connections`: at once if one is free
    /// and nobody waits, else in turn, for at most its `queue_timeout`.
    async fn admit(&self, target: &Target) -> Result<Admitted, ConnectError> {
        let Some(limit) = self.limits.limits.get(target.slot).copied().flatten() else {
            return Ok(Admitted::Connect(None));
        };
        if let Some(place) = self.free_place(target.slot, limit) {
            return Ok(Admitted::Connect(Some(place)));
        }
        let waiting = Rc::new(Waiting::default());
        self.limits.counts.borrow_mut()[target.slot]
            .waiting
            .push_back(waiting.clone());
        let queued = Queued {
            limits: self.limits.clone(),
            slot: target.slot,
            waiting,
        };
        let wait = std::future::poll_fn(|cx| {
            if matches!(*queued.waiting.given.borrow(), Given::Nothing) {
                *queued.waiting.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        let _ = crate::io::timeout(limit.queue_timeout, wait).await;
        let given = std::mem::take(&mut *queued.waiting.given.borrow_mut());
        match given {
            Given::Nothing => {
                tracing::warn!(backend = %target.addr, "no upstream connection within queue_timeout");
                Err(ConnectError::QueueTimeout)
            }
            Given::Place => Ok(Admitted::Connect(Some(self.place(target.slot)))),
            Given::Conn(idle) => Ok(Admitted::Handed(idle)),
        }
    }

    /// A place in `slot` if one is free and no request waits for it.
    fn free_place(&self, slot: usize, limit: SlotLimit) -> Option<LimitGuard> {
        {
            let mut counts = self.limits.counts.borrow_mut();
            let count = &mut counts[slot];
            if count.open >= limit.max || !count.waiting.is_empty() {
                return None;
            }
            count.open += 1;
        }
        Some(self.place(slot))
    }

    /// A place already counted in `slot`'s open connections.
    fn place(&self, slot: usize) -> LimitGuard {
        LimitGuard {
            limits: self.limits.clone(),
            slot,
        }
    }

    /// Requests wait for `slot`'s connections.
    fn has_waiting(&self, slot: usize) -> bool {
        self.limits
            .counts
            .borrow()
            .get(slot)
            .is_some_and(|c| !c.waiting.is_empty())
    }

    /// A connection to `target`: a pooled one if alive (see [`Liveness`]),
    /// else a new one.
    pub async fn acquire(
        &self,
        target: &Target,
        liveness: Liveness,
    ) -> Result<UpstreamConn, ConnectError> {
        // Behind requests already waiting, a request waits too: the pool
        // is empty then (a returned connection goes to the oldest waiter).
        let checkout = match target.send_proxy {
            None if !self.has_waiting(target.slot) => {
                self.pool
                    .borrow_mut()
                    .checkout(target.slot, Instant::now(), liveness)
            }
            _ => Checkout::Miss { stale: 0 },
        };
        let stale = match checkout {
            Checkout::Hit(idle) => return Ok(self.reuse(target, idle)),
            Checkout::Miss { stale } => stale,
        };
        self.metrics.pool_stale.add(stale as u64);
        let place = match self.admit(target).await? {
            Admitted::Handed(idle) => return Ok(self.reuse(target, idle)),
            Admitted::Connect(place) => place,
        };
        self.metrics.pool_misses.inc();
        self.connect_with(target, place).await
    }

    fn reuse(&self, target: &Target, idle: Idle) -> UpstreamConn {
        self.metrics.pool_hits.inc();
        let Idle {
            transport,
            open,
            limit,
        } = idle;
        UpstreamConn {
            transport,
            reused: true,
            poolable: true,
            slot: target.slot,
            open,
            limit,
        }
    }

    /// A new connection to `target`, never from the pool (a `[[tcp]]`
    /// session's, or a pool miss): connect, the PROXY header, the TLS
    /// handshake, all within `connect_timeout`.
    pub async fn connect_new(&self, target: &Target) -> Result<UpstreamConn, ConnectError> {
        self.connect_with(target, None).await
    }

    /// [`Connector::connect_new`] in `place` under the slot's limit.
    async fn connect_with(
        &self,
        target: &Target,
        place: Option<LimitGuard>,
    ) -> Result<UpstreamConn, ConnectError> {
        let tls = self.tls.get(target.upstream).and_then(Option::as_ref);
        let mut preamble = Vec::new();
        if let Some((version, client, destination)) = target.send_proxy {
            match version {
                Version::V1 => proxy_protocol::encode_v1(client, destination, &mut preamble),
                Version::V2 => {
                    proxy_protocol::encode_v2(Some((client, destination)), &mut preamble)
                }
            }
        }
        let connected = connect_to(
            target.addr,
            tls,
            target.connect_timeout,
            self.buffer_size,
            &preamble,
        )
        .await;
        let shortage = connected
            .as_ref()
            .err()
            .and_then(io::Error::raw_os_error)
            .and_then(LocalShortage::from_errno);
        if let Some(kind) = shortage {
            // Counted once here, logged by the caller's reply; the backend's
            // connect metrics stay as they are.
            self.metrics.local_error(kind);
            return Err(ConnectError::Local(kind));
        }
        self.metrics
            .upstream_connect(target.upstream, connected.is_ok());
        match connected {
            Ok(transport) => Ok(UpstreamConn {
                transport,
                reused: false,
                poolable: target.send_proxy.is_none(),
                slot: target.slot,
                open: OpenGuard {
                    metrics: self.metrics.clone(),
                    upstream: target.upstream,
                },
                limit: place,
            }),
            Err(e) => {
                tracing::warn!(backend = %target.addr, error = %e, "upstream connect failed");
                Err(if e.kind() == io::ErrorKind::TimedOut {
                    ConnectError::TimedOut
                } else {
                    ConnectError::Failed
                })
            }
        }
    }

    /// Returns a connection whose exchange ended cleanly to the pool.
    pub fn release(&self, conn: UpstreamConn) {
        let UpstreamConn {
            transport,
            slot,
            open,
            poolable,
            limit,
            ..
        } = conn;
        if !poolable {
            transport.shutdown(std::net::Shutdown::Both);
            return;
        }
        let idle = Idle {
            transport,
            open,
            limit,
        };
        let next = self
            .limits
            .counts
            .borrow_mut()
            .get_mut(slot)
            .and_then(|c| c.waiting.pop_front());
        match next {
            // First come, first served: straight to the oldest waiter.
            Some(next) => next.give(Given::Conn(idle)),
            None => self.pool.borrow_mut().checkin(slot, idle, Instant::now()),
        }
    }

    /// Closes idle connections past their idle timeout; returns how many.
    pub fn evict_idle(&self) -> usize {
        self.pool.borrow_mut().evict_expired(Instant::now())
    }

    /// Moves the idle connections of `from_slot` to `next`'s `to_slot`
    /// (a reload keeps the backend).
    pub fn hand_over(&self, from_slot: usize, next: &Connector, to_slot: usize) {
        let (mut old, mut new) = (self.pool.borrow_mut(), next.pool.borrow_mut());
        let now = Instant::now();
        while let Checkout::Hit(mut idle) = old.checkout(from_slot, now, Liveness::Checked) {
            // Counted under the new config's limit, if it has room.
            idle.limit = match next.limits.limits.get(to_slot).copied().flatten() {
                Some(limit) => match next.free_place(to_slot, limit) {
                    Some(place) => Some(place),
                    // No room: closed (its old place passes on).
                    None => continue,
                },
                None => None,
            };
            new.checkin(to_slot, idle, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_ca(ca: &std::path::Path) -> Config {
        let src = format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n\
             [upstreams.plain]\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n\
             [upstreams.app]\nbackends = [{{ addr = \"127.0.0.1:3\" }}]\n\
             tls = true\ntls_ca = {:?}\ntls_server_name = \"localhost\"\n",
            ca.display().to_string()
        );
        Config::from_toml_str(&src, std::path::Path::new("t")).unwrap()
    }

    /// The CA is read when the config is planned, not when a worker first
    /// connects: a CA file broken after the config was checked fails the
    /// plan, which refuses the start or reload before anything changed.
    #[test]
    fn plan_builds_each_upstream_tls_once_and_fails_on_a_bad_ca() {
        let dir = std::env::temp_dir().join(format!("ringlb-connector-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let good = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/ca.pem");
        std::fs::copy(good, &ca).unwrap();
        let config = config_with_ca(&ca);
        let order: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        let planned = UpstreamTls::plan(&config).unwrap();
        assert_eq!(planned.len(), 2);
        for (name, tls) in order.iter().zip(planned.iter()) {
            assert_eq!(tls.is_some(), *name == "app", "{name}");
        }

        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = UpstreamTls::plan(&config).unwrap_err();
        assert!(err.starts_with("upstreams.app.tls_ca: "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
