//! `rate_limit = { rate, burst, key }` of a route: a GCRA limit held in
//! the process-wide table of [`super::shared::Shared`].
//!
//! Why GCRA: one `u64` per key (the theoretical arrival time, TAT) updated
//! by compare-and-swap, so all workers share one exact limit without a
//! lock; it is a token bucket of `burst` tokens refilled at `rate`.
//!
//! Semantics: `rate = "N/s"` (or `/m`, `/h`) lets a key through at N per
//! period on average, and up to `burst` at once (default 1: evenly spaced,
//! like nginx `limit_req` without `burst`). A request over the limit gets
//! 429 with `Retry-After` (whole seconds until one would pass, at least 1).
//! `key = "client_ip"` (default) counts per client address (after
//! `trusted_proxies`); `key = "header:NAME"` per value of that field, and a
//! request without the field counts under its client address, so leaving
//! the field out does not escape the limit.
//!
//! Invariants: a request is judged once, when its head is routed: a retry
//! to another backend, or the proxy's re-send on a fresh connection, is not
//! a second request. A CORS preflight answered by the proxy is not counted.
//! The cell of a key is chosen by the hash of the route's identity (host,
//! prefix, conditions: stable across reloads that keep the route) and the
//! key; a reload keeps the cells, so it neither resets limits nor lets a
//! burst through, and a changed rate applies from the next request.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::LocalReply;
use crate::proxy::filter::{Filter, RequestCtx};

/// The 429 body's reason.
pub const LIMITED: &str = "the route's rate limit is exceeded";

/// What requests are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    /// A field name, lowercase.
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Nanoseconds between requests at the average rate (> 0).
    pub interval: u64,
    /// Requests let through at once (>= 1).
    pub burst: u32,
    pub key: RateKey,
    /// The route's identity, part of every cell's hash.
    pub identity: String,
}

/// Parses `"N/s"`, `"N/m"` or `"N/h"` (also `sec`, `min`, `hour`) into
/// the interval between requests, in nanoseconds.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let err = || format!("{text:?} is not a rate like \"100/s\", \"30/m\" or \"1000/h\"");
    let (count, unit) = text.split_once('/').ok_or_else(err)?;
    let count: u64 = count.trim().parse().map_err(|_| err())?;
    let period: u64 = match unit.trim() {
        "s" | "sec" | "second" => 1_000_000_000,
        "m" | "min" | "minute" => 60_000_000_000,
        "h" | "hour" => 3_600_000_000_000,
        _ => return Err(err()),
    };
    if count == 0 {
        return Err(format!("{text:?}: the rate must be at least 1 per period"));
    }
    if count > 1_000_000_000 {
        return Err(format!("{text:?}: at most 1000000000 per period"));
    }
    Ok(period / count)
}

/// GCRA on one cell: `Ok` lets the request through (and moves the cell's
/// TAT), `Err(wait)` is how many nanoseconds until one would pass.
pub fn admit(cell: &AtomicU64, now: u64, interval: u64, burst: u32) -> Result<(), u64> {
    let tolerance = interval.saturating_mul(u64::from(burst));
    let mut tat = cell.load(Ordering::Acquire);
    loop {
        let next = tat.max(now).saturating_add(interval);
        let ahead = next - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(current) => tat = current,
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1 (`Retry-After`).
pub fn retry_after_secs(wait_nanos: u64) -> u64 {
    wait_nanos.div_ceil(1_000_000_000).max(1)
}

impl Filter for RateLimit {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        let shared = req.shared;
        let header = match &self.key {
            RateKey::ClientIp => None,
            RateKey::Header(name) => req
                .head
                .headers()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v),
        };
        let hash = match header {
            Some(value) => shared.hash((self.identity.as_str(), 1u8, value)),
            None => shared.hash((self.identity.as_str(), 0u8, req.client_ip)),
        };
        match admit(shared.rate_cell(hash), req.now, self.interval, self.burst) {
            Ok(()) => Ok(()),
            Err(wait) => {
                shared.count_rate_limited(req.route);
                use std::io::Write as _;
                let _ = write!(
                    req.reply_fields,
                    "Retry-After: {}\r\n",
                    retry_after_secs(wait)
                );
                Err(LocalReply::TooManyRequests(LIMITED))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn rates_parse_to_intervals() {
        assert_eq!(parse_rate("100/s"), Ok(SEC / 100));
        assert_eq!(parse_rate("1/m"), Ok(60 * SEC));
        assert_eq!(parse_rate("2/hour"), Ok(1800 * SEC));
        assert!(parse_rate("0/s").unwrap_err().contains("at least 1"));
        assert!(parse_rate("5").is_err());
        assert!(parse_rate("5/d").is_err());
        assert!(parse_rate("-1/s").is_err());
        assert!(parse_rate("2000000000/s").is_err());
    }

    #[test]
    fn burst_passes_at_once_then_the_rate() {
        let cell = AtomicU64::new(0);
        let now = 5 * SEC;
        // 1/s, burst 3: three at once, the fourth waits a second.
        for _ in 0..3 {
            assert_eq!(admit(&cell, now, SEC, 3), Ok(()));
        }
        assert_eq!(admit(&cell, now, SEC, 3), Err(SEC));
        assert_eq!(admit(&cell, now + SEC / 2, SEC, 3), Err(SEC / 2));
        assert_eq!(admit(&cell, now + SEC, SEC, 3), Ok(()));
        assert!(admit(&cell, now + SEC, SEC, 3).is_err());
        // Idle long enough refills the whole burst, no more.
        let later = now + 100 * SEC;
        for _ in 0..3 {
            assert_eq!(admit(&cell, later, SEC, 3), Ok(()));
        }
        assert!(admit(&cell, later, SEC, 3).is_err());
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(SEC), 1);
        assert_eq!(retry_after_secs(SEC + 1), 2);
        assert_eq!(retry_after_secs(0), 1);
    }

    #[test]
    fn threads_share_one_limit_exactly() {
        let cell = std::sync::Arc::new(AtomicU64::new(0));
        let passed = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (cell, passed) = (cell.clone(), passed.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if admit(&cell, SEC, 60 * SEC, 50).is_ok() {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(passed.load(Ordering::Relaxed), 50);
    }
}
