//! The Prometheus text exposition format, version 0.0.4, written by hand
//! from one table of families (`families`).
//!
//! Why by hand: the values are sums over worker shards taken at scrape
//! time ([`Snapshot`]); the format is small (HELP and TYPE lines, samples
//! with escaped label values, histograms as cumulative `_bucket{le}` plus
//! `_sum` and `_count`), and writing it directly keeps the request path
//! free of any library's metric objects.
//!
//! Invariants: every family name starts with `ringlb_`; each family's HELP
//! and TYPE come once, before its samples; label values are escaped
//! (`\\`, `\"`, `\n`); labelled counters are written only when non-zero, so
//! the output stays small with many backends.

use std::fmt::Write as _;

use super::{
    BackendView, LocalShortage, Method, Snapshot, Totals, UpstreamTotals, DURATION_BUCKETS_US,
    STATUS_CLASSES,
};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One extra unlabelled sample the caller owns (access log drops, config
/// load time, workers).
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Must start with `ringlb_`; counters end in `_total`.
    pub name: &'a str,
    pub help: &'a str,
    pub kind: Kind,
    pub value: f64,
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        debug_assert!(name.starts_with("ringlb_"));
        // HELP text escapes backslash and newline only.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A float as Prometheus writes it (`+Inf`, `-Inf`, `NaN`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Where a family's samples come from.
enum Source<B> {
    /// One unlabelled sample from the process-wide totals.
    Total(fn(&Totals) -> String),
    /// One sample per configured upstream, labelled `upstream`.
    PerUpstream(fn(&UpstreamTotals) -> u64),
    /// One sample per backend from its shared state, labelled `upstream`
    /// and `backend`.
    PerBackend(fn(&B) -> u64),
    /// A family with its own labels, written by its own function.
    Labelled(fn(&mut Writer, &Snapshot)),
}

/// One metric family: its name, type, help and samples.
struct Family<B> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    source: Source<B>,
}

/// Every family, in the order of the exposition.
fn families<B: BackendView>() -> Vec<Family<B>> {
    use Source::{Labelled, PerBackend, PerUpstream, Total};
    let family = |name, kind, help, source| Family {
        name,
        kind,
        help,
        source,
    };
    let (counter, gauge, histogram) = ("counter", "gauge", "histogram");
    vec![
        family(
            "ringlb_requests_total",
            counter,
            "Requests answered, by upstream, backend (empty: answered locally), method and status class.",
            Labelled(requests),
        ),
        family(
            "ringlb_request_duration_seconds",
            histogram,
            "Time from the request head's first byte to the response's last byte, by upstream.",
            Labelled(durations),
        ),
        family(
            "ringlb_responses_total",
            counter,
            "Responses written to clients by status class (1xx excluded).",
            Labelled(responses),
        ),
        family("ringlb_request_heads_total", counter, "Request heads parsed.", Total(|t| t.requests.to_string())),
        family("ringlb_requests_in_flight", gauge, "Requests being served.", Total(|t| t.requests_in_flight.to_string())),
        family(
            "ringlb_client_connections_accepted_total",
            counter,
            "Client connections accepted.",
            Total(|t| t.connections_accepted.to_string()),
        ),
        family("ringlb_client_connections_open", gauge, "Client connections open.", Total(|t| t.connections_open.to_string())),
        family(
            "ringlb_client_connections_parked",
            gauge,
            "Client connections idle past the 1 s grace, waiting with no task and no buffer.",
            Total(|t| t.connections_parked.to_string()),
        ),
        family(
            "ringlb_upstream_connections_opened_total",
            counter,
            "Connections opened to backends.",
            PerUpstream(|u| u.connects),
        ),
        family(
            "ringlb_upstream_connect_failures_total",
            counter,
            "Connections to backends that failed to open.",
            PerUpstream(|u| u.connect_failures),
        ),
        family(
            "ringlb_upstream_connections_open",
            gauge,
            "Connections to backends open (in use or pooled).",
            PerUpstream(|u| u.connections_open),
        ),
        family("ringlb_pool_hits_total", counter, "Upstream requests sent on a pooled connection.", Total(|t| t.pool_hits.to_string())),
        family(
            "ringlb_pool_misses_total",
            counter,
            "Upstream requests that needed a new connection.",
            Total(|t| t.pool_misses.to_string()),
        ),
        family(
            "ringlb_pool_stale_total",
            counter,
            "Pooled connections found closed or expired and dropped.",
            Total(|t| t.pool_stale.to_string()),
        ),
        family(
            "ringlb_pool_reuse_ratio",
            gauge,
            "pool hits / (hits + misses) since start.",
            Total(|t| float(t.pool_reuse_ratio())),
        ),
        family("ringlb_client_bytes_received_total", counter, "Bytes read from clients.", Total(|t| t.bytes_from_clients.to_string())),
        family("ringlb_client_bytes_sent_total", counter, "Bytes written to clients.", Total(|t| t.bytes_to_clients.to_string())),
        family("ringlb_upstream_bytes_sent_total", counter, "Bytes written to backends.", Total(|t| t.bytes_to_upstreams.to_string())),
        family("ringlb_upstream_bytes_received_total", counter, "Bytes read from backends.", Total(|t| t.bytes_from_upstreams.to_string())),
        family(
            "ringlb_retries_total",
            counter,
            "Requests sent again: on a fresh connection after a pooled one failed, or to another backend by the retry policy.",
            Labelled(retries),
        ),
        family(
            "ringlb_retries_refused_total",
            counter,
            "Retries refused by the retry budget.",
            PerUpstream(|u| u.retries_refused),
        ),
        family(
            "ringlb_overload_rejections_total",
            counter,
            "Connections over max_connections answered 503 (or closed) at once, with overload = \"reject\".",
            Total(|t| t.overload_rejections.to_string()),
        ),
        family(
            "ringlb_connections_per_ip_rejected_total",
            counter,
            "Connections closed at once because their client address held max_connections_per_ip already.",
            Total(|t| t.connections_per_ip_rejected.to_string()),
        ),
        family(
            "ringlb_connections_denied_total",
            counter,
            "Connections closed at once by a listener's allow/deny rules.",
            Total(|t| t.connections_denied.to_string()),
        ),
        family(
            "ringlb_proxy_protocol_headers_total",
            counter,
            "PROXY protocol headers accepted on proxy_protocol listeners.",
            Total(|t| t.proxy_protocol_headers.to_string()),
        ),
        family(
            "ringlb_proxy_protocol_rejections_total",
            counter,
            "Connections closed before their PROXY protocol header was accepted, by reason (untrusted, malformed, timeout).",
            Labelled(proxy_protocol_rejections),
        ),
        family(
            "ringlb_accept_errors_total",
            counter,
            "Client accepts that failed (out of fds or memory); the accept loop backs off 50 ms.",
            Total(|t| t.accept_errors.to_string()),
        ),
        family(
            "ringlb_local_errors_total",
            counter,
            "Upstream connects that failed for a local shortage (fds, buffers, ephemeral ports), by kind; not counted against backends.",
            Labelled(local_errors),
        ),
        family("ringlb_health_checks_total", counter, "Active health checks by result.", Labelled(health_checks)),
        family(
            "ringlb_backend_healthy",
            gauge,
            "1 if the backend passes health checks.",
            PerBackend(|b| u64::from(b.healthy())),
        ),
        family(
            "ringlb_backend_draining",
            gauge,
            "1 if the backend is drained by an operator.",
            PerBackend(|b| u64::from(b.draining())),
        ),
        family(
            "ringlb_backend_breaker_state",
            gauge,
            "Circuit breaker: 0 closed, 1 open, 2 half-open.",
            PerBackend(|b| u64::from(b.breaker_state())),
        ),
        family(
            "ringlb_backend_in_flight",
            gauge,
            "Requests in flight to the backend, all workers.",
            PerBackend(|b| b.in_flight()),
        ),
        family(
            "ringlb_tls_handshakes_total",
            counter,
            "TLS handshakes completed with clients.",
            Total(|t| t.tls_handshakes.to_string()),
        ),
        family(
            "ringlb_tls_handshake_failures_total",
            counter,
            "TLS handshakes with clients that failed.",
            Total(|t| t.tls_handshake_failures.to_string()),
        ),
        family("ringlb_config_reloads_total", counter, "Config reloads applied.", Total(|t| t.config_reloads.to_string())),
        family(
            "ringlb_config_reload_failures_total",
            counter,
            "Config reloads rejected (the running config stayed).",
            Total(|t| t.config_reload_failures.to_string()),
        ),
    ]
}

/// Renders every family of `families` from `snapshot`, with backend
/// gauges from `backends[upstream][backend]` (same order as the
/// snapshot's layout; missing entries are skipped), then `extra`.
pub fn render<B: BackendView>(
    snapshot: &Snapshot,
    backends: &[Vec<B>],
    extra: &[Sample],
) -> String {
    let mut w = Writer {
        out: String::with_capacity(8192),
    };
    for f in families::<B>() {
        w.family(f.name, f.kind, f.help);
        match f.source {
            Source::Total(get) => w.sample(f.name, &[], get(&snapshot.totals)),
            Source::PerUpstream(get) => {
                for u in snapshot.upstreams.iter().filter(|u| !u.name.is_empty()) {
                    w.sample(f.name, &[("upstream", &u.name)], get(u));
                }
            }
            Source::PerBackend(get) => {
                for (u, states) in snapshot.upstreams.iter().zip(backends) {
                    for (backend, state) in u.backends.iter().zip(states) {
                        let labels = [("upstream", u.name.as_str()), ("backend", backend.as_str())];
                        w.sample(f.name, &labels, get(state));
                    }
                }
            }
            Source::Labelled(write) => write(&mut w, snapshot),
        }
    }
    for s in extra {
        let kind = match s.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        w.single(s.name, kind, s.help, float(s.value));
    }
    w.out
}

/// `ringlb_requests_total`, non-zero series only.
fn requests(w: &mut Writer, snapshot: &Snapshot) {
    for u in &snapshot.upstreams {
        for b in 0..=u.backends.len() {
            let (backend, slot) = match u.backends.get(b) {
                Some(name) => (name.as_str(), Some(b)),
                None => ("", None),
            };
            for (class, class_name) in STATUS_CLASSES.iter().enumerate() {
                for method in Method::ALL {
                    let n = u.requests(slot, class, method);
                    if n > 0 {
                        let labels = [
                            ("upstream", u.name.as_str()),
                            ("backend", backend),
                            ("method", method.as_str()),
                            ("status", class_name),
                        ];
                        w.sample("ringlb_requests_total", &labels, n);
                    }
                }
            }
        }
    }
}

/// `ringlb_request_duration_seconds`: cumulative buckets, sum and count.
fn durations(w: &mut Writer, snapshot: &Snapshot) {
    for u in &snapshot.upstreams {
        let count = u.duration_count();
        if u.name.is_empty() && count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, n) in u.duration_buckets.iter().enumerate() {
            cumulative += n;
            let le = DURATION_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_owned(), |us| float(*us as f64 / 1e6));
            let labels = [("upstream", u.name.as_str()), ("le", le.as_str())];
            w.sample(
                "ringlb_request_duration_seconds_bucket",
                &labels,
                cumulative,
            );
        }
        let labels = [("upstream", u.name.as_str())];
        w.sample(
            "ringlb_request_duration_seconds_sum",
            &labels,
            float(u.duration_sum_us as f64 / 1e6),
        );
        w.sample("ringlb_request_duration_seconds_count", &labels, count);
    }
}

/// `ringlb_responses_total` by status class.
fn responses(w: &mut Writer, snapshot: &Snapshot) {
    let t = &snapshot.totals;
    for (class, n) in [
        ("2xx", t.responses_2xx),
        ("3xx", t.responses_3xx),
        ("4xx", t.responses_4xx),
        ("5xx", t.responses_5xx),
    ] {
        w.sample("ringlb_responses_total", &[("class", class)], n);
    }
}

/// `ringlb_retries_total` per upstream; retries counted without an
/// upstream show under `upstream=""`.
fn retries(w: &mut Writer, snapshot: &Snapshot) {
    let upstreams = &snapshot.upstreams;
    let per: u64 = upstreams.iter().map(|u| u.retries).sum();
    for u in upstreams.iter().filter(|u| !u.name.is_empty()) {
        w.sample("ringlb_retries_total", &[("upstream", &u.name)], u.retries);
    }
    let all = snapshot.totals.retries;
    if all > per {
        w.sample("ringlb_retries_total", &[("upstream", "")], all - per);
    }
}

/// `ringlb_local_errors_total` by kind, every kind always present.
fn local_errors(w: &mut Writer, snapshot: &Snapshot) {
    let t = &snapshot.totals;
    for kind in LocalShortage::ALL {
        let n = match kind {
            LocalShortage::Emfile => t.local_errors_emfile,
            LocalShortage::Enfile => t.local_errors_enfile,
            LocalShortage::Enobufs => t.local_errors_enobufs,
            LocalShortage::Eaddrnotavail => t.local_errors_eaddrnotavail,
        };
        w.sample("ringlb_local_errors_total", &[("kind", kind.label())], n);
    }
}

fn proxy_protocol_rejections(w: &mut Writer, snapshot: &Snapshot) {
    let t = &snapshot.totals;
    for (reason, n) in [
        ("untrusted", t.proxy_protocol_untrusted),
        ("malformed", t.proxy_protocol_malformed),
        ("timeout", t.proxy_protocol_timeouts),
    ] {
        w.sample(
            "ringlb_proxy_protocol_rejections_total",
            &[("reason", reason)],
            n,
        );
    }
}

/// `ringlb_health_checks_total` by backend and result, non-zero only.
fn health_checks(w: &mut Writer, snapshot: &Snapshot) {
    for u in &snapshot.upstreams {
        for (b, backend) in u.backends.iter().enumerate() {
            let (ok, failed) = u.health_checks(b);
            for (result, n) in [("ok", ok), ("failed", failed)] {
                if n > 0 {
                    let labels = [
                        ("upstream", u.name.as_str()),
                        ("backend", backend.as_str()),
                        ("result", result),
                    ];
                    w.sample("ringlb_health_checks_total", &labels, n);
                }
            }
        }
    }
}

/// The cache zones' families, one series per zone (`{zone}`), appended
/// to `out`. Zones are shared by every worker, so these are read from the
/// zones themselves rather than from the worker shards.
pub fn render_cache(zones: &crate::cache::Zones, out: &mut String) {
    use crate::cache::Zone;
    type Read = fn(&Zone) -> u64;
    const FAMILIES: [(&str, &str, &str, Read); 7] = [
        (
            "ringlb_cache_hits_total",
            "counter",
            "Requests answered from the cache (fresh, or stale within its bounds).",
            |z| z.stats.hits.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "ringlb_cache_misses_total",
            "counter",
            "Requests of a caching route that went to the backend.",
            |z| z.stats.misses.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "ringlb_cache_coalesced_total",
            "counter",
            "Misses answered by another request's fetch of the same key.",
            |z| z.stats.coalesced.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "ringlb_cache_evictions_total",
            "counter",
            "Entries evicted to keep the zone within max_size.",
            Zone::evictions,
        ),
        (
            "ringlb_cache_invalidations_total",
            "counter",
            "Entries removed by a purge.",
            |z| {
                z.stats
                    .invalidations
                    .load(std::sync::atomic::Ordering::Relaxed)
            },
        ),
        (
            "ringlb_cache_size_bytes",
            "gauge",
            "Bytes held by the zone's entries.",
            Zone::size_bytes,
        ),
        (
            "ringlb_cache_entries",
            "gauge",
            "Entries in the zone (objects, variants and markers).",
            |z| z.entries() as u64,
        ),
    ];
    if zones.iter().next().is_none() {
        return;
    }
    let mut w = Writer {
        out: std::mem::take(out),
    };
    for (name, kind, help, read) in FAMILIES {
        w.family(name, kind, help);
        for zone in zones.iter() {
            w.sample(name, &[("zone", &zone.name)], read(zone));
        }
    }
    *out = w.out;
}
