//! A worker's idle keep-alive connections to its backends.
//!
//! Core-local, so no locks: a `Slab` holds the idle connections and each
//! backend has a stack of slab keys, newest last (the warmest connection is
//! reused first, the coldest is evicted first). Invariants: at most
//! `max_idle` idle connections per backend; an idle connection has no op in
//! flight, so dropping it closes it at once.
//!
//! The liveness check is a `MSG_PEEK` syscall, about 4% of the proxy's CPU
//! on small keep-alive requests, so a caller that can re-send its request
//! for free when a pooled connection turns out dead may skip it for a
//! connection idle less than [`TRUSTED_IDLE`]: a server closes an idle
//! keep-alive connection (or writes a 408 on it) after seconds, not
//! milliseconds, and a connection dead all the same costs one re-send.

use std::time::{Duration, Instant};

use slab::Slab;

use crate::io::Conn;

/// How long a connection may sit idle and still be taken without the
/// liveness check, by a caller that asks for that ([`Liveness::Trusted`]).
pub const TRUSTED_IDLE: Duration = Duration::from_millis(250);

/// Whether a checkout peeks at the connection before handing it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Always check: the request could not be sent again.
    Checked,
    /// Skip the check for a connection idle less than [`TRUSTED_IDLE`]:
    /// the caller re-sends on a fresh connection if it was dead.
    Trusted,
}

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

    /// Takes the newest idle connection to `backend` that is still alive
    /// (or, with [`Liveness::Trusted`], idle less than [`TRUSTED_IDLE`]).
    pub fn checkout(&mut self, backend: usize, now: Instant, liveness: Liveness) -> Checkout<C> {
        let mut stale = 0;
        while let Some(key) = self.by_backend[backend].pop() {
            let idle = self.idle.remove(key);
            let idle_for = now.duration_since(idle.since);
            let trusted = liveness == Liveness::Trusted && idle_for < TRUSTED_IDLE;
            if idle_for < self.idle_timeout[backend] && (trusted || idle.conn.is_reusable()) {
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A connection whose liveness check answers `alive` and counts its
    /// calls.
    struct Fake {
        id: u32,
        alive: bool,
        checks: Rc<Cell<u32>>,
    }

    impl Reusable for Fake {
        fn is_reusable(&self) -> bool {
            self.checks.set(self.checks.get() + 1);
            self.alive
        }
    }

    fn fake(id: u32, alive: bool, checks: &Rc<Cell<u32>>) -> Fake {
        Fake {
            id,
            alive,
            checks: checks.clone(),
        }
    }

    fn pool() -> Pool<Fake> {
        Pool::new([(4, Duration::from_secs(60))])
    }

    fn hit_id(checkout: Checkout<Fake>) -> Option<u32> {
        match checkout {
            Checkout::Hit(conn) => Some(conn.id),
            Checkout::Miss { .. } => None,
        }
    }

    #[test]
    fn checked_checkout_skips_dead_connections_and_counts_them() {
        let (mut pool, checks, t0) = (pool(), Rc::new(Cell::new(0)), Instant::now());
        pool.checkin(0, fake(1, true, &checks), t0);
        pool.checkin(0, fake(2, false, &checks), t0);
        assert_eq!(hit_id(pool.checkout(0, t0, Liveness::Checked)), Some(1));
        assert_eq!(checks.get(), 2);
        assert!(matches!(
            pool.checkout(0, t0, Liveness::Checked),
            Checkout::Miss { stale: 0 }
        ));
    }

    #[test]
    fn trusted_checkout_skips_the_check_only_for_recently_idle_connections() {
        let (mut pool, checks, t0) = (pool(), Rc::new(Cell::new(0)), Instant::now());
        // Dead, but back in the pool just now: handed out unchecked.
        pool.checkin(0, fake(1, false, &checks), t0);
        let soon = t0 + TRUSTED_IDLE / 2;
        assert_eq!(hit_id(pool.checkout(0, soon, Liveness::Trusted)), Some(1));
        assert_eq!(checks.get(), 0);
        // Idle past TRUSTED_IDLE: checked, found dead, closed.
        pool.checkin(0, fake(2, false, &checks), t0);
        let later = t0 + TRUSTED_IDLE;
        assert!(matches!(
            pool.checkout(0, later, Liveness::Trusted),
            Checkout::Miss { stale: 1 }
        ));
        assert_eq!(checks.get(), 1);
    }

    #[test]
    fn expired_connections_are_never_handed_out() {
        let (mut pool, checks, t0) = (pool(), Rc::new(Cell::new(0)), Instant::now());
        pool.checkin(0, fake(1, true, &checks), t0);
        let expired = t0 + Duration::from_secs(60);
        assert!(matches!(
            pool.checkout(0, expired, Liveness::Trusted),
            Checkout::Miss { stale: 1 }
        ));
    }
}
