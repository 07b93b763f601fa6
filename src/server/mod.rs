//! Starting the workers, waiting for signals, and stopping.
//!
//! One thread per worker, each running its own tokio-uring runtime with its
//! own `SO_REUSEPORT` listeners, pool and balancer cursors (see
//! `proxy::Worker`). The main thread only waits for the workers to bind and
//! then for a signal. The one thing all workers share is the per-backend
//! block of atomics, created here so every worker gets the same `Arc`s.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::io::{self, Listener};
use crate::metrics::{Registry, WorkerMetrics};
use crate::proxy::Worker;
use crate::upstream::health::{self, Checkers};
use crate::upstream::{BackendPolicy, BackendState};

/// How often each worker closes pooled connections past their idle timeout.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    Thread(std::io::Error),
    HealthCheckers(std::io::Error),
    WorkerDied,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            StartError::Thread(e) => write!(f, "cannot start a worker thread: {e}"),
            StartError::HealthCheckers(e) => write!(f, "cannot start the health checkers: {e}"),
            StartError::WorkerDied => write!(f, "a worker exited during start-up"),
        }
    }
}

impl std::error::Error for StartError {}

/// A started proxy: workers bound and serving.
pub struct Server {
    pub listening: Vec<SocketAddr>,
    pub metrics: Registry,
    pub backend_states: Arc<Vec<Vec<Arc<BackendState>>>>,
    /// The active health checkers (one thread for the process); dropping
    /// this stops them.
    pub health_checkers: Option<Checkers>,
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
    let mut metrics = Registry::default();
    let cores = if config.server.pin_workers {
        core_affinity::get_core_ids()
    } else {
        None
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let workers = config.server.workers.get();
    for index in 0..workers {
        let shard = metrics.new_shard();
        let config = config.clone();
        let states = backend_states.clone();
        let ready = ready_tx.clone();
        let core = cores
            .as_ref()
            .and_then(|c| c.get(index % c.len().max(1)).copied());
        std::thread::Builder::new()
            .name(format!("ringlb-worker-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(worker = index, "could not pin worker to a core");
                    }
                }
                io::run_worker(worker_main(index, config, states, shard, ready));
            })
            .map_err(StartError::Thread)?;
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
    let health_checkers = health::spawn_checkers(config.clone(), backend_states.clone())
        .map_err(StartError::HealthCheckers)?;
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
    })
}

/// The stop signals, caught from before the first listener opens: a
/// signal that arrives while the workers start must not kill the process
/// by its default action.
pub struct StopSignals(signal_hook::iterator::Signals);

impl StopSignals {
    pub fn install() -> std::io::Result<StopSignals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        Ok(StopSignals(signal_hook::iterator::Signals::new([
            SIGINT, SIGTERM,
        ])?))
    }
}

/// Blocks until SIGINT or SIGTERM, then logs the totals. The caller exits
/// the process, which closes every socket (a graceful drain is a later
/// issue).
pub fn wait_for_signal(server: &Server, mut signals: StopSignals) -> i32 {
    let signal = signals
        .0
        .forever()
        .next()
        .unwrap_or(signal_hook::consts::SIGTERM);
    let totals = server.metrics.totals();
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
    signal
}

async fn worker_main(
    index: usize,
    config: Arc<Config>,
    states: Arc<Vec<Vec<Arc<BackendState>>>>,
    metrics: Arc<WorkerMetrics>,
    ready: mpsc::Sender<Result<Vec<SocketAddr>, StartError>>,
) {
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

    let worker = Rc::new(Worker::new(config.clone(), &states, index, metrics));
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
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| io::spawn(accept_loop(l, worker.clone(), limit.clone())))
        .collect();
    for handle in loops {
        let _ = handle.await;
    }
}

/// The worker's one accept loop per listener. It is never dropped, so no
/// accept op is ever abandoned in the kernel. At `max_connections` it waits
/// for a connection to end before accepting again (the kernel backlog
/// holds the rest).
async fn accept_loop(listener: Listener, worker: Rc<Worker>, limit: Arc<tokio::sync::Semaphore>) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok(conn) => {
                let worker = worker.clone();
                io::spawn(async move {
                    worker.serve(conn).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(listener = %listener.local_addr(), error = %e, "accept failed");
                // Out of descriptors or memory: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
