//! Starting the workers, waiting for signals, and stopping.
//!
//! One thread per worker, each running its own io_uring runtime (`io::rt`) with its
//! own `SO_REUSEPORT` listeners, pool and balancer cursors (see
//! `proxy::Worker`). The main thread only waits for the workers to bind and
//! then for a signal. The one thing all workers share is the per-backend
//! block of atomics, created here so every worker gets the same `Arc`s.
//! A config reload (see `reload`) reaches the workers as a message. A
//! binary upgrade (see `takeover`) hands the listening sockets to a new
//! process, and this one stops accepting without shutting them, then
//! drains like a graceful stop.

mod listeners;
mod reload;
pub mod takeover;
mod warm;

pub use listeners::Bound;
pub use reload::{Live, Reloader, States};

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc as tmpsc, watch};

use crate::access_log::{AccessLog, WorkerLog};
use crate::admin::{self, AdminCounters, AdminHooks, AdminServer, Guard, StatusInfo};
use crate::cache::Zones;
use crate::config::{Config, Overload};
use crate::gateway::shared::Shared;
use crate::io::{self, Listener};
use crate::metrics::{self, Layout, Registry, WorkerMetrics};
use crate::proxy::{ProcessShared, Worker};
use crate::upstream::connector::{TlsByUpstream, UpstreamTls};
use crate::upstream::health;
use listeners::ListenerUpdate;
use reload::{lock, Update};
use takeover::{Giver, Handed, Handover, UpgradeSocket};

/// How often each worker closes pooled connections past their idle timeout.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Freed bytes after which a worker's sweep asks the allocator to hand
/// free memory back to the kernel (so RSS falls after a load peak).
const TRIM_AFTER_FREED: usize = 1 << 20;

/// How often each worker checks whether its access log buffer is due.
const LOG_FLUSH_TICK: Duration = Duration::from_millis(100);

/// With `server.upgrade_socket`: how long an accept waits before it looks
/// whether a takeover asked it to stop (it cannot be woken by a shutdown:
/// the socket is shared with the new process).
const ACCEPT_POLL: Duration = Duration::from_millis(200);

/// How long a takeover waits for the workers to stop accepting.
const STOP_ACCEPTING_TIMEOUT: Duration = Duration::from_secs(10);

/// What the workers are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    /// SIGTERM: stop listening (sockets shut), drain, exit.
    Graceful,
    /// A takeover: stop accepting without shutting a socket down (a new
    /// process accepts on them), drain, exit.
    Handover,
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    Thread(std::io::Error),
    HealthCheckers(std::io::Error),
    AccessLog {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    Tls {
        addr: SocketAddr,
        error: crate::tls::TlsError,
    },
    Admin {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// An upstream's TLS client config (its `tls_ca` or name) failed.
    UpstreamTls(String),
    UpgradeSocket(std::io::Error),
    /// An upstream's discovery name does not resolve (and `allow_empty`
    /// is not set).
    Discovery(String),
    WorkerDied,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            StartError::Thread(e) => write!(f, "cannot start a worker thread: {e}"),
            StartError::HealthCheckers(e) => write!(f, "cannot start the health checkers: {e}"),
            StartError::Tls { addr, error } => write!(f, "TLS on {addr}: {error}"),
            StartError::AccessLog { path, error } => {
                write!(f, "cannot open the access log {}: {error}", path.display())
            }
            StartError::Admin { addr, error } => {
                write!(f, "cannot start the admin listener on {addr}: {error}")
            }
            StartError::UpstreamTls(e) => write!(f, "TLS to upstream: {e}"),
            StartError::UpgradeSocket(e) => write!(f, "server.upgrade_socket: {e}"),
            StartError::Discovery(e) => f.write_str(e),
            StartError::WorkerDied => write!(f, "a worker exited during start-up"),
        }
    }
}

impl std::error::Error for StartError {}

/// A started proxy: workers bound and serving.
pub struct Server {
    /// The listeners' bound addresses at start (after a reload, `/status`
    /// has the current ones).
    pub listening: Vec<SocketAddr>,
    /// Every metrics shard. Locked only by a scrape, `/status` and the
    /// totals at exit, never on the request path (workers write to their
    /// own shard's atomics).
    pub metrics: Arc<Mutex<Registry>>,
    /// The running config and backend states, the health checkers, and
    /// the way to reload.
    pub reloader: Arc<Reloader>,
    /// The admin listener, when `[admin]` is set; dropping it stops it.
    pub admin: Option<AdminServer>,
    /// Set once a graceful stop begins: `/healthz` answers 503.
    pub draining: Arc<AtomicBool>,
    /// The access log writer, when `server.access_log` is set.
    pub access_log: Option<Arc<AccessLog>>,
    /// Tells every worker to begin the graceful stop or the handover.
    stop: Arc<watch::Sender<Stop>>,
    /// One message per worker once its accept loops ended (a handover).
    stopped_accepting: Arc<Mutex<mpsc::Receiver<()>>>,
    /// Set once a takeover made this process stop accepting.
    handed_over: Arc<AtomicBool>,
    /// `server.upgrade_socket`, once served.
    upgrade: Option<UpgradeSocket>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// Starts `config.server.workers` workers and returns once every one of
/// them has bound its listeners.
pub fn start(config: Arc<Config>) -> Result<Server, StartError> {
    start_with(config, &mut Handover::default())
}

/// [`start`] on the sockets of a takeover where the config names them:
/// what is used is taken out of `handover`; the caller drops the rest once
/// the old process stopped accepting.
pub fn start_with(config: Arc<Config>, handover: &mut Handover) -> Result<Server, StartError> {
    // Discovered backends first: they are part of the config every worker
    // starts with.
    let (config, discovery_statuses) =
        reload::with_discovery(None, (*config).clone()).map_err(StartError::Discovery)?;
    let config = Arc::new(config);
    let backend_states: Arc<States> = Arc::new(reload::initial_states(&config));
    let zones = Arc::new(Zones::plan(&config.cache_zones, None));
    // Made once per process: a reload keeps every limit's state.
    let shared = Arc::new(Shared::new());
    let mut metrics = Registry::new(Layout::from_config(&config));
    let workers = config.server.workers.get();
    // Every socket and TLS config is made here, before any thread starts.
    let (bound, per_worker) = listeners::plan(&[], &config, workers, &mut handover.listeners)?;
    let upstream_tls = UpstreamTls::plan(&config).map_err(StartError::UpstreamTls)?;
    // The admin socket too, before any worker accepts: in a takeover,
    // nothing may fail once this process took connections.
    let admin_listener = match &config.admin {
        None => None,
        Some(a) => Some(match handover.admin.take() {
            // The old process's (it cannot be bound twice).
            Some((configured, fd)) if configured == a.listen => std::net::TcpListener::from(fd),
            other => {
                handover.admin = other;
                std::net::TcpListener::bind(a.listen).map_err(|error| StartError::Admin {
                    addr: a.listen,
                    error,
                })?
            }
        }),
    };
    let access_log = match &config.server.access_log {
        None => None,
        Some(c) => Some(Arc::new(AccessLog::start(c).map_err(|error| {
            StartError::AccessLog {
                path: c.path.clone(),
                error,
            }
        })?)),
    };
    let cores = if config.server.pin_workers {
        core_affinity::get_core_ids()
    } else {
        None
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stopped_tx, stopped_accepting) = mpsc::channel();
    let (stop, stop_rx) = watch::channel(Stop::Run);
    let mut threads = Vec::with_capacity(workers);
    let mut updaters = Vec::with_capacity(workers);
    for (index, listeners) in per_worker.into_iter().enumerate() {
        let stop = stop_rx.clone();
        let (updater, updates) = tmpsc::unbounded_channel();
        updaters.push(updater);
        let shard = metrics.new_shard();
        let log = access_log.as_ref().map(|l| l.worker());
        let config = config.clone();
        let states = backend_states.clone();
        let zones = zones.clone();
        let shared = shared.clone();
        let tls = upstream_tls.clone();
        let ready = ready_tx.clone();
        let stopped_accepting = stopped_tx.clone();
        let core = cores
            .as_ref()
            .and_then(|c| c.get(index % c.len().max(1)).copied());
        let thread = std::thread::Builder::new()
            .name(format!("ringlb-worker-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(worker = index, "could not pin worker to a core");
                    }
                }
                let parts = WorkerParts {
                    index,
                    config,
                    states,
                    zones,
                    tls,
                    metrics: shard,
                    log,
                    shared,
                    listeners,
                    stop,
                    updates,
                    ready,
                    stopped_accepting,
                };
                io::count_allocations_of_this_thread();
                io::run_worker(worker_main(parts));
                // The runtime stopped: no parked connection can wake now.
                crate::proxy::drop_parked();
            })
            .map_err(StartError::Thread)?;
        threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(()) => {}
            Err(_) => return Err(StartError::WorkerDied),
        }
    }
    let listening: Vec<SocketAddr> = bound.iter().map(|b| b.local).collect();
    let warm_through: Vec<_> = bound.iter().map(|b| (b.local, b.tls.is_some())).collect();
    let health_checkers = health::spawn_checkers(
        config.clone(),
        backend_states.clone(),
        upstream_tls,
        metrics.new_shard(),
    )
    .map_err(StartError::HealthCheckers)?;
    let events = metrics.new_shard();
    let metrics = Arc::new(Mutex::new(metrics));
    let reloader = Arc::new(Reloader {
        live: Arc::new(Mutex::new(Live {
            config: config.clone(),
            states: backend_states,
            zones,
            version: 1,
            loaded_at: SystemTime::now(),
            listeners: bound,
        })),
        registry: metrics.clone(),
        workers: updaters,
        checkers: Mutex::new(health_checkers),
        access_log: access_log.clone(),
        admin: std::sync::OnceLock::new(),
        events,
        one_at_a_time: Mutex::new(()),
        discovery: Mutex::new(reload::DiscoveryState::new(discovery_statuses)),
    });
    reloader.restart_discovery();
    let draining = Arc::new(AtomicBool::new(false));
    let admin = match (&config.admin, admin_listener) {
        (Some(a), Some(listener)) => {
            let hooks = admin_hooks(&reloader, &metrics, &draining, &shared);
            if a.insecure_no_auth && !admin::is_loopback(a.listen.ip()) {
                tracing::warn!(
                    listen = %a.listen,
                    "the admin listener is not on loopback and has no credentials \
                     (insecure_no_auth = true): anyone who reaches it can drain backends and reload"
                );
            }
            let server =
                AdminServer::start_on(listener, hooks, Guard::new(a), admin::Limits::default())
                    .map_err(|error| StartError::Admin {
                        addr: a.listen,
                        error,
                    })?;
            tracing::info!(listen = %server.local_addr(), "admin listener started");
            let _ = reloader.admin.set(server.rebinder());
            Some(server)
        }
        _ => None,
    };
    tracing::info!(
        listen = ?listening,
        workers,
        pinned = config.server.pin_workers,
        "ringlb is serving"
    );
    warm::spawn(config.clone(), warm_through);
    Ok(Server {
        listening,
        metrics,
        reloader,
        admin,
        draining,
        access_log,
        stop: Arc::new(stop),
        stopped_accepting: Arc::new(Mutex::new(stopped_accepting)),
        handed_over: Arc::new(AtomicBool::new(false)),
        upgrade: None,
        workers: threads,
    })
}

/// The running server's side of a takeover.
struct Giving {
    reloader: Arc<Reloader>,
    stop: Arc<watch::Sender<Stop>>,
    stopped_accepting: Arc<Mutex<mpsc::Receiver<()>>>,
    handed_over: Arc<AtomicBool>,
    signals: signal_hook::iterator::Handle,
}

impl Giver for Giving {
    fn handover(&self) -> std::io::Result<Handover> {
        if *self.stop.borrow() != Stop::Run {
            // Its sockets are shut or about to be: nothing to hand over.
            return Err(std::io::Error::other("this process is stopping"));
        }
        let live = lock(&self.reloader.live);
        let listeners = live
            .listeners
            .iter()
            .map(|b| {
                Ok(Handed {
                    configured: b.configured,
                    local: b.local,
                    sockets: b
                        .sockets
                        .iter()
                        .map(std::os::fd::OwnedFd::try_clone)
                        .collect::<std::io::Result<_>>()?,
                })
            })
            .collect::<std::io::Result<_>>()?;
        let admin = match (&live.config.admin, self.reloader.admin.get()) {
            (Some(a), Some(rebind)) => rebind
                .listener()
                .map(|l| (a.listen, std::os::fd::OwnedFd::from(l))),
            _ => None,
        };
        Ok(Handover { listeners, admin })
    }

    fn stop_accepting(&self) {
        if let Some(admin) = self.reloader.admin.get() {
            admin.stop_accepting();
        }
        self.handed_over.store(true, Ordering::SeqCst);
        let _ = self.stop.send(Stop::Handover);
        let stopped = lock(&self.stopped_accepting);
        let deadline = Instant::now() + STOP_ACCEPTING_TIMEOUT;
        for _ in 0..self.reloader.workers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if stopped.recv_timeout(left).is_err() {
                tracing::warn!("takeover: a worker did not stop accepting in time");
                break;
            }
        }
    }

    fn exit(&self) {
        // The main thread leaves `wait_for_signal` and drains.
        self.signals.close();
    }
}

impl Server {
    /// Serves `server.upgrade_socket` (if set) so that a new process can
    /// take the listeners over. `took_over`: this process just did so.
    pub fn serve_upgrades(
        &mut self,
        signals: &StopSignals,
        took_over: bool,
    ) -> Result<(), StartError> {
        let path = lock(&self.reloader.live)
            .config
            .server
            .upgrade_socket
            .clone();
        let Some(path) = path else {
            return Ok(());
        };
        let giver = Giving {
            reloader: self.reloader.clone(),
            stop: self.stop.clone(),
            stopped_accepting: self.stopped_accepting.clone(),
            handed_over: self.handed_over.clone(),
            signals: signals.0.handle(),
        };
        let socket = UpgradeSocket::serve(&path, took_over, Box::new(giver))
            .map_err(StartError::UpgradeSocket)?;
        self.upgrade = Some(socket);
        Ok(())
    }

    /// Whether a takeover stopped this process's accepting.
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }

    /// [`Server::stop_gracefully`], then the totals.
    pub fn stop_gracefully_logged(self, signal: i32) -> bool {
        let metrics = self.metrics.clone();
        let finished = self.stop_gracefully();
        log_totals_of(&metrics, signal);
        finished
    }

    /// The graceful stop (SIGTERM, SIGQUIT): `/healthz` turns 503 at once,
    /// every worker stops accepting, closes idle keep-alive connections
    /// and answers what is in flight with `Connection: close`; this waits
    /// for the workers for up to `server.shutdown_timeout`, then flushes
    /// the access log. Returns whether every worker finished in time.
    pub fn stop_gracefully(mut self) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        if let Err(e) = crate::notify::stopping() {
            tracing::debug!(error = %e, "sd_notify STOPPING failed");
        }
        // The running config's: a reload may have changed it.
        let (shutdown_timeout, drain_delay) = {
            let live = lock(&self.reloader.live);
            (
                live.config.server.shutdown_timeout,
                live.config.server.drain_delay,
            )
        };
        // After a takeover the new process accepts: nothing to wait for.
        if !drain_delay.is_zero() && !self.handed_over() {
            // `/healthz` says 503 already; the listeners still accept until
            // the balancer in front has seen it.
            tracing::info!(delay = ?drain_delay, "draining: /healthz answers 503; still accepting for drain_delay");
            std::thread::sleep(drain_delay);
        }
        tracing::info!(timeout = ?shutdown_timeout, "draining: no new connections");
        // After a handover the workers already stopped accepting (and must
        // not shut the shared sockets down now).
        self.stop.send_if_modified(|stop| {
            let run = *stop == Stop::Run;
            if run {
                *stop = Stop::Graceful;
            }
            run
        });
        // The workers enforce the timeout themselves; the margin covers
        // their last flush.
        let deadline = Instant::now() + shutdown_timeout + Duration::from_secs(2);
        while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let finished = self.workers.iter().all(|w| w.is_finished());
        for worker in std::mem::take(&mut self.workers) {
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
        if let Some(log) = &self.access_log {
            log.sync();
        }
        finished
    }
}

/// What the admin endpoints do: read the shards and the backends' shared
/// state, and flip a backend's drain flag.
fn admin_hooks(
    reloader: &Arc<Reloader>,
    registry: &Arc<Mutex<Registry>>,
    draining: &Arc<AtomicBool>,
    shared: &Arc<Shared>,
) -> AdminHooks {
    let live = reloader.live.clone();
    let current = move || {
        let live = lock(&live);
        (
            live.config.clone(),
            live.states.clone(),
            live.version,
            live.loaded_at,
            live.listeners.iter().map(|l| l.local).collect::<Vec<_>>(),
        )
    };
    let snapshot = {
        let registry = registry.clone();
        move || lock(&registry).snapshot()
    };
    let counters = Arc::new(AdminCounters::default());
    let metrics_text = {
        let (snapshot, current, counters) = (snapshot.clone(), current.clone(), counters.clone());
        let live = reloader.live.clone();
        let shared = shared.clone();
        let reloader = reloader.clone();
        move || {
            let (_, states, ..) = current();
            let heap = metrics::prometheus::Sample {
                name: "ringlb_worker_heap_allocations_total",
                help: "Heap allocations made on worker threads (a warm keep-alive request makes none).",
                kind: metrics::prometheus::Kind::Counter,
                value: io::worker_heap_allocations() as f64,
            };
            let extra: Vec<_> = counters.samples().into_iter().chain([heap]).collect();
            let mut text = metrics::prometheus::render(&snapshot(), &states, &extra);
            shared.render_metrics(&mut text);
            shared.tcp.render(&mut text);
            let zones = lock(&live).zones.clone();
            metrics::prometheus::render_cache(&zones, &mut text);
            let statuses = reloader.discovery_statuses();
            if !statuses.is_empty() {
                text.push_str(&crate::discovery::render_metrics(
                    statuses
                        .iter()
                        .map(|(name, status)| (name.as_str(), status)),
                ));
            }
            text
        }
    };
    let started_at = SystemTime::now();
    let status_json = {
        let (current, draining) = (current.clone(), draining.clone());
        let reloader = reloader.clone();
        move || {
            let (config, states, version, loaded_at, listening) = current();
            let info = StatusInfo {
                config_version: version,
                config_loaded_at: loaded_at,
                workers: config.server.workers.get(),
                draining: draining.load(Ordering::Relaxed),
                listening,
                started_at,
                now: SystemTime::now(),
            };
            let mut status = admin::status_json(&config, info, &snapshot(), &states);
            add_discovery(&mut status, &config, &reloader.discovery_statuses());
            status
        }
    };
    let set_backend_draining = {
        move |upstream: &str, addr: &str, drain: bool| {
            let (config, states, ..) = current();
            let u = config
                .upstreams
                .iter()
                .position(|u| u.name == upstream)
                .ok_or_else(|| format!("no upstream {upstream:?}"))?;
            let b = config.upstreams[u]
                .backends
                .iter()
                .position(|b| b.addr.to_string() == addr)
                .ok_or_else(|| format!("upstream {upstream:?} has no backend {addr}"))?;
            states[u][b].set_draining(drain);
            tracing::info!(
                upstream,
                backend = addr,
                drain,
                "backend drain set by the admin API"
            );
            Ok(())
        }
    };
    AdminHooks {
        metrics_text: Box::new(metrics_text),
        status_json: Box::new(status_json),
        draining: draining.clone(),
        set_backend_draining: Box::new(set_backend_draining),
        reload: Some(Box::new({
            let reloader = reloader.clone();
            move || reloader.reload()
        })),
        purge_cache: Some(Box::new({
            let live = reloader.live.clone();
            move |zone: &str, purge: &crate::cache::Purge| {
                let zones = lock(&live).zones.clone();
                let zone = zones
                    .by_name(zone)
                    .ok_or_else(|| format!("no cache zone {zone:?}"))?;
                let removed = zone.purge(purge);
                tracing::info!(zone = %zone.name, ?purge, removed, "cache purged by the admin API");
                Ok(removed)
            }
        })),
        counters,
    }
}

/// Adds `discovery` (source, last refresh, failures, the discovered set)
/// to each upstream of a `/status` answer whose upstream has discovery.
fn add_discovery(
    status: &mut serde_json::Value,
    config: &Config,
    statuses: &std::collections::BTreeMap<String, crate::discovery::DiscoveryStatus>,
) {
    let Some(upstreams) = status
        .get_mut("upstreams")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for (u, entry) in upstreams.iter_mut().enumerate() {
        let Some(name) = config.upstreams.get(u).map(|up| up.name.as_str()) else {
            continue;
        };
        let Some(s) = statuses.get(name) else {
            continue;
        };
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let found: Vec<serde_json::Value> = config
            .discovered(u)
            .iter()
            .map(|b| serde_json::json!({ "addr": b.addr.to_string(), "weight": b.weight.get() }))
            .collect();
        if let Some(object) = entry.as_object_mut() {
            object.insert(
                "discovery".into(),
                serde_json::json!({
                    "source": s.source,
                    "last_refresh_unix": s.refreshed_at.map(unix),
                    "failures": s.failures,
                    "last_error": s.last_error,
                    "backends": found,
                }),
            );
        }
    }
}

/// The stop signals, caught from before the first listener opens: a
/// signal that arrives while the workers start must not kill the process
/// by its default action.
pub struct StopSignals(signal_hook::iterator::Signals);

impl StopSignals {
    pub fn install() -> std::io::Result<StopSignals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        Ok(StopSignals(signal_hook::iterator::Signals::new([
            SIGINT, SIGTERM, SIGQUIT, SIGHUP,
        ])?))
    }
}

/// Blocks until SIGINT, SIGTERM or SIGQUIT and returns it, or until a
/// takeover made this process stop accepting (then SIGTERM: a graceful
/// stop; see [`Server::handed_over`]). SIGHUP on the way reopens the
/// access log (after a rename-style rotation) and reloads the config.
pub fn wait_for_signal(server: &Server, mut signals: StopSignals) -> i32 {
    for signal in signals.0.forever() {
        if signal != signal_hook::consts::SIGHUP {
            return signal;
        }
        if let Some(log) = &server.access_log {
            log.reopen();
        }
        // A refused reload is logged by `reload` and changes nothing.
        let _ = server.reloader.reload();
    }
    signal_hook::consts::SIGTERM
}

/// Logs the totals at exit.
pub fn log_totals(server: &Server, signal: i32) {
    log_totals_of(&server.metrics, signal);
}

fn log_totals_of(metrics: &Mutex<Registry>, signal: i32) {
    let totals = lock(metrics).totals();
    tracing::info!(
        signal,
        requests = totals.requests,
        connections = totals.connections_accepted,
        retries = totals.retries,
        "stopping"
    );
    tracing::info!(
        hits = totals.pool_hits,
        misses = totals.pool_misses,
        stale = totals.pool_stale,
        ratio = format_args!("{:.3}", totals.pool_reuse_ratio()),
        "pool reuse"
    );
}

/// What a worker thread starts with.
struct WorkerParts {
    index: usize,
    config: Arc<Config>,
    states: Arc<States>,
    zones: Arc<Zones>,
    /// Every upstream's TLS, built once for this config.
    tls: TlsByUpstream,
    metrics: Arc<WorkerMetrics>,
    log: Option<WorkerLog>,
    /// The process-wide tables of the edge limits.
    shared: Arc<Shared>,
    /// This worker's sockets, one per `config.server.listen` entry.
    listeners: Vec<ListenerUpdate>,
    stop: watch::Receiver<Stop>,
    /// New config snapshots from a reload.
    updates: tmpsc::UnboundedReceiver<Update>,
    /// Told once the worker accepts.
    ready: mpsc::Sender<()>,
    /// Told once the accept loops ended in a handover.
    stopped_accepting: mpsc::Sender<()>,
}

/// What every accept loop of a worker shares.
#[derive(Clone)]
struct Accepting {
    /// The worker of the newest config: new connections start on it.
    current: Rc<RefCell<Rc<Worker>>>,
    stopping: Rc<Cell<bool>>,
    limit: Arc<tokio::sync::Semaphore>,
    /// Rejections (`overload = "reject"`) being answered at once; beyond
    /// [`MAX_CONCURRENT_REJECTIONS`] a connection over the limit is closed
    /// without an answer.
    rejecting: Arc<tokio::sync::Semaphore>,
    /// With an upgrade socket: accepts give up after this and look at
    /// `stopping` (a handover cannot wake them with a shutdown).
    poll: Option<Duration>,
}

/// One listener of a worker and its accept loop.
struct Endpoint {
    configured: SocketAddr,
    /// One socket, or several after a takeover from a process with more
    /// workers; one accept loop each.
    listeners: Vec<Listener>,
    /// Read at each accept: a reload swaps it, and each connection keeps
    /// the one it was accepted with.
    tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    /// `proxy_protocol` accept settings, read at each accept like `tls`.
    proxy_protocol: RefCell<Option<Arc<crate::config::ProxyProtocolAccept>>>,
    /// Set when a reload removes this listener; its connections see it
    /// and drain.
    removed: Rc<Cell<bool>>,
}

/// A worker's listeners, in config order, with their accept loops.
type Endpoints = Rc<RefCell<Vec<(Rc<Endpoint>, Vec<io::JoinHandle<()>>)>>>;

/// Makes a worker's listener set match `updates`: keeps, adds, removes.
fn apply_listeners(
    endpoints: &Endpoints,
    updates: Vec<ListenerUpdate>,
    accepting: &Accepting,
    alive: &dyn Fn() -> Vec<Rc<Worker>>,
) {
    let mut old = std::mem::take(&mut *endpoints.borrow_mut());
    let mut next = Vec::with_capacity(updates.len());
    for update in updates {
        let kept = if update.sockets.is_empty() {
            old.iter()
                .position(|(e, _)| e.configured == update.configured)
                .map(|i| old.swap_remove(i))
        } else {
            None
        };
        match kept {
            Some((endpoint, tasks)) => {
                *endpoint.tls.borrow_mut() = update.tls;
                *endpoint.proxy_protocol.borrow_mut() = update.proxy_protocol;
                for listener in &endpoint.listeners {
                    if let Err(e) = listener.set_backlog(update.backlog) {
                        tracing::warn!(listener = %endpoint.configured, error = %e, "cannot change the backlog");
                    }
                }
                next.push((endpoint, tasks));
            }
            None if update.sockets.is_empty() => {
                tracing::error!(listener = %update.configured, "a kept listener is missing on this worker");
            }
            None => {
                let endpoint = Rc::new(Endpoint {
                    configured: update.configured,
                    listeners: update.sockets.into_iter().map(Listener::adopt).collect(),
                    tls: RefCell::new(update.tls),
                    proxy_protocol: RefCell::new(update.proxy_protocol),
                    removed: Rc::new(Cell::new(false)),
                });
                let tasks = (0..endpoint.listeners.len())
                    .map(|i| io::spawn(accept_loop(endpoint.clone(), i, accepting.clone())))
                    .collect();
                next.push((endpoint, tasks));
            }
        }
    }
    // What is left was removed: stop accepting now (the accept loop ends
    // and the socket closes), and let its connections drain.
    for (endpoint, _tasks) in old {
        endpoint.removed.set(true);
        for listener in &endpoint.listeners {
            listener.stop_listening();
        }
        for worker in alive() {
            worker.close_idle_from(&endpoint.removed);
        }
        tracing::info!(listener = %endpoint.configured, "listener removed; its connections drain");
    }
    *endpoints.borrow_mut() = next;
}

async fn worker_main(parts: WorkerParts) {
    let WorkerParts {
        index,
        config,
        states,
        zones,
        tls,
        metrics,
        log,
        shared,
        listeners,
        mut stop,
        mut updates,
        ready,
        stopped_accepting,
    } = parts;

    // The current worker serves new connections; after a reload the older
    // ones drain and live on only as long as their connections.
    let first = Rc::new(Worker::new(
        config.clone(),
        &states,
        tls,
        index,
        metrics,
        log,
        ProcessShared {
            zones,
            shared: shared.clone(),
        },
    ));
    let generations: Rc<RefCell<Vec<Weak<Worker>>>> =
        Rc::new(RefCell::new(vec![Rc::downgrade(&first)]));
    let accepting = Accepting {
        current: Rc::new(RefCell::new(first)),
        stopping: Rc::new(Cell::new(false)),
        limit: Arc::new(tokio::sync::Semaphore::new(
            config.server.max_connections.get(),
        )),
        rejecting: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REJECTIONS)),
        poll: config
            .server
            .upgrade_socket
            .is_some()
            .then_some(ACCEPT_POLL),
    };
    let alive = {
        let generations = generations.clone();
        move || -> Vec<Rc<Worker>> {
            let mut all = generations.borrow_mut();
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        }
    };
    let endpoints: Endpoints = Rc::new(RefCell::new(Vec::new()));
    apply_listeners(&endpoints, listeners, &accepting, &alive);
    let _ = ready.send(());
    drop(ready);
    {
        let alive = alive.clone();
        io::spawn(async move {
            loop {
                crate::io::sleep(POOL_SWEEP_INTERVAL).await;
                let freed: usize = alive().iter().map(|w| w.evict_idle()).sum::<usize>()
                    + io::sweep_spare_slots(false)
                    + crate::gateway::compress::sweep_spare_encoders()
                    + crate::proxy::sweep_parked();
                if freed >= TRIM_AFTER_FREED {
                    io::trim_heap();
                }
            }
        });
    }
    if config.server.access_log.is_some() {
        let alive = alive.clone();
        io::spawn(async move {
            loop {
                crate::io::sleep(LOG_FLUSH_TICK).await;
                for worker in alive() {
                    worker.flush_log_if_due();
                }
            }
        });
    }
    {
        let (accepting, generations, endpoints, alive) = (
            accepting.clone(),
            generations.clone(),
            endpoints.clone(),
            alive.clone(),
        );
        io::spawn(async move {
            while let Some(update) = updates.recv().await {
                if accepting.stopping.get() {
                    continue;
                }
                let worker = Rc::new(Worker::new(
                    update.config,
                    &update.states,
                    update.tls,
                    index,
                    update.metrics,
                    update.log,
                    ProcessShared {
                        zones: update.zones,
                        shared: shared.clone(),
                    },
                ));
                generations.borrow_mut().push(Rc::downgrade(&worker));
                let old = accepting.current.replace(worker);
                // Its connections move to the new config between requests.
                old.hand_over_to(accepting.current.borrow().clone());
                apply_listeners(&endpoints, update.listeners, &accepting, &alive);
            }
        });
    }

    // The graceful stop: wake the accept loops and the idle connections.
    // In a handover the sockets are not shut (the new process accepts on
    // them): the accept loops see `stopping` at their next poll.
    let handover = match stop.wait_for(|stop| *stop != Stop::Run).await {
        Ok(stop) => *stop == Stop::Handover,
        Err(_) => false,
    };
    let started = Instant::now();
    accepting.stopping.set(true);
    for worker in alive() {
        worker.begin_drain();
    }
    let loops = std::mem::take(&mut *endpoints.borrow_mut());
    if !handover {
        for (endpoint, _) in &loops {
            for listener in &endpoint.listeners {
                listener.stop_listening();
            }
        }
    }
    for (_, tasks) in loops {
        for task in tasks {
            let _ = task.await;
        }
    }
    if handover {
        let _ = stopped_accepting.send(());
    }
    // Every connection holds a permit until it ends.
    let all = u32::try_from(config.server.max_connections.get()).unwrap_or(u32::MAX);
    // The running config's: a reload may have changed it.
    let shutdown_timeout = accepting.current.borrow().config().server.shutdown_timeout;
    let left = shutdown_timeout.saturating_sub(started.elapsed());
    tokio::select! {
        _ = accepting.limit.acquire_many(all) => {}
        () = crate::io::sleep(left) => {
            let open: u64 = alive().iter().map(|w| w.metrics.connections_open.get()).sum();
            tracing::warn!(worker = index, open, "shutdown_timeout reached; closing what is left");
        }
    }
    for worker in alive() {
        worker.flush_log();
    }
}

/// The worker's one accept loop per listener. It is never dropped, so no
/// accept op is ever abandoned in the kernel; it ends when the listener
/// stops listening (graceful stop, or a reload removed it). At
/// `max_connections` it waits for a connection to end before accepting
/// again (the kernel backlog holds the rest).
/// "accept failed" lines per second and listener (the metric counts all).
const ACCEPT_WARNINGS_PER_SECOND: u32 = 3;

async fn accept_loop(endpoint: Rc<Endpoint>, index: usize, accepting: Accepting) {
    let ended = || accepting.stopping.get() || endpoint.removed.get();
    let listener = &endpoint.listeners[index];
    let mut accept_warnings = LogBudget::new(ACCEPT_WARNINGS_PER_SECOND);
    loop {
        let reject = accepting.current.borrow().config().server.overload == Overload::Reject;
        // With `reject`, a connection over the limit is still accepted, to
        // be answered 503 at once rather than wait in the kernel's queue.
        let permit = match accepting.limit.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) if reject => None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                match accepting.limit.clone().acquire_owned().await {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                }
            }
        };
        if ended() {
            return;
        }
        match listener.accept_within(accepting.poll).await {
            Ok(conn) => {
                let worker = accepting.current.borrow().clone();
                // A `[[tcp]]` listener, as the newest config says.
                let tcp = worker
                    .config()
                    .tcp
                    .iter()
                    .position(|t| t.listen.addr == endpoint.configured);
                let Some(permit) = permit else {
                    let answer = endpoint.tls.borrow().is_none() && tcp.is_none();
                    reject_over_limit(conn, answer, &accepting);
                    continue;
                };
                let tls = endpoint.tls.borrow().clone();
                let removed = endpoint.removed.clone();
                let configured = endpoint.configured;
                let proxy_protocol = endpoint.proxy_protocol.borrow().clone();
                io::spawn(async move {
                    // The PROXY header comes first, before a TLS handshake.
                    // The PROXY header read and the `[[tcp]]` session are
                    // boxed: an HTTP connection's task (alive as long as
                    // the connection, idle or not) should not carry their
                    // space (4.4 KB with them inline, 2.4 KB without).
                    let client_addr = match proxy_protocol {
                        None => Some(conn.peer_addr()),
                        Some(accept) => Box::pin(worker.accept_proxy_header(&conn, &accept)).await,
                    };
                    match (client_addr, tcp) {
                        (None, _) => {}
                        (Some(client_addr), Some(index)) => {
                            Box::pin(worker.serve_tcp(conn, client_addr, configured, index)).await;
                        }
                        (Some(client_addr), None) => {
                            // The connection holds the permit until it
                            // ends, parked or not.
                            worker
                                .serve(conn, client_addr, tls, configured, removed, permit)
                                .await;
                            return;
                        }
                    }
                    drop(permit);
                });
            }
            // `stop_listening` fails the pending accept.
            Err(_) if ended() => return,
            // The poll of a listener that may be handed over.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => {
                accepting.current.borrow().metrics.accept_errors.inc();
                // Out of descriptors, the loop fails every 50 ms per
                // listener: a few lines a second say so, the metric counts.
                let now = std::time::Instant::now();
                if let Some(suppressed) = accept_warnings.admit(now) {
                    tracing::warn!(
                        listener = %listener.local_addr(),
                        error = %e,
                        suppressed,
                        "accept failed"
                    );
                }
                // Out of descriptors or memory: back off instead of spinning.
                crate::io::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Rejections answered at once per worker; more are closed unanswered.
const MAX_CONCURRENT_REJECTIONS: usize = 64;

/// The answer to a connection over `max_connections` with `overload =
/// "reject"`.
const OVERLOADED_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain\r\nContent-Length: 51\r\nConnection: close\r\n\r\n\
    503 Service Unavailable: proxy at max_connections\r\n";

/// Answers a connection over the limit: 503 and close for plain HTTP
/// (`answer`), a close for TLS (no handshake is spent on it) and for a
/// `[[tcp]]` listener (its protocol is not ours to answer in). Bounded: at
/// most [`MAX_CONCURRENT_REJECTIONS`] at once, each within about 2 s.
fn reject_over_limit(conn: io::Conn, answer: bool, accepting: &Accepting) {
    accepting.current.borrow().metrics.overload_rejections.inc();
    let Ok(budget) = accepting.rejecting.clone().try_acquire_owned() else {
        return;
    };
    if !answer {
        return;
    }
    io::spawn(async move {
        let deadline = Some(Duration::from_secs(1));
        let (written, _) = conn
            .write_all(OVERLOADED_503.to_vec(), 0..OVERLOADED_503.len(), deadline)
            .await;
        if written.is_ok() {
            // Read what the client sent before closing, so that the close
            // is not a reset that destroys the answer in flight.
            conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.read(Vec::with_capacity(4096), deadline).await;
        }
        drop(budget);
    });
}

/// A log line budget: at most `per_second` lines admitted in each second,
/// the rest counted and reported with the next admitted line.
#[derive(Debug)]
pub(crate) struct LogBudget {
    per_second: u32,
    window_start: Option<std::time::Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogBudget {
    pub(crate) const fn new(per_second: u32) -> LogBudget {
        LogBudget {
            per_second,
            window_start: None,
            lines: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last admitted one)` if a line may
    /// be logged at `now`.
    pub(crate) fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        let new_window = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if new_window {
            self.window_start = Some(now);
            self.lines = 0;
        }
        if self.lines < self.per_second {
            self.lines += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod log_budget_tests {
    use super::LogBudget;
    use std::time::{Duration, Instant};

    #[test]
    fn admits_a_few_per_second_and_reports_the_rest() {
        let start = Instant::now();
        let mut budget = LogBudget::new(3);
        let admitted: Vec<_> = (0..10).map(|_| budget.admit(start)).collect();
        assert_eq!(&admitted[..3], &[Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none));
        let later = start + Duration::from_millis(1000);
        assert_eq!(budget.admit(later), Some(7));
        assert_eq!(budget.admit(later), Some(0));
    }
}
