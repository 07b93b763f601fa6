//! The circuit breaker of one backend: closed, open, half-open, in one
//! atomic word shared by every worker.
//!
//! Why one word: the state, its counters and the time of the last change
//! must move together. With separate atomics a worker could see "open" with
//! the previous opening's time and let probes through early, or two workers
//! could both take the last half-open probe slot. Every transition is one
//! compare-and-swap of the whole word, so every reader sees a consistent
//! state and half-open never admits more than `half_open_probes` at once.
//!
//! ```text
//!            failures consecutive failures
//!   Closed ─────────────────────────────────▶ Open
//!     ▲                                      │ ▲
//!     │ successes probe successes   open_for │ │ any probe failure
//!     │                              elapsed ▼ │
//!     └──────────────────────────────────── HalfOpen
//! ```
//!
//! The word, low bits first:
//!
//! | bits  | field | Closed | Open | HalfOpen |
//! |-------|-------|--------|------|----------|
//! | 0-1   | phase | 0 | 1 | 2 |
//! | 2-12  | `a`   | consecutive failures | 0 | probe successes so far |
//! | 13-23 | `b`   | 0 | 0 | probes in flight |
//! | 24-63 | `t`   | ms since the epoch of the change into this phase |||
//!
//! Access rules: the word is only changed by CAS from a value just loaded
//! (`AcqRel`; nothing else is published through it, so the orderings are for
//! clarity, `Relaxed` would do). The counters are 11 bits; config caps every
//! threshold at 1000, so they never overflow. `t` is 40 bits of
//! milliseconds (34 years).
//!
//! Tickets: [`Breaker::admit`] returns a [`Ticket`]; a probe ticket
//! remembers the `t` of the half-open phase that issued it, so its result is
//! ignored if the breaker has since reopened and half-opened again (the
//! probe slot it held was already reset). An outcome of a `Normal` ticket
//! that lands while the breaker is open or half-open is also ignored: it
//! was admitted before the breaker opened and says nothing about now.

use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire};
use std::time::Duration;

use crate::config::BreakerConfig;

const PHASE_MASK: u64 = 0b11;
const COUNT_BITS: u32 = 11;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const A_SHIFT: u32 = 2;
const B_SHIFT: u32 = A_SHIFT + COUNT_BITS;
const T_SHIFT: u32 = B_SHIFT + COUNT_BITS;
const T_MASK: u64 = (1 << (64 - T_SHIFT)) - 1;

/// The breaker's phase, for stats and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; consecutive failures are counted.
    Closed,
    /// No requests until `open_for` has passed.
    Open,
    /// A bounded number of probe requests decide: close or reopen.
    HalfOpen,
}

/// What admission gave a request; hand it back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// Admitted while closed (or with no breaker).
    Normal,
    /// One of the half-open probe slots; `epoch` is the half-open phase's `t`.
    Probe { epoch: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    state: BreakerState,
    a: u64,
    b: u64,
    t_ms: u64,
}

impl Word {
    fn unpack(w: u64) -> Word {
        let state = match w & PHASE_MASK {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        };
        Word {
            state,
            a: (w >> A_SHIFT) & COUNT_MASK,
            b: (w >> B_SHIFT) & COUNT_MASK,
            t_ms: (w >> T_SHIFT) & T_MASK,
        }
    }

    fn pack(self) -> u64 {
        let phase = match self.state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        phase
            | (self.a & COUNT_MASK) << A_SHIFT
            | (self.b & COUNT_MASK) << B_SHIFT
            | (self.t_ms & T_MASK) << T_SHIFT
    }

    fn new(state: BreakerState, now_ms: u64) -> Word {
        Word {
            state,
            a: 0,
            b: 0,
            t_ms: now_ms,
        }
    }
}

fn ms(now_nanos: u64) -> u64 {
    (now_nanos / 1_000_000) & T_MASK
}

/// One backend's breaker: its policy and its shared word.
#[derive(Debug)]
pub struct Breaker {
    word: AtomicU64,
    failures: u64,
    successes: u64,
    probes: u64,
    open_for_ms: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: &BreakerConfig) -> Breaker {
        let cap = |n: u32| u64::from(n).min(COUNT_MASK);
        Breaker {
            word: AtomicU64::new(Word::new(BreakerState::Closed, 0).pack()),
            failures: cap(config.failures.get()),
            successes: cap(config.successes.get()),
            probes: cap(config.half_open_probes.get()),
            // Rounded up, and at least 1 ms so two half-open phases never
            // share an epoch.
            open_for_ms: u64::try_from(config.open_for.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX)
                .max(1),
        }
    }

    fn load(&self) -> Word {
        Word::unpack(self.word.load(Acquire))
    }

    /// Applies `f` to the word until the CAS succeeds; `f` returning `None`
    /// leaves it alone. Returns the word that was replaced and its
    /// replacement, or `None` if `f` declined.
    fn update(&self, mut f: impl FnMut(Word) -> Option<Word>) -> Option<(Word, Word)> {
        let mut current = self.word.load(Acquire);
        loop {
            let old = Word::unpack(current);
            let new = f(old)?;
            match self
                .word
                .compare_exchange_weak(current, new.pack(), AcqRel, Acquire)
            {
                Ok(_) => return Some((old, new)),
                Err(actual) => current = actual,
            }
        }
    }

    /// The phase and when it began (nanoseconds since the epoch, ms precision).
    pub fn state(&self) -> (BreakerState, u64) {
        let w = self.load();
        (w.state, w.t_ms * 1_000_000)
    }

    /// Whether [`Breaker::admit`] would let a request through now. Reads
    /// only; for balancer predicates.
    pub fn admits(&self, now: u64) -> bool {
        let w = self.load();
        match w.state {
            BreakerState::Closed => true,
            BreakerState::Open => ms(now).saturating_sub(w.t_ms) >= self.open_for_ms,
            BreakerState::HalfOpen => w.b < self.probes,
        }
    }

    /// Lets one request through, or not. Open turns half-open here once
    /// `open_for` has passed; a half-open admission takes a probe slot.
    pub fn admit(&self, now: u64) -> Option<Ticket> {
        let now_ms = ms(now);
        let (_, new) = self
            .update(|w| match w.state {
                BreakerState::Closed => None,
                BreakerState::Open if now_ms.saturating_sub(w.t_ms) >= self.open_for_ms => {
                    Some(Word {
                        b: 1,
                        ..Word::new(BreakerState::HalfOpen, now_ms)
                    })
                }
                BreakerState::Open => None,
                BreakerState::HalfOpen if w.b < self.probes => Some(Word { b: w.b + 1, ..w }),
                BreakerState::HalfOpen => None,
            })
            .or_else(|| {
                let w = self.load();
                (w.state == BreakerState::Closed).then_some((w, w))
            })?;
        Some(match new.state {
            BreakerState::HalfOpen => Ticket::Probe { epoch: new.t_ms },
            _ => Ticket::Normal,
        })
    }

    /// Records a request's result. Returns the new state if this changed it.
    pub fn record(&self, ticket: Ticket, success: bool, now: u64) -> Option<BreakerState> {
        let now_ms = ms(now);
        let (old, new) = self.update(|w| match (w.state, ticket) {
            (BreakerState::Closed, Ticket::Normal) if success => {
                (w.a != 0).then_some(Word { a: 0, ..w })
            }
            (BreakerState::Closed, Ticket::Normal) if w.a + 1 >= self.failures => {
                Some(Word::new(BreakerState::Open, now_ms))
            }
            (BreakerState::Closed, Ticket::Normal) => Some(Word { a: w.a + 1, ..w }),
            (BreakerState::HalfOpen, Ticket::Probe { epoch }) if epoch == w.t_ms => {
                if !success {
                    Some(Word::new(BreakerState::Open, now_ms))
                } else if w.a + 1 >= self.successes {
                    Some(Word::new(BreakerState::Closed, now_ms))
                } else {
                    Some(Word {
                        a: w.a + 1,
                        b: w.b.saturating_sub(1),
                        ..w
                    })
                }
            }
            _ => None,
        })?;
        (old.state != new.state).then_some(new.state)
    }

    /// Gives back a probe slot whose request ended without a result (the
    /// client went away first).
    pub fn release(&self, ticket: Ticket) {
        if let Ticket::Probe { epoch } = ticket {
            self.update(|w| {
                (w.state == BreakerState::HalfOpen && w.t_ms == epoch && w.b > 0)
                    .then_some(Word { b: w.b - 1, ..w })
            });
        }
    }

    /// The configured open time, for stats.
    pub fn open_for(&self) -> Duration {
        Duration::from_millis(self.open_for_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicU64 as Counter, Ordering::SeqCst};
    use std::sync::Arc;

    const MS: u64 = 1_000_000;

    fn breaker(failures: u32, successes: u32, probes: u32) -> Breaker {
        let n = |v| NonZeroU32::new(v).unwrap();
        Breaker::new(&BreakerConfig {
            failures: n(failures),
            successes: n(successes),
            open_for: Duration::from_millis(100),
            half_open_probes: n(probes),
        })
    }

    #[test]
    fn word_round_trips() {
        let w = Word {
            state: BreakerState::HalfOpen,
            a: 1000,
            b: 2047,
            t_ms: T_MASK,
        };
        assert_eq!(Word::unpack(w.pack()), w);
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 1, 1);
        for _ in 0..2 {
            assert_eq!(b.record(Ticket::Normal, false, MS), None);
        }
        // A success in between resets the count.
        assert_eq!(b.record(Ticket::Normal, true, MS), None);
        assert_eq!(b.record(Ticket::Normal, false, MS), None);
        assert_eq!(b.record(Ticket::Normal, false, MS), None);
        assert_eq!(
            b.record(Ticket::Normal, false, 5 * MS),
            Some(BreakerState::Open)
        );
        assert_eq!(b.state(), (BreakerState::Open, 5 * MS));
        assert!(!b.admits(6 * MS));
        assert_eq!(b.admit(104 * MS), None, "open_for not yet over");
    }

    #[test]
    fn half_open_closes_after_successes_and_reopens_on_failure() {
        let b = breaker(1, 2, 1);
        b.record(Ticket::Normal, false, 0);
        assert!(b.admits(100 * MS));
        let probe = b.admit(100 * MS).unwrap();
        assert_eq!(probe, Ticket::Probe { epoch: 100 });
        assert_eq!(b.state().0, BreakerState::HalfOpen);
        assert_eq!(b.admit(100 * MS), None, "one probe slot");
        assert_eq!(b.record(probe, true, 110 * MS), None);
        let probe = b.admit(111 * MS).unwrap();
        assert_eq!(b.record(probe, true, 120 * MS), Some(BreakerState::Closed));
        assert_eq!(b.admit(121 * MS), Some(Ticket::Normal));

        // Reopen from half-open on a failed probe.
        b.record(Ticket::Normal, false, 200 * MS);
        let probe = b.admit(300 * MS).unwrap();
        assert_eq!(b.record(probe, false, 301 * MS), Some(BreakerState::Open));
        assert_eq!(b.admit(302 * MS), None);
    }

    #[test]
    fn stale_results_are_ignored() {
        let b = breaker(1, 1, 1);
        b.record(Ticket::Normal, false, 0);
        let old_probe = b.admit(100 * MS).unwrap();
        // A normal request admitted before opening finishes now: ignored.
        assert_eq!(b.record(Ticket::Normal, false, 100 * MS), None);
        assert_eq!(b.state().0, BreakerState::HalfOpen);
        // Reopen through a second path, then half-open again.
        assert_eq!(
            b.record(old_probe, false, 150 * MS),
            Some(BreakerState::Open)
        );
        let new_probe = b.admit(250 * MS).unwrap();
        // The old probe's late success does not count for the new phase.
        assert_eq!(b.record(old_probe, true, 251 * MS), None);
        assert_eq!(b.state().0, BreakerState::HalfOpen);
        assert_eq!(
            b.record(new_probe, true, 252 * MS),
            Some(BreakerState::Closed)
        );
    }

    #[test]
    fn released_probe_slot_is_reusable() {
        let b = breaker(1, 1, 1);
        b.record(Ticket::Normal, false, 0);
        let probe = b.admit(100 * MS).unwrap();
        assert!(!b.admits(100 * MS));
        b.release(probe);
        assert!(b.admits(100 * MS));
        assert!(b.admit(100 * MS).is_some());
    }

    #[test]
    fn threads_hammering_half_open_never_exceed_the_probe_limit() {
        const PROBES: u32 = 3;
        let b = Arc::new(breaker(1, 1000, PROBES));
        b.record(Ticket::Normal, false, 0);
        let in_probe = Arc::new(Counter::new(0));
        let max_seen = Arc::new(Counter::new(0));
        let admitted = Arc::new(Counter::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, in_probe, max_seen, admitted) = (
                    b.clone(),
                    in_probe.clone(),
                    max_seen.clone(),
                    admitted.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(ticket) = b.admit(100 * MS) {
                            let now = in_probe.fetch_add(1, SeqCst) + 1;
                            max_seen.fetch_max(now, SeqCst);
                            admitted.fetch_add(1, SeqCst);
                            std::hint::spin_loop();
                            in_probe.fetch_sub(1, SeqCst);
                            b.release(ticket);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(max_seen.load(SeqCst) <= u64::from(PROBES));
        assert!(admitted.load(SeqCst) > 0);
        assert_eq!(b.state().0, BreakerState::HalfOpen);
    }
}
