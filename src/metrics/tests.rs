//! Shards, sums, generations, and the exposition checked by a small parser
//! of the text format.

use std::collections::{BTreeMap, HashMap};

use super::prometheus::{self, escape_label, Kind, Sample};
use super::*;

fn layout() -> Layout {
    Layout {
        upstreams: vec![
            UpstreamLayout {
                name: "api".into(),
                backends: vec!["10.0.0.1:80".into(), "10.0.0.2:80".into()],
            },
            UpstreamLayout {
                name: "web \"quoted\"\\".into(),
                backends: vec!["10.0.0.3:80".into()],
            },
        ],
    }
}

struct View {
    healthy: bool,
    breaker: u8,
    in_flight: u64,
}

impl BackendView for View {
    fn healthy(&self) -> bool {
        self.healthy
    }
    fn breaker_state(&self) -> u8 {
        self.breaker
    }
    fn in_flight(&self) -> u64 {
        self.in_flight
    }
}

type Labels = BTreeMap<String, String>;

/// Parses the text format strictly enough to catch mistakes: every line is
/// HELP, TYPE or a sample; a family's TYPE precedes its samples and comes
/// once; names and label names match the grammar; label values use only
/// the three escapes; values parse as floats.
fn parse(text: &str) -> HashMap<(String, Labels), f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(name.starts_with("ringlb_"), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "{line}");
        let name_end = line.find(['{', ' ']).expect("a sample");
        let name = &line[..name_end];
        assert!(valid_name(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        let mut rest = &line[name_end..];
        let mut labels = Labels::new();
        if let Some(body) = rest.strip_prefix('{') {
            (labels, rest) = parse_labels(body, line);
        }
        let value = rest.strip_prefix(' ').expect("space before value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        assert!(
            samples.insert((name.to_owned(), labels), value).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows `}`.
fn parse_labels<'a>(mut body: &'a str, line: &str) -> (Labels, &'a str) {
    let mut labels = Labels::new();
    loop {
        let eq = body
            .find('=')
            .unwrap_or_else(|| panic!("label without = in {line}"));
        let key = &body[..eq];
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(body[eq + 1..].starts_with('"'), "{line}");
        let mut value = String::new();
        let mut it = body[eq + 2..].char_indices();
        let end = loop {
            let (i, c) = it.next().expect("closing quote");
            match c {
                '\\' => match it.next().unwrap().1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("bad escape \\{other} in {line}"),
                },
                '"' => break eq + 2 + i + 1,
                c => value.push(c),
            }
        };
        labels.insert(key.into(), value);
        let sep = &body[end..end + 1];
        body = &body[end + 1..];
        match sep {
            "," => continue,
            "}" => return (labels, body),
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn render(registry: &Registry) -> HashMap<(String, Labels), f64> {
    let views = vec![
        vec![
            View {
                healthy: true,
                breaker: 0,
                in_flight: 3,
            },
            View {
                healthy: false,
                breaker: 1,
                in_flight: 0,
            },
        ],
        vec![View {
            healthy: true,
            breaker: 2,
            in_flight: 1,
        }],
    ];
    let extra = [Sample {
        name: "ringlb_access_log_dropped_lines_total",
        help: "Access log lines dropped.",
        kind: Kind::Counter,
        value: 4.0,
    }];
    let text = prometheus::render(&registry.snapshot(), &views, &extra);
    parse(&text)
}

#[test]
fn exposition_parses_and_matches_what_was_recorded() {
    let mut registry = Registry::new(layout());
    let a = registry.new_shard();
    let b = registry.new_shard();
    let ms = Duration::from_millis;
    for _ in 0..3 {
        a.request(Some(0), Some(1), 200, Method::Get, ms(3));
    }
    b.request(Some(0), Some(1), 204, Method::Get, ms(30));
    b.request(Some(0), None, 503, Method::from_bytes(b"PROPFIND"), ms(0));
    a.request(Some(1), Some(0), 404, Method::Post, Duration::from_secs(60));
    a.request(None, None, 404, Method::Head, ms(1));
    a.retry(0);
    b.retry_refused(0);
    a.upstream_connect(0, true);
    a.upstream_connect(0, true);
    a.upstream_closed(0);
    b.upstream_connect(1, false);
    b.health_check(0, 1, false);
    b.health_check(0, 1, true);
    b.health_check(0, 1, false);
    a.tls_handshake(true);
    a.tls_handshake(false);
    b.config_reload(true);
    a.pool_hits.add(3);
    b.pool_misses.inc();
    a.connections_accepted.add(5);
    a.connections_open.add(2);
    b.connections_parked.inc();
    a.request_started();
    b.request_started();
    b.request_finished();
    a.count_status(200);
    b.bytes_to_clients.add(1234);

    let s = render(&registry);
    let get = |name: &str, pairs: &[(&str, &str)]| {
        *s.get(&(name.to_owned(), labels(pairs)))
            .unwrap_or_else(|| panic!("missing {name} {pairs:?}"))
    };
    let req = |u, b, m, st| {
        get(
            "ringlb_requests_total",
            &[
                ("upstream", u),
                ("backend", b),
                ("method", m),
                ("status", st),
            ],
        )
    };
    assert_eq!(req("api", "10.0.0.2:80", "GET", "2xx"), 4.0);
    assert_eq!(req("api", "", "other", "5xx"), 1.0);
    assert_eq!(req("web \"quoted\"\\", "10.0.0.3:80", "POST", "4xx"), 1.0);
    assert_eq!(req("", "", "HEAD", "4xx"), 1.0);
    let total: f64 = s
        .iter()
        .filter(|((n, _), _)| n == "ringlb_requests_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 7.0);

    // Histogram: cumulative, +Inf equals _count, sum in seconds.
    let bucket = |le: &str| {
        get(
            "ringlb_request_duration_seconds_bucket",
            &[("upstream", "api"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.001"), 1.0); // the 0 ms one
    assert_eq!(bucket("0.005"), 4.0);
    assert_eq!(bucket("0.025"), 4.0);
    assert_eq!(bucket("0.05"), 5.0);
    assert_eq!(bucket("+Inf"), 5.0);
    assert_eq!(
        get(
            "ringlb_request_duration_seconds_count",
            &[("upstream", "api")]
        ),
        5.0
    );
    assert!(
        (get(
            "ringlb_request_duration_seconds_sum",
            &[("upstream", "api")]
        ) - 0.039)
            .abs()
            < 1e-9
    );
    let web = "web \"quoted\"\\";
    assert_eq!(
        get(
            "ringlb_request_duration_seconds_bucket",
            &[("upstream", web), ("le", "30")]
        ),
        0.0
    );
    assert_eq!(
        get(
            "ringlb_request_duration_seconds_bucket",
            &[("upstream", web), ("le", "+Inf")]
        ),
        1.0
    );

    assert_eq!(get("ringlb_retries_total", &[("upstream", "api")]), 1.0);
    assert_eq!(
        get("ringlb_retries_refused_total", &[("upstream", "api")]),
        1.0
    );
    assert_eq!(
        get(
            "ringlb_upstream_connections_opened_total",
            &[("upstream", "api")]
        ),
        2.0
    );
    assert_eq!(
        get("ringlb_upstream_connections_open", &[("upstream", "api")]),
        1.0
    );
    assert_eq!(
        get(
            "ringlb_upstream_connect_failures_total",
            &[("upstream", web)]
        ),
        1.0
    );
    let hc = |r| {
        get(
            "ringlb_health_checks_total",
            &[
                ("upstream", "api"),
                ("backend", "10.0.0.2:80"),
                ("result", r),
            ],
        )
    };
    assert_eq!((hc("ok"), hc("failed")), (1.0, 2.0));
    assert_eq!(
        get(
            "ringlb_backend_healthy",
            &[("upstream", "api"), ("backend", "10.0.0.2:80")]
        ),
        0.0
    );
    assert_eq!(
        get(
            "ringlb_backend_breaker_state",
            &[("upstream", web), ("backend", "10.0.0.3:80")]
        ),
        2.0
    );
    assert_eq!(
        get(
            "ringlb_backend_in_flight",
            &[("upstream", "api"), ("backend", "10.0.0.1:80")]
        ),
        3.0
    );
    assert_eq!(get("ringlb_tls_handshakes_total", &[]), 1.0);
    assert_eq!(get("ringlb_tls_handshake_failures_total", &[]), 1.0);
    assert_eq!(get("ringlb_config_reloads_total", &[]), 1.0);
    assert_eq!(get("ringlb_config_reload_failures_total", &[]), 0.0);
    assert_eq!(get("ringlb_pool_reuse_ratio", &[]), 0.75);
    assert_eq!(get("ringlb_client_connections_accepted_total", &[]), 5.0);
    assert_eq!(get("ringlb_client_connections_open", &[]), 2.0);
    assert_eq!(get("ringlb_client_connections_parked", &[]), 1.0);
    assert_eq!(get("ringlb_requests_in_flight", &[]), 1.0);
    assert_eq!(get("ringlb_responses_total", &[("class", "2xx")]), 1.0);
    assert_eq!(get("ringlb_client_bytes_sent_total", &[]), 1234.0);
    assert_eq!(get("ringlb_access_log_dropped_lines_total", &[]), 4.0);
    assert!(s.keys().all(|(n, _)| n.starts_with("ringlb_")));
}

#[test]
fn retries_without_an_upstream_still_count() {
    let mut registry = Registry::new(layout());
    let shard = registry.new_shard();
    shard.retries.inc(); // the proxy's call today
    shard.retry(1);
    let s = render(&registry);
    let get = |u: &str| {
        s[&(
            "ringlb_retries_total".to_owned(),
            labels(&[("upstream", u)]),
        )]
    };
    assert_eq!(
        (get(""), get("api"), get("web \"quoted\"\\")),
        (1.0, 0.0, 1.0)
    );
}

#[test]
fn label_escaping() {
    let mut out = String::new();
    escape_label("a\\b\"c\nd", &mut out);
    assert_eq!(out, "a\\\\b\\\"c\\nd");
}

#[test]
fn out_of_layout_indexes_are_ignored() {
    let shard = WorkerMetrics::new(&layout());
    shard.request(Some(7), Some(0), 200, Method::Get, Duration::ZERO);
    shard.request(Some(0), Some(9), 200, Method::Get, Duration::ZERO);
    shard.health_check(0, 9, true);
    shard.retry(42);
    shard.upstream_connect(42, true);
    let legacy = WorkerMetrics::default();
    legacy.request(Some(0), None, 200, Method::Get, Duration::ZERO);
    legacy.retry(0);
    assert_eq!(legacy.retries.get(), 1);
}

#[test]
fn method_and_status_buckets() {
    assert_eq!(Method::from_bytes(b"GET"), Method::Get);
    assert_eq!(Method::from_bytes(b"get"), Method::Other);
    assert_eq!(Method::from_bytes(b"OPTIONS"), Method::Options);
    for (i, m) in Method::ALL.iter().enumerate() {
        assert_eq!(*m as usize, i);
    }
    assert_eq!(status_class(101), 0);
    assert_eq!(status_class(599), 4);
    assert_eq!(status_class(600), 5);
    assert_eq!(status_class(99), 5);
}

#[test]
fn reload_generations_carry_series_by_name() {
    let mut registry = Registry::new(layout());
    let old = registry.new_shard();
    old.request(Some(0), Some(1), 200, Method::Get, Duration::ZERO);
    old.request(Some(0), Some(0), 200, Method::Get, Duration::ZERO);
    old.connections_accepted.inc();

    // The same layout keeps the generation.
    registry.next_generation(layout());
    assert_eq!(registry.generations.len(), 1);

    // api loses 10.0.0.1 and gains 10.0.0.9 in front; web is removed.
    let new_layout = Layout {
        upstreams: vec![UpstreamLayout {
            name: "api".into(),
            backends: vec!["10.0.0.9:80".into(), "10.0.0.2:80".into()],
        }],
    };
    registry.next_generation(new_layout.clone());
    assert_eq!(registry.layout(), &new_layout);
    let new = registry.new_shard();
    new.request(Some(0), Some(1), 200, Method::Get, Duration::ZERO);
    new.connections_accepted.inc();

    let snap = registry.snapshot();
    assert_eq!(snap.totals.connections_accepted, 2);
    assert_eq!(snap.upstreams.len(), 2);
    let api = &snap.upstreams[0];
    assert_eq!(api.requests(Some(1), 1, Method::Get), 2);
    assert_eq!(api.requests(Some(0), 1, Method::Get), 0);
    assert_eq!(api.duration_count(), 3);
    parse(&prometheus::render::<View>(&snap, &[], &[]));
}

/// Reload after reload, the shards of dropped workers fold into one per
/// generation, and every series keeps its value.
#[test]
fn retired_shards_fold_without_changing_any_sum() {
    let mut registry = Registry::new(layout());
    let record = |shard: &WorkerMetrics, n: u64| {
        for i in 0..n {
            shard.request(Some(0), Some(1), 200, Method::Get, Duration::from_millis(i));
            shard.request(None, None, 404, Method::Post, Duration::ZERO);
            shard.retry(1);
            shard.health_check(1, 0, i % 2 == 0);
            shard.upstream_connect(0, true);
            shard.connections_accepted.inc();
            shard.bytes_to_clients.add(100);
        }
        shard.upstream_closed(0);
    };
    let kept = registry.new_shard();
    record(&kept, 2);
    for round in 0..10u64 {
        let workers: Vec<_> = (0..3).map(|_| registry.new_shard()).collect();
        for w in &workers {
            record(w, round + 1);
        }
        let before = render(&registry);
        let totals = registry.totals();
        drop(workers);
        registry.next_generation(layout());
        assert_eq!(render(&registry), before, "round {round}");
        assert_eq!(registry.totals(), totals);
        // The live shard and one folded one.
        assert_eq!(registry.shard_count(), 2, "round {round}");
    }
    assert_eq!(registry.totals().connections_accepted, 2 + 3 * 55);
}

#[test]
fn shards_do_not_share_cache_lines() {
    assert_eq!(std::mem::align_of::<WorkerMetrics>(), 128);
    assert_eq!(std::mem::align_of::<UpstreamMetrics>(), 128);
}

#[test]
fn grafana_dashboard_uses_only_exported_names() {
    let mut registry = Registry::new(layout());
    let shard = registry.new_shard();
    // Make every labelled family non-empty.
    shard.request(Some(0), Some(0), 200, Method::Get, Duration::ZERO);
    shard.health_check(0, 0, false);
    let views = vec![vec![
        View {
            healthy: true,
            breaker: 0,
            in_flight: 0,
        },
        View {
            healthy: true,
            breaker: 0,
            in_flight: 0,
        },
    ]];
    let text = prometheus::render(&registry.snapshot(), &views, &[]);
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| &l[..l.find(['{', ' ']).unwrap()])
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana-dashboard.json"
    )))
    .unwrap();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("ringlb_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(exported.contains(name.as_str()), "dashboard uses {name}");
                used += 1;
            }
        }
    }
    assert!(used > 20);
}

#[test]
fn cache_zones_render_one_series_per_zone() {
    use crate::cache::Zones;
    use crate::config::CacheZoneConfig;
    let zone = |name: &str| CacheZoneConfig {
        name: name.to_owned(),
        max_size: 1 << 20,
        max_object: 1 << 16,
    };
    let zones = Zones::plan(&[zone("a"), zone("b")], None);
    zones
        .get(1)
        .unwrap()
        .stats
        .hits
        .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
    let mut text = String::new();
    crate::metrics::prometheus::render_cache(&zones, &mut text);
    assert!(
        text.contains("# TYPE ringlb_cache_hits_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("ringlb_cache_hits_total{zone=\"a\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("ringlb_cache_hits_total{zone=\"b\"} 7\n"),
        "{text}"
    );
    assert!(
        text.contains("ringlb_cache_size_bytes{zone=\"b\"} 0\n"),
        "{text}"
    );
    let mut none = String::from("x\n");
    crate::metrics::prometheus::render_cache(&Zones::default(), &mut none);
    assert_eq!(none, "x\n", "no zones, no families");
}
