//! Spawning and observing the real `ringlb` binary.
//!
//! Every test starts its own proxy process with a config written to a fresh
//! temp dir, listening on a free 127.0.0.1 port. The proxy's stderr goes to a
//! file in that dir; when a test panics while a [`Proxy`] is alive, the
//! stderr is printed so the failure can be diagnosed from the test output.
//! Invariants: nothing here binds or connects beyond loopback, and every wait
//! is a poll loop bounded by [`WAIT`] that fails loudly instead of skipping.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::Client;

/// The longest any test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// The built proxy binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringlb")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A port that was free a moment ago, for a proxy to listen on.
///
/// Ports come from below the kernel's ephemeral range (32768 and up), so
/// backends bound to port 0 and client sockets never take them, and each
/// is handed out at most once per test process, because the proxy binds
/// with `SO_REUSEPORT` and two test proxies on one port would silently
/// share connections. A bind probe skips ports other processes hold.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Spread concurrent test runs apart; the pid is as good as random.
    let base = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (LOW + (base + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// A loopback address where connecting is refused: a socket bound to it
/// that never listens keeps anyone else from taking the port.
pub struct Refused {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

impl Refused {
    pub fn new() -> Refused {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        socket.bind(&any.into()).expect("bind");
        let addr = socket.local_addr().unwrap().as_socket().expect("inet");
        Refused {
            addr,
            _socket: socket,
        }
    }
}

/// `/proc/net/tcp` rows as (local, remote, state, inode).
fn tcp_table() -> Vec<(SocketAddr, SocketAddr, u8, u64)> {
    fn addr(hex: &str) -> Option<SocketAddr> {
        let (ip, port) = hex.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::from((ip.to_le_bytes(), port)))
    }
    let text = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                addr(f.get(1)?)?,
                addr(f.get(2)?)?,
                u8::from_str_radix(f.get(3)?, 16).ok()?,
                f.get(9)?.parse().ok()?,
            ))
        })
        .collect()
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 0x0a;

/// Waits until no local socket connected to `peer` is still ESTABLISHED,
/// i.e. the kernel has processed the FIN of every connection `peer`
/// closed. Used where a test needs the proxy to be able to see a close.
pub fn wait_closes_seen_from(peer: SocketAddr) {
    let seen = wait_until(WAIT, || {
        !tcp_table()
            .iter()
            .any(|(_, remote, state, _)| *remote == peer && *state == TCP_ESTABLISHED)
    });
    assert!(
        seen,
        "connections to {peer} still ESTABLISHED after {WAIT:?}"
    );
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringlb-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the dir and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One backend line of an upstream: address, optional weight, `down`.
#[derive(Clone, Copy)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    pub weight: Option<u32>,
    pub down: bool,
}

impl From<SocketAddr> for BackendSpec {
    fn from(addr: SocketAddr) -> BackendSpec {
        BackendSpec {
            addr,
            weight: None,
            down: false,
        }
    }
}

struct UpstreamSpec {
    name: String,
    backends: Vec<BackendSpec>,
    extra: Vec<String>,
}

struct RouteSpec {
    path_prefix: String,
    host: Option<String>,
    upstream: String,
    /// Raw `key = value` lines added to the route's table.
    extra: Vec<String>,
}

/// Builds a config file and starts a proxy on it.
///
/// Defaults: `workers = 2`, `pin_workers = false`, and when no route is
/// given, one route `/` to the first upstream.
pub struct ProxyBuilder {
    workers: usize,
    /// Whether to add an `[admin]` listener on a free port.
    admin: bool,
    /// More lines of the `[admin]` section.
    admin_lines: Vec<String>,
    /// The `tls = { ... }` table of a second, TLS listener on a free port.
    tls: Option<String>,
    /// More `key = value` pairs of the plain listener's table.
    listen_options: Option<String>,
    server: Vec<String>,
    upstreams: Vec<UpstreamSpec>,
    routes: Vec<RouteSpec>,
    env: Vec<(String, String)>,
    /// Raw TOML appended at the end (top-level tables such as
    /// `[cache.zones.NAME]`).
    tail: Vec<String>,
}

impl ProxyBuilder {
    /// Adds a raw `key = value` line to `[server]`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_string());
        self
    }

    /// Adds `[admin] listen = "127.0.0.1:PORT"` on a free port; the
    /// address is [`Proxy::admin`].
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// Adds `[admin]` (see [`admin`](Self::admin)) with one more raw
    /// `key = value` line.
    pub fn admin_line(mut self, line: &str) -> Self {
        self.admin = true;
        self.admin_lines.push(line.to_string());
        self
    }

    /// Adds a second listener on a free port with this `tls = { ... }`
    /// table (`CERTS` in it is replaced by the repository's `certs/`
    /// directory); its address is [`Proxy::tls_addr`].
    pub fn tls_listener(mut self, table: &str) -> Self {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        self.tls = Some(table.replace("CERTS", &certs.display().to_string()));
        self
    }

    /// Writes the plain listener as a table, `{ addr = "...", OPTIONS }`
    /// (e.g. `allow = [...]`); not together with a TLS listener.
    pub fn listen_options(mut self, options: &str) -> Self {
        self.listen_options = Some(options.to_string());
        self
    }

    /// Like [`listen_options`](Self::listen_options) (the PROXY protocol
    /// tests' name for it).
    pub fn listen_fields(self, fields: &str) -> Self {
        self.listen_options(fields)
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Adds `[upstreams.NAME]` with these backends and raw extra lines.
    pub fn upstream<B: Into<BackendSpec> + Copy>(
        mut self,
        name: &str,
        backends: &[B],
        extra: &[&str],
    ) -> Self {
        self.upstreams.push(UpstreamSpec {
            name: name.to_string(),
            backends: backends.iter().map(|b| (*b).into()).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    pub fn route(self, path_prefix: &str, host: Option<&str>, upstream: &str) -> Self {
        self.route_with(path_prefix, host, upstream, &[])
    }

    /// Like [`route`](Self::route) with raw `key = value` lines in the
    /// route's table (gateway keys).
    pub fn route_with(
        mut self,
        path_prefix: &str,
        host: Option<&str>,
        upstream: &str,
        extra: &[&str],
    ) -> Self {
        self.routes.push(RouteSpec {
            path_prefix: path_prefix.to_string(),
            host: host.map(str::to_string),
            upstream: upstream.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// Appends raw TOML at the end of the file (a top-level table).
    pub fn toml(mut self, text: &str) -> Self {
        self.tail.push(text.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The config text for a proxy listening on `port`.
    pub fn config_text(&self, port: u16) -> String {
        let mut s = String::new();
        writeln!(s, "[server]").unwrap();
        match &self.listen_options {
            None => writeln!(s, "listen = [\"127.0.0.1:{port}\"]").unwrap(),
            Some(o) => writeln!(s, "listen = [{{ addr = \"127.0.0.1:{port}\", {o} }}]").unwrap(),
        }
        writeln!(s, "workers = {}", self.workers).unwrap();
        writeln!(s, "pin_workers = false").unwrap();
        for line in &self.server {
            writeln!(s, "{line}").unwrap();
        }
        let default_route = RouteSpec {
            path_prefix: "/".to_string(),
            host: None,
            upstream: self
                .upstreams
                .first()
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            extra: Vec::new(),
        };
        let routes = if self.routes.is_empty() {
            std::slice::from_ref(&default_route)
        } else {
            &self.routes[..]
        };
        for r in routes {
            writeln!(s, "\n[[routes]]").unwrap();
            writeln!(s, "path_prefix = \"{}\"", r.path_prefix).unwrap();
            if let Some(h) = &r.host {
                writeln!(s, "host = \"{h}\"").unwrap();
            }
            // An empty name: a route without upstream (a `redirect`).
            if !r.upstream.is_empty() {
                writeln!(s, "upstream = \"{}\"", r.upstream).unwrap();
            }
            for line in &r.extra {
                writeln!(s, "{line}").unwrap();
            }
        }
        for u in &self.upstreams {
            writeln!(s, "\n[upstreams.{}]", u.name).unwrap();
            let backends: Vec<String> = u
                .backends
                .iter()
                .map(|b| {
                    let mut fields = format!("addr = \"{}\"", b.addr);
                    if let Some(w) = b.weight {
                        fields.push_str(&format!(", weight = {w}"));
                    }
                    if b.down {
                        fields.push_str(", down = true");
                    }
                    format!("{{ {fields} }}")
                })
                .collect();
            writeln!(s, "backends = [{}]", backends.join(", ")).unwrap();
            for line in &u.extra {
                writeln!(s, "{line}").unwrap();
            }
        }
        for text in &self.tail {
            writeln!(s, "\n{text}").unwrap();
        }
        s
    }

    /// Writes the config, spawns `ringlb --config FILE`, and waits until the
    /// listener accepts connections.
    pub fn start(self) -> Proxy {
        self.start_with(&[])
    }

    /// Like [`start`](Self::start) with `leading` arguments before
    /// `--config FILE` (e.g. `["run"]`).
    pub fn start_with(self, leading: &[&str]) -> Proxy {
        // A port another process grabbed between our probe and the
        // proxy's bind is retried on a new port; any other failure is not.
        for _ in 0..5 {
            let proxy = self.spawn_only(leading);
            match proxy.try_wait_listening() {
                Ok(()) => return proxy,
                Err(_) if proxy.stderr().contains("Address already in use") => continue,
                Err(status) => proxy.exited_before_listening(status),
            }
        }
        panic!("ringlb could not bind a free port in 5 attempts");
    }

    /// Writes the config and spawns the proxy on a free port without
    /// waiting for it to listen.
    pub fn spawn_only(&self, leading: &[&str]) -> Proxy {
        let port = free_port();
        let mut text = self.config_text(port);
        let tls_addr = self.tls.as_ref().map(|table| {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let plain = format!("listen = [\"127.0.0.1:{port}\"]");
            let both =
                format!("listen = [\"127.0.0.1:{port}\", {{ addr = \"{addr}\", tls = {table} }}]");
            text = text.replacen(&plain, &both, 1);
            addr
        });
        let admin = self.admin.then(|| {
            let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            writeln!(text, "\n[admin]\nlisten = \"{admin}\"").unwrap();
            for line in &self.admin_lines {
                writeln!(text, "{line}").unwrap();
            }
            admin
        });
        let dir = TempDir::new();
        let config = dir.write("ringlb.toml", &text);
        let mut args: Vec<String> = leading.iter().map(|s| s.to_string()).collect();
        args.extend(["--config".to_string(), config.display().to_string()]);
        let mut proxy = Proxy::spawn(dir, &args, &self.env, port, text);
        proxy.admin = admin;
        proxy.tls_addr = tls_addr;
        proxy
    }
}

/// A running proxy process, killed on drop.
pub struct Proxy {
    child: Mutex<Option<Child>>,
    pid: u32,
    pub addr: SocketAddr,
    /// The admin listener, with [`ProxyBuilder::admin`].
    pub admin: Option<SocketAddr>,
    /// The TLS listener, with [`ProxyBuilder::tls_listener`].
    pub tls_addr: Option<SocketAddr>,
    _dir: TempDir,
    stderr_path: PathBuf,
    config_text: String,
}

impl Proxy {
    /// A builder with upstream `app` on `backend` and one route `/` to
    /// it with the route `lines` (a gateway feature under test).
    pub fn with_route(backend: SocketAddr, lines: &[&str]) -> ProxyBuilder {
        Proxy::builder()
            .upstream("app", &[backend], &[])
            .route_with("/", None, "app", lines)
    }

    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            workers: 2,
            admin: false,
            admin_lines: Vec::new(),
            tls: None,
            listen_options: None,
            server: Vec::new(),
            upstreams: Vec::new(),
            routes: Vec::new(),
            env: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// A proxy with one upstream `app` over `backends` and a route `/`.
    pub fn simple(backends: &[SocketAddr]) -> Proxy {
        Proxy::builder().upstream("app", backends, &[]).start()
    }

    /// Spawns the binary with `args`; stderr goes to a file in `dir`.
    pub fn spawn(
        dir: TempDir,
        args: &[String],
        env: &[(String, String)],
        port: u16,
        config_text: String,
    ) -> Proxy {
        let stderr_path = dir.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).expect("create stderr log");
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ringlb");
        Proxy {
            pid: child.id(),
            child: Mutex::new(Some(child)),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: None,
            tls_addr: None,
            _dir: dir,
            stderr_path,
            config_text,
        }
    }

    /// Polls until a TCP connect to the listener succeeds and the listening
    /// socket is the proxy's own; panics with the proxy's stderr if it exits
    /// or does not listen within [`WAIT`].
    pub fn wait_listening(&self) {
        if let Err(status) = self.try_wait_listening() {
            self.exited_before_listening(status);
        }
    }

    fn exited_before_listening(&self, status: ExitStatus) -> ! {
        panic!(
            "ringlb exited with {status} before listening on {}\nconfig:\n{}\nstderr:\n{}",
            self.addr,
            self.config_text,
            self.stderr()
        );
    }

    /// Whether one of the proxy's fds is a socket listening on its port.
    fn owns_listener(&self) -> bool {
        let inodes: Vec<u64> = tcp_table()
            .into_iter()
            .filter(|(local, _, state, _)| *local == self.addr && *state == TCP_LISTEN)
            .map(|(_, _, _, inode)| inode)
            .collect();
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return false;
        };
        fds.flatten().any(|fd| {
            let target = fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            inodes
                .iter()
                .any(|i| target == format!("socket:[{i}]").as_str())
        })
    }

    /// Like [`wait_listening`](Self::wait_listening), but returns the exit
    /// status instead of panicking if the proxy exits first.
    fn try_wait_listening(&self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && self.owns_listener()
            {
                return Ok(());
            }
            if let Some(status) = self.try_status() {
                return Err(status);
            }
            if Instant::now() >= deadline {
                panic!(
                    "ringlb not listening on {} after {WAIT:?}\nstderr:\n{}",
                    self.addr,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The temp dir holding the config file (relative paths in the config,
    /// such as an access log, resolve here).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Everything the proxy wrote to stderr (and stdout) so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The log lines (ANSI stripped) containing every one of `needles`,
    /// with the time each was logged. Each line is matched with a space
    /// appended, so a needle `"key=value "` also matches the last field.
    /// Panics on a matching line without a leading RFC 3339 UTC timestamp,
    /// which the log format always has.
    pub fn log_events(&self, needles: &[&str]) -> Vec<(SystemTime, String)> {
        strip_ansi(&self.stderr())
            .lines()
            .filter(|l| {
                let l = format!("{l} ");
                needles.iter().all(|n| l.contains(n))
            })
            .map(|l| {
                let at = log_time(l).unwrap_or_else(|| panic!("no timestamp in log line {l:?}"));
                (at, l.to_string())
            })
            .collect()
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap();
        child.as_mut()?.try_wait().expect("try_wait")
    }

    /// A new raw client connected to the proxy.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// A signal ready to go: a shell already waiting on a pipe, so firing
    /// it takes microseconds (spawning `kill` takes about a millisecond).
    pub fn armed_signal(&self, name: &str) -> ArmedSignal {
        let child = Command::new("sh")
            .args(["-c", "read _ && kill -s \"$1\" \"$2\"", "sh", name])
            .arg(self.pid.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        ArmedSignal(child)
    }

    /// Waits up to [`WAIT`] for the process to exit and returns its status.
    pub fn wait_for_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "ringlb did not exit within {WAIT:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Number of open file descriptors of the proxy process.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// What each fd points at, for failure messages.
    pub fn fd_listing(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = fs::read_dir(format!("/proc/{}/fd", self.pid())) {
            for e in entries.flatten() {
                let target = fs::read_link(e.path()).unwrap_or_default();
                writeln!(
                    out,
                    "  {} -> {}",
                    e.file_name().to_string_lossy(),
                    target.display()
                )
                .unwrap();
            }
        }
        out
    }

    /// The fd count once it has stopped changing (same value for 500 ms).
    pub fn settled_fd_count(&self) -> usize {
        let deadline = Instant::now() + WAIT;
        let mut last = self.fd_count();
        let mut stable_since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(50));
            let now = self.fd_count();
            if now != last {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_millis(500) {
                return now;
            }
            if Instant::now() >= deadline {
                return now;
            }
        }
    }

    /// Waits up to [`WAIT`] for the fd count to drop to `baseline` or below;
    /// panics with the fd listing otherwise.
    pub fn assert_fds_return_to(&self, baseline: usize, what: &str) {
        if !wait_until(WAIT, || self.fd_count() <= baseline) {
            panic!(
                "fd leak after {what}: baseline {baseline}, now {}\nfds:\n{}",
                self.fd_count(),
                self.fd_listing()
            );
        }
    }

    /// Resident set size of the proxy in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

/// See [`Proxy::armed_signal`].
pub struct ArmedSignal(Child);

impl ArmedSignal {
    /// Sends the signal and waits for the shell to finish.
    pub fn fire(mut self) {
        use std::io::Write;
        let mut stdin = self.0.stdin.take().expect("piped stdin");
        stdin.write_all(b"go\n").expect("write to sh");
        drop(stdin);
        let status = self.0.wait().expect("wait for sh");
        assert!(status.success(), "sh kill failed: {status}");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- ringlb config ----\n{}\n---- ringlb stderr ({}) ----\n{}\n---- end ringlb stderr ----",
                self.config_text,
                self.stderr_path.display(),
                self.stderr()
            );
        }
    }
}

/// The leading `YYYY-MM-DDTHH:MM:SS.ffffffZ` timestamp of a log line.
pub fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let nanos: u64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days since 1970-01-01 in the proleptic Gregorian calendar
    // (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// `text` without ANSI escape sequences (tracing may colour its output).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs the binary to completion with `args` (and extra env) and returns its
/// output; fails if it does not exit within [`WAIT`].
/// Runs `ringlb check` on `text`, written to `dir/bad.toml`: it must exit 1
/// and name `{path}{want}` (file:line:col: key: ...). Returns its output.
pub fn check_rejects(dir: &TempDir, text: &str, want: &str) -> String {
    let (p, all) = check_fails(dir, text);
    assert!(
        all.contains(&format!("{p}{want}")),
        "want {p}{want:?} in:\n{all}\nfor:\n{text}"
    );
    all
}

/// Runs `ringlb check` on `text`, written to `dir/bad.toml`, and asserts
/// that it exits 1; returns the file's path and the output.
pub fn check_fails(dir: &TempDir, text: &str) -> (String, String) {
    let (code, all, p) = run_check(dir, text);
    assert_eq!(code, Some(1), "{text}\n{all}");
    (p, all)
}

/// Runs `ringlb check` on `text`, written to `dir/bad.toml`; returns its
/// exit code, its output (stdout then stderr, colours stripped) and the
/// file's path.
pub fn run_check(dir: &TempDir, text: &str) -> (Option<i32>, String, String) {
    let path = dir.write("bad.toml", text);
    let p = path.to_str().unwrap().to_string();
    let out = run_bin(&["check", "--config", &p], &[]);
    let all = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    (out.status.code(), all, p)
}

pub fn run_bin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ringlb");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "`ringlb {}` did not exit within {WAIT:?}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// A loopback address where TCP connects hang: a listener with backlog 0
/// whose accept queue is full and is never accepted from, so the kernel
/// drops further SYNs. Works on Linux (`tcp_abort_on_overflow = 0`, the
/// default); construction fails loudly if the hang cannot be observed.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        listener.bind(&any.into()).expect("bind blackhole");
        listener.listen(0).expect("listen(0)");
        let addr = listener
            .local_addr()
            .unwrap()
            .as_socket()
            .expect("inet address");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Blackhole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    };
                }
                Err(e) => panic!("blackhole probe failed unexpectedly: {e}"),
            }
        }
        panic!(
            "could not make connects to {addr} hang after {} queued connections; \
             this machine needs another way to test connect_timeout",
            fillers.len()
        );
    }
}
