//! The admin listener: `/metrics`, `/status`, `/healthz`, backend drain and
//! enable, and reload, over HTTP/1.1 on its own thread.
//!
//! Why std sockets on a plain thread: this is a handful of requests a
//! minute from a scraper or an operator; keeping it off the workers means
//! a slow admin client can never take an event loop's time, and blocking
//! sockets with `set_read_timeout` are simple and, outside io_uring, safe.
//!
//! Invariants:
//! - Never bound on a public listener (config refuses the same address).
//! - Up to [`MAX_CONNECTIONS`] connections at once, each on a short-lived
//!   thread (a slow client cannot hold up a scrape); beyond that a client
//!   gets 503 at once. One request per connection (`Connection: close`);
//!   a head larger than [`MAX_HEAD_BYTES`] gets 431,
//!   a client silent for [`IO_TIMEOUT`] is dropped, request bodies larger
//!   than [`MAX_BODY_BYTES`] get 413.
//! - Everything it does goes through [`AdminHooks`], so it is tested
//!   without the proxy; a hook that panics yields a 500, not a dead thread.
//! - No authentication: bind it to loopback or a management network.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::Config;
use crate::metrics::{self, BackendView, Snapshot};

/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest request body read (and ignored); the endpoints take none.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Read and write timeout per socket operation.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

type Hook<T> = Box<dyn Fn() -> T + Send + Sync>;
/// `(upstream name, backend address, drain)`.
type DrainHook = Box<dyn Fn(&str, &str, bool) -> Result<(), String> + Send + Sync>;

/// What the admin endpoints do, provided by the server.
pub struct AdminHooks {
    /// `GET /metrics`: the Prometheus text.
    pub metrics_text: Hook<String>,
    /// `GET /status`: a JSON document (see [`status_json`]).
    pub status_json: Hook<Value>,
    /// `GET /healthz`: 200 while false, 503 once the server drains.
    pub draining: Arc<AtomicBool>,
    /// `POST /backends/{upstream}/{addr}/drain` (`true`) and `/enable`
    /// (`false`). `Err` (unknown upstream or backend) becomes a 404.
    pub set_backend_draining: DrainHook,
    /// `POST /reload`: load, check and apply the config file. `Err` (the
    /// config was rejected; the old one keeps running) becomes a 500 with
    /// the message. `None`: reload is not available in this build (501).
    pub reload: Option<Hook<Result<(), String>>>,
}

/// A running admin listener.
pub struct AdminServer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the admin thread and its handles share.
struct Shared {
    state: Mutex<ListenState>,
    stop: AtomicBool,
}

struct ListenState {
    /// The address served (port 0 resolved), or moved to.
    addr: SocketAddr,
    /// A listener to move to, set by [`AdminRebind::move_to`] and taken
    /// by the thread before its next accept.
    next: Option<TcpListener>,
    /// While `next` waits: the address of the listener the thread still
    /// blocks on.
    serving: Option<SocketAddr>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, ListenState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn addr(&self) -> SocketAddr {
        self.state().addr
    }

    /// Wakes a blocking accept on `addr` with a connection that sends
    /// nothing and closes at once.
    fn wake(addr: SocketAddr) {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }

    /// Wakes the thread wherever it blocks: on the current listener, and
    /// on the old one if a move is still pending (a connection queued on
    /// the new one wakes it once it got there).
    fn wake_thread(&self) {
        let (addr, serving) = {
            let state = self.state();
            (state.addr, state.serving)
        };
        Shared::wake(addr);
        if let Some(old) = serving {
            Shared::wake(old);
        }
    }
}

/// Moves a running admin listener to another address (a reload changed
/// `[admin] listen`).
#[derive(Clone)]
pub struct AdminRebind(Arc<Shared>);

impl AdminRebind {
    /// Serves on `listener` from the next connection on and closes the old
    /// one. Safe from inside an admin request (`POST /reload`): the thread
    /// switches after it answered.
    pub fn move_to(&self, listener: TcpListener) {
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!(error = %e, "admin listener has no address; not moved");
                return;
            }
        };
        {
            let mut state = self.0.state();
            // A second move before the thread took the first: it still
            // blocks where it did.
            let serving = state.serving.unwrap_or(state.addr);
            state.serving = Some(serving);
            state.addr = addr;
            state.next = Some(listener);
        }
        self.0.wake_thread();
        tracing::info!(listen = %addr, "admin listener moved");
    }
}

impl AdminServer {
    /// Binds `addr` and serves on a new thread `ringlb-admin`.
    pub fn start(addr: SocketAddr, hooks: AdminHooks) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(addr)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(ListenState {
                addr: listener.local_addr()?,
                next: None,
                serving: None,
            }),
            stop: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ringlb-admin".into())
            .spawn(move || serve(listener, Arc::new(hooks), &thread_shared))?;
        Ok(AdminServer {
            shared,
            thread: Some(thread),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr()
    }

    /// A handle that moves this listener to another address.
    pub fn rebinder(&self) -> AdminRebind {
        AdminRebind(self.shared.clone())
    }

    /// Stops accepting and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake_thread();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

/// Gives back a connection slot when its thread ends, even by a panic.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(mut listener: TcpListener, hooks: Arc<AdminHooks>, shared: &Shared) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        {
            let mut state = shared.state();
            if let Some(next) = state.next.take() {
                // The old socket closes here.
                listener = next;
                state.serving = None;
            }
        }
        let conn = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok((mut stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = respond(&mut stream, &Reply::text(503, "admin listener busy\n"));
                    close(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let slot = Slot(active.clone());
                let hooks = hooks.clone();
                let spawned = std::thread::Builder::new()
                    .name("ringlb-admin-conn".into())
                    .spawn(move || {
                        let mut stream = stream;
                        if let Err(e) = handle(&mut stream, &hooks) {
                            tracing::debug!(error = %e, "admin connection failed");
                        }
                        // The slot is free before the client sees the end,
                        // so a client's next connection finds it free.
                        drop(slot);
                        close(stream);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start an admin connection thread");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: Option<&'static str>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: None,
        }
    }
}

/// Serves one request on `stream`; the caller closes it.
fn handle(stream: &mut TcpStream, hooks: &AdminHooks) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    let (method, path, head_len, body_len) = loop {
        if len == buf.len() {
            return respond(stream, &Reply::text(431, "request head too large\n"));
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let body_len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                    });
                let chunked = req
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
                let body_len: usize = match body_len {
                    _ if chunked => return respond(stream, &Reply::text(411, "length required\n")),
                    None => 0,
                    Some(Some(n)) => n,
                    Some(None) => {
                        return respond(stream, &Reply::text(400, "bad content-length\n"))
                    }
                };
                let method = req.method.unwrap_or("").to_owned();
                let path = req.path.unwrap_or("").to_owned();
                break (method, path, head_len, body_len);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return respond(stream, &Reply::text(400, "bad request\n")),
        }
    };
    if body_len > MAX_BODY_BYTES {
        return respond(stream, &Reply::text(413, "body too large\n"));
    }
    // Read and drop the body so closing does not reset the connection.
    let mut remaining = body_len.saturating_sub(len - head_len);
    while remaining > 0 {
        let n = stream.read(&mut buf[..remaining.min(MAX_HEAD_BYTES)])?;
        if n == 0 {
            break;
        }
        remaining -= n;
    }
    let reply = catch_unwind(AssertUnwindSafe(|| route(&method, &path, hooks)))
        .unwrap_or_else(|_| Reply::text(500, "internal error\n"));
    respond(stream, &reply)
}

fn route(method: &str, target: &str, hooks: &AdminHooks) -> Reply {
    let path = target.split('?').next().unwrap_or("");
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let allowed = match segments.as_slice() {
        ["metrics"] | ["status"] | ["healthz"] => "GET",
        ["reload"] | ["backends", _, _, "drain" | "enable"] => "POST",
        _ => return Reply::text(404, "not found\n"),
    };
    if method != allowed && !(allowed == "GET" && method == "HEAD") {
        let mut reply = Reply::text(405, "method not allowed\n");
        reply.allow = Some(allowed);
        return reply;
    }
    match segments.as_slice() {
        ["metrics"] => Reply {
            status: 200,
            content_type: metrics::prometheus::CONTENT_TYPE,
            body: (hooks.metrics_text)(),
            allow: None,
        },
        ["status"] => Reply {
            status: 200,
            content_type: "application/json",
            body: format!("{:#}\n", (hooks.status_json)()),
            allow: None,
        },
        ["healthz"] => {
            if hooks.draining.load(Ordering::Relaxed) {
                Reply::text(503, "draining\n")
            } else {
                Reply::text(200, "ok\n")
            }
        }
        ["reload"] => match hooks.reload.as_ref().map(|reload| reload()) {
            None => Reply::text(501, "reload is not supported yet\n"),
            Some(Ok(())) => Reply::text(200, "reloaded\n"),
            Some(Err(e)) => Reply::text(500, format!("reload failed: {e}\n")),
        },
        ["backends", upstream, addr, action] => {
            let drain = *action == "drain";
            match (hooks.set_backend_draining)(upstream, addr, drain) {
                Ok(()) => Reply::text(200, format!("{upstream} {addr}: {action}d\n")),
                Err(e) => Reply::text(404, format!("{e}\n")),
            }
        }
        _ => Reply::text(404, "not found\n"),
    }
}

/// `%XX` decoding, for upstream names and `[v6]:port` addresses in paths.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(stream: &mut TcpStream, reply: &Reply) -> io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if let Some(allow) = reply.allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(reply.body.as_bytes())?;
    stream.flush()
}

/// Ends a connection after its response: the client sees end of stream.
fn close(stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// What `/status` reports beyond the config and the counters.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    /// Increments with each applied reload; 1 for the config loaded at start.
    pub config_version: u64,
    /// When the running config was loaded.
    pub config_loaded_at: SystemTime,
    pub workers: usize,
    pub draining: bool,
    /// The bound address of each `server.listen` entry (port 0 resolved).
    pub listening: Vec<SocketAddr>,
}

/// The `/status` document: config version and load time, workers, and per
/// upstream its backends with health, drain, breaker, in-flight and
/// request counts; then the process-wide counters. `backends[u][b]` follows
/// `config.upstreams` order.
pub fn status_json<B: BackendView>(
    config: &Config,
    info: StatusInfo,
    snapshot: &Snapshot,
    backends: &[Vec<B>],
) -> Value {
    let loaded = info
        .config_loaded_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let upstreams: Vec<Value> = config
        .upstreams
        .iter()
        .enumerate()
        .map(|(u, upstream)| {
            let totals = snapshot.upstreams.get(u);
            let list: Vec<Value> = upstream
                .backends
                .iter()
                .enumerate()
                .map(|(b, backend)| {
                    let state = backends.get(u).and_then(|s| s.get(b));
                    let requests: u64 = totals.map_or(0, |t| {
                        (0..metrics::STATUS_CLASSES.len())
                            .flat_map(|c| metrics::Method::ALL.map(|m| t.requests(Some(b), c, m)))
                            .sum()
                    });
                    json!({
                        "addr": backend.addr.to_string(),
                        "weight": backend.weight.get(),
                        "down": backend.down,
                        "healthy": state.map(|s| s.healthy()),
                        "draining": state.map(|s| s.draining()),
                        "breaker": state.map(|s| breaker_name(s.breaker_state())),
                        "in_flight": state.map(|s| s.in_flight()),
                        "requests": requests,
                    })
                })
                .collect();
            json!({
                "name": upstream.name,
                "strategy": upstream.strategy.name(),
                "tls": upstream.tls.is_some(),
                "requests": totals.map_or(0, |t| t.requests_total()),
                "retries": totals.map_or(0, |t| t.retries),
                "backends": list,
            })
        })
        .collect();
    let t = &snapshot.totals;
    json!({
        "config": {
            "path": config.source_path.display().to_string(),
            "version": info.config_version,
            "loaded_at_unix": loaded,
        },
        "workers": info.workers,
        "draining": info.draining,
        "listen": config.server.listen.iter().enumerate().map(|(i, l)| json!({
            "addr": l.addr.to_string(),
            "local": info.listening.get(i).map(|a| a.to_string()),
            "tls": l.tls.is_some(),
        })).collect::<Vec<_>>(),
        "upstreams": upstreams,
        "counters": {
            "connections_accepted": t.connections_accepted,
            "connections_open": t.connections_open,
            "requests": t.requests,
            "requests_in_flight": t.requests_in_flight,
            "responses_2xx": t.responses_2xx,
            "responses_3xx": t.responses_3xx,
            "responses_4xx": t.responses_4xx,
            "responses_5xx": t.responses_5xx,
            "pool_hits": t.pool_hits,
            "pool_misses": t.pool_misses,
            "pool_reuse_ratio": t.pool_reuse_ratio(),
            "retries": t.retries,
            "retries_refused": t.retries_refused,
            "tls_handshakes": t.tls_handshakes,
            "tls_handshake_failures": t.tls_handshake_failures,
            "config_reloads": t.config_reloads,
            "config_reload_failures": t.config_reload_failures,
        },
    })
}

fn breaker_name(state: u8) -> &'static str {
    match state {
        0 => "closed",
        1 => "open",
        2 => "half_open",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
