//! A worker's idle keep-alive connections to its backends.
//!
//! Core-local, so no locks: a `Slab` holds the idle connections and each
//! backend has a stack of slab keys, newest last (the warmest connection is
//! reused first, the coldest is evicted first). Invariants: at most
//! `max_idle` idle connections per backend; an idle connection has no op in
//! flight, so dropping it closes it at once.

use std::time::{Duration, Instant};

use slab::Slab;

use crate::io::Conn;

/// What the pool can hold: a connection that can tell whether it is still
/// usable (no EOF or error pending).
pub trait Reusable {
    fn is_reusable(&self) -> bool;
}

impl Reusable for Conn {
    fn is_reusable(&self) -> bool {
        Conn::is_reusable(self)
    }
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// Idle upstream connections of one worker, for every backend of every
/// upstream (backends are numbered globally by the caller).
pub struct Pool<C = Conn> {
    idle: Slab<Idle<C>>,
    by_backend: Vec<Vec<usize>>,
    max_idle: Vec<usize>,
    idle_timeout: Vec<Duration>,
}

/// What a checkout found.
pub enum Checkout<C = Conn> {
    /// A live idle connection.
    Hit(C),
    /// Nothing usable; `stale` counts idle ones found dead or expired and
    /// closed on the way.
    Miss { stale: usize },
}

impl<C: Reusable> Pool<C> {
    /// `limits[i]` is `(max_idle, idle_timeout)` for backend `i`.
    pub fn new(limits: impl IntoIterator<Item = (usize, Duration)>) -> Pool<C> {
        let (max_idle, idle_timeout): (Vec<_>, Vec<_>) = limits.into_iter().unzip();
        Pool {
            idle: Slab::new(),
            by_backend: vec![Vec::new(); max_idle.len()],
            max_idle,
            idle_timeout,
        }
    }

    /// Takes the newest idle connection to `backend` that is still alive.
    pub fn checkout(&mut self, backend: usize, now: Instant) -> Checkout<C> {
        let mut stale = 0;
        while let Some(key) = self.by_backend[backend].pop() {
            let idle = self.idle.remove(key);
            if now.duration_since(idle.since) < self.idle_timeout[backend]
                && idle.conn.is_reusable()
            {
                return Checkout::Hit(idle.conn);
            }
            stale += 1;
        }
        Checkout::Miss { stale }
    }

    /// Returns a connection whose last exchange ended cleanly. Evicts the
    /// oldest idle connection to the same backend when full.
    pub fn checkin(&mut self, backend: usize, conn: C, now: Instant) {
        let max = self.max_idle[backend];
        if max == 0 {
            return;
        }
        let stack = &mut self.by_backend[backend];
        if stack.len() >= max {
            let oldest = stack.remove(0);
            self.idle.remove(oldest);
        }
        let key = self.idle.insert(Idle { conn, since: now });
        self.by_backend[backend].push(key);
    }

    /// Closes idle connections older than their backend's `idle_timeout`.
    pub fn evict_expired(&mut self, now: Instant) -> usize {
        let mut evicted = 0;
        for (backend, stack) in self.by_backend.iter_mut().enumerate() {
            let timeout = self.idle_timeout[backend];
            let idle = &mut self.idle;
            stack.retain(|&key| {
                let keep = now.duration_since(idle[key].since) < timeout;
                if !keep {
                    idle.remove(key);
                    evicted += 1;
                }
                keep
            });
        }
        evicted
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }
}
