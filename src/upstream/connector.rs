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
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
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
}

/// What the pool holds: an idle connection and its gauge guard.
pub struct Idle {
    transport: Transport,
    open: OpenGuard,
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
}

impl Connector {
    /// `slots[i]` is `(max_idle, idle_timeout)` for pool slot `i`.
    pub fn new(
        slots: Vec<(usize, Duration)>,
        tls: TlsByUpstream,
        metrics: Arc<WorkerMetrics>,
        buffer_size: usize,
    ) -> Connector {
        Connector {
            pool: RefCell::new(Pool::new(slots)),
            tls,
            metrics,
            buffer_size,
        }
    }

    /// A connection to `target`: a pooled one if alive (see [`Liveness`]),
    /// else a new one.
    pub async fn acquire(
        &self,
        target: &Target,
        liveness: Liveness,
    ) -> Result<UpstreamConn, ConnectError> {
        let checkout = match target.send_proxy {
            None => self
                .pool
                .borrow_mut()
                .checkout(target.slot, Instant::now(), liveness),
            Some(_) => Checkout::Miss { stale: 0 },
        };
        let stale = match checkout {
            Checkout::Hit(Idle { transport, open }) => {
                self.metrics.pool_hits.inc();
                return Ok(UpstreamConn {
                    transport,
                    reused: true,
                    poolable: true,
                    slot: target.slot,
                    open,
                });
            }
            Checkout::Miss { stale } => stale,
        };
        self.metrics.pool_stale.add(stale as u64);
        self.metrics.pool_misses.inc();
        self.connect_new(target).await
    }

    /// A new connection to `target`, never from the pool (a `[[tcp]]`
    /// session's, or a pool miss): connect, the PROXY header, the TLS
    /// handshake, all within `connect_timeout`.
    pub async fn connect_new(&self, target: &Target) -> Result<UpstreamConn, ConnectError> {
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
            ..
        } = conn;
        if !poolable {
            transport.shutdown(std::net::Shutdown::Both);
            return;
        }
        self.pool
            .borrow_mut()
            .checkin(slot, Idle { transport, open }, Instant::now());
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
        while let Checkout::Hit(idle) = old.checkout(from_slot, now, Liveness::Checked) {
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
