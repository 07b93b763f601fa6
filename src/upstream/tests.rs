//! `BackendState`: availability, admission, passive ejection and recovery,
//! breaker wiring, stats. Time is a plain counter in nanoseconds.

use super::*;
use crate::config::BreakerConfig;
use std::num::NonZeroU32;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const OK: Outcome = Outcome::Response(200);

fn state(policy: BackendPolicy) -> Arc<BackendState> {
    Arc::new(BackendState::new(policy))
}

fn breaker(failures: u32) -> Option<BreakerConfig> {
    Some(BreakerConfig {
        failures: NonZeroU32::new(failures).unwrap(),
        successes: NonZeroU32::new(1).unwrap(),
        open_for: Duration::from_secs(1),
        half_open_probes: NonZeroU32::new(1).unwrap(),
    })
}

#[test]
fn default_is_available_and_counts() {
    let s = state(BackendPolicy::default());
    assert!(s.is_available() && s.is_available_at(0));
    let a = s.try_acquire(0).unwrap();
    assert!(!a.is_probe());
    assert_eq!((s.requests(), s.in_flight()), (1, 1));
    let changes = a.finish(OK, Duration::from_millis(4), 0);
    assert!(changes.is_empty());
    assert_eq!((s.in_flight(), s.failures()), (0, 0));
    assert_eq!(s.latency_ewma(), Duration::from_millis(4));
}

#[test]
fn draining_and_unhealthy_are_not_available() {
    let s = state(BackendPolicy::default());
    s.set_draining(true);
    assert!(!s.is_available_at(0));
    assert!(s.try_acquire(0).is_none());
    s.set_draining(false);
    assert!(s.set_health(false, 5));
    assert!(!s.set_health(false, 6), "no change");
    assert!(!s.is_available_at(10 * SEC));
    assert!(s.try_acquire(10 * SEC).is_none());
    assert_eq!(s.stats(7).health_since, Duration::from_nanos(2));
    // Forced admission (panic mode) ignores health.
    drop(s.admit_forced());
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn start_unhealthy_when_configured() {
    let s = state(BackendPolicy {
        start_healthy: false,
        active_checks: true,
        ..BackendPolicy::default()
    });
    assert_eq!(s.health(), Health::Unhealthy);
    assert!(!s.is_available_at(0));
}

#[test]
fn passive_ejection_then_probe_recovery_without_active_checks() {
    let s = state(BackendPolicy::default()); // fall 3, cool-down 10 s
    for _ in 0..2 {
        assert!(s
            .record_outcome(Outcome::ConnectFailure, Duration::ZERO, SEC)
            .is_empty());
    }
    // A success resets the streak.
    let _ = s.record_outcome(OK, Duration::ZERO, SEC);
    let _ = s.record_outcome(Outcome::Response(502), Duration::ZERO, SEC);
    let _ = s.record_outcome(Outcome::Reset, Duration::ZERO, SEC);
    let c = s.record_outcome(Outcome::Timeout, Duration::ZERO, 2 * SEC);
    assert_eq!(c.healthy, Some(false));
    assert_eq!(s.health(), Health::Ejected);
    assert_eq!(s.failures(), 5);
    assert!(!s.is_available_at(11 * SEC), "cool-down not over");
    // After the cool-down exactly one probe is let through.
    assert!(s.is_available_at(12 * SEC));
    let probe = s.try_acquire(12 * SEC).unwrap();
    assert!(probe.is_probe());
    assert!(!s.is_available_at(12 * SEC));
    assert!(s.try_acquire(12 * SEC).is_none());
    // A failed probe restarts the cool-down.
    let _ = probe.finish(Outcome::Response(503), Duration::ZERO, 13 * SEC);
    assert!(!s.is_available_at(22 * SEC));
    let probe = s.try_acquire(23 * SEC).unwrap();
    let c = probe.finish(OK, Duration::ZERO, 23 * SEC);
    assert_eq!(c.healthy, Some(true));
    assert_eq!(s.health(), Health::Healthy);
}

#[test]
fn dropped_probe_releases_its_slot() {
    let s = state(BackendPolicy {
        passive_fall: 1,
        ..BackendPolicy::default()
    });
    let _ = s.record_outcome(Outcome::Reset, Duration::ZERO, 0);
    let probe = s.try_acquire(10 * SEC).unwrap();
    assert!(s.try_acquire(10 * SEC).is_none());
    drop(probe);
    assert!(s.try_acquire(10 * SEC).is_some());
}

#[test]
fn ejected_with_active_checks_waits_for_the_checker() {
    let s = state(BackendPolicy {
        passive_fall: 1,
        active_checks: true,
        ..BackendPolicy::default()
    });
    let _ = s.record_outcome(Outcome::ConnectFailure, Duration::ZERO, 0);
    assert!(!s.is_available_at(3_600 * SEC));
    assert!(s.set_health(true, 3_600 * SEC));
    assert!(s.is_available_at(3_600 * SEC));
}

#[test]
fn passive_fall_zero_never_ejects() {
    let s = state(BackendPolicy {
        passive_fall: 0,
        ..BackendPolicy::default()
    });
    for _ in 0..100 {
        let _ = s.record_outcome(Outcome::ConnectFailure, Duration::ZERO, 0);
    }
    assert_eq!(s.health(), Health::Healthy);
}

#[test]
fn breaker_opens_half_opens_and_closes_through_admissions() {
    let s = state(BackendPolicy {
        passive_fall: 0,
        breaker: breaker(2),
        ..BackendPolicy::default()
    });
    for now in [0, MS] {
        let a = s.try_acquire(now).unwrap();
        let c = a.finish(Outcome::Response(500), Duration::ZERO, now);
        if now == MS {
            assert_eq!(c.breaker, Some(BreakerState::Open));
        }
    }
    assert!(!s.is_available_at(500 * MS));
    assert!(s.try_acquire(500 * MS).is_none());
    let probe = s.try_acquire(1_001 * MS).unwrap();
    assert!(probe.is_probe());
    assert!(
        !s.is_available_at(1_001 * MS),
        "the one probe slot is taken"
    );
    let c = probe.finish(OK, Duration::ZERO, 1_002 * MS);
    assert_eq!(c.breaker, Some(BreakerState::Closed));
    let stats = s.stats(1_005 * MS);
    assert_eq!(stats.breaker.map(|b| b.0), Some(BreakerState::Closed));
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.failures, 2);
}

#[test]
fn ewma_moves_an_eighth_of_the_way() {
    let s = state(BackendPolicy::default());
    let _ = s.record_outcome(OK, Duration::from_micros(800), 0);
    let _ = s.record_outcome(OK, Duration::from_micros(1_600), 0);
    assert_eq!(s.latency_ewma(), Duration::from_micros(900));
    // Failures without a response do not move it.
    let _ = s.record_outcome(Outcome::ConnectFailure, Duration::from_secs(3), 0);
    assert_eq!(s.latency_ewma(), Duration::from_micros(900));
}

#[test]
fn outcome_failure_classes() {
    assert!(!OK.is_failure());
    assert!(!Outcome::Response(404).is_failure());
    assert!(Outcome::Response(500).is_failure());
    assert!(Outcome::Reset.is_failure());
    assert!(Outcome::Timeout.is_failure());
    assert!(Outcome::ConnectFailure.is_failure());
}

#[test]
fn policy_from_config() {
    let src = "[server]\nlisten = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n\
               [upstreams.a]\nbackends = [{ addr = \"10.0.0.1:80\" }]\npassive_fall = 7\n\
               [upstreams.a.health]\nstart = \"unhealthy\"\n[upstreams.a.breaker]\n";
    let config = crate::config::Config::from_toml_str(src, std::path::Path::new("t")).unwrap();
    let p = BackendPolicy::from_upstream(&config.upstreams[0]);
    assert_eq!(p.passive_fall, 7);
    assert!(p.active_checks && !p.start_healthy);
    assert_eq!(p.breaker, Some(BreakerConfig::default()));
}
