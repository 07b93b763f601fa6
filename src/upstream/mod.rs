//! Backends and everything that chooses or reaches them.
//!
//! The only state shared between workers is [`BackendState`], one block of
//! atomics per backend. Balancer cursors, retry budgets and the connection
//! [`pool`] are per worker and never shared.
//!
//! Layout (one job per module):
//! - [`balance`]: strategies (one per file) and the pick helpers;
//! - [`breaker`]: the circuit breaker state machine, one atomic word;
//! - [`health`]: the rise/fall tracker and the active checker thread;
//! - [`retry`]: retry policy and the per-worker retry budget;
//! - [`clock`]: the process epoch that lets atomics hold instants;
//! - [`pool`]: idle upstream connections of one worker.
//!
//! # `BackendState`, field by field
//!
//! Every field is an atomic; no lock is ever taken. All accesses are
//! `Relaxed` unless noted: each field is an independent fact, nothing is
//! published through another field, and a pick that reads a value a moment
//! stale is harmless (it was stale a moment later anyway).
//!
//! | field | written by | read by | meaning |
//! |---|---|---|---|
//! | `health` | active checker, passive accounting, admin | every pick | [`Health`]: healthy, unhealthy (active check or admin), ejected (passive) |
//! | `health_changed` | whoever changes `health` | stats, passive cool-down | ns since [`clock::epoch`] of the last change |
//! | `passive_failures` | every outcome | outcomes | consecutive live-traffic failures; reset by a success or a change of `health` |
//! | `passive_probe` | [`BackendState::try_acquire`] (CAS) | picks | a passive-recovery probe is in flight (only without active checks) |
//! | `draining` | admin, config `down` | every pick | no new requests; in-flight ones finish |
//! | `breaker` | outcomes and admissions (CAS, see [`breaker`]) | every pick | closed / open / half-open with its counters |
//! | `in_flight` | admission and its drop | least-connections, p2c | requests started and not yet finished, all workers |
//! | `requests`, `failures` | admission, outcomes | stats | monotonically increasing counters |
//! | `latency_ewma_us` | outcomes (load, then store) | p2c_ewma, stats | EWMA of response latency in µs, α = 1/8; 0 = no sample yet |
//!
//! Race tolerance: `latency_ewma_us` is updated with a plain load and store,
//! so two outcomes finishing at the same instant may lose one sample; an
//! average does not need every sample. Passive ejection CASes `health` from
//! healthy to ejected, so only one worker reports the change. The health
//! and breaker facts are combined at pick time without a snapshot: a backend
//! may change state between "available" and "admitted"; that is why
//! admission ([`BackendState::try_acquire`]) re-checks and can say no.
//!
//! # Request life, as the proxy drives it
//!
//! pick ([`balance::pick_and_admit`]) → an [`Admission`] (counts the
//! request, holds the in-flight slot and any probe slot) → the attempt →
//! [`Admission::finish`] with an [`Outcome`] (drives passive health, the
//! breaker, the failure counter and the latency EWMA in one call). Dropping
//! an admission without finishing releases its slots and records nothing.

pub mod balance;
pub mod breaker;
pub mod clock;
pub mod connector;
pub mod health;
pub mod pool;
pub mod retry;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    BreakerConfig, StartState, UpstreamConfig, DEFAULT_PASSIVE_COOLDOWN, DEFAULT_PASSIVE_FALL,
};
use breaker::{Breaker, BreakerState, Ticket};

/// The health of a backend as every worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Marked down by the active checker (or an operator).
    Unhealthy,
    /// Ejected by passive accounting: `passive_fall` live failures in a row.
    Ejected,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Healthy,
            1 => Health::Unhealthy,
            _ => Health::Ejected,
        }
    }

    fn as_u8(self) -> u8 {
        self as u8
    }
}

/// What happened to one request on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with this status; 5xx counts as a failure.
    Response(u16),
    /// The connect was refused or timed out.
    ConnectFailure,
    /// The connection was reset or closed before a complete response head.
    Reset,
    /// No response head within the response timeout.
    Timeout,
}

impl Outcome {
    /// Whether passive health and the breaker count this against the backend.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Response(s) if s < 500)
    }
}

/// State changes one outcome caused, for the caller to log with the
/// backend's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Changes {
    /// `Some(false)`: passively ejected; `Some(true)`: restored by a probe.
    pub healthy: Option<bool>,
    /// The breaker's new phase, if it moved.
    pub breaker: Option<BreakerState>,
    /// The outcome that caused them.
    pub cause: Option<Outcome>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.healthy.is_none() && self.breaker.is_none()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.healthy {
            Some(false) => f.write_str("ejected after consecutive failures")?,
            Some(true) => f.write_str("restored by a probe")?,
            None => {}
        }
        if let Some(b) = self.breaker {
            if self.healthy.is_some() {
                f.write_str("; ")?;
            }
            write!(f, "breaker {b:?}")?;
        }
        if let Some(c) = self.cause {
            write!(f, " (last outcome {c:?})")?;
        }
        Ok(())
    }
}

/// The per-backend policy, fixed when the state is built (from its
/// upstream's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendPolicy {
    /// Consecutive failures that eject; 0 = passive ejection off.
    pub passive_fall: u32,
    /// Without active checks: wait this long after an ejection, then let one
    /// probe request through.
    pub passive_cooldown: Duration,
    /// Whether an active checker runs for this backend (then it, not a probe,
    /// restores an ejected backend).
    pub active_checks: bool,
    pub breaker: Option<BreakerConfig>,
    /// The health before any check.
    pub start_healthy: bool,
}

impl Default for BackendPolicy {
    fn default() -> Self {
        BackendPolicy {
            passive_fall: DEFAULT_PASSIVE_FALL,
            passive_cooldown: DEFAULT_PASSIVE_COOLDOWN,
            active_checks: false,
            breaker: None,
            start_healthy: true,
        }
    }
}

impl BackendPolicy {
    pub fn from_upstream(up: &UpstreamConfig) -> BackendPolicy {
        BackendPolicy {
            passive_fall: up.passive_fall,
            passive_cooldown: up.passive_cooldown,
            active_checks: up.health.is_some(),
            breaker: up.breaker,
            start_healthy: up
                .health
                .as_ref()
                .is_none_or(|h| h.start == StartState::Healthy),
        }
    }
}

/// What every worker knows about one backend, written without locks. See
/// the module docs for each field's rules.
#[derive(Debug)]
pub struct BackendState {
    health: AtomicU8,
    health_changed: AtomicU64,
    passive_failures: AtomicU32,
    passive_probe: AtomicBool,
    draining: AtomicBool,
    breaker: Option<Breaker>,
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    latency_ewma_us: AtomicU64,
    passive_fall: u32,
    passive_cooldown: u64,
    active_checks: bool,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState::new(BackendPolicy::default())
    }
}

/// A copy of a backend's shared state, for `/status` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStats {
    pub requests: u64,
    pub failures: u64,
    pub in_flight: u64,
    pub latency_ewma: Duration,
    pub health: Health,
    pub health_since: Duration,
    pub draining: bool,
    /// `None` when the upstream has no breaker.
    pub breaker: Option<(BreakerState, Duration)>,
}

impl BackendState {
    pub fn new(policy: BackendPolicy) -> BackendState {
        let health = if policy.start_healthy {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
        BackendState {
            health: AtomicU8::new(health.as_u8()),
            health_changed: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            passive_probe: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            breaker: policy.breaker.as_ref().map(Breaker::new),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_ewma_us: AtomicU64::new(0),
            passive_fall: policy.passive_fall,
            passive_cooldown: clock::nanos(policy.passive_cooldown),
            active_checks: policy.active_checks,
        }
    }

    /// Whether a balancer may pick this backend for a new request, now.
    /// Kept for callers without a `now`; logic is in [`Self::is_available_at`].
    pub fn is_available(&self) -> bool {
        self.is_available_at(clock::now_nanos())
    }

    /// Healthy (or an ejected backend whose cool-down is over and whose one
    /// probe slot is free), not draining, and the breaker would admit.
    pub fn is_available_at(&self, now: u64) -> bool {
        !self.draining.load(Relaxed)
            && self.health_admits(now)
            && self.breaker.as_ref().is_none_or(|b| b.admits(now))
    }

    fn health_admits(&self, now: u64) -> bool {
        match self.health() {
            Health::Healthy => true,
            Health::Unhealthy => false,
            Health::Ejected => self.passive_probe_due(now) && !self.passive_probe.load(Relaxed),
        }
    }

    fn passive_probe_due(&self, now: u64) -> bool {
        !self.active_checks
            && now.saturating_sub(self.health_changed.load(Relaxed)) >= self.passive_cooldown
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Relaxed))
    }

    /// Sets healthy or unhealthy (the active checker, an operator), now.
    pub fn set_healthy(&self, healthy: bool) {
        self.set_health(healthy, clock::now_nanos());
    }

    /// Sets healthy or unhealthy; returns whether the state changed. Resets
    /// the passive failure count.
    pub fn set_health(&self, healthy: bool, now: u64) -> bool {
        let new = if healthy {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
        let old = self.health.swap(new.as_u8(), Relaxed);
        self.passive_failures.store(0, Relaxed);
        let changed = old != new.as_u8();
        if changed {
            self.health_changed.store(now, Relaxed);
        }
        changed
    }

    /// A draining backend gets no new requests; in-flight ones finish.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// The latency EWMA; zero before the first response.
    pub fn latency_ewma(&self) -> Duration {
        Duration::from_micros(self.latency_ewma_us.load(Relaxed))
    }

    /// The breaker's phase and since when, if the upstream has one.
    pub fn breaker_state(&self) -> Option<(BreakerState, u64)> {
        self.breaker.as_ref().map(Breaker::state)
    }

    pub fn stats(&self, now: u64) -> BackendStats {
        let since = |t: u64| Duration::from_nanos(now.saturating_sub(t));
        BackendStats {
            requests: self.requests(),
            failures: self.failures(),
            in_flight: self.in_flight(),
            latency_ewma: self.latency_ewma(),
            health: self.health(),
            health_since: since(self.health_changed.load(Relaxed)),
            draining: self.is_draining(),
            breaker: self.breaker_state().map(|(s, t)| (s, since(t))),
        }
    }

    /// Marks a request as started; the guard marks it finished on drop.
    /// Takes no breaker or probe slot: prefer [`Self::try_acquire`].
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.requests.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        InFlightGuard(self.clone())
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    /// Admits one request now, or says no: draining, unhealthy, ejected
    /// (unless its recovery probe is due and free; then this takes it), or
    /// the breaker refuses (a half-open probe slot is taken atomically here).
    pub fn try_acquire(self: &Arc<Self>, now: u64) -> Option<Admission> {
        if self.is_draining() {
            return None;
        }
        let passive_probe = match self.health() {
            Health::Healthy => false,
            Health::Unhealthy => return None,
            Health::Ejected => {
                if !self.passive_probe_due(now)
                    || self
                        .passive_probe
                        .compare_exchange(false, true, Relaxed, Relaxed)
                        .is_err()
                {
                    return None;
                }
                true
            }
        };
        let ticket = match &self.breaker {
            None => Ticket::Normal,
            Some(b) => match b.admit(now) {
                Some(t) => t,
                None => {
                    if passive_probe {
                        self.passive_probe.store(false, Relaxed);
                    }
                    return None;
                }
            },
        };
        Some(self.admission(ticket, passive_probe))
    }

    /// Admits one request ignoring health and breaker (panic mode). Its
    /// outcome still counts.
    pub fn admit_forced(self: &Arc<Self>) -> Admission {
        self.admission(Ticket::Normal, false)
    }

    fn admission(self: &Arc<Self>, ticket: Ticket, passive_probe: bool) -> Admission {
        self.requests.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        Admission {
            state: self.clone(),
            ticket,
            passive_probe,
            finished: false,
        }
    }

    /// Records the outcome of a request that took no probe slot (e.g. one
    /// started with [`Self::start_request`]). Drives passive health, the
    /// breaker, the failure counter and the latency EWMA.
    pub fn record_outcome(&self, outcome: Outcome, latency: Duration, now: u64) -> Changes {
        self.record(Ticket::Normal, false, outcome, latency, now)
    }

    fn record(
        &self,
        ticket: Ticket,
        passive_probe: bool,
        outcome: Outcome,
        latency: Duration,
        now: u64,
    ) -> Changes {
        let failed = outcome.is_failure();
        let mut changes = Changes {
            cause: Some(outcome),
            ..Changes::default()
        };
        if let Outcome::Response(_) = outcome {
            self.observe_latency(latency);
        }
        if failed {
            self.record_failure();
        }
        if let Some(b) = &self.breaker {
            changes.breaker = b.record(ticket, !failed, now);
        }
        if passive_probe {
            if failed {
                // Try again after another cool-down.
                self.health_changed.store(now, Relaxed);
            } else if self.cas_health(Health::Ejected, Health::Healthy, now) {
                changes.healthy = Some(true);
            }
            self.passive_probe.store(false, Relaxed);
        } else if failed {
            let n = self
                .passive_failures
                .fetch_add(1, Relaxed)
                .saturating_add(1);
            if self.passive_fall != 0
                && n >= self.passive_fall
                && self.cas_health(Health::Healthy, Health::Ejected, now)
            {
                changes.healthy = Some(false);
            }
        } else if self.passive_failures.load(Relaxed) != 0 {
            self.passive_failures.store(0, Relaxed);
        }
        changes
    }

    fn cas_health(&self, from: Health, to: Health, now: u64) -> bool {
        let ok = self
            .health
            .compare_exchange(from.as_u8(), to.as_u8(), Relaxed, Relaxed)
            .is_ok();
        if ok {
            self.health_changed.store(now, Relaxed);
            self.passive_failures.store(0, Relaxed);
        }
        ok
    }

    fn observe_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let old = self.latency_ewma_us.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            // old + (sample - old) / 8, in signed arithmetic.
            (old as i128 + (sample as i128 - old as i128) / 8).max(1) as u64
        };
        self.latency_ewma_us.store(new, Relaxed);
    }
}

/// One admitted request on one backend: holds its in-flight count and any
/// probe slot until it is finished or dropped.
#[derive(Debug)]
pub struct Admission {
    state: Arc<BackendState>,
    ticket: Ticket,
    passive_probe: bool,
    finished: bool,
}

impl Admission {
    /// Whether this request is a probe (half-open breaker or passive
    /// recovery): the proxy may want to keep it off retries.
    pub fn is_probe(&self) -> bool {
        self.passive_probe || matches!(self.ticket, Ticket::Probe { .. })
    }

    pub fn state(&self) -> &Arc<BackendState> {
        &self.state
    }

    /// Records the outcome (see [`BackendState::record_outcome`]) and ends
    /// the request. `latency` is from sending the request to the response
    /// head (ignored for failures without a response).
    pub fn finish(mut self, outcome: Outcome, latency: Duration, now: u64) -> Changes {
        self.finished = true;
        self.state
            .record(self.ticket, self.passive_probe, outcome, latency, now)
    }
}

impl Admission {
    /// [`Admission::finish`], but the backend keeps counting one more in
    /// flight until the returned guard drops: a `[[tcp]]` session is judged
    /// by its connect (health, breaker, probe slot given back at once) and
    /// then stays open for `least_connections` to see.
    pub fn finish_holding(
        self,
        outcome: Outcome,
        latency: Duration,
        now: u64,
    ) -> (Changes, InFlightGuard) {
        // Taken before `finish`'s drop gives the admission's count back.
        self.state.in_flight.fetch_add(1, Relaxed);
        let guard = InFlightGuard(self.state.clone());
        (self.finish(outcome, latency, now), guard)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Relaxed);
        if !self.finished {
            if let Some(b) = &self.state.breaker {
                b.release(self.ticket);
            }
            if self.passive_probe {
                self.state.passive_probe.store(false, Relaxed);
            }
        }
    }
}

/// Decrements the backend's in-flight count when the request ends, however
/// it ends.
pub struct InFlightGuard(Arc<BackendState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One backend as a worker sees it: its address, weight and shared state,
/// and its stable id (hashed once here, not per sticky request).
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    pub state: Arc<BackendState>,
    /// [`balance::backend_id`] of `addr`.
    pub id: u64,
}

impl Backend {
    pub fn new(addr: SocketAddr, weight: u32, state: Arc<BackendState>) -> Backend {
        Backend {
            addr,
            weight,
            state,
            id: balance::backend_id(addr),
        }
    }
}

#[cfg(test)]
mod tests;

/// What `/metrics` and `/status` show of a backend.
impl crate::metrics::BackendView for BackendState {
    fn healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    fn breaker_state(&self) -> u8 {
        match BackendState::breaker_state(self) {
            None | Some((BreakerState::Closed, _)) => 0,
            Some((BreakerState::Open, _)) => 1,
            Some((BreakerState::HalfOpen, _)) => 2,
        }
    }

    fn in_flight(&self) -> u64 {
        BackendState::in_flight(self)
    }

    fn draining(&self) -> bool {
        self.is_draining()
    }
}
