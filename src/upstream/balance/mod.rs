//! Backend selection strategies for one upstream.
//!
//! Why a trait: `upstreams.NAME.strategy` picks one of several strategies,
//! and the proxy should ask "which backend next?" without knowing which.
//! One strategy per file, each with its own tests.
//!
//! Invariants: a balancer is core-local state (a worker owns its cursors
//! and RNG; `&mut self`, no locks). It is built once per worker from a
//! snapshot of the upstream's backends and knows them by index `0..n`.
//! Whether a backend may be used right now (health, breaker, draining,
//! already tried by this request) is the caller's `eligible` predicate; a
//! balancer reads shared state only through `PickContext::backends`
//! (in-flight counts, latency) and never writes it.
//!
//! Fallbacks: there is no iterator. A retry calls [`Balancer::pick`] again
//! with an `eligible` that also excludes the backends already tried; every
//! strategy returns an eligible backend whenever one exists.
//!
//! Panic mode and admission are applied by [`pick_and_admit`]. The proxy
//! holds one [`Picker`] per upstream: the strategy's balancer with what the
//! strategy decides besides the pick, the request's key
//! ([`request_key`]) and the sticky cookie to set ([`Picked::set_cookie`]),
//! so no strategy-specific code lives in the proxy.

mod hash;
mod least_conn;
mod maglev;
mod p2c;
mod random;
mod round_robin;
pub mod sticky;
mod weighted;

pub use hash::{backend_id, cookie_value, hash_bytes, hash_key, ip_key};
pub use least_conn::LeastConnections;
pub use maglev::Maglev;
pub use p2c::{Load, PowerOfTwo};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use sticky::StickyCookie;
pub use weighted::WeightedRoundRobin;

use std::net::IpAddr;

use super::{Admission, Backend};
use crate::config::{BackendConfig, HashKeySource, StickyCookieConfig, Strategy, UpstreamConfig};
use crate::http::RequestHead;

/// What one pick may look at.
pub struct PickContext<'a> {
    /// The upstream's backends, in the order the balancer was built with.
    /// May be empty (the legacy [`Balancer::next`]); then load-aware
    /// strategies see every load as zero.
    pub backends: &'a [Backend],
    /// The request's key: a `consistent_hash` key ([`hash_key`]) or, for
    /// `sticky_cookie`, the backend id from the cookie
    /// ([`sticky::cookie_id`]). Other strategies ignore it.
    pub key: Option<u64>,
    /// Whether backend `i` may be picked now.
    pub eligible: &'a dyn Fn(usize) -> bool,
}

/// Picks the next backend of one upstream.
///
/// A simpler shape than pingora's `select(key) -> BackendIter`: fallbacks
/// are had by calling `pick` again with a predicate that also excludes the
/// backends already tried.
pub trait Balancer {
    /// The index of a backend for which `ctx.eligible(index)` is true, or
    /// `None` if there is none (or the upstream has no backends).
    fn pick(&mut self, ctx: &PickContext<'_>) -> Option<usize>;

    /// `pick` with no key and no backend view (load-aware strategies see
    /// every load as zero): a shorthand for the strategies' own tests. The
    /// proxy calls `pick` through [`pick_and_admit`].
    fn next(&mut self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.pick(&PickContext {
            backends: &[],
            key: None,
            eligible,
        })
    }
}

/// What a balancer needs to know about a backend when it is built.
pub trait BackendSpec {
    fn weight(&self) -> u32;
    /// A stable id (Maglev's permutation, the sticky cookie).
    fn id(&self, index: usize) -> u64;
}

/// A bare weight: the id is derived from the index, so a reorder moves keys.
impl BackendSpec for u32 {
    fn weight(&self) -> u32 {
        *self
    }
    fn id(&self, index: usize) -> u64 {
        hash::index_id(index)
    }
}

impl BackendSpec for Backend {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn id(&self, _: usize) -> u64 {
        self.id
    }
}

impl BackendSpec for BackendConfig {
    fn weight(&self) -> u32 {
        u32::from(self.weight.get())
    }
    fn id(&self, _: usize) -> u64 {
        backend_id(self.addr)
    }
}

/// The balancer for `strategy` over `backends`, for the worker numbered
/// `worker` (which sets the start offset of cursors and seeds the RNG).
/// Pass `&[Backend]` (or `&[BackendConfig]`) so hashes use stable
/// address-based ids; bare weights (`&[u32]`) still work, with index-based
/// ids.
pub fn build<B: BackendSpec>(
    strategy: Strategy,
    backends: &[B],
    worker: usize,
) -> Box<dyn Balancer> {
    let weights: Vec<u32> = backends.iter().map(BackendSpec::weight).collect();
    let ids: Vec<u64> = backends.iter().enumerate().map(|(i, b)| b.id(i)).collect();
    let seed = fastrand::u64(..) ^ hash::mix(worker as u64);
    match strategy {
        Strategy::RoundRobin => Box::new(RoundRobin::new(weights.len(), worker)),
        Strategy::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(&weights, worker)),
        Strategy::Random => Box::new(Random::new(weights.len(), seed)),
        Strategy::LeastConnections => Box::new(LeastConnections::new(weights.len(), worker)),
        Strategy::P2c => Box::new(PowerOfTwo::new(weights.len(), Load::InFlight, seed)),
        Strategy::P2cEwma => Box::new(PowerOfTwo::new(weights.len(), Load::PeakEwma, seed)),
        Strategy::ConsistentHash | Strategy::IpHash => {
            Box::new(Maglev::new(&ids, &weights, worker))
        }
        Strategy::StickyCookie => Box::new(StickyCookie::new(&ids, &weights, worker)),
    }
}

/// A backend chosen and admitted for one attempt.
#[derive(Debug)]
pub struct Picked {
    pub index: usize,
    /// Finish it with the attempt's outcome; dropping it releases its slots.
    pub admission: Admission,
    /// Chosen in panic mode, ignoring health and breaker.
    pub panicked: bool,
    /// A `Set-Cookie` value for the response (`sticky_cookie`, when the
    /// request's cookie did not name this backend). Set by [`Picker`].
    pub set_cookie: Option<String>,
}

/// How a strategy derives a request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRule {
    /// The strategy ignores keys.
    None,
    /// `consistent_hash`: from `hash_key`.
    Hash(HashKeySource),
    /// `ip_hash`: the client's address.
    ClientIp,
    /// `sticky_cookie`: the backend id in the cookie.
    Cookie(StickyCookieConfig),
}

impl KeyRule {
    /// The rule of `strategy`, with the upstream's `hash_key` and
    /// `sticky_cookie` settings.
    pub fn of(up: &UpstreamConfig) -> KeyRule {
        match up.strategy {
            Strategy::ConsistentHash => KeyRule::Hash(up.hash_key.clone()),
            Strategy::IpHash => KeyRule::ClientIp,
            Strategy::StickyCookie => KeyRule::Cookie(up.sticky_cookie.clone()),
            Strategy::RoundRobin
            | Strategy::WeightedRoundRobin
            | Strategy::Random
            | Strategy::LeastConnections
            | Strategy::P2c
            | Strategy::P2cEwma => KeyRule::None,
        }
    }
}

/// The balancing key of a request under `rule` (see [`PickContext::key`]).
pub fn request_key(rule: &KeyRule, head: &RequestHead<'_>, client_ip: IpAddr) -> Option<u64> {
    match rule {
        KeyRule::None => None,
        KeyRule::Hash(source) => hash_key(source, head, client_ip),
        KeyRule::ClientIp => Some(ip_key(client_ip)),
        KeyRule::Cookie(cookie) => sticky::cookie_id(head, &cookie.name),
    }
}

/// One upstream's balancing as a worker runs it: the strategy's balancer,
/// its key rule, and panic mode.
pub struct Picker {
    balancer: Box<dyn Balancer>,
    key: KeyRule,
    panic_mode: bool,
}

impl Picker {
    /// The picker for `up` over `backends` (built from `up.backends`), for
    /// the worker numbered `worker`.
    pub fn new(up: &UpstreamConfig, backends: &[Backend], worker: usize) -> Picker {
        Picker {
            balancer: build(up.strategy, backends, worker),
            key: KeyRule::of(up),
            panic_mode: up.panic_mode,
        }
    }

    /// The request's key for this upstream's strategy.
    pub fn request_key(&self, head: &RequestHead<'_>, client_ip: IpAddr) -> Option<u64> {
        request_key(&self.key, head, client_ip)
    }

    /// The key of a connection from `client_ip` without a request (a
    /// `[[tcp]]` session): `ip_hash` and `consistent_hash` hash the client
    /// address, whatever `hash_key` says; other strategies take none.
    pub fn connection_key(&self, client_ip: IpAddr) -> Option<u64> {
        match self.key {
            KeyRule::Hash(_) | KeyRule::ClientIp => Some(hash::ip_key(client_ip)),
            KeyRule::None | KeyRule::Cookie(_) => None,
        }
    }

    /// [`pick_and_admit`] with this upstream's balancer and panic mode;
    /// the pick carries the sticky cookie to set, if any.
    pub fn pick_and_admit(
        &mut self,
        backends: &[Backend],
        key: Option<u64>,
        exclude: &dyn Fn(usize) -> bool,
        now: u64,
    ) -> Option<Picked> {
        let mut picked = pick_and_admit(
            &mut *self.balancer,
            backends,
            key,
            exclude,
            self.panic_mode,
            now,
        )?;
        if let KeyRule::Cookie(cookie) = &self.key {
            let backend = &backends[picked.index];
            if sticky::needs_cookie(key, backend) {
                picked.set_cookie = Some(sticky::set_cookie_value(cookie, backend));
            }
        }
        Some(picked)
    }
}

/// Picks a backend and admits the request, the one call the proxy makes per
/// attempt.
///
/// 1. Pick among backends that are not `exclude`d (already tried) and are
///    available now ([`super::BackendState::is_available_at`]).
/// 2. Admit with [`super::BackendState::try_acquire`]; if another worker
///    took the last probe slot in between, exclude that backend and pick
///    again (at most once per backend).
/// 3. Nothing admitted and `panic_mode`: pick among backends that are not
///    excluded and not draining, ignoring health and breaker (Envoy's panic
///    threshold). Draining backends (and `down = true`) are never picked:
///    draining is an operator's explicit "no new requests", not a guess
///    about health.
///
/// `None` means answer 503.
pub fn pick_and_admit(
    balancer: &mut dyn Balancer,
    backends: &[Backend],
    key: Option<u64>,
    exclude: &dyn Fn(usize) -> bool,
    panic_mode: bool,
    now: u64,
) -> Option<Picked> {
    let mut refused: Vec<usize> = Vec::new();
    for _ in 0..backends.len() {
        let eligible = |i: usize| {
            !exclude(i) && !refused.contains(&i) && backends[i].state.is_available_at(now)
        };
        let ctx = PickContext {
            backends,
            key,
            eligible: &eligible,
        };
        let Some(index) = balancer.pick(&ctx) else {
            break;
        };
        match backends[index].state.try_acquire(now) {
            Some(admission) => {
                return Some(Picked {
                    index,
                    admission,
                    panicked: false,
                    set_cookie: None,
                })
            }
            None => refused.push(index),
        }
    }
    if !panic_mode {
        return None;
    }
    let eligible = |i: usize| !exclude(i) && !backends[i].state.is_draining();
    let ctx = PickContext {
        backends,
        key,
        eligible: &eligible,
    };
    let index = balancer.pick(&ctx)?;
    Some(Picked {
        index,
        admission: backends[index].state.admit_forced(),
        panicked: true,
        set_cookie: None,
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the strategy tests.
    use super::*;
    use crate::upstream::BackendState;
    use std::sync::Arc;

    pub(crate) fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| {
                Backend::new(
                    format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                    1,
                    Arc::new(BackendState::default()),
                )
            })
            .collect()
    }

    pub(crate) fn pick(
        b: &mut dyn Balancer,
        backends: &[Backend],
        key: Option<u64>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        b.pick(&PickContext {
            backends,
            key,
            eligible,
        })
    }
}

#[cfg(test)]
mod tests;
