//! Asking the name servers, with `hickory-resolver`.
//!
//! Why one thread: the workers are io_uring runtimes (`io::rt`) that must never
//! block or wait on a lock; the questions are few (one per upstream per
//! interval), so one thread with a current-thread tokio runtime asks all of
//! them and hands each answer to the server's `apply` (which, like a
//! reload, sends the workers a new snapshot as a message).
//!
//! Invariants:
//! - every question goes to the server: a fresh resolver per round with
//!   its cache off, so a record's TTL never hides a change from us;
//! - names are asked as absolute (no search domains);
//! - a round is bounded: [`QUESTION_TIMEOUT`] × [`QUESTION_ATTEMPTS`] per
//!   name, and at most [`MAX_SRV_TARGETS`] targets of an SRV answer.
//! - stopping never waits for the thread: the reload that stops an old set
//!   of discoverers holds the lock their `apply` takes; a late answer of an
//!   old generation is ignored by `apply`.

// The resolver thread runs a plain tokio runtime, not `io::rt`: tokio's
// timers are its own.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use super::{address_backends, next_refresh, srv_backends, Found, SrvTarget};
use crate::config::{Config, DiscoveryConfig, DiscoveryRecords};

/// How long one question waits for an answer.
pub const QUESTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How often one question is asked before the round fails.
pub const QUESTION_ATTEMPTS: usize = 2;
/// Most SRV targets whose addresses one round looks up.
pub const MAX_SRV_TARGETS: usize = 64;

/// What the server does with an answer: `(generation, upstream, answer)`.
pub type Apply = Arc<dyn Fn(u64, &str, Result<Found, String>) + Send + Sync>;

/// A resolver for `config`: its name servers (or the system's), cache off.
fn resolver(config: &DiscoveryConfig) -> Result<TokioResolver, String> {
    let mut builder = if config.resolvers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver config: {e}"))?
    } else {
        let mut servers = ResolverConfig::new();
        for &addr in &config.resolvers {
            servers.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            // Large SRV sets come back truncated over UDP.
            servers.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(servers, TokioConnectionProvider::default())
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = QUESTION_TIMEOUT;
    options.attempts = QUESTION_ATTEMPTS;
    if !config.resolvers.is_empty() {
        // Named servers are the source of truth; /etc/hosts is not.
        options.use_hosts_file = ResolveHosts::Never;
    }
    Ok(builder.build())
}

fn absolute(name: &str) -> String {
    format!("{name}.")
}

fn remaining(until: Instant, now: Instant) -> Duration {
    until.saturating_duration_since(now)
}

/// Asks once: the set `config` names now, or why not. An empty set is an
/// error ("no records").
pub async fn resolve(config: &DiscoveryConfig) -> Result<Found, String> {
    let resolver = resolver(config)?;
    let started = Instant::now();
    let (backends, valid_until) = match config.records {
        DiscoveryRecords::Address { port } => {
            let answer = resolver
                .lookup_ip(absolute(&config.dns))
                .await
                .map_err(|e| format!("{}: {e}", config.dns))?;
            let addrs: Vec<IpAddr> = answer.iter().collect();
            (address_backends(&addrs, port), answer.valid_until())
        }
        DiscoveryRecords::Srv => {
            let answer = resolver
                .srv_lookup(absolute(&config.dns))
                .await
                .map_err(|e| format!("{} SRV: {e}", config.dns))?;
            let mut valid_until = answer.as_lookup().valid_until();
            // Sorted before the cut, so every host keeps the same records.
            let mut records: Vec<_> = answer.iter().collect();
            records.sort_by_key(|r| (r.priority(), r.target().to_ascii(), r.port()));
            if records.len() > MAX_SRV_TARGETS {
                tracing::warn!(name = %config.dns, records = records.len(), kept = MAX_SRV_TARGETS, "SRV answer too large; the first by priority and name are used");
            }
            let mut targets = Vec::new();
            for srv in records.into_iter().take(MAX_SRV_TARGETS) {
                let target = srv.target().to_ascii();
                let addrs = match resolver.lookup_ip(srv.target().clone()).await {
                    Ok(ips) => {
                        valid_until = valid_until.min(ips.valid_until());
                        ips.iter().collect()
                    }
                    Err(e) => {
                        // One target without addresses does not fail the
                        // others; an answer left empty fails below.
                        tracing::warn!(name = %config.dns, target, error = %e, "SRV target does not resolve");
                        Vec::new()
                    }
                };
                targets.push(SrvTarget {
                    priority: srv.priority(),
                    weight: srv.weight(),
                    port: srv.port(),
                    addrs,
                });
            }
            (srv_backends(&targets), valid_until)
        }
    };
    if backends.is_empty() {
        return Err(format!("{}: no usable records", config.dns));
    }
    Ok(Found {
        backends,
        ttl: Some(remaining(valid_until, started)),
    })
}

/// [`resolve`] from plain (non-async) code: on a thread of its own, so it
/// works whether or not the caller is inside a runtime.
pub fn resolve_blocking(config: &DiscoveryConfig) -> Result<Found, String> {
    let config = config.clone();
    std::thread::Builder::new()
        .name("ringlb-resolve".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the resolver runtime: {e}"))?;
            runtime.block_on(resolve(&config))
        })
        .map_err(|e| format!("cannot start the resolver thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the resolver thread panicked".into()))
}

/// The running discoverers of one config generation.
pub struct Discoverers {
    /// Dropped to stop them.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Discoverers {
    /// Stops them without waiting: the thread ends at its next await.
    pub fn stop(self) {}
}

/// Starts one re-resolution loop per upstream of `config` with discovery,
/// all on one new thread. `None` if no upstream has discovery.
/// `last_ttl`: by upstream, the TTL of the answer the set came from (the
/// first question waits [`next_refresh`] of it).
pub fn spawn(
    config: &Config,
    generation: u64,
    apply: Apply,
    last_ttl: &BTreeMap<String, Option<Duration>>,
) -> std::io::Result<Option<Discoverers>> {
    let jobs: Vec<(String, DiscoveryConfig, Duration)> = config
        .upstreams
        .iter()
        .filter_map(|u| {
            let d = u.discovery.clone()?;
            let first = next_refresh(&d, last_ttl.get(&u.name).copied().flatten());
            Some((u.name.clone(), d, first))
        })
        .collect();
    if jobs.is_empty() {
        return Ok(None);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ringlb-discovery".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (upstream, discovery, first) in jobs {
                    tasks.spawn(refresh_loop(
                        upstream,
                        discovery,
                        first,
                        generation,
                        apply.clone(),
                    ));
                }
                // Ends when the sender is dropped; the tasks go with the runtime.
                let _ = stop_rx.await;
            });
        })?;
    Ok(Some(Discoverers { _stop: stop_tx }))
}

/// Asks again and again for one upstream, each time after
/// [`next_refresh`] of the answer before; the first after `first`.
async fn refresh_loop(
    upstream: String,
    config: DiscoveryConfig,
    first: Duration,
    generation: u64,
    apply: Apply,
) {
    let mut wait = first;
    loop {
        tokio::time::sleep(wait).await;
        let answer = resolve(&config).await;
        wait = next_refresh(&config, answer.as_ref().ok().and_then(|f| f.ttl));
        apply(generation, &upstream, answer);
    }
}
