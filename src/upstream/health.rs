//! Active health checks: the rise/fall state machine (sans-IO) and the one
//! checker thread of the process.
//!
//! Why one thread and not a checker per worker: N workers checking every
//! backend would multiply the probe load by N and could disagree. One
//! thread, `ringlb-health`, runs one tokio-uring runtime with one task per
//! checked backend and writes the shared [`BackendState`]; every worker
//! reads it.
//!
//! The tracker: a backend flips to unhealthy after `fall` consecutive
//! failed checks and back after `rise` consecutive passes; a single odd
//! result never flips it. It starts in the configured `start` state.
//! Passive ejection (live traffic, see `upstream/mod.rs`) marks a backend
//! ejected; the checker then treats it as unhealthy and `rise` passing
//! checks restore it.
//!
//! IO rules (see `io/`): every connect, write and read has a kernel
//! deadline, the remainder of the check's `timeout`; nothing is raced
//! against a timer. Only the wait between checks is a `tokio::time::sleep`,
//! raced against the stop signal, which cancels no IO.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{clock, BackendState, Health};
use crate::config::{CheckKind, Config, HealthConfig, StartState};
use crate::http::{self, Status};
use crate::metrics::WorkerMetrics;
use crate::proxy::client_tls::ClientTls;

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// HTTP: a status in `expect_status`; TCP (`None`): connected.
    Passed(Option<u16>),
    /// A status outside `expect_status`.
    BadStatus(u16),
    /// Connect, send or response head took longer than `timeout`.
    Timeout,
    /// The connect was refused.
    Refused,
    /// Reset, or closed before a complete response head.
    Reset,
    /// Not a parseable HTTP/1.x response head.
    Malformed,
    /// Any other socket error.
    Error(io::ErrorKind),
}

impl CheckResult {
    pub fn passed(self) -> bool {
        matches!(self, CheckResult::Passed(_))
    }

    fn from_io(e: &io::Error) -> CheckResult {
        match e.kind() {
            io::ErrorKind::TimedOut => CheckResult::Timeout,
            io::ErrorKind::ConnectionRefused => CheckResult::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => CheckResult::Reset,
            kind => CheckResult::Error(kind),
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Passed(Some(s)) => write!(f, "status {s}"),
            CheckResult::Passed(None) => f.write_str("connected"),
            CheckResult::BadStatus(s) => write!(f, "unexpected status {s}"),
            CheckResult::Timeout => f.write_str("timeout"),
            CheckResult::Refused => f.write_str("connection refused"),
            CheckResult::Reset => f.write_str("connection reset or closed early"),
            CheckResult::Malformed => f.write_str("malformed response"),
            CheckResult::Error(kind) => write!(f, "error: {kind}"),
        }
    }
}

/// A change of health decided by the tracker, with the check that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub healthy: bool,
    pub reason: CheckResult,
}

/// The rise/fall state machine of one backend.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
    since: u64,
}

impl HealthTracker {
    pub fn new(rise: u32, fall: u32, start_healthy: bool) -> HealthTracker {
        HealthTracker {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: start_healthy,
            streak: 0,
            since: 0,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// When the last transition happened (ns since the epoch).
    pub fn since(&self) -> u64 {
        self.since
    }

    /// Feeds one check result; returns a transition when this result
    /// completes `rise` passes (while unhealthy) or `fall` failures (while
    /// healthy) in a row.
    pub fn observe(&mut self, result: CheckResult, now: u64) -> Option<Transition> {
        if result.passed() == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.healthy = !self.healthy;
        self.streak = 0;
        self.since = now;
        Some(Transition {
            healthy: self.healthy,
            reason: result,
        })
    }

    /// Becomes unhealthy without a transition (the backend was ejected by
    /// live traffic): `rise` passes are needed to come back.
    pub fn force_unhealthy(&mut self, now: u64) {
        if self.healthy {
            self.healthy = false;
            self.streak = 0;
            self.since = now;
        }
    }
}

/// The running checker thread. Dropping it (or [`Checkers::stop`]) stops
/// every check at its next wait; keep it for as long as checks should run.
#[derive(Debug)]
pub struct Checkers {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkers {
    /// Stops the checks and waits for the thread (at most one check
    /// `timeout` per backend, all in parallel).
    pub fn stop(self) -> std::thread::Result<()> {
        let _ = self.stop.send(true);
        self.thread.join()
    }
}

/// Starts the `ringlb-health` thread with one check loop per backend of
/// every upstream that has a `[health]` table. `states[u][b]` is backend
/// `b` of upstream `u`. Every check's result is counted in `metrics`
/// (the thread's own shard). `Ok(None)` when no upstream has checks.
pub fn spawn_checkers(
    config: Arc<Config>,
    states: Arc<Vec<Vec<Arc<BackendState>>>>,
    metrics: Arc<WorkerMetrics>,
) -> io::Result<Option<Checkers>> {
    if config.upstreams.iter().all(|u| u.health.is_none()) {
        return Ok(None);
    }
    let (stop, stop_rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("ringlb-health".to_owned())
        .spawn(move || {
            crate::io::run_worker(async move {
                let mut tasks = Vec::new();
                for (u, up) in config.upstreams.iter().enumerate() {
                    let Some(health) = &up.health else { continue };
                    for (b, backend) in up.backends.iter().enumerate() {
                        let Some(state) = states.get(u).and_then(|s| s.get(b)).cloned() else {
                            continue;
                        };
                        let tls = up.tls.as_ref().map(|t| CheckTls {
                            config: crate::tls::load_client_config(&t.ca).ok(),
                            name: t
                                .server_name
                                .as_deref()
                                .and_then(|n| crate::tls::server_name(n).ok())
                                .unwrap_or_else(|| backend.addr.ip().into()),
                        });
                        tasks.push(crate::io::spawn(check_loop(
                            up.name.clone(),
                            (u, b, metrics.clone()),
                            tls,
                            backend.addr,
                            health.clone(),
                            state,
                            stop_rx.clone(),
                        )));
                    }
                }
                for task in tasks {
                    let _ = task.await;
                }
            });
        })?;
    Ok(Some(Checkers { stop, thread }))
}

/// TLS for the checks of a `tls = true` upstream.
#[derive(Clone)]
struct CheckTls {
    /// `None`: the CA file could not be loaded; every check fails.
    config: Option<Arc<rustls::ClientConfig>>,
    name: rustls::pki_types::ServerName<'static>,
}

async fn check_loop(
    upstream: String,
    (u, b, metrics): (usize, usize, Arc<WorkerMetrics>),
    tls: Option<CheckTls>,
    addr: SocketAddr,
    config: HealthConfig,
    state: Arc<BackendState>,
    mut stop: watch::Receiver<bool>,
) {
    let start_healthy = config.start == StartState::Healthy && state.health() == Health::Healthy;
    let mut tracker = HealthTracker::new(config.rise.get(), config.fall.get(), start_healthy);
    loop {
        if *stop.borrow() {
            return;
        }
        if state.health() == Health::Ejected {
            tracker.force_unhealthy(clock::now_nanos());
        }
        let result = check_once(addr, &config, tls.as_ref()).await;
        metrics.health_check(u, b, result.passed());
        let now = clock::now_nanos();
        if let Some(t) = tracker.observe(result, now) {
            state.set_health(t.healthy, now);
            if t.healthy {
                tracing::info!(upstream = %upstream, backend = %addr, reason = %t.reason, "backend healthy");
            } else {
                tracing::warn!(upstream = %upstream, backend = %addr, reason = %t.reason, "backend unhealthy");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// One check against `addr`, bounded by `config.timeout` in all; over
/// TLS (handshake included) for a `tls = true` upstream's HTTP check.
async fn check_once(
    addr: SocketAddr,
    config: &HealthConfig,
    tls: Option<&CheckTls>,
) -> CheckResult {
    let deadline = Instant::now() + config.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let conn = match crate::io::connect(addr, config.timeout).await {
        Ok(conn) => conn,
        Err(e) => return CheckResult::from_io(&e),
    };
    let result = match (config.kind, tls) {
        (CheckKind::Tcp, _) => CheckResult::Passed(None),
        (CheckKind::Http, None) => http_check(&conn, None, addr, config, left).await,
        (CheckKind::Http, Some(CheckTls { config: None, .. })) => CheckResult::Malformed,
        (
            CheckKind::Http,
            Some(CheckTls {
                config: Some(c),
                name,
            }),
        ) => {
            let size = 16 * 1024;
            match ClientTls::connect(&conn, c.clone(), name.clone(), size, left()).await {
                Ok(mut session) => http_check(&conn, Some(&mut session), addr, config, left).await,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => CheckResult::Malformed,
                Err(e) => CheckResult::from_io(&e),
            }
        }
    };
    conn.shutdown(std::net::Shutdown::Both);
    result
}

async fn http_check(
    conn: &crate::io::Conn,
    mut tls: Option<&mut ClientTls>,
    addr: SocketAddr,
    config: &HealthConfig,
    left: impl Fn() -> Duration,
) -> CheckResult {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: ringlb-health\r\n\r\n",
        config.path
    )
    .into_bytes();
    let len = request.len();
    let res = match tls.as_deref_mut() {
        Some(tls) => tls.write(conn, &request, Some(left())).await,
        None => conn.write_all(request, 0..len, Some(left())).await.0,
    };
    if let Err(e) = res {
        return CheckResult::from_io(&e);
    }
    let limits = http::Limits::default();
    let mut buf = Vec::with_capacity(1024);
    loop {
        let remaining = left();
        if remaining.is_zero() {
            return CheckResult::Timeout;
        }
        let res = match tls.as_deref_mut() {
            Some(tls) => tls.read(conn, &mut buf, Some(remaining)).await,
            None => {
                let (res, b) = conn.read(buf, Some(remaining)).await;
                buf = b;
                res
            }
        };
        match res {
            Ok(0) => return CheckResult::Reset,
            Ok(_) => {}
            Err(e) => return CheckResult::from_io(&e),
        }
        match http::parse_response(&buf, &limits, false) {
            Ok(Status::Complete(head)) if config.expect_status.contains(head.status()) => {
                return CheckResult::Passed(Some(head.status()))
            }
            Ok(Status::Complete(head)) => return CheckResult::BadStatus(head.status()),
            Ok(Status::Partial) => {}
            Err(_) => return CheckResult::Malformed,
        }
    }
}

#[cfg(test)]
mod tests;
