//! One process-wide monotonic epoch, so shared atomics can hold instants.
//!
//! Why: `Instant` cannot live in an atomic. Every time stored in a
//! [`super::BackendState`] is nanoseconds since [`epoch`], a `u64` good for
//! 584 years. Logic never reads the clock itself: callers pass `now` in (from
//! [`now_nanos`] in production, from a counter in tests).
//!
//! Invariant: `epoch()` is fixed at its first call and never moves, so
//! `now_nanos()` is monotonic across all threads.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process epoch: the first time any code asked for it.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at` (0 if `at` is earlier).
pub fn nanos_at(at: Instant) -> u64 {
    nanos(at.saturating_duration_since(epoch()))
}

/// Nanoseconds since [`epoch`], now.
pub fn now_nanos() -> u64 {
    nanos_at(Instant::now())
}

/// A duration in nanoseconds, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_relative_to_the_epoch() {
        let a = now_nanos();
        let b = now_nanos();
        assert!(b >= a);
        assert_eq!(nanos_at(epoch()), 0);
        assert_eq!(nanos(Duration::from_millis(3)), 3_000_000);
    }
}
