//! Service discovery by DNS against a real `dnsmasq` on a loopback port:
//! records added, removed and re-weighted under keep-alive load lose no
//! request; SRV weights drive `weighted_round_robin`; a Consul-style
//! `NAME.service.consul` is asked for SRV; a failing or empty
//! answer keeps the last set and is counted; a TTL shorter than `interval`
//! brings the next question sooner; two proxies converge on one set; the
//! start refuses an unresolvable name unless `allow_empty`; `check`
//! resolves only with `--resolve`; a reload changes the name; a backend
//! that stays keeps its drain state, pooled connection and counters.
//!
//! dnsmasq rereads `--addn-hosts` on SIGHUP but not `--srv-host` (a config
//! option), so A/AAAA changes are a SIGHUP and SRV changes a restart on the
//! same port (the gap is a failed answer, which keeps the last set).
//! Without dnsmasq these tests fail: `.ci/run` installs it.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::admin::{metric, status};
use crate::backend::Backend;
use crate::client::get;
use crate::harness::{free_port, run_bin, wait_until, Proxy, TempDir, WAIT};
use crate::loadgen::Load;
use crate::reload::rewrite;

/// Convergence waits: several refresh intervals and a dnsmasq restart.
const CONVERGE: Duration = Duration::from_secs(30);

/// The zone every test serves.
const ZONE: &str = "ringlb.test";

fn dnsmasq_path() -> PathBuf {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("dnsmasq is not installed (apt-get install dnsmasq; .ci/run does)")
}

/// One SRV record: [`Dnsmasq::srv_name`] → `target.ZONE:port`.
#[derive(Clone, Copy)]
struct Srv<'a> {
    target: &'a str,
    port: u16,
    weight: u16,
}

/// An SRV record for `target` at `backend`'s port.
fn srv_of<'a>(target: &'a str, backend: &Backend, weight: u16) -> Srv<'a> {
    Srv {
        target,
        port: backend.addr.port(),
        weight,
    }
}

/// A dnsmasq answering for [`ZONE`] from files this test rewrites.
struct Dnsmasq {
    dir: TempDir,
    port: u16,
    ttl: u32,
    /// The name the SRV records are served under.
    srv_name: String,
    child: Option<Child>,
}

impl Dnsmasq {
    /// Serves `hosts` (`(ip, names)` lines) and `srv`, with record TTL `ttl`.
    fn start(hosts: &[(&str, &str)], srv: &[Srv<'_>], ttl: u32) -> Dnsmasq {
        Dnsmasq::start_srv_as(&format!("_http._tcp.{ZONE}"), hosts, srv, ttl)
    }

    /// Like [`start`](Self::start), the SRV records under `srv_name`.
    fn start_srv_as(srv_name: &str, hosts: &[(&str, &str)], srv: &[Srv<'_>], ttl: u32) -> Dnsmasq {
        let mut d = Dnsmasq {
            dir: TempDir::new(),
            port: free_port(),
            ttl,
            srv_name: srv_name.to_string(),
            child: None,
        };
        d.write_hosts(hosts);
        d.write_srv(srv);
        d.spawn();
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn write_hosts(&self, hosts: &[(&str, &str)]) {
        let text: String = hosts
            .iter()
            .map(|(ip, names)| format!("{ip} {names}\n"))
            .collect();
        fs::write(self.path("hosts"), text).unwrap();
    }

    fn write_srv(&self, srv: &[Srv<'_>]) {
        let text: String = srv
            .iter()
            .map(|s| {
                format!(
                    "srv-host={},{}.{ZONE},{},0,{}\n",
                    self.srv_name, s.target, s.port, s.weight
                )
            })
            .collect();
        fs::write(self.path("srv.conf"), text).unwrap();
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.path("dnsmasq.log")).unwrap();
        let mut cmd = Command::new(dnsmasq_path());
        cmd.arg("--keep-in-foreground")
            .arg(format!("--port={}", self.port))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--addn-hosts={}", self.path("hosts").display()))
            .arg(format!("--conf-file={}", self.path("srv.conf").display()))
            .arg(format!("--local-ttl={}", self.ttl))
            .arg(format!("--pid-file={}", self.path("pid").display()))
            .arg("--log-facility=-")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // As root dnsmasq drops to `nobody`, who could not reread our files.
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let child = cmd.spawn().expect("spawn dnsmasq");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = wait_until(WAIT, || TcpStream::connect(addr).is_ok());
        assert!(up, "dnsmasq did not listen: {}", self.log());
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("dnsmasq.log")).unwrap_or_default()
    }

    /// New A records: rewrite the hosts file and SIGHUP.
    fn set_hosts(&self, hosts: &[(&str, &str)]) {
        self.write_hosts(hosts);
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "SIGHUP to dnsmasq failed");
    }

    /// New SRV records: a restart on the same port.
    fn set_srv(&mut self, srv: &[Srv<'_>]) {
        self.write_srv(srv);
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

fn discovery_line(dns: &Dnsmasq, keys: &str) -> String {
    format!(
        "discovery = {{ resolvers = [\"{}\"], {keys} }}",
        dns.resolver()
    )
}

/// The discovered set `/status` shows for `upstream`: address → weight.
fn discovered(proxy: &Proxy, upstream: &str) -> BTreeMap<String, u64> {
    let status = status(proxy);
    let ups = status["upstreams"].as_array().expect("upstreams");
    let up = ups
        .iter()
        .find(|u| u["name"] == upstream)
        .expect("the upstream");
    up["discovery"]["backends"]
        .as_array()
        .expect("discovery.backends")
        .iter()
        .map(|b| {
            (
                b["addr"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn set_of(backends: &[(&Backend, u64)]) -> BTreeMap<String, u64> {
    backends
        .iter()
        .map(|(b, w)| (b.addr.to_string(), *w))
        .collect()
}

fn converge(proxy: &Proxy, upstream: &str, want: &BTreeMap<String, u64>) {
    let ok = wait_until(CONVERGE, || discovered(proxy, upstream) == *want);
    assert!(
        ok,
        "{upstream} did not converge on {want:?}; it has {:?}\n{}",
        discovered(proxy, upstream),
        proxy.stderr()
    );
}

/// The name each backend answers with, over `n` requests on one connection.
fn served_by(proxy: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut c = proxy.client();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = c.roundtrip(&get("/"));
        assert_eq!(r.status, 200, "{}", r.body_str());
        *seen.entry(r.body_str()).or_insert(0) += 1;
    }
    seen
}

/// A proxy with an admin listener whose upstream `app` has only
/// discovered backends: `discovery = { resolvers = [dns], KEYS }`, then
/// the `extra` lines of the upstream.
fn discovering(dns: &Dnsmasq, keys: &str, extra: &[&str]) -> crate::harness::ProxyBuilder {
    let discovery = discovery_line(dns, keys);
    let mut lines = vec![discovery.as_str()];
    lines.extend_from_slice(extra);
    Proxy::builder()
        .admin()
        .upstream("app", &[] as &[SocketAddr], &lines)
}

fn srv_proxy(dns: &Dnsmasq, extra: &[&str]) -> Proxy {
    let keys = format!("dns = \"_http._tcp.{ZONE}\", interval = \"1s\", min_interval = \"200ms\"");
    discovering(dns, &keys, extra).start()
}

#[test]
fn srv_records_added_removed_and_reweighted_under_load_lose_no_request() {
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let hosts = [("127.0.0.1", "a.ringlb.test b.ringlb.test c.ringlb.test")];
    let srv = srv_of;
    let mut dns = Dnsmasq::start(&hosts, &[srv("a", &a, 1), srv("b", &b, 1)], 300);
    let proxy = srv_proxy(&dns, &["strategy = \"weighted_round_robin\""]);
    converge(&proxy, "app", &set_of(&[(&a, 1), (&b, 1)]));

    let load = Load::start(proxy.addr, 4);
    // Added.
    dns.set_srv(&[srv("a", &a, 1), srv("b", &b, 1), srv("c", &c, 1)]);
    converge(&proxy, "app", &set_of(&[(&a, 1), (&b, 1), (&c, 1)]));
    assert!(wait_until(CONVERGE, || c.proxied_count() > 0));
    // Removed.
    dns.set_srv(&[srv("b", &b, 1), srv("c", &c, 1)]);
    converge(&proxy, "app", &set_of(&[(&b, 1), (&c, 1)]));
    // Re-weighted.
    dns.set_srv(&[srv("b", &b, 1), srv("c", &c, 4)]);
    converge(&proxy, "app", &set_of(&[(&b, 1), (&c, 4)]));
    let sent_at_change = load.sent();
    assert!(wait_until(CONVERGE, || load.sent() > sent_at_change + 200));
    let report = load.finish();
    assert!(report.sent > 200, "too little load: {}", report.sent);
    assert!(
        report.errors.is_empty(),
        "failed requests: {:?}",
        report.errors
    );

    // `a` is out: nothing new reaches it.
    let a_after = a.proxied_count();
    let seen = served_by(&proxy, 20);
    assert_eq!(a.proxied_count(), a_after);
    assert!(!seen.contains_key("a"), "{seen:?}");
}

#[test]
fn srv_weights_drive_weighted_round_robin() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let hosts = [("127.0.0.1", "a.ringlb.test b.ringlb.test")];
    let srv = [srv_of("a", &a, 1), srv_of("b", &b, 3)];
    let dns = Dnsmasq::start(&hosts, &srv, 300);
    let discovery = discovery_line(&dns, &format!("dns = \"_http._tcp.{ZONE}\""));
    let proxy = Proxy::builder()
        .admin()
        .workers(1)
        .upstream(
            "app",
            &[] as &[SocketAddr],
            &[&discovery, "strategy = \"weighted_round_robin\""],
        )
        .start();
    assert_eq!(discovered(&proxy, "app"), set_of(&[(&a, 1), (&b, 3)]));
    let seen = served_by(&proxy, 40);
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&30), "{seen:?}");
}

#[test]
fn a_consul_style_service_name_is_asked_for_srv() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let hosts = [("127.0.0.1", "a.ringlb.test b.ringlb.test")];
    let srv = [srv_of("a", &a, 1), srv_of("b", &b, 1)];
    // As Consul's DNS interface serves a service: SRV at NAME.service.consul.
    let dns = Dnsmasq::start_srv_as("web.service.consul", &hosts, &srv, 0);
    let discovery = discovery_line(&dns, "dns = \"web.service.consul\"");
    let proxy = Proxy::builder()
        .admin()
        .upstream("web", &[] as &[SocketAddr], &[&discovery])
        .start();
    assert_eq!(discovered(&proxy, "web"), set_of(&[(&a, 1), (&b, 1)]));
    let seen = served_by(&proxy, 4);
    assert_eq!(
        (seen.get("a"), seen.get("b")),
        (Some(&2), Some(&2)),
        "{seen:?}"
    );
}

#[test]
fn a_failing_or_empty_answer_keeps_the_last_set_and_is_counted() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let hosts = [("127.0.0.1", "a.ringlb.test b.ringlb.test")];
    let srv = [srv_of("a", &a, 1), srv_of("b", &b, 1)];
    let mut dns = Dnsmasq::start(&hosts, &srv, 300);
    let proxy = srv_proxy(&dns, &[]);
    let want = set_of(&[(&a, 1), (&b, 1)]);
    assert_eq!(discovered(&proxy, "app"), want);
    assert_eq!(metric(&proxy, "ringlb_discovery_failures_total"), 0.0);

    // Empty: the targets no longer resolve.
    dns.set_hosts(&[("127.0.0.9", "other.ringlb.test")]);
    assert!(wait_until(CONVERGE, || {
        metric(&proxy, "ringlb_discovery_failures_total") >= 2.0
    }));
    assert_eq!(discovered(&proxy, "app"), want);
    let seen = served_by(&proxy, 4);
    assert_eq!((seen.get("a"), seen.get("b")), (Some(&2), Some(&2)));

    // Failing: no server at all.
    dns.stop();
    let before = metric(&proxy, "ringlb_discovery_failures_total");
    assert!(wait_until(CONVERGE, || {
        metric(&proxy, "ringlb_discovery_failures_total") >= before + 2.0
    }));
    assert_eq!(discovered(&proxy, "app"), want);
    let up = status(&proxy)["upstreams"][0]["discovery"].clone();
    assert!(up["last_error"].is_string(), "{up}");
    assert!(up["last_refresh_unix"].as_u64().is_some(), "{up}");
    let seen = served_by(&proxy, 4);
    assert_eq!((seen.get("a"), seen.get("b")), (Some(&2), Some(&2)));
    assert!(proxy
        .stderr()
        .contains("discovery failed; the last good set stays"));
}

/// Backends `a` and `b` at one port on two loopback addresses, as A
/// records name them.
fn two_address_backends() -> (Backend, Backend) {
    for _ in 0..20 {
        let a = Backend::named_at("a", SocketAddr::from(([127, 0, 0, 2], 0)));
        let port = a.addr.port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            let b = Backend::named_at("b", SocketAddr::from(([127, 0, 0, 3], port)));
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

#[test]
fn a_ttl_shorter_than_interval_brings_the_next_question_sooner() {
    let (a, b) = two_address_backends();
    let dns = Dnsmasq::start(&[("127.0.0.2", "app.ringlb.test")], &[], 1);
    let keys = format!(
        "dns = \"app.{ZONE}\", port = {}, interval = \"1h\", min_interval = \"1s\"",
        a.addr.port()
    );
    let proxy = discovering(&dns, &keys, &[]).start();
    assert_eq!(discovered(&proxy, "app"), set_of(&[(&a, 1)]));
    dns.set_hosts(&[
        ("127.0.0.2", "app.ringlb.test"),
        ("127.0.0.3", "app.ringlb.test"),
    ]);
    // Only the 1 s TTL can bring this before the hour is out.
    converge(&proxy, "app", &set_of(&[(&a, 1), (&b, 1)]));
    assert!(wait_until(CONVERGE, || served_by(&proxy, 2).contains_key("b")));
}

#[test]
fn two_proxies_fed_one_name_converge_on_one_set() {
    let (a, b) = two_address_backends();
    let dns = Dnsmasq::start(&[("127.0.0.2", "app.ringlb.test")], &[], 0);
    let keys = format!(
        "dns = \"app.{ZONE}\", port = {}, interval = \"1s\", min_interval = \"500ms\"",
        a.addr.port()
    );
    let start = || discovering(&dns, &keys, &[]).start();
    let (one, two) = (start(), start());
    for p in [&one, &two] {
        assert_eq!(discovered(p, "app"), set_of(&[(&a, 1)]));
    }
    dns.set_hosts(&[
        ("127.0.0.3", "app.ringlb.test"),
        ("127.0.0.2", "app.ringlb.test"),
    ]);
    let both = set_of(&[(&a, 1), (&b, 1)]);
    converge(&one, "app", &both);
    converge(&two, "app", &both);
    dns.set_hosts(&[("127.0.0.3", "app.ringlb.test")]);
    let only_b = set_of(&[(&b, 1)]);
    converge(&one, "app", &only_b);
    converge(&two, "app", &only_b);
    for p in [&one, &two] {
        let seen = served_by(p, 3);
        assert_eq!(seen.get("b"), Some(&3), "{seen:?}");
    }
}

fn write_config(dir: &Path, discovery: &str) -> PathBuf {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\n\n[upstreams.app]\n{discovery}\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        free_port()
    );
    let path = dir.join("ringlb.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_unresolvable_name_stops_the_start_and_check_resolves_only_when_asked() {
    let dns = Dnsmasq::start(
        &[("127.0.0.2", "app.ringlb.test"), ("::1", "app.ringlb.test")],
        &[],
        0,
    );
    let dir = TempDir::new();
    let missing = discovery_line(&dns, &format!("dns = \"missing.{ZONE}\", port = 80"));
    let config = write_config(dir.path(), &missing);
    let config = config.to_str().unwrap();

    let out = run_bin(&["check", "--config", config], &[]);
    assert!(out.status.success(), "{out:?}");
    let out = run_bin(&["check", "--config", config, "--resolve"], &[]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams.app.discovery: cannot resolve \"missing.ringlb.test\""),
        "{err}"
    );

    let out = run_bin(&["--config", config], &[]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams.app.discovery: cannot resolve \"missing.ringlb.test\"")
            && err.contains("allow_empty"),
        "{err}"
    );

    let found = discovery_line(&dns, &format!("dns = \"app.{ZONE}\", port = 80"));
    let config = write_config(dir.path(), &found);
    let out = run_bin(
        &["check", "--config", config.to_str().unwrap(), "--resolve"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // A and AAAA records alike.
    assert!(
        text.contains("127.0.0.2:80 weight 1, [::1]:80 weight 1"),
        "{text}"
    );
}

#[test]
fn allow_empty_starts_with_503_until_the_name_resolves() {
    let (a, _b) = two_address_backends();
    let dns = Dnsmasq::start(&[("127.0.0.9", "other.ringlb.test")], &[], 0);
    let keys = format!(
            "dns = \"app.{ZONE}\", port = {}, interval = \"1s\", min_interval = \"500ms\", allow_empty = true",
            a.addr.port()
        );
    let proxy = discovering(&dns, &keys, &[]).start();
    assert!(discovered(&proxy, "app").is_empty());
    assert_eq!(proxy.client().roundtrip(&get("/")).status, 503);
    dns.set_hosts(&[("127.0.0.2", "app.ringlb.test")]);
    converge(&proxy, "app", &set_of(&[(&a, 1)]));
    assert!(wait_until(CONVERGE, || {
        proxy.client().roundtrip(&get("/")).status == 200
    }));
}

#[test]
fn a_reload_changes_the_name_and_keeps_static_backends_besides() {
    let (a, b) = two_address_backends();
    let fixed = Backend::named("fixed");
    let dns = Dnsmasq::start(
        &[
            ("127.0.0.2", "one.ringlb.test"),
            ("127.0.0.3", "two.ringlb.test"),
        ],
        &[],
        0,
    );
    let discovery = |name: &str| {
        discovery_line(
            &dns,
            &format!("dns = \"{name}.{ZONE}\", port = {}", a.addr.port()),
        )
    };
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[fixed.addr], &[&discovery("one")])
        .start();
    assert_eq!(discovered(&proxy, "app"), set_of(&[(&a, 1)]));
    rewrite(&proxy, |t| t.replace("\"one.", "\"two."));
    let r = crate::admin::admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(discovered(&proxy, "app"), set_of(&[(&b, 1)]));
    let seen = served_by(&proxy, 4);
    assert_eq!(
        (seen.get("fixed"), seen.get("b")),
        (Some(&2), Some(&2)),
        "{seen:?}"
    );

    // A name that does not resolve refuses the reload; the set stays.
    rewrite(&proxy, |t| t.replace("\"two.", "\"nowhere."));
    let r = crate::admin::admin(&proxy, "POST", "/reload");
    assert_ne!(r.status, 200);
    assert!(r.body_str().contains("cannot resolve"), "{}", r.body_str());
    assert_eq!(discovered(&proxy, "app"), set_of(&[(&b, 1)]));
}

#[test]
fn a_backend_that_stays_keeps_its_drain_pool_and_counters_across_a_change() {
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let hosts = [("127.0.0.1", "a.ringlb.test b.ringlb.test c.ringlb.test")];
    let srv = |t, b| srv_of(t, b, 1);
    let mut dns = Dnsmasq::start(&hosts, &[srv("a", &a), srv("b", &b)], 300);
    let keys = format!("dns = \"_http._tcp.{ZONE}\", interval = \"1s\", min_interval = \"200ms\"");
    let proxy = discovering(&dns, &keys, &[]).workers(1).start();
    let drain = format!("/backends/app/{}/drain", a.addr);
    assert_eq!(crate::admin::admin(&proxy, "POST", &drain).status, 200);
    let seen = served_by(&proxy, 4);
    assert_eq!(seen.get("b"), Some(&4), "{seen:?}");
    let b_connections = b.connections();
    let backend = |name: &Backend| {
        let status = status(&proxy);
        status["upstreams"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["addr"] == name.addr.to_string())
            .cloned()
            .expect("the backend in /status")
    };
    // A worker counts a request after its response went out: wait for it.
    let count = |name: &Backend| backend(name)["requests"].as_u64().unwrap();
    assert!(
        wait_until(WAIT, || count(&b) >= 4),
        "b counted {} requests",
        count(&b)
    );
    let b_requests = count(&b);

    dns.set_srv(&[srv("a", &a), srv("b", &b), srv("c", &c)]);
    converge(&proxy, "app", &set_of(&[(&a, 1), (&b, 1), (&c, 1)]));
    // `a` is still drained, `b`'s counters carry on.
    assert_eq!(backend(&a)["draining"], true);
    assert!(count(&b) >= b_requests);
    let seen = served_by(&proxy, 4);
    assert_eq!(
        (seen.get("b"), seen.get("c")),
        (Some(&2), Some(&2)),
        "{seen:?}"
    );
    // `b`'s pooled connection moved to the new config: no new connect.
    assert_eq!(b.connections(), b_connections);
}
