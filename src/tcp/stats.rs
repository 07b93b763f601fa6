//! The counters of the `[[tcp]]` listeners, shared by every worker and
//! kept across reloads by listener name.
//!
//! Why shared atomics rather than per-worker shards: a session touches
//! them a handful of times (start, end, and once per relayed chunk for the
//! bytes), not per request byte, and a scrape then needs no layout
//! mapping across reloads. A worker takes its `Arc<ListenerStats>` when a
//! config generation is built; the lock is never taken on a session's
//! path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::SessionEnd;
use crate::metrics::prometheus::escape_label;

/// Upper bounds of the session duration histogram, in seconds (`+Inf`
/// is implicit): sessions last from milliseconds to hours.
pub const SESSION_BUCKETS_S: [f64; 12] = [
    0.005, 0.05, 0.25, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0,
];

/// Most listener series kept; a listener beyond it (after many reloads
/// with new names) shares the last one.
const MAX_LISTENERS: usize = 1024;
/// Most upstream series per listener.
const MAX_UPSTREAMS: usize = 256;

/// One listener's counters.
#[derive(Debug)]
pub struct ListenerStats {
    pub name: String,
    /// Sessions relayed per upstream name.
    connections: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    /// Sessions open now (gauge).
    pub open: AtomicU64,
    /// Payload bytes read from clients, and written to them.
    pub from_clients: AtomicU64,
    pub to_clients: AtomicU64,
    /// Sessions refused, in the order of [`SessionEnd::REFUSALS`].
    refused: [AtomicU64; 4],
    /// Non-cumulative counts per bucket of [`SESSION_BUCKETS_S`], then +Inf.
    duration_buckets: [AtomicU64; SESSION_BUCKETS_S.len() + 1],
    duration_sum_us: AtomicU64,
}

impl ListenerStats {
    fn new(name: &str) -> ListenerStats {
        ListenerStats {
            name: name.to_owned(),
            connections: Mutex::new(Vec::new()),
            open: AtomicU64::new(0),
            from_clients: AtomicU64::new(0),
            to_clients: AtomicU64::new(0),
            refused: Default::default(),
            duration_buckets: Default::default(),
            duration_sum_us: AtomicU64::new(0),
        }
    }

    /// The session counter of `upstream` on this listener, made on first
    /// use; taken when a worker's config generation is built.
    pub fn connections(&self, upstream: &str) -> Arc<AtomicU64> {
        let mut all = lock(&self.connections);
        if let Some((_, counter)) = all.iter().find(|(name, _)| name == upstream) {
            return counter.clone();
        }
        let counter = Arc::new(AtomicU64::new(0));
        if all.len() < MAX_UPSTREAMS {
            all.push((upstream.to_owned(), counter.clone()));
        }
        counter
    }

    /// A session ended: its duration, and its refusal if it was refused.
    pub fn ended(&self, end: SessionEnd, duration: Duration) {
        if let Some(i) = SessionEnd::REFUSALS.iter().position(|r| *r == end) {
            self.refused[i].fetch_add(1, Relaxed);
        }
        let secs = duration.as_secs_f64();
        let bucket = SESSION_BUCKETS_S.partition_point(|&bound| bound < secs);
        self.duration_buckets[bucket].fetch_add(1, Relaxed);
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_us.fetch_add(us, Relaxed);
    }

    /// Sessions refused for `end` so far.
    pub fn refused(&self, end: SessionEnd) -> u64 {
        SessionEnd::REFUSALS
            .iter()
            .position(|r| *r == end)
            .map_or(0, |i| self.refused[i].load(Relaxed))
    }
}

/// Every listener's counters, by name.
#[derive(Debug, Default)]
pub struct TcpStats {
    listeners: Mutex<Vec<Arc<ListenerStats>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TcpStats {
    /// The counters of the listener named `name` (the same ones across
    /// reloads).
    pub fn listener(&self, name: &str) -> Arc<ListenerStats> {
        let mut all = lock(&self.listeners);
        if let Some(found) = all.iter().find(|l| l.name == name) {
            return found.clone();
        }
        if all.len() >= MAX_LISTENERS {
            return all[all.len() - 1].clone();
        }
        let made = Arc::new(ListenerStats::new(name));
        all.push(made.clone());
        made
    }

    /// The Prometheus families of every listener seen so far (nothing
    /// without `[[tcp]]` listeners).
    pub fn render(&self, out: &mut String) {
        let all = lock(&self.listeners).clone();
        if all.is_empty() {
            return;
        }
        // (name, type, help, each listener's samples as (more labels, value))
        type Samples = fn(&ListenerStats) -> Vec<(String, u64)>;
        let families: [(&str, &str, &str, Samples); 4] = [
            (
                "ringlb_tcp_connections_total",
                "counter",
                "TCP sessions relayed to a backend, by [[tcp]] listener and upstream.",
                |l| {
                    let all = lock(&l.connections);
                    all.iter()
                        .map(|(up, n)| (format!(",upstream=\"{}\"", label(up)), n.load(Relaxed)))
                        .collect()
                },
            ),
            (
                "ringlb_tcp_refused_total",
                "counter",
                "TCP sessions closed without a backend, by listener and reason.",
                |l| {
                    SessionEnd::REFUSALS
                        .iter()
                        .map(|end| (format!(",reason=\"{}\"", end.as_str()), l.refused(*end)))
                        .collect()
                },
            ),
            (
                "ringlb_tcp_connections_open",
                "gauge",
                "TCP sessions open now, by listener.",
                |l| vec![(String::new(), l.open.load(Relaxed))],
            ),
            (
                "ringlb_tcp_bytes_total",
                "counter",
                "Payload bytes relayed by [[tcp]] listeners: direction from_client (to the backend) or to_client.",
                |l| {
                    vec![
                        (",direction=\"from_client\"".into(), l.from_clients.load(Relaxed)),
                        (",direction=\"to_client\"".into(), l.to_clients.load(Relaxed)),
                    ]
                },
            ),
        ];
        for (name, kind, help, samples) in families {
            family(out, name, kind, help);
            for l in &all {
                let listener = label(&l.name);
                for (more, value) in samples(l) {
                    let _ = writeln!(out, "{name}{{listener=\"{listener}\"{more}}} {value}");
                }
            }
        }
        family(
            out,
            "ringlb_tcp_session_duration_seconds",
            "histogram",
            "How long TCP sessions lasted, from accept to close, by listener.",
        );
        for l in &all {
            let listener = label(&l.name);
            let mut cumulative = 0u64;
            for (i, bucket) in l.duration_buckets.iter().enumerate() {
                cumulative += bucket.load(Relaxed);
                let le = SESSION_BUCKETS_S
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| format!("{b}"));
                let _ = writeln!(
                    out,
                    "ringlb_tcp_session_duration_seconds_bucket{{listener=\"{listener}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = l.duration_sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "ringlb_tcp_session_duration_seconds_sum{{listener=\"{listener}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "ringlb_tcp_session_duration_seconds_count{{listener=\"{listener}\"}} {cumulative}"
            );
        }
    }
}

/// An escaped label value.
fn label(value: &str) -> String {
    let mut s = String::new();
    escape_label(value, &mut s);
    s
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_kept_by_name_and_rendered_per_listener() {
        let stats = TcpStats::default();
        let empty = {
            let mut s = String::new();
            stats.render(&mut s);
            s
        };
        assert!(empty.is_empty(), "no [[tcp]] listener, no families");
        let pg = stats.listener("pg");
        pg.connections("db").fetch_add(2, Relaxed);
        pg.from_clients.fetch_add(10, Relaxed);
        pg.to_clients.fetch_add(20, Relaxed);
        pg.ended(SessionEnd::Relayed, Duration::from_millis(20));
        pg.ended(SessionEnd::NoBackend, Duration::from_secs(7200));
        // A reload asks again by name: the same counters.
        assert!(Arc::ptr_eq(&pg, &stats.listener("pg")));
        assert!(Arc::ptr_eq(&pg.connections("db"), &pg.connections("db")));
        let mut text = String::new();
        stats.render(&mut text);
        for line in [
            "ringlb_tcp_connections_total{listener=\"pg\",upstream=\"db\"} 2",
            "ringlb_tcp_refused_total{listener=\"pg\",reason=\"no_backend\"} 1",
            "ringlb_tcp_refused_total{listener=\"pg\",reason=\"connect_failed\"} 0",
            "ringlb_tcp_bytes_total{listener=\"pg\",direction=\"from_client\"} 10",
            "ringlb_tcp_bytes_total{listener=\"pg\",direction=\"to_client\"} 20",
            "ringlb_tcp_session_duration_seconds_bucket{listener=\"pg\",le=\"0.05\"} 1",
            "ringlb_tcp_session_duration_seconds_bucket{listener=\"pg\",le=\"3600\"} 1",
            "ringlb_tcp_session_duration_seconds_bucket{listener=\"pg\",le=\"+Inf\"} 2",
            "ringlb_tcp_session_duration_seconds_count{listener=\"pg\"} 2",
            "ringlb_tcp_connections_open{listener=\"pg\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert_eq!(text.matches("# TYPE ringlb_tcp_bytes_total").count(), 1);
    }
}
