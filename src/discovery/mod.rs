//! Service discovery: an upstream's backends learned from DNS (A/AAAA, or
//! SRV as Consul's DNS interface serves them).
//!
//! Why DNS: several ringlb hosts coordinate no state of their own; each one
//! asks the same source of truth and converges on the same set.
//!
//! Layout:
//! - this file is the sans-IO part: turning records into a backend set
//!   (ordered, deduplicated, bounded), when to ask again, and what `/status`
//!   and `/metrics` show;
//! - `dns` asks the name servers (`hickory-resolver`) on one thread of its
//!   own, with a current-thread tokio runtime, and hands each answer to the
//!   server, which applies a changed set as a reload applies a changed
//!   backend list (see `server::reload`).
//!
//! Invariants:
//! - a set is sorted by address, so every host that sees the same records
//!   builds the same list (and the same hash rings);
//! - a set holds at most [`MAX_DISCOVERED_BACKENDS`] backends;
//! - a failed or empty answer never replaces the last good set;
//! - the next question comes after `min(interval, ttl)`, never sooner than
//!   `min_interval`.

pub mod dns;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::time::{Duration, SystemTime};

use crate::config::{BackendConfig, DiscoveryConfig, MAX_DISCOVERED_BACKENDS, WEIGHT_RANGE};

/// One good answer: the backend set and how long the records may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub backends: Vec<BackendConfig>,
    /// The shortest TTL of the records used; `None` if unknown.
    pub ttl: Option<Duration>,
}

/// One SRV record and its target's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub addrs: Vec<IpAddr>,
}

/// A backend of weight 1 at each address (A/AAAA records).
pub fn address_backends(addrs: &[IpAddr], port: NonZeroU16) -> Vec<BackendConfig> {
    let backends = addrs
        .iter()
        .map(|&ip| BackendConfig::discovered(SocketAddr::new(ip, port.get()), 1))
        .collect();
    ordered(backends)
}

/// The backends of SRV records: only those of the lowest priority (the
/// others are backups, RFC 2782), each target address at the record's port
/// with the record's weight clamped to [`WEIGHT_RANGE`] (0 counts as 1).
/// Records with port 0 are left out.
pub fn srv_backends(targets: &[SrvTarget]) -> Vec<BackendConfig> {
    let usable = || {
        targets
            .iter()
            .filter(|t| t.port != 0 && !t.addrs.is_empty())
    };
    let Some(best) = usable().map(|t| t.priority).min() else {
        return Vec::new();
    };
    let max_weight = u16::try_from(*WEIGHT_RANGE.end()).unwrap_or(u16::MAX);
    let backends = usable()
        .filter(|t| t.priority == best)
        .flat_map(|t| {
            let weight = t.weight.clamp(1, max_weight);
            t.addrs
                .iter()
                .map(move |&ip| BackendConfig::discovered(SocketAddr::new(ip, t.port), weight))
        })
        .collect();
    ordered(backends)
}

/// Sorted by address, one backend per address (the first seen keeps its
/// weight), at most [`MAX_DISCOVERED_BACKENDS`].
fn ordered(mut backends: Vec<BackendConfig>) -> Vec<BackendConfig> {
    // A stable sort keeps the first of equal addresses first.
    backends.sort_by_key(|b| b.addr);
    backends.dedup_by_key(|b| b.addr);
    if backends.len() > MAX_DISCOVERED_BACKENDS {
        tracing::warn!(
            found = backends.len(),
            kept = MAX_DISCOVERED_BACKENDS,
            "discovery answer too large; the lowest addresses are kept"
        );
        backends.truncate(MAX_DISCOVERED_BACKENDS);
    }
    backends
}

/// How long to wait before asking again after an answer with `ttl`
/// (`None`: a failure, or no TTL known).
pub fn next_refresh(config: &DiscoveryConfig, ttl: Option<Duration>) -> Duration {
    ttl.map_or(config.interval, |t| t.min(config.interval))
        .max(config.min_interval)
}

/// What `/status` and `/metrics` show of one upstream's discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryStatus {
    /// The name, record type and resolvers, e.g. `dns SRV web.service.consul
    /// via 127.0.0.1:8600`.
    pub source: String,
    /// When the last good answer arrived (at start or since).
    pub refreshed_at: Option<SystemTime>,
    /// The shortest record TTL of the last good answer.
    pub ttl: Option<Duration>,
    /// Failed or empty answers since start.
    pub failures: u64,
    /// Why the last question failed, if it did (cleared by a good answer).
    pub last_error: Option<String>,
}

impl DiscoveryStatus {
    pub fn new(config: &DiscoveryConfig) -> DiscoveryStatus {
        DiscoveryStatus {
            source: config.source(),
            refreshed_at: None,
            ttl: None,
            failures: 0,
            last_error: None,
        }
    }
}

/// `ringlb_discovery_failures_total{upstream}`, one sample per upstream
/// with discovery, in Prometheus text format.
pub fn render_metrics<'a>(
    statuses: impl Iterator<Item = (&'a str, &'a DiscoveryStatus)>,
) -> String {
    let mut out = String::from(
        "# HELP ringlb_discovery_failures_total Failed or empty discovery answers (the last good set stays).\n\
         # TYPE ringlb_discovery_failures_total counter\n",
    );
    for (upstream, status) in statuses {
        let upstream = upstream.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "ringlb_discovery_failures_total{{upstream=\"{upstream}\"}} {}\n",
            status.failures
        ));
    }
    out
}
