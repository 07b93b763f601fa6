//! Starting the workers, waiting for signals, and stopping.
//!
//! One thread per worker, each running its own tokio-uring runtime with its
//! own `SO_REUSEPORT` listeners, pool and balancer cursors (see
//! `proxy::Worker`). The main thread only waits for the workers to bind and
//! then for a signal. The one thing all workers share is the per-backend
//! block of atomics, created here so every worker gets the same `Arc`s.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::access_log::{AccessLog, WorkerLog};
use crate::admin::{self, AdminHooks, AdminServer, StatusInfo};
use crate::config::Config;
use crate::io::{self, Listener};
use crate::metrics::{self, Layout, Registry, WorkerMetrics};
use crate::proxy::Worker;
use crate::upstream::health::{self, Checkers};
use crate::upstream::{BackendPolicy, BackendState};

/// How often each worker closes pooled connections past their idle timeout.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often each worker checks whether its access log buffer is due.
const LOG_FLUSH_TICK: Duration = Duration::from_millis(100);

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
            StartError::WorkerDied => write!(f, "a worker exited during start-up"),
        }
    }
}

impl std::error::Error for StartError {}

/// A started proxy: workers bound and serving.
pub struct Server {
    pub listening: Vec<SocketAddr>,
    /// Every metrics shard. Locked only by a scrape, `/status` and the
    /// totals at exit, never on the request path (workers write to their
    /// own shard's atomics).
    pub metrics: Arc<Mutex<Registry>>,
    pub backend_states: Arc<Vec<Vec<Arc<BackendState>>>>,
    /// The active health checkers (one thread for the process); dropping
    /// this stops them.
    pub health_checkers: Option<Checkers>,
    /// The admin listener, when `[admin]` is set; dropping it stops it.
    pub admin: Option<AdminServer>,
    /// Set once a graceful stop begins: `/healthz` answers 503.
    pub draining: Arc<AtomicBool>,
    /// The access log writer, when `server.access_log` is set.
    pub access_log: Option<AccessLog>,
    /// Tells every worker to begin the graceful stop.
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    shutdown_timeout: Duration,
}

/// Starts `config.server.workers` workers and returns once every one of
/// them has bound its listeners.
pub fn start(config: Arc<Config>) -> Result<Server, StartError> {
    let backend_states: Arc<Vec<Vec<Arc<BackendState>>>> = Arc::new(
        config
            .upstreams
            .iter()
            .map(|u| {
                let policy = BackendPolicy::from_upstream(u);
                u.backends
                    .iter()
                    .map(|b| {
                        let state = BackendState::new(policy);
                        // `down = true`: administratively out, like a drain.
                        state.set_draining(b.down);
                        Arc::new(state)
                    })
                    .collect()
            })
            .collect(),
    );
    let mut metrics = Registry::new(Layout::from_config(&config));
    // One rustls config per TLS listener, shared by every worker (it is
    // immutable; its session cache and ticketer are internally shared).
    let tls: Vec<Option<Arc<rustls::ServerConfig>>> = config
        .server
        .listen
        .iter()
        .map(|l| {
            l.tls
                .as_ref()
                .map(|t| {
                    crate::tls::load_server_config(t).map_err(|error| StartError::Tls {
                        addr: l.addr,
                        error,
                    })
                })
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let tls = Arc::new(tls);
    let access_log = match &config.server.access_log {
        None => None,
        Some(c) => Some(AccessLog::start(c).map_err(|error| StartError::AccessLog {
            path: c.path.clone(),
            error,
        })?),
    };
    let cores = if config.server.pin_workers {
        core_affinity::get_core_ids()
    } else {
        None
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop, stop_rx) = watch::channel(false);
    let workers = config.server.workers.get();
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        let stop = stop_rx.clone();
        let tls = tls.clone();
        let shard = metrics.new_shard();
        let log = access_log.as_ref().map(AccessLog::worker);
        let config = config.clone();
        let states = backend_states.clone();
        let ready = ready_tx.clone();
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
                    metrics: shard,
                    log,
                    tls,
                    stop,
                    ready,
                };
                io::run_worker(worker_main(parts));
            })
            .map_err(StartError::Thread)?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut listening = Vec::new();
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(addrs)) => listening = addrs,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StartError::WorkerDied),
        }
    }
    let health_checkers =
        health::spawn_checkers(config.clone(), backend_states.clone(), metrics.new_shard())
            .map_err(StartError::HealthCheckers)?;
    let metrics = Arc::new(Mutex::new(metrics));
    let draining = Arc::new(AtomicBool::new(false));
    let admin = match &config.admin {
        None => None,
        Some(a) => {
            let hooks = admin_hooks(&config, &metrics, &backend_states, &draining);
            let server =
                AdminServer::start(a.listen, hooks).map_err(|error| StartError::Admin {
                    addr: a.listen,
                    error,
                })?;
            tracing::info!(listen = %server.local_addr(), "admin listener started");
            Some(server)
        }
    };
    tracing::info!(
        listen = ?listening,
        workers,
        pinned = config.server.pin_workers,
        "ringlb is serving"
    );
    Ok(Server {
        listening,
        metrics,
        backend_states,
        health_checkers,
        admin,
        draining,
        access_log,
        stop,
        workers: threads,
        shutdown_timeout: config.server.shutdown_timeout,
    })
}

impl Server {
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
        tracing::info!(timeout = ?self.shutdown_timeout, "draining: no new connections");
        let _ = self.stop.send(true);
        // The workers enforce the timeout themselves; the margin covers
        // their last flush.
        let deadline = Instant::now() + self.shutdown_timeout + Duration::from_secs(2);
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
    config: &Arc<Config>,
    registry: &Arc<Mutex<Registry>>,
    states: &Arc<Vec<Vec<Arc<BackendState>>>>,
    draining: &Arc<AtomicBool>,
) -> AdminHooks {
    let snapshot = {
        let registry = registry.clone();
        move || {
            registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot()
        }
    };
    let loaded_at = SystemTime::now();
    let metrics_text = {
        let (snapshot, states) = (snapshot.clone(), states.clone());
        move || metrics::prometheus::render(&snapshot(), &states, &[])
    };
    let status_json = {
        let (config, states, draining) = (config.clone(), states.clone(), draining.clone());
        move || {
            let info = StatusInfo {
                config_version: 1,
                config_loaded_at: loaded_at,
                workers: config.server.workers.get(),
                draining: draining.load(Ordering::Relaxed),
            };
            admin::status_json(&config, info, &snapshot(), &states)
        }
    };
    let set_backend_draining = {
        let (config, states) = (config.clone(), states.clone());
        move |upstream: &str, addr: &str, drain: bool| {
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
        // Reload is not implemented yet: `POST /reload` answers 501.
        reload: None,
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

/// Blocks until SIGINT, SIGTERM or SIGQUIT and returns it. SIGHUP on the
/// way reopens the access log (after a rename-style rotation); config
/// reload is not supported yet.
pub fn wait_for_signal(server: &Server, mut signals: StopSignals) -> i32 {
    for signal in signals.0.forever() {
        if signal != signal_hook::consts::SIGHUP {
            return signal;
        }
        if let Some(log) = &server.access_log {
            log.reopen();
        }
        tracing::warn!(
            "SIGHUP: access log reopened; config reload is not supported yet (restart to apply a new config)"
        );
    }
    signal_hook::consts::SIGTERM
}

/// Logs the totals at exit.
pub fn log_totals(server: &Server, signal: i32) {
    log_totals_of(&server.metrics, signal);
}

fn log_totals_of(metrics: &Mutex<Registry>, signal: i32) {
    let totals = metrics
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .totals();
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
    states: Arc<Vec<Vec<Arc<BackendState>>>>,
    metrics: Arc<WorkerMetrics>,
    log: Option<WorkerLog>,
    /// `tls[i]`: the TLS config of `config.server.listen[i]`, if any.
    tls: Arc<Vec<Option<Arc<rustls::ServerConfig>>>>,
    stop: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<Vec<SocketAddr>, StartError>>,
}

async fn worker_main(parts: WorkerParts) {
    let WorkerParts {
        index,
        config,
        states,
        metrics,
        log,
        tls,
        mut stop,
        ready,
    } = parts;
    let mut listeners = Vec::new();
    for listen in &config.server.listen {
        let addr = listen.addr;
        match Listener::bind(addr, config.server.backlog.get()) {
            Ok(l) => listeners.push(l),
            Err(error) => {
                let _ = ready.send(Err(StartError::Bind { addr, error }));
                return;
            }
        }
    }
    let _ = ready.send(Ok(listeners.iter().map(Listener::local_addr).collect()));
    drop(ready);

    let worker = Rc::new(Worker::new(config.clone(), &states, index, metrics, log));
    if worker.logs_requests() {
        let flusher = worker.clone();
        io::spawn(async move {
            loop {
                tokio::time::sleep(LOG_FLUSH_TICK).await;
                flusher.flush_log_if_due();
            }
        });
    }
    let sweeper = worker.clone();
    io::spawn(async move {
        loop {
            tokio::time::sleep(POOL_SWEEP_INTERVAL).await;
            sweeper.evict_idle();
        }
    });
    let limit = Arc::new(tokio::sync::Semaphore::new(
        config.server.max_connections.get(),
    ));
    let listeners: Vec<Rc<Listener>> = listeners.into_iter().map(Rc::new).collect();
    let loops: Vec<_> = listeners
        .iter()
        .zip(tls.iter())
        .map(|(l, tls)| {
            io::spawn(accept_loop(
                l.clone(),
                tls.clone(),
                worker.clone(),
                limit.clone(),
            ))
        })
        .collect();

    // The graceful stop: wake the accept loops and the idle connections.
    let _ = stop.wait_for(|stop| *stop).await;
    let started = Instant::now();
    worker.begin_drain();
    for listener in &listeners {
        listener.stop_listening();
    }
    for handle in loops {
        let _ = handle.await;
    }
    // Every connection holds a permit until it ends.
    let all = u32::try_from(config.server.max_connections.get()).unwrap_or(u32::MAX);
    let left = config
        .server
        .shutdown_timeout
        .saturating_sub(started.elapsed());
    tokio::select! {
        _ = limit.acquire_many(all) => {}
        () = tokio::time::sleep(left) => {
            let open = worker.metrics.connections_open.get();
            tracing::warn!(worker = index, open, "shutdown_timeout reached; closing what is left");
        }
    }
    worker.flush_log();
}

/// The worker's one accept loop per listener. It is never dropped, so no
/// accept op is ever abandoned in the kernel. At `max_connections` it waits
/// for a connection to end before accepting again (the kernel backlog
/// holds the rest).
async fn accept_loop(
    listener: Rc<Listener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    worker: Rc<Worker>,
    limit: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        if worker.is_draining() {
            return;
        }
        match listener.accept().await {
            Ok(conn) => {
                let worker = worker.clone();
                let tls = tls.clone();
                io::spawn(async move {
                    worker.serve(conn, tls).await;
                    drop(permit);
                });
            }
            // `stop_listening` fails the pending accept.
            Err(_) if worker.is_draining() => return,
            Err(e) => {
                tracing::warn!(listener = %listener.local_addr(), error = %e, "accept failed");
                // Out of descriptors or memory: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
