//! Active health checks: the rise/fall state machine (sans-IO) and the one
//! checker thread of the process.
//!
//! Why one thread and not a checker per worker: N workers checking every
//! backend would multiply the probe load by N and could disagree. One
//! thread, `ringlb-health`, runs one io runtime (`io::run_worker`) with one task per
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
//! against a timer. Only the wait between checks is an `io::sleep`,
//! raced against the stop signal, which cancels no IO.

use crate::proxy_protocol::{self, Version};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::connector::{connect_to, TlsByUpstream, UpstreamTls};
use super::{clock, BackendState, Health};
use crate::config::{CheckKind, Config, HealthConfig, StartState};
use crate::http::{self, Status};
use crate::io::Transport;
use crate::metrics::WorkerMetrics;

/// Buffer for a check's TLS records and response head.
const CHECK_BUFFER: usize = 16 * 1024;

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
/// (the thread's own shard). `tls` is every upstream's TLS, built when the
/// config was planned. `Ok(None)` when no upstream has checks.
pub fn spawn_checkers(
    config: Arc<Config>,
    states: Arc<Vec<Vec<Arc<BackendState>>>>,
    tls: TlsByUpstream,
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
                        let tls = tls.get(u).cloned().flatten();
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

async fn check_loop(
    upstream: String,
    (u, b, metrics): (usize, usize, Arc<WorkerMetrics>),
    tls: Option<UpstreamTls>,
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
            () = crate::io::sleep(config.interval) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// One check against `addr`, bounded by `config.timeout` in all; over
/// TLS (handshake included) for a `tls = true` upstream's HTTP check,
/// connected the way the proxy connects ([`connect_to`]).
async fn check_once(
    addr: SocketAddr,
    config: &HealthConfig,
    tls: Option<&UpstreamTls>,
) -> CheckResult {
    let deadline = Instant::now() + config.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let tls = match config.kind {
        CheckKind::Tcp => None,
        CheckKind::Http => tls,
    };
    // A backend that expects a PROXY header gets one on checks too: v2
    // LOCAL (the proxy's own connection), or v1 UNKNOWN.
    let mut preamble = Vec::new();
    match config.send_proxy_protocol {
        None => {}
        Some(Version::V1) => preamble.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        Some(Version::V2) => proxy_protocol::encode_v2(None, &mut preamble),
    }
    let connected = connect_to(addr, tls, config.timeout, CHECK_BUFFER, &preamble).await;
    let mut transport = match connected {
        Ok(transport) => transport,
        // A failed handshake (the TCP connect never fails this way).
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return CheckResult::Malformed,
        Err(e) => return CheckResult::from_io(&e),
    };
    let result = match config.kind {
        CheckKind::Tcp => CheckResult::Passed(None),
        CheckKind::Http => http_check(&mut transport, addr, config, left).await,
    };
    transport.shutdown(std::net::Shutdown::Both);
    result
}

async fn http_check(
    transport: &mut Transport,
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
    if let (Err(e), _) = transport.write_all(request, 0..len, Some(left())).await {
        return CheckResult::from_io(&e);
    }
    let limits = http::Limits::default();
    let mut buf = Vec::with_capacity(1024);
    loop {
        let remaining = left();
        if remaining.is_zero() {
            return CheckResult::Timeout;
        }
        match transport.read(&mut buf, Some(remaining)).await {
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
