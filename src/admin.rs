//! The admin listener: `/metrics`, `/status`, `/healthz`, backend drain and
//! enable, and reload, over HTTP/1.1 on its own thread.
//!
//! Why a plain tokio runtime (epoll) on its own thread: this is a handful
//! of requests a minute from a scraper or an operator, but a slow or
//! hostile client must not hold it. Off the workers, a slow admin client
//! never takes an event loop's time; on epoll, each connection is a cheap
//! task, and a deadline may be raced against a read (a dropped tokio read
//! loses no bytes, unlike an io_uring op, so `timeout_at` is safe here).
//! Hooks and bcrypt run on a small blocking pool so `/healthz` is never
//! stuck behind them.
//!
//! Invariants:
//! - Never bound on a public listener (config refuses the same address).
//! - Every request is screened by a [`Guard`] (source, `Host`, cross-site,
//!   credentials; see `policy`) before any hook runs.
//! - Up to [`Limits::connections`] connections at once; one request per
//!   connection (`Connection: close`). The whole request (head and body)
//!   must arrive within [`Limits::request_timeout`] (408 otherwise), not
//!   per read. A head larger than [`MAX_HEAD_BYTES`] gets 431, a body
//!   larger than [`MAX_BODY_BYTES`] 413.
//! - Busy is never 503 (that means draining): past the slots, a small
//!   overflow set still answers `/healthz` and gives anything else 429;
//!   past that too, the connection is closed at once.
//! - Everything it does goes through [`AdminHooks`], so it is tested
//!   without the proxy; a hook that panics yields a 500, not a dead thread.

// This thread runs a plain tokio runtime (epoll), not `io::rt`: tokio's
// timers and spawn are its own.
#![allow(clippy::disallowed_methods)]

mod policy;

pub use policy::{Guard, BROWSER_HEADER, FAILURE_WINDOW, MAX_FAILURES};

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};

use crate::config::Config;
use crate::http;
use crate::metrics::prometheus::{Kind, Sample};
use crate::metrics::{self, BackendView, Snapshot};
use policy::{FailureLog, Head};

/// The status page served at `GET /`: one self-contained file (no
/// external scripts, fonts or styles) that polls `/status` and `/metrics`.
pub const STATUS_PAGE: &str = include_str!("admin/status.html");
/// The page may only talk to its own origin; inline script and style are
/// its own (the file above), nothing is loaded from elsewhere.
const STATUS_PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields in a request head.
pub const MAX_HEADERS: usize = 32;
/// Largest request body read (and ignored); the endpoints take none.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time to write a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads that run hooks and bcrypt.
const BLOCKING_THREADS: usize = 4;
/// Lines of one kind logged per second; the rest are counted and
/// reported as "N more suppressed".
const LOG_LINES_PER_SECOND: u32 = 5;

/// How many connections, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Connections past `connections` that are still read, for `/healthz`
    /// only (anything else gets 429).
    pub overflow: usize,
    /// The whole request, head and body, from the connection's accept.
    pub request_timeout: Duration,
    /// The same for an overflow connection.
    pub overflow_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 256,
            overflow: 32,
            request_timeout: Duration::from_secs(10),
            overflow_timeout: Duration::from_secs(2),
        }
    }
}

type Hook<T> = Box<dyn Fn() -> T + Send + Sync>;
/// `(upstream name, backend address, drain)`.
type DrainHook = Box<dyn Fn(&str, &str, bool) -> Result<(), String> + Send + Sync>;
/// Purges a cache zone by name; `Ok(n)`: entries removed, `Err`: no such
/// zone.
pub type PurgeHook = Box<dyn Fn(&str, &crate::cache::Purge) -> Result<u64, String> + Send + Sync>;

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
    /// `POST /cache/{zone}/purge?key=URL|prefix=P|all`; `None` when the
    /// build has no cache (404).
    pub purge_cache: Option<PurgeHook>,
    /// Where the listener counts what it refused.
    pub counters: Arc<AdminCounters>,
}

/// What the admin listener refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct AdminCounters {
    /// Missing or wrong credentials (401), and 429s for too many of them.
    pub auth_failures: AtomicU64,
    /// Requests refused by source, `Host` or cross-site checks (403, 421, 415).
    pub denied: AtomicU64,
    /// Connections answered 429 or closed at once because every slot was busy.
    pub busy: AtomicU64,
    /// Requests that did not arrive whole within the deadline (408).
    pub timeouts: AtomicU64,
}

impl AdminCounters {
    /// The counters as extra samples for the Prometheus text.
    pub fn samples(&self) -> [Sample<'static>; 4] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        [
            Sample {
                name: "ringlb_admin_auth_failures_total",
                help: "Admin requests with a missing or wrong credential (401), or refused for too many (429).",
                kind: Kind::Counter,
                value: v(&self.auth_failures),
            },
            Sample {
                name: "ringlb_admin_requests_denied_total",
                help: "Admin requests refused by source address, Host or cross-site checks (403, 421, 415).",
                kind: Kind::Counter,
                value: v(&self.denied),
            },
            Sample {
                name: "ringlb_admin_busy_total",
                help: "Admin connections refused or answered 429 because every slot was busy.",
                kind: Kind::Counter,
                value: v(&self.busy),
            },
            Sample {
                name: "ringlb_admin_request_timeouts_total",
                help: "Admin requests that did not arrive whole within the request deadline (408).",
                kind: Kind::Counter,
                value: v(&self.timeouts),
            },
        ]
    }
}

/// A running admin listener.
pub struct AdminServer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

enum Control {
    Move(TcpListener),
    Stop,
}

/// What the admin thread and its handles share.
struct Shared {
    /// The address served (port 0 resolved), or moved to.
    addr: Mutex<SocketAddr>,
    /// A duplicate of the listening socket, handed to a new process on a
    /// takeover.
    listener: Mutex<Option<TcpListener>>,
    guard: Mutex<Arc<Guard>>,
    control: mpsc::UnboundedSender<Control>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Moves a running admin listener to another address and applies new
/// `[admin]` checks (a reload).
#[derive(Clone)]
pub struct AdminRebind(Arc<Shared>);

impl AdminRebind {
    /// Serves on `listener` from the next connection on and closes the old
    /// one. Safe from inside an admin request (`POST /reload`).
    pub fn move_to(&self, listener: TcpListener) {
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!(error = %e, "admin listener has no address; not moved");
                return;
            }
        };
        *lock(&self.0.addr) = addr;
        *lock(&self.0.listener) = listener.try_clone().ok();
        let _ = self.0.control.send(Control::Move(listener));
        tracing::info!(listen = %addr, "admin listener moved");
    }

    /// A duplicate of the listening socket (for a takeover).
    pub fn listener(&self) -> Option<TcpListener> {
        lock(&self.0.listener)
            .as_ref()
            .and_then(|l| l.try_clone().ok())
    }

    /// Stops accepting (a takeover: the new process serves this socket);
    /// requests already read are still answered.
    pub fn stop_accepting(&self) {
        let _ = self.0.control.send(Control::Stop);
    }

    /// Checks the requests from now on with `guard`.
    pub fn set_guard(&self, guard: Guard) {
        *lock(&self.0.guard) = Arc::new(guard);
    }
}

impl AdminServer {
    /// Binds `addr` and serves on a new thread `ringlb-admin`.
    pub fn start(addr: SocketAddr, hooks: AdminHooks, guard: Guard) -> io::Result<AdminServer> {
        AdminServer::start_on(TcpListener::bind(addr)?, hooks, guard, Limits::default())
    }

    /// Serves on a bound listener (one received in a takeover, or bound
    /// by the caller) on a new thread `ringlb-admin`.
    pub fn start_on(
        listener: TcpListener,
        hooks: AdminHooks,
        guard: Guard,
        limits: Limits,
    ) -> io::Result<AdminServer> {
        listener.set_nonblocking(true)?;
        let (control, commands) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            addr: Mutex::new(listener.local_addr()?),
            listener: Mutex::new(Some(listener.try_clone()?)),
            guard: Mutex::new(Arc::new(guard)),
            control,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("ringlb-admin-hook")
            .build()?;
        let ctx = Arc::new(Ctx {
            hooks,
            shared: shared.clone(),
            slots: Arc::new(Semaphore::new(limits.connections)),
            overflow: Arc::new(Semaphore::new(limits.overflow)),
            limits,
            denied_log: LogLimiter::default(),
            auth_log: LogLimiter::default(),
            busy_log: LogLimiter::default(),
        });
        let thread = std::thread::Builder::new()
            .name("ringlb-admin".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, ctx, commands));
                // Hooks still running (a reload) are not waited for.
                runtime.shutdown_background();
            })?;
        Ok(AdminServer {
            shared,
            thread: Some(thread),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        *lock(&self.shared.addr)
    }

    /// A handle that moves this listener and changes its checks.
    pub fn rebinder(&self) -> AdminRebind {
        AdminRebind(self.shared.clone())
    }

    /// Stops accepting and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.shared.control.send(Control::Stop);
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

/// At most [`LOG_LINES_PER_SECOND`] lines a second of one kind.
#[derive(Default)]
struct LogLimiter(Mutex<(Option<Instant>, u32, u64)>);

impl LogLimiter {
    /// `Some(suppressed since the last line)` when this one may be logged.
    fn admit(&self) -> Option<u64> {
        let mut state = lock(&self.0);
        let (start, count, suppressed) = &mut *state;
        let now = Instant::now();
        if start.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1)) {
            *start = Some(now);
            *count = 0;
        }
        if *count < LOG_LINES_PER_SECOND {
            *count += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// What every connection task shares.
struct Ctx {
    hooks: AdminHooks,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    limits: Limits,
    denied_log: LogLimiter,
    auth_log: LogLimiter,
    busy_log: LogLimiter,
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    mut commands: mpsc::UnboundedReceiver<Control>,
) {
    let mut listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener cannot start");
            return;
        }
    };
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(Control::Move(next)) => {
                    let next = next
                        .set_nonblocking(true)
                        .and_then(|()| tokio::net::TcpListener::from_std(next));
                    match next {
                        // The old socket closes here.
                        Ok(next) => listener = next,
                        Err(e) => tracing::warn!(error = %e, "admin listener not moved"),
                    }
                }
                Some(Control::Stop) | None => return,
            },
            conn = listener.accept() => match conn {
                Ok((stream, peer)) => admit(&ctx, stream, peer),
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Whether a connection got a slot or only an overflow place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    HealthOnly,
}

fn admit(ctx: &Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let (mode, permit) = match ctx.slots.clone().try_acquire_owned() {
        Ok(permit) => (Mode::Full, permit),
        Err(_) => match ctx.overflow.clone().try_acquire_owned() {
            Ok(permit) => (Mode::HealthOnly, permit),
            Err(_) => {
                ctx.hooks.counters.busy.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = ctx.busy_log.admit() {
                    tracing::warn!(client = %peer, suppressed, "admin listener busy: connection refused");
                }
                // Refused: closed at once.
                drop(stream);
                return;
            }
        },
    };
    tokio::spawn(connection(ctx.clone(), stream, peer, mode, permit));
}

/// One parsed request.
struct Request {
    method: String,
    target: String,
    /// Lowercase names.
    headers: Vec<(String, String)>,
}

enum Read {
    /// The client left before a whole head.
    Closed,
    /// A bad head or body: answered, then closed after draining.
    Bad(Reply),
    Request(Request),
}

async fn connection(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    _permit: OwnedSemaphorePermit,
) {
    let limit = match mode {
        Mode::Full => ctx.limits.request_timeout,
        Mode::HealthOnly => ctx.limits.overflow_timeout,
    };
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (reply, linger) = match timeout_at(Instant::now() + limit, read_request(&stream)).await {
        Err(_elapsed) => {
            ctx.hooks.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = ctx.denied_log.admit() {
                tracing::warn!(client = %peer, suppressed, "admin request not received within {limit:?}: 408");
            }
            (Reply::text(408, "request not received in time\n"), true)
        }
        Ok(Err(_)) | Ok(Ok(Read::Closed)) => return,
        Ok(Ok(Read::Bad(reply))) => (reply, true),
        Ok(Ok(Read::Request(request))) => (ctx.answer(request, peer, local, mode).await, false),
    };
    let bytes = reply.to_bytes();
    let _ = timeout_at(Instant::now() + WRITE_TIMEOUT, write_all(&stream, &bytes)).await;
    close(stream, linger).await;
}

/// Reads one request head and its body (discarded).
async fn read_request(stream: &TcpStream) -> io::Result<Read> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() >= MAX_HEAD_BYTES {
            return Ok(Read::Bad(Reply::text(431, "request head too large\n")));
        }
        let room = (MAX_HEAD_BYTES - buf.len()).min(chunk.len());
        let n = read_some(stream, &mut chunk[..room]).await?;
        if n == 0 {
            return Ok(Read::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        // The proxy's own strict parser: the admin listener reads a head
        // exactly as the public listeners do.
        let limits = http::Limits {
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
        };
        let head = match http::parse_request(&buf, &limits) {
            Ok(http::Status::Complete(head)) => head,
            Ok(http::Status::Partial) => continue,
            Err(e) => {
                let status = e.status();
                return Ok(Read::Bad(Reply::text(status, format!("{}\n", e.reason()))));
            }
        };
        let head_len = head.head_len();
        let body_len = match head.body() {
            http::BodyKind::Empty => 0,
            http::BodyKind::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
            http::BodyKind::Chunked => return Ok(Read::Bad(Reply::text(411, "length required\n"))),
        };
        if body_len > MAX_BODY_BYTES {
            return Ok(Read::Bad(Reply::text(413, "body too large\n")));
        }
        let request = Request {
            method: head.method().to_owned(),
            target: head.target().to_owned(),
            headers: head
                .headers()
                .map(|(name, value)| {
                    (
                        name.to_ascii_lowercase(),
                        String::from_utf8_lossy(value).trim().to_owned(),
                    )
                })
                .collect(),
        };
        // Read and drop the body so closing does not reset the connection.
        let mut remaining = body_len.saturating_sub(buf.len() - head_len);
        while remaining > 0 {
            let n = read_some(stream, &mut chunk[..remaining.min(4096)]).await?;
            if n == 0 {
                return Ok(Read::Closed);
            }
            remaining -= n;
        }
        return Ok(Read::Request(request));
    }
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends a connection after its response: the client sees end of stream.
/// With `linger` (the request may not have been read whole), what the
/// client still sends is read and dropped for a moment first, so the
/// close does not reset the connection under the response.
async fn close(stream: TcpStream, linger: bool) {
    let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
    if linger {
        let mut sink = [0u8; 4096];
        let mut left = MAX_BODY_BYTES;
        let until = Instant::now() + Duration::from_secs(1);
        while left > 0 {
            match timeout_at(until, read_some(&stream, &mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }
}

impl Ctx {
    /// Screens `request`, then serves it. Hooks and credential checks run
    /// on the blocking pool; `/healthz` never waits for it.
    async fn answer(
        self: &Arc<Ctx>,
        request: Request,
        peer: SocketAddr,
        local: SocketAddr,
        mode: Mode,
    ) -> Reply {
        let guard = lock(&self.shared.guard).clone();
        let path = request.target.split('?').next().unwrap_or("").to_owned();
        let head = Head {
            method: &request.method,
            path: &path,
            headers: &request.headers,
            peer: peer.ip(),
            local,
        };
        let needs_credential = match guard.screen(&head) {
            Ok(needs) => needs,
            Err(denied) => {
                self.hooks.counters.denied.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.denied_log.admit() {
                    tracing::warn!(
                        client = %peer, method = %request.method, target = %request.target,
                        status = denied.status, suppressed, "admin request refused: {}", denied.reason
                    );
                }
                return Reply::denied(denied);
            }
        };
        let healthz = path == "/healthz" && matches!(request.method.as_str(), "GET" | "HEAD");
        if mode == Mode::HealthOnly && !healthz {
            self.hooks.counters.busy.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.busy_log.admit() {
                tracing::warn!(client = %peer, suppressed, "admin listener busy: 429");
            }
            let mut reply = Reply::text(429, "admin listener busy; try again\n");
            reply.headers.push(("Retry-After", "1".into()));
            return reply;
        }
        if healthz && !needs_credential {
            return route(&request.method, &request.target, &self.hooks);
        }
        let ctx = self.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let head = Head {
                method: &request.method,
                path: &path,
                headers: &request.headers,
                peer: peer.ip(),
                local,
            };
            if needs_credential {
                if let Err((denied, log)) = guard.authorize(&head, std::time::Instant::now()) {
                    ctx.hooks
                        .counters
                        .auth_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if log == FailureLog::Log {
                        if let Some(suppressed) = ctx.auth_log.admit() {
                            tracing::warn!(
                                client = %peer, method = %request.method, target = %request.target,
                                status = denied.status, suppressed, "admin credential refused: {}", denied.reason
                            );
                        }
                    }
                    return Reply::denied(denied);
                }
            }
            catch_unwind(AssertUnwindSafe(|| {
                route(&request.method, &request.target, &ctx.hooks)
            }))
            .unwrap_or_else(|_| Reply::text(500, "internal error\n"))
        })
        .await;
        ran.unwrap_or_else(|_| Reply::text(500, "internal error\n"))
    }
}

/// One response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn denied(denied: policy::Denied) -> Reply {
        let mut reply = Reply::text(denied.status, format!("{}\n", denied.reason));
        for challenge in denied.challenges {
            reply
                .headers
                .push(("WWW-Authenticate", challenge.to_owned()));
        }
        if let Some(secs) = denied.retry_after {
            reply.headers.push(("Retry-After", secs.to_string()));
        }
        reply
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Content Too Large",
            414 => "URI Too Long",
            415 => "Unsupported Media Type",
            421 => "Misdirected Request",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

fn route(method: &str, target: &str, hooks: &AdminHooks) -> Reply {
    let path = target.split('?').next().unwrap_or("");
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let allowed = match segments.as_slice() {
        [""] | ["metrics"] | ["status"] | ["healthz"] => "GET",
        ["reload"] | ["backends", _, _, "drain" | "enable"] | ["cache", _, "purge"] => "POST",
        _ => return Reply::text(404, "not found\n"),
    };
    if method != allowed && !(allowed == "GET" && method == "HEAD") {
        let mut reply = Reply::text(405, "method not allowed\n");
        reply.headers.push(("Allow", allowed.to_owned()));
        return reply;
    }
    match segments.as_slice() {
        [""] => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: STATUS_PAGE.to_owned(),
            headers: vec![("Content-Security-Policy", STATUS_PAGE_CSP.to_owned())],
        },
        ["metrics"] => Reply {
            status: 200,
            content_type: metrics::prometheus::CONTENT_TYPE,
            body: (hooks.metrics_text)(),
            headers: Vec::new(),
        },
        ["status"] => Reply {
            status: 200,
            content_type: "application/json",
            body: format!("{:#}\n", (hooks.status_json)()),
            headers: Vec::new(),
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
        ["cache", zone, "purge"] => {
            let Some(purge_cache) = &hooks.purge_cache else {
                return Reply::text(404, "not found\n");
            };
            let query = target.split_once('?').map_or("", |(_, q)| q);
            match purge_of(query) {
                Err(e) => Reply::text(400, format!("{e}\n")),
                Ok(purge) => match purge_cache(zone, &purge) {
                    Ok(n) => Reply::text(200, format!("{zone}: purged {n} entries\n")),
                    Err(e) => Reply::text(404, format!("{e}\n")),
                },
            }
        }
        ["backends", upstream, addr, action] => {
            let drain = *action == "drain";
            let done = if drain { "drained" } else { "enabled" };
            match (hooks.set_backend_draining)(upstream, addr, drain) {
                Ok(()) => Reply::text(200, format!("{upstream} {addr}: {done}\n")),
                Err(e) => Reply::text(404, format!("{e}\n")),
            }
        }
        _ => Reply::text(404, "not found\n"),
    }
}

/// What a purge's query names: exactly one of `key=URL`, `prefix=P`,
/// `all`.
fn purge_of(query: &str) -> Result<crate::cache::Purge, &'static str> {
    use crate::cache::Purge;
    const USAGE: &str = "give exactly one of key=URL, prefix=PREFIX or all (e.g. ?prefix=/api/)";
    let mut params = query.split('&').filter(|p| !p.is_empty());
    let (Some(param), None) = (params.next(), params.next()) else {
        return Err(USAGE);
    };
    let (name, value) = param.split_once('=').unwrap_or((param, ""));
    let value = percent_decode(value);
    match name {
        "all" if value.is_empty() || value == "true" => Ok(Purge::All),
        "key" if value.contains("://") => Ok(Purge::Url(value)),
        "prefix" if value.starts_with('/') => Ok(Purge::PathPrefix(value)),
        "prefix" if value.contains("://") => Ok(Purge::UrlPrefix(value)),
        "key" | "prefix" => Err(
            "key= takes a URL (http://host/path?query); prefix= a URL or a path starting with /",
        ),
        _ => Err(USAGE),
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

/// Whether `ip` is a loopback address (IPv4-mapped included).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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
    /// When this process started serving (for the uptime).
    pub started_at: SystemTime,
    /// The time of this report.
    pub now: SystemTime,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
    let loaded = unix_secs(info.config_loaded_at);
    let uptime = info
        .now
        .duration_since(info.started_at)
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
                    let in_class = |c: usize| -> u64 {
                        totals.map_or(0, |t| {
                            metrics::Method::ALL
                                .iter()
                                .map(|&m| t.requests(Some(b), c, m))
                                .sum()
                        })
                    };
                    let requests: u64 = (0..metrics::STATUS_CLASSES.len()).map(in_class).sum();
                    json!({
                        "addr": backend.addr.to_string(),
                        "weight": backend.weight.get(),
                        "down": backend.down,
                        "healthy": state.map(|s| s.healthy()),
                        "draining": state.map(|s| s.draining()),
                        "breaker": state.map(|s| breaker_name(s.breaker_state())),
                        "in_flight": state.map(|s| s.in_flight()),
                        "requests": requests,
                        "responses_5xx": in_class(CLASS_5XX),
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
        "started_at_unix": unix_secs(info.started_at),
        "uptime_secs": uptime,
        "now_unix": unix_secs(info.now),
        "workers": info.workers,
        "draining": info.draining,
        "listen": config.server.listen.iter().enumerate().map(|(i, l)| json!({
            "addr": l.addr.to_string(),
            "local": info.listening.get(i).map(|a| a.to_string()),
            "tls": l.tls.is_some(),
        })).collect::<Vec<_>>(),
        // `listening` holds the HTTP listeners' addresses, then these.
        "tcp": config.tcp.iter().enumerate().map(|(i, t)| json!({
            "name": t.name,
            "addr": t.listen.addr.to_string(),
            "local": info.listening.get(config.server.listen.len() + i).map(|a| a.to_string()),
            "upstream": t.upstream.map(|u| config.upstreams[u].name.clone()),
            "sni_routes": t.sni_routes.upstreams().count(),
            "proxy_protocol": t.listen.proxy_protocol.is_some(),
            "idle_timeout_secs": t.idle_timeout.as_secs_f64(),
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

/// Index of `5xx` in [`metrics::STATUS_CLASSES`]: what the status page
/// counts as an error.
const CLASS_5XX: usize = 4;

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
