//! When to retry a failed attempt on another backend, how long to wait,
//! and how many retries a worker may spend.
//!
//! Why a budget as well as an attempt limit: with `attempts = 3` and every
//! backend failing, retries alone would triple the load on an upstream
//! that is already drowning. The budget caps retries at a fraction of
//! recent requests, so a retry storm cannot outgrow the traffic that
//! caused it (linkerd's and Finagle's retry budget).
//!
//! Rules:
//! - A retry needs: attempts left, a failure kind listed in `on`, a body
//!   that can be sent again (empty, or kept whole because it fit in
//!   `retry_buffer`), and an idempotent method *or* a request that never
//!   reached the backend (a connect failure: nothing was sent).
//! - The wait before retry `n` (1-based) is `backoff × 2^(n-1)`, capped at
//!   `max_backoff`; with `jitter`, a uniform draw in `0..=` that ("full
//!   jitter"), so retries of many clients do not line up.
//! - [`RetryBudget`] is per worker, `&mut self`, no atomics: a token bucket
//!   in which each request deposits `budget` tokens and each retry
//!   withdraws one. On top, a floor of [`BUDGET_FLOOR_PER_SEC`] tokens a
//!   second refills continuously so a quiet worker can still retry, and
//!   the bucket starts with one second of floor. Tokens are capped at
//!   [`BUDGET_CAPACITY`] so a long calm does not bank a storm. So over any
//!   run of `T` seconds with `R` requests, retries ≤ `budget·R +
//!   BUDGET_FLOOR_PER_SEC·(T + 1)`. Time is passed in (ns since the epoch).

use std::time::Duration;

use crate::config::{RetryConfig, RetryOn};

/// Retries a second each worker may make whatever the traffic.
pub const BUDGET_FLOOR_PER_SEC: u64 = 10;
/// Most tokens a worker's bucket holds.
pub const BUDGET_CAPACITY: u64 = 100;

/// Units per token: one token is 1e9 units, so the floor adds exactly
/// `BUDGET_FLOOR_PER_SEC` units per nanosecond.
const UNIT: u64 = 1_000_000_000;

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Refused or timed out while connecting: nothing was sent.
    Connect,
    /// Reset, or closed before a complete response head.
    Reset,
    /// No response head within the response timeout.
    Timeout,
    /// A response head arrived with this status.
    Status(u16),
}

/// An upstream's retry rules, from its `[retry]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    jitter: bool,
    on: RetryOn,
    retry_buffer: usize,
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig) -> RetryPolicy {
        RetryPolicy {
            attempts: config.attempts.get(),
            backoff: config.backoff,
            max_backoff: config.max_backoff,
            jitter: config.jitter,
            on: config.on,
            retry_buffer: config.retry_buffer,
        }
    }

    /// Tries in all, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The most body bytes kept for a replay (`retry_buffer`).
    pub fn retry_buffer(&self) -> usize {
        self.retry_buffer
    }

    /// Whether a body of `len` bytes may be kept for replay.
    pub fn body_fits(&self, len: u64) -> bool {
        len <= self.retry_buffer as u64
    }

    /// Whether `kind` is listed in `on`.
    pub fn retries_on(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::Connect => self.on.connect(),
            FailureKind::Reset => self.on.reset(),
            FailureKind::Timeout => self.on.timeout(),
            FailureKind::Status(s) => self.on.status(s),
        }
    }

    /// Whether to try again after `attempts_made` tries ended in `kind`.
    /// `request_sent`: any byte of the request reached the backend.
    /// `body_replayable`: the body is empty or was kept whole. The budget
    /// is checked separately ([`RetryBudget::try_withdraw`]), last.
    pub fn should_retry(
        &self,
        attempts_made: u32,
        kind: FailureKind,
        idempotent: bool,
        request_sent: bool,
        body_replayable: bool,
    ) -> bool {
        attempts_made < self.attempts
            && self.retries_on(kind)
            && body_replayable
            && (idempotent || !request_sent)
    }

    /// The wait before retry number `retry` (1 = the first retry).
    pub fn backoff(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let doublings = retry.saturating_sub(1).min(32);
        let base = self
            .backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff);
        if !self.jitter || base.is_zero() {
            return base;
        }
        Duration::from_nanos(rng.u64(..=super::clock::nanos(base)))
    }
}

/// A worker's retry budget: a token bucket, see the module docs.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// Units deposited per request (`budget × UNIT`).
    per_request: u64,
    tokens: u64,
    last: u64,
}

impl RetryBudget {
    /// `ratio` in 0.0..=1.0; `now` in ns since the epoch.
    pub fn new(ratio: f64, now: u64) -> RetryBudget {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        RetryBudget {
            per_request: (ratio * UNIT as f64) as u64,
            tokens: BUDGET_FLOOR_PER_SEC * UNIT,
            last: now,
        }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        let add = elapsed.saturating_mul(BUDGET_FLOOR_PER_SEC);
        self.tokens = self.tokens.saturating_add(add).min(BUDGET_CAPACITY * UNIT);
    }

    /// Once per request (first attempts only).
    pub fn deposit(&mut self, now: u64) {
        self.refill(now);
        self.tokens = self
            .tokens
            .saturating_add(self.per_request)
            .min(BUDGET_CAPACITY * UNIT);
    }

    /// Once per retry; false means do not retry.
    pub fn try_withdraw(&mut self, now: u64) -> bool {
        self.refill(now);
        if self.tokens >= UNIT {
            self.tokens -= UNIT;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn policy(attempts: u32, jitter: bool) -> RetryPolicy {
        RetryPolicy::new(&RetryConfig {
            attempts: NonZeroU32::new(attempts).unwrap(),
            jitter,
            ..RetryConfig::disabled()
        })
    }

    #[test]
    fn should_retry_rules() {
        let p = policy(3, true);
        let s503 = FailureKind::Status(503);
        assert!(p.should_retry(1, s503, true, true, true));
        assert!(p.should_retry(2, s503, true, true, true));
        assert!(
            !p.should_retry(3, s503, true, true, true),
            "attempts used up"
        );
        assert!(
            !p.should_retry(1, FailureKind::Status(500), true, true, true),
            "not in on"
        );
        assert!(
            !p.should_retry(1, FailureKind::Timeout, true, true, true),
            "not in on"
        );
        assert!(p.should_retry(1, FailureKind::Reset, true, true, true));
        assert!(
            !p.should_retry(1, s503, false, true, true),
            "POST that was sent"
        );
        assert!(
            p.should_retry(1, FailureKind::Connect, false, false, true),
            "POST never sent"
        );
        assert!(
            !p.should_retry(1, s503, true, true, false),
            "streamed body not kept"
        );
        assert!(!policy(1, true).should_retry(1, FailureKind::Connect, true, false, true));
        assert!(p.body_fits(65_536) && !p.body_fits(65_537));
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let p = policy(10, false);
        let mut rng = fastrand::Rng::with_seed(1);
        let got: Vec<u128> = (1..=8)
            .map(|n| p.backoff(n, &mut rng).as_millis())
            .collect();
        assert_eq!(got, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(u32::MAX, &mut rng), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_the_base() {
        let p = policy(10, true);
        let mut rng = fastrand::Rng::with_seed(2);
        let draws: Vec<Duration> = (0..1000).map(|_| p.backoff(3, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(100)));
        let mean = draws.iter().sum::<Duration>() / 1000;
        assert!(mean > Duration::from_millis(40) && mean < Duration::from_millis(60));
    }

    #[test]
    fn budget_caps_retries_when_everything_fails() {
        // 10,000 requests over 10 s, every attempt failing, 3 attempts each.
        let ratio = 0.2;
        let mut budget = RetryBudget::new(ratio, 0);
        let (requests, seconds) = (10_000u64, 10u64);
        let mut retries = 0u64;
        for r in 0..requests {
            let now = r * seconds * 1_000_000_000 / requests;
            budget.deposit(now);
            for _ in 0..2 {
                if budget.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        let bound = (ratio * requests as f64) as u64 + BUDGET_FLOOR_PER_SEC * (seconds + 1);
        assert!(retries <= bound, "{retries} > {bound}");
        // And the budget is actually usable: close to the bound.
        assert!(retries >= 2_000, "{retries}");
    }

    #[test]
    fn floor_refills_and_capacity_caps() {
        let mut budget = RetryBudget::new(0.0, 0);
        let taken = (0..100).filter(|_| budget.try_withdraw(0)).count();
        assert_eq!(
            taken as u64, BUDGET_FLOOR_PER_SEC,
            "starts with one second of floor"
        );
        assert!(
            budget.try_withdraw(100_000_000),
            "0.1 s of floor is one token"
        );
        assert!(!budget.try_withdraw(100_000_000));
        // An hour of calm banks only the capacity.
        let hour = 3_600 * 1_000_000_000;
        let taken = (0..1_000).filter(|_| budget.try_withdraw(hour)).count();
        assert_eq!(taken as u64, BUDGET_CAPACITY);
    }
}
