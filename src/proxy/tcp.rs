//! A `[[tcp]]` session: raw TCP relayed to a backend of an upstream.
//!
//! ```text
//! admit -> [read the ClientHello, route by SNI] -> choose backend -> connect
//!   (retry on another backend) -> relay both ways -> log
//! ```
//!
//! The backend is chosen as for a request (health, breaker, draining,
//! panic mode; `ip_hash` and `consistent_hash` keyed by the client
//! address), and judged by its connect: a refused or timed-out connect
//! counts against it and is retried on another backend as the upstream's
//! `retry` allows. A connected session then holds one in-flight slot of its
//! backend until it ends, so `least_connections` balances sessions. The
//! bytes read before the backend was chosen (a ClientHello) go to it first,
//! untouched.

use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use crate::access_log::TcpEntry;
use crate::io::Conn;
use crate::tcp::sni::{self, Hello};
use crate::tcp::SessionEnd;
use crate::upstream::connector::ConnectError;
use crate::upstream::retry::FailureKind;
use crate::upstream::{clock, InFlightGuard, Outcome};

use super::exchange::withdraw_budget;
use super::relay::log_changes;
use super::tunnel::{self, Flow, Side};
use super::worker::Worker;

/// Backends remembered as tried for one session's connect attempts.
const MAX_TRACKED: usize = 8;

/// What one session's log line and counters say.
#[derive(Default)]
struct Session {
    sni: Option<String>,
    upstream: Option<usize>,
    backend: Option<SocketAddr>,
    attempts: u32,
    /// Payload bytes to the client, and from it.
    sent: u64,
    received: u64,
}

/// A connected backend: the connection, and its in-flight slot.
struct Connected {
    conn: crate::upstream::connector::UpstreamConn,
    _in_flight: InFlightGuard,
}

impl Worker {
    /// Serves one connection accepted on the `[[tcp]]` listener `index`
    /// (of this worker's config) until both directions end.
    pub async fn serve_tcp(
        self: Rc<Self>,
        conn: Conn,
        client_addr: SocketAddr,
        listener: SocketAddr,
        index: usize,
    ) {
        let (started, time) = (Instant::now(), SystemTime::now());
        let Some(_slots) = self.admit_connection(client_addr.ip(), listener) else {
            return;
        };
        let stats = self.tcp[index].stats.clone();
        self.metrics.connections_accepted.inc();
        self.metrics.connections_open.inc();
        stats.open.fetch_add(1, Relaxed);
        let mut session = Session::default();
        let end = self
            .tcp_session(&conn, client_addr, index, &mut session)
            .await;
        conn.shutdown(Shutdown::Both);
        drop(conn);
        let duration = started.elapsed();
        stats.ended(end, duration);
        stats.open.fetch_sub(1, Relaxed);
        self.metrics.connections_open.sub(1);
        if end != SessionEnd::Relayed {
            tracing::debug!(client = %client_addr, listener = %stats.name, reason = end.as_str(), "tcp session refused");
        }
        if let Some(log) = &self.log {
            let upstream = session
                .upstream
                .map(|u| self.config.upstreams[u].name.as_str());
            log.borrow_mut().log_tcp(&TcpEntry {
                time,
                client: client_addr,
                listener: &stats.name,
                upstream,
                backend: session.backend,
                status: end.as_str(),
                bytes_sent: session.sent,
                bytes_received: session.received,
                duration,
                attempts: session.attempts,
                sni: session.sni.as_deref(),
            });
        }
    }

    async fn tcp_session(
        &self,
        client: &Conn,
        client_addr: SocketAddr,
        index: usize,
        session: &mut Session,
    ) -> SessionEnd {
        let tcp = &self.config.tcp[index];
        let mut first = Vec::new();
        let upstream = if tcp.sni_routes.is_empty() {
            tcp.upstream
        } else {
            let hello = read_client_hello(client, &mut first, tcp.client_hello_timeout).await;
            match hello {
                Hello::Name(name) => {
                    let chosen = tcp.sni_routes.find(&name).or(tcp.upstream);
                    session.sni = Some(name);
                    chosen
                }
                Hello::NoName => tcp.upstream,
                Hello::Partial | Hello::NotTls(_) => return SessionEnd::BadClientHello,
            }
        };
        let Some(upstream) = upstream else {
            return SessionEnd::NoSniRoute;
        };
        session.upstream = Some(upstream);
        let connected = match self
            .connect_tcp(client, client_addr, upstream, session)
            .await
        {
            Ok(connected) => connected,
            Err(end) => return end,
        };
        if let Some((_, counter)) = self.tcp[index]
            .connections
            .iter()
            .find(|(u, _)| *u == upstream)
        {
            counter.fetch_add(1, Relaxed);
        }
        let stats = &self.tcp[index].stats;
        let flow = Flow::new(Some((&stats.from_clients, &stats.to_clients)));
        let backend = connected.conn.transport.conn();
        let (up, down) = tunnel::relay(
            Side {
                conn: client,
                tls: None,
            },
            Side {
                conn: backend,
                tls: None,
            },
            (first, Vec::new()),
            self.config.server.buffer_size,
            tcp.idle_timeout,
            &flow,
        )
        .await;
        backend.shutdown(Shutdown::Both);
        session.received = up;
        session.sent = down;
        SessionEnd::Relayed
    }

    /// Chooses a backend of `upstream` and connects to it, on another
    /// backend after a failed connect while the upstream's retry policy
    /// and budget allow.
    async fn connect_tcp(
        &self,
        client: &Conn,
        client_addr: SocketAddr,
        upstream: usize,
        session: &mut Session,
    ) -> Result<Connected, SessionEnd> {
        let policy = self.upstreams.get(upstream).retry;
        self.upstreams
            .get_mut(upstream)
            .budget
            .deposit(clock::now_nanos());
        let mut tried = [usize::MAX; MAX_TRACKED];
        loop {
            session.attempts += 1;
            let attempts = session.attempts;
            let now = clock::now_nanos();
            let picked = {
                let mut up = self.upstreams.get_mut(upstream);
                let key = up.picker.connection_key(client_addr.ip());
                up.pick(key, &tried, attempts > 1, now).map(|picked| {
                    let destination = || client.local_addr().unwrap_or(client_addr);
                    let target = up.target(upstream, picked.index, client_addr, destination);
                    (picked, target)
                })
            };
            let Some((picked, target)) = picked else {
                return Err(if attempts == 1 {
                    SessionEnd::NoBackend
                } else {
                    SessionEnd::ConnectFailed
                });
            };
            tried[(attempts as usize - 1) % MAX_TRACKED] = picked.index;
            session.backend = Some(target.addr);
            let started = Instant::now();
            let result = self.connector.connect_new(&target).await;
            let outcome = match result {
                Ok(conn) => {
                    let (changes, in_flight) = picked.admission.finish_holding(
                        Outcome::Response(200),
                        started.elapsed(),
                        clock::now_nanos(),
                    );
                    log_changes(target.addr, changes);
                    return Ok(Connected {
                        conn,
                        _in_flight: in_flight,
                    });
                }
                // Our shortage (fds, ports): not the backend's fault, and
                // another backend would fare no better.
                Err(ConnectError::Local(kind)) => {
                    tracing::warn!(backend = %target.addr, reason = kind.reason(), "tcp connect failed locally");
                    return Err(SessionEnd::ConnectFailed);
                }
                // `[[tcp]]` sessions are not queued, so never `QueueTimeout`.
                Err(ConnectError::Failed | ConnectError::TimedOut | ConnectError::QueueTimeout) => {
                    Outcome::ConnectFailure
                }
            };
            let changes = picked
                .admission
                .finish(outcome, started.elapsed(), clock::now_nanos());
            log_changes(target.addr, changes);
            let retry = policy.should_retry(attempts, FailureKind::Connect, true, false, true)
                && withdraw_budget(&self.upstreams, &self.metrics, upstream);
            if !retry {
                return Err(SessionEnd::ConnectFailed);
            }
            self.metrics.retry(upstream);
            let backoff = policy.backoff(attempts, &mut self.upstreams.rng());
            if !backoff.is_zero() {
                crate::io::sleep(backoff).await;
            }
        }
    }
}

/// Reads until `buf` holds a whole ClientHello (or proves it is not one),
/// within `limit` in all.
async fn read_client_hello(conn: &Conn, buf: &mut Vec<u8>, limit: Duration) -> Hello {
    let deadline = Instant::now() + limit;
    loop {
        let verdict = sni::client_hello(buf);
        if verdict != Hello::Partial {
            return verdict;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || buf.len() >= sni::MAX_CLIENT_HELLO {
            return Hello::Partial;
        }
        let mut chunk = std::mem::take(buf);
        chunk.reserve(4096.min(sni::MAX_CLIENT_HELLO - chunk.len()).max(1));
        let (read, back) = conn.read(chunk, Some(left)).await;
        *buf = back;
        match read {
            Ok(0) | Err(_) => return Hello::Partial,
            Ok(_) => {}
        }
    }
}
