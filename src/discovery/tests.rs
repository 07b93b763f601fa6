//! The sans-IO part: records to a backend set, and when to ask again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Duration;

use super::*;
use crate::config::{Config, DiscoveryRecords};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn pairs(backends: &[BackendConfig]) -> Vec<(SocketAddr, u16)> {
    backends.iter().map(|b| (b.addr, b.weight.get())).collect()
}

fn srv(priority: u16, weight: u16, port: u16, addrs: &[u8]) -> SrvTarget {
    SrvTarget {
        priority,
        weight,
        port,
        addrs: addrs.iter().map(|&a| ip(a)).collect(),
    }
}

#[test]
fn address_records_are_sorted_deduplicated_at_the_port() {
    let port = NonZeroU16::new(8080).unwrap();
    let got = address_backends(&[ip(3), ip(1), ip(3), ip(2)], port);
    let want: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&a| (SocketAddr::new(ip(a), 8080), 1))
        .collect();
    assert_eq!(pairs(&got), want);
}

#[test]
fn srv_uses_port_and_weight_of_the_lowest_priority_only() {
    let got = srv_backends(&[
        srv(10, 5, 9000, &[2]),
        srv(10, 1, 9001, &[1]),
        srv(20, 7, 9002, &[3]),
    ]);
    assert_eq!(
        pairs(&got),
        vec![
            (SocketAddr::new(ip(1), 9001), 1),
            (SocketAddr::new(ip(2), 9000), 5)
        ]
    );
}

#[test]
fn srv_weights_are_clamped_and_port_zero_and_empty_targets_left_out() {
    let got = srv_backends(&[
        srv(0, 0, 9000, &[1]),
        srv(0, 60_000, 9001, &[2]),
        srv(0, 3, 0, &[3]),
        srv(0, 3, 9003, &[]),
    ]);
    assert_eq!(
        pairs(&got),
        vec![
            (SocketAddr::new(ip(1), 9000), 1),
            (SocketAddr::new(ip(2), 9001), 1000)
        ]
    );
    assert!(srv_backends(&[]).is_empty());
    // A lower priority without usable targets does not hide the others.
    let got = srv_backends(&[srv(0, 1, 9000, &[]), srv(5, 2, 9001, &[4])]);
    assert_eq!(pairs(&got), vec![(SocketAddr::new(ip(4), 9001), 2)]);
}

#[test]
fn an_answer_is_bounded() {
    let addrs: Vec<IpAddr> = (0..=u16::MAX)
        .take(MAX_DISCOVERED_BACKENDS + 1)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 1, (i >> 8) as u8, i as u8)))
        .collect();
    let got = address_backends(&addrs, NonZeroU16::new(80).unwrap());
    assert_eq!(got.len(), MAX_DISCOVERED_BACKENDS);
}

fn discovery(toml_discovery: &str) -> Config {
    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstreams.app]\ndiscovery = {toml_discovery}\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n"
    );
    Config::from_toml_str(&src, std::path::Path::new("t.toml")).unwrap()
}

#[test]
fn the_next_question_follows_ttl_within_min_interval_and_interval() {
    let config =
        discovery(r#"{ dns = "app.internal", port = 80, interval = "10s", min_interval = "2s" }"#);
    let d = config.upstreams[0].discovery.as_ref().unwrap();
    let s = Duration::from_secs;
    assert_eq!(next_refresh(d, None), s(10));
    assert_eq!(next_refresh(d, Some(s(300))), s(10));
    assert_eq!(next_refresh(d, Some(s(5))), s(5));
    assert_eq!(next_refresh(d, Some(s(1))), s(2));
    assert_eq!(next_refresh(d, Some(s(0))), s(2));
}

#[test]
fn discovered_backends_follow_the_files_and_leave_its_addresses_out() {
    let src = "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstreams.app]\n\
               backends = [{ addr = \"127.0.0.1:80\", weight = 3 }]\n\
               discovery = { dns = \"app.internal\", port = 80 }\n\
               [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n";
    let config = Config::from_toml_str(src, std::path::Path::new("t.toml")).unwrap();
    let found = address_backends(&[ip(1), ip(2)], NonZeroU16::new(80).unwrap());
    let merged = config.with_discovered(0, &found);
    assert_eq!(
        pairs(&merged.upstreams[0].backends),
        vec![
            (SocketAddr::new(ip(1), 80), 3),
            (SocketAddr::new(ip(2), 80), 1)
        ]
    );
    assert_eq!(
        pairs(merged.discovered(0)),
        vec![(SocketAddr::new(ip(2), 80), 1)]
    );
    let emptied = merged.with_discovered(0, &[]);
    assert_eq!(emptied.upstreams[0].backends, config.upstreams[0].backends);
    assert!(matches!(
        config.upstreams[0].discovery.as_ref().unwrap().records,
        DiscoveryRecords::Address { .. }
    ));
}

#[test]
fn failures_render_as_a_counter_per_upstream() {
    let config =
        discovery(r#"{ dns = "_http._tcp.app.internal", resolvers = ["127.0.0.1:8600"] }"#);
    let mut status = DiscoveryStatus::new(config.upstreams[0].discovery.as_ref().unwrap());
    assert_eq!(
        status.source,
        "dns SRV _http._tcp.app.internal via 127.0.0.1:8600"
    );
    status.failures = 4;
    let text = render_metrics([("app", &status)].into_iter());
    assert!(
        text.contains("# TYPE ringlb_discovery_failures_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("ringlb_discovery_failures_total{upstream=\"app\"} 4\n"),
        "{text}"
    );
}
