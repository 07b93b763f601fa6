//! Config reload (SIGHUP, `POST /reload`): re-read the file, check it,
//! and hand each worker a new snapshot as a message.
//!
//! What a reload applies: `[upstreams.*]`, `[[routes]]`, the listeners
//! (`server.listen`: kept, added, removed; certificates re-read from their
//! files), the admin listener's address, and the `[server]` limits and
//! timeouts. Keys fixed at start (`restart_only_changes`) refuse the reload, and
//! the running config stays, as it does for any invalid file, a listener
//! that cannot bind, or a certificate that cannot load.
//!
//! Invariants:
//! - Nothing changes until everything that can fail has succeeded: the
//!   file parses and checks, new listeners are bound (one socket per
//!   worker), TLS configs and the admin listener are made.
//! - Workers never lock: each gets an [`Update`] over its own channel,
//!   builds a new `proxy::Worker` for the requests that start from then
//!   on; connections move to it between requests (none is closed), and
//!   those of a removed listener drain (see `listeners`).
//! - A backend keeps its shared state (health, breaker, in-flight, drain)
//!   across a reload when its upstream (by name) still lists it (by
//!   address) with the same health/breaker/passive policy; a changed
//!   `down` flag is applied.
//! - Metrics continue: a changed layout starts a new registry generation
//!   whose series carry on under the same names (see `metrics`).
//! - One reload at a time (a mutex, on the reload path only).
//! - Discovery (see `discovery`) changes an upstream's backend set through
//!   the same path ([`Reloader::apply_discovered`]): the running config
//!   with the new set, installed as a reload installs a file. A file
//!   reload keeps each upstream's discovered set while its `discovery`
//!   table is unchanged, and resolves a new or changed one before anything
//!   changes (refused if it does not resolve, unless `allow_empty`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::mpsc::UnboundedSender;

use super::listeners::{self, Bound, ListenerUpdate};
use crate::access_log::{AccessLog, WorkerLog};
use crate::admin::AdminRebind;
use crate::cache::Zones;
use crate::config::Config;
use crate::discovery::dns::{self, Discoverers};
use crate::discovery::{DiscoveryStatus, Found};
use crate::metrics::{Layout, Registry, WorkerMetrics};
use crate::upstream::connector::{TlsByUpstream, UpstreamTls};
use crate::upstream::health::{self, Checkers};
use crate::upstream::{BackendPolicy, BackendState};

/// `states[u][b]`: the shared state of backend `b` of upstream `u`.
pub type States = Vec<Vec<Arc<BackendState>>>;

/// A new snapshot for one worker.
pub(super) struct Update {
    pub config: Arc<Config>,
    pub states: Arc<States>,
    pub zones: Arc<Zones>,
    /// Every upstream's TLS, built once while the reload was planned.
    pub tls: TlsByUpstream,
    pub metrics: Arc<WorkerMetrics>,
    pub log: Option<WorkerLog>,
    /// The worker's listeners under the new config.
    pub listeners: Vec<ListenerUpdate>,
}

/// The running config, as the admin endpoints show it.
pub struct Live {
    pub config: Arc<Config>,
    pub states: Arc<States>,
    /// The cache zones (kept by name across reloads).
    pub zones: Arc<Zones>,
    /// 1 at start, +1 per applied reload or discovered change.
    pub version: u64,
    pub loaded_at: SystemTime,
    /// The public listeners, in `server.listen` order.
    pub listeners: Vec<Bound>,
}

/// The `[server]` keys a reload cannot change whose values differ: the
/// worker threads, their connection semaphores and buffers, and the
/// access log writer are made once at start.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    [
        ("workers", a.workers != b.workers),
        ("pin_workers", a.pin_workers != b.pin_workers),
        ("max_connections", a.max_connections != b.max_connections),
        ("buffer_size", a.buffer_size != b.buffer_size),
        ("access_log", a.access_log != b.access_log),
        ("upgrade_socket", a.upgrade_socket != b.upgrade_socket),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect()
}

pub struct Reloader {
    pub(super) live: Arc<Mutex<Live>>,
    pub(super) registry: Arc<Mutex<Registry>>,
    pub(super) workers: Vec<UnboundedSender<Update>>,
    pub(super) checkers: Mutex<Option<Checkers>>,
    pub(super) access_log: Option<Arc<AccessLog>>,
    /// Moves the admin listener to a new address; set once it started.
    pub(super) admin: std::sync::OnceLock<AdminRebind>,
    /// Counts reloads; written only under `one_at_a_time`.
    pub(super) events: Arc<WorkerMetrics>,
    pub(super) one_at_a_time: Mutex<()>,
    /// The discoverers and what they found; locked by discovery, reloads
    /// and `/status`, never on the request path.
    pub(super) discovery: Mutex<DiscoveryState>,
}

/// The running discoverers and each upstream's discovery status.
#[derive(Default)]
pub(super) struct DiscoveryState {
    /// +1 each time the discoverers are restarted (a file reload): answers
    /// of an older generation are ignored.
    generation: u64,
    discoverers: Option<Discoverers>,
    /// By upstream name, for each upstream with discovery.
    statuses: BTreeMap<String, DiscoveryStatus>,
}

impl DiscoveryState {
    /// Before the discoverers start: the statuses of the start's answers.
    pub(super) fn new(statuses: BTreeMap<String, DiscoveryStatus>) -> DiscoveryState {
        DiscoveryState {
            statuses,
            ..DiscoveryState::default()
        }
    }
}

/// `new` with each upstream's discovered set: kept from `old` where its
/// `discovery` is unchanged, else resolved now. Unresolvable is an error
/// unless `allow_empty`. Also returns the discovery statuses for `new`.
pub fn with_discovery(
    old: Option<(&Config, &BTreeMap<String, DiscoveryStatus>)>,
    mut new: Config,
) -> Result<(Config, BTreeMap<String, DiscoveryStatus>), String> {
    let mut statuses = BTreeMap::new();
    for u in 0..new.upstreams.len() {
        let Some(discovery) = new.upstreams[u].discovery.clone() else {
            continue;
        };
        let name = new.upstreams[u].name.clone();
        let kept = old.and_then(|(config, statuses)| {
            let o = config.upstreams.iter().position(|o| o.name == name)?;
            (config.upstreams[o].discovery.as_ref() == Some(&discovery))
                .then(|| (config.discovered(o).to_vec(), statuses.get(&name).cloned()))
        });
        let mut status = DiscoveryStatus::new(&discovery);
        // The failures counter is per upstream name: it never goes back.
        status.failures = old
            .and_then(|(_, statuses)| statuses.get(&name))
            .map_or(0, |s| s.failures);
        let found = match kept {
            Some((found, before)) => {
                status = before.unwrap_or(status);
                found
            }
            None => match dns::resolve_blocking(&discovery) {
                Ok(Found { backends, ttl }) => {
                    status.refreshed_at = Some(SystemTime::now());
                    status.ttl = ttl;
                    backends
                }
                Err(e) if discovery.allow_empty => {
                    tracing::warn!(upstream = %name, error = %e, "discovery found nothing; allow_empty: starting with no discovered backends");
                    status.failures += 1;
                    status.last_error = Some(e);
                    Vec::new()
                }
                Err(e) => {
                    return Err(format!(
                        "upstreams.{name}.discovery: cannot resolve {:?}: {e} \
                         (set allow_empty = true to start without it)",
                        discovery.dns
                    ))
                }
            },
        };
        new = new.with_discovered(u, &found);
        statuses.insert(name, status);
    }
    Ok((new, statuses))
}

/// Locks, ignoring poison: every value behind these mutexes stays valid.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The states of `config`'s backends, built once at start.
pub fn initial_states(config: &Config) -> States {
    config
        .upstreams
        .iter()
        .map(|u| {
            let policy = BackendPolicy::from_upstream(u);
            u.backends
                .iter()
                .map(|b| new_state(policy, b.down))
                .collect()
        })
        .collect()
}

fn new_state(policy: BackendPolicy, down: bool) -> Arc<BackendState> {
    let state = BackendState::new(policy);
    // `down = true`: administratively out, like a drain.
    state.set_draining(down);
    Arc::new(state)
}

/// The states for `new`, reusing those of `old` where the backend stays.
fn carry_states(old: &Config, old_states: &States, new: &Config) -> States {
    new.upstreams
        .iter()
        .map(|u| {
            let policy = BackendPolicy::from_upstream(u);
            let before = old
                .upstreams
                .iter()
                .position(|o| o.name == u.name)
                .filter(|&o| BackendPolicy::from_upstream(&old.upstreams[o]) == policy);
            u.backends
                .iter()
                .map(|b| {
                    let kept = before.and_then(|o| {
                        let i = old.upstreams[o]
                            .backends
                            .iter()
                            .position(|ob| ob.addr == b.addr)?;
                        let state = old_states.get(o)?.get(i)?.clone();
                        if old.upstreams[o].backends[i].down != b.down {
                            state.set_draining(b.down);
                        }
                        Some(state)
                    });
                    kept.unwrap_or_else(|| new_state(policy, b.down))
                })
                .collect()
        })
        .collect()
}

impl Reloader {
    /// Reloads the config file; `Err` says why it was refused (the running
    /// config stays).
    pub fn reload(self: &Arc<Self>) -> Result<(), String> {
        let _one = lock(&self.one_at_a_time);
        if let Err(e) = crate::notify::reloading() {
            tracing::debug!(error = %e, "sd_notify RELOADING failed");
        }
        let result = self.apply();
        self.events.config_reload(result.is_ok());
        if let Err(e) = crate::notify::ready() {
            tracing::debug!(error = %e, "sd_notify READY failed");
        }
        match &result {
            Ok(version) => tracing::info!(version, "config reloaded"),
            Err(e) => tracing::warn!("config reload refused, the running config stays: {e}"),
        }
        result.map(|_| ())
    }

    /// The running config, its backend states, version and listeners.
    fn running(&self) -> (Arc<Config>, Arc<States>, u64, Vec<Bound>) {
        let live = lock(&self.live);
        (
            live.config.clone(),
            live.states.clone(),
            live.version,
            live.listeners.clone(),
        )
    }

    fn apply(self: &Arc<Self>) -> Result<u64, String> {
        let (old, old_states, version, running) = self.running();
        let new = Config::load(&old.source_path).map_err(|e| e.to_string())?;
        let old_statuses = lock(&self.discovery).statuses.clone();
        let (new, statuses) = with_discovery(Some((&old, &old_statuses)), new)?;
        let version = self.install(old, old_states, version, running, new)?;
        {
            let mut discovery = lock(&self.discovery);
            discovery.statuses = statuses;
        }
        self.restart_discovery();
        Ok(version)
    }

    /// Makes `new` the running config: everything that can fail first,
    /// then the admin view, then one message per worker.
    fn install(
        &self,
        old: Arc<Config>,
        old_states: Arc<States>,
        version: u64,
        running: Vec<Bound>,
        new: Config,
    ) -> Result<u64, String> {
        let fixed = restart_only_changes(&old, &new);
        if !fixed.is_empty() {
            return Err(format!(
                "server.{} changed; restart to apply it (a reload applies listen, limits, \
                 timeouts, [admin] listen, [upstreams] and [[routes]])",
                fixed.join(", server.")
            ));
        }
        let admin_moves_to = match (&old.admin, &new.admin) {
            (Some(a), Some(b)) if a.listen != b.listen => Some(b.listen),
            (Some(_), Some(_)) | (None, None) => None,
            (None, Some(_)) => return Err("[admin] added; restart to start it".into()),
            (Some(_), None) => return Err("[admin] removed; restart to stop it".into()),
        };
        // Everything that can fail comes before anything changes.
        let (bound, per_worker) =
            listeners::plan(&running, &new, self.workers.len(), &mut Vec::new())
                .map_err(|e| e.to_string())?;
        let upstream_tls = UpstreamTls::plan(&new).map_err(|e| format!("TLS to upstream: {e}"))?;
        let admin_listener = admin_moves_to
            .map(|addr| {
                std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot move the admin listener to {addr}: {e}"))
            })
            .transpose()?;
        let new = Arc::new(new);
        let states = Arc::new(carry_states(&old, &old_states, &new));
        let old_zones = lock(&self.live).zones.clone();
        let zones = Arc::new(Zones::plan(&new.cache_zones, Some(&old_zones)));
        let (shards, health_shard) = {
            let mut registry = lock(&self.registry);
            registry.next_generation(Layout::from_config(&new));
            let shards: Vec<_> = self.workers.iter().map(|_| registry.new_shard()).collect();
            (shards, registry.new_shard())
        };
        let checkers = health::spawn_checkers(
            new.clone(),
            states.clone(),
            upstream_tls.clone(),
            health_shard,
        )
        .map_err(|e| format!("cannot start the health checkers: {e}"))?;
        if let Some(old) = std::mem::replace(&mut *lock(&self.checkers), checkers) {
            let _ = old.stop();
        }
        if let (Some(listener), Some(admin)) = (admin_listener, self.admin.get()) {
            admin.move_to(listener);
        }
        if let (Some(before), Some(after), Some(admin)) = (&old.admin, &new.admin, self.admin.get())
        {
            if before != after {
                admin.set_guard(crate::admin::Guard::new(after));
            }
        }
        let warm_through: Vec<_> = bound.iter().map(|b| (b.local, b.tls.is_some())).collect();
        // The admin view first, so it never shows an older config than a
        // worker already serves.
        *lock(&self.live) = Live {
            config: new.clone(),
            states: states.clone(),
            zones: zones.clone(),
            version: version + 1,
            loaded_at: SystemTime::now(),
            listeners: bound,
        };
        for ((tx, metrics), listeners) in self.workers.iter().zip(shards).zip(per_worker) {
            let _ = tx.send(Update {
                config: new.clone(),
                states: states.clone(),
                zones: zones.clone(),
                tls: upstream_tls.clone(),
                metrics,
                log: self.access_log.as_ref().map(|l| l.worker()),
                listeners,
            });
        }
        // Warm once every worker has the new config (they take it from
        // their channel before their next request).
        super::warm::spawn(new.clone(), warm_through);
        Ok(version + 1)
    }

    /// (Re)starts the discoverers for the running config; answers of the
    /// ones before are ignored from now on.
    pub(super) fn restart_discovery(self: &Arc<Self>) {
        let config = lock(&self.live).config.clone();
        let mut discovery = lock(&self.discovery);
        discovery.generation += 1;
        let generation = discovery.generation;
        if let Some(old) = discovery.discoverers.take() {
            old.stop();
        }
        let reloader = Arc::downgrade(self);
        let apply: dns::Apply = Arc::new(move |generation, upstream: &str, answer| {
            if let Some(reloader) = reloader.upgrade() {
                reloader.apply_discovered(generation, upstream, answer);
            }
        });
        // The first question follows the last answer's TTL, as every later one.
        let first_waits = discovery
            .statuses
            .iter()
            .map(|(name, s)| (name.clone(), s.ttl))
            .collect();
        match dns::spawn(&config, generation, apply, &first_waits) {
            Ok(discoverers) => discovery.discoverers = discoverers,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the discovery thread; discovered sets stay as they are")
            }
        }
    }

    /// One discovery answer for `upstream`: a changed set is installed as
    /// a reload installs a file; a failed or empty one keeps the last good
    /// set and is counted.
    fn apply_discovered(&self, generation: u64, upstream: &str, answer: Result<Found, String>) {
        let _one = lock(&self.one_at_a_time);
        {
            let mut discovery = lock(&self.discovery);
            if discovery.generation != generation {
                return;
            }
            let Some(status) = discovery.statuses.get_mut(upstream) else {
                return;
            };
            match &answer {
                Err(e) => {
                    status.failures += 1;
                    status.last_error = Some(e.clone());
                    tracing::warn!(upstream, error = %e, "discovery failed; the last good set stays");
                    return;
                }
                Ok(found) => {
                    status.refreshed_at = Some(SystemTime::now());
                    status.ttl = found.ttl;
                    status.last_error = None;
                }
            }
        }
        let Ok(found) = answer else { return };
        let (old, old_states, version, running) = self.running();
        let Some(u) = old.upstreams.iter().position(|u| u.name == upstream) else {
            return;
        };
        let new = old.with_discovered(u, &found.backends);
        if new.upstreams[u].backends == old.upstreams[u].backends {
            return;
        }
        let before = old.discovered(u).len();
        let after = new.discovered(u).len();
        match self.install(old, old_states, version, running, new) {
            Ok(version) => tracing::info!(
                upstream,
                before,
                after,
                version,
                "discovered backends changed"
            ),
            Err(e) => {
                tracing::warn!(upstream, error = %e, "discovered backends changed but could not be applied; the last set stays")
            }
        }
    }

    /// Each upstream's discovery status, by name.
    pub fn discovery_statuses(&self) -> BTreeMap<String, DiscoveryStatus> {
        lock(&self.discovery).statuses.clone()
    }
}
