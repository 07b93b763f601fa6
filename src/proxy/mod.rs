//! The per-connection state machine: read a request head, pick a backend,
//! relay the request and the response, then loop for the next request.
//!
//! Invariants:
//! * bytes the client sent after the current request's body stay in the
//!   client buffer and are parsed as the next request (pipelining, and an
//!   `Upgrade` that the backend did not accept);
//! * a response head goes to the client only once the whole upstream head is
//!   valid, so every upstream failure before that point becomes a 502/503/504;
//! * an upstream connection returns to the pool only when both bodies ended
//!   exactly at their framing and the backend allowed keep-alive;
//! * buffers are bounded by `buffer_size` (bodies) and `max_head_bytes`
//!   (heads); no body is ever held whole.

mod body;
pub(crate) mod client_tls;
mod error;
mod exchange;
mod tunnel;

pub use error::{ClientFailure, UpstreamFailure};

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::access_log::{self, Entry, WorkerLog};
use crate::config::{Config, HashKeySource, StickyCookieConfig, Strategy};
use crate::http::{self, BodyKind, ForwardContext, LocalReply, Version};
use crate::io::{Closer, Conn};
use crate::metrics::{Method, WorkerMetrics};
use crate::route::RouteTable;
use crate::upstream::balance::{self, Balancer};
use crate::upstream::pool::{Checkout, Pool};
use crate::upstream::retry::{RetryBudget, RetryPolicy};
use crate::upstream::{clock, Backend, BackendState};

use client_tls::{write_plaintext, ClientTls};
use exchange::{exchange, Next, Pooled};

/// How long a request with `Expect: 100-continue` waits for the backend's
/// interim answer before the proxy sends `100 Continue` itself (curl waits
/// one second too).
const EXPECT_CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, so the kernel does not answer with a reset that
/// would destroy the response in flight (nginx's lingering close).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Spare relay buffers a worker keeps (at `buffer_size` each, 16 MiB at
/// the defaults).
const MAX_SPARE_BUFFERS: usize = 1024;

/// One upstream as a worker sees it.
struct UpstreamRt {
    name: String,
    backends: Vec<Backend>,
    /// Global index of `backends[0]` in the worker's pool.
    first_slot: usize,
    balancer: Box<dyn Balancer>,
    strategy: Strategy,
    hash_key: HashKeySource,
    /// The cookie, for `strategy = "sticky_cookie"` only.
    sticky: Option<StickyCookieConfig>,
    panic_mode: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    retry: RetryPolicy,
    /// This worker's retry budget for the upstream (core-local).
    budget: RetryBudget,
    /// `tls = true`: TLS to the backends.
    tls: Option<UpstreamTls>,
}

/// TLS to an upstream's backends.
#[derive(Clone)]
struct UpstreamTls {
    /// `None`: the CA file could not be loaded (it was when the config
    /// was checked); every connect then fails rather than going plain.
    config: Option<Arc<rustls::ClientConfig>>,
    /// `tls_server_name`; `None`: the backend's IP address.
    name: Option<rustls::pki_types::ServerName<'static>>,
}

/// Everything a worker owns: its config snapshot, routes, balancer cursors,
/// pool and metrics shard. Shared by the worker's connection tasks through
/// an `Rc`; no `RefCell` borrow is held across an await.
pub struct Worker {
    config: Arc<Config>,
    routes: RouteTable,
    upstreams: RefCell<Vec<UpstreamRt>>,
    pool: RefCell<Pool<Pooled>>,
    /// Spare relay buffers, so a request or a connection does not cost a
    /// `buffer_size` allocation.
    spare_buffers: RefCell<Vec<Vec<u8>>>,
    /// Retry jitter.
    rng: RefCell<fastrand::Rng>,
    limits: http::Limits,
    pub metrics: Arc<WorkerMetrics>,
    /// This worker's access log buffer, when `server.access_log` is set.
    log: Option<RefCell<WorkerLog>>,
    /// A graceful stop began: no keep-alive, no waiting for new requests.
    draining: Cell<bool>,
    /// The worker built from a newer config by a reload: connections move
    /// to it between requests.
    successor: RefCell<Option<Rc<Worker>>>,
    /// Client connections idle between requests, with their listener's
    /// removed flag (their read ends when the stop begins, or when a
    /// reload removes their listener).
    idle: RefCell<slab::Slab<(Closer, ListenerRemoved)>>,
}

impl Worker {
    /// `backend_states[u][b]` is the shared state of backend `b` of
    /// upstream `u`; every worker gets the same `Arc`s.
    pub fn new(
        config: Arc<Config>,
        backend_states: &[Vec<Arc<BackendState>>],
        worker_index: usize,
        metrics: Arc<WorkerMetrics>,
        log: Option<WorkerLog>,
    ) -> Worker {
        let mut upstreams = Vec::new();
        let mut pool_limits = Vec::new();
        for (u, up) in config.upstreams.iter().enumerate() {
            let backends: Vec<Backend> = up
                .backends
                .iter()
                .zip(&backend_states[u])
                .map(|(b, state)| Backend::new(b.addr, u32::from(b.weight.get()), state.clone()))
                .collect();
            let first_slot = pool_limits.len();
            pool_limits.extend(backends.iter().map(|_| (up.max_idle, up.idle_timeout)));
            upstreams.push(UpstreamRt {
                name: up.name.clone(),
                balancer: balance::build(up.strategy, &backends, worker_index),
                backends,
                first_slot,
                strategy: up.strategy,
                hash_key: up.hash_key.clone(),
                sticky: (up.strategy == Strategy::StickyCookie).then(|| up.sticky_cookie.clone()),
                panic_mode: up.panic_mode,
                connect_timeout: up.connect_timeout,
                response_timeout: up.response_timeout,
                retry: RetryPolicy::new(&up.retry),
                budget: RetryBudget::new(up.retry.budget.get(), clock::now_nanos()),
                tls: up.tls.as_ref().map(|t| UpstreamTls {
                    config: crate::tls::load_client_config(&t.ca)
                        .map_err(|e| tracing::error!(upstream = %up.name, "TLS to upstream: {e}"))
                        .ok(),
                    name: t
                        .server_name
                        .as_deref()
                        .and_then(|n| crate::tls::server_name(n).ok()),
                }),
            });
        }
        Worker {
            routes: RouteTable::from_config(&config),
            limits: http::Limits {
                max_head_bytes: config.server.max_head_bytes,
                max_headers: config.server.max_headers.get(),
            },
            upstreams: RefCell::new(upstreams),
            pool: RefCell::new(Pool::new(pool_limits)),
            spare_buffers: RefCell::new(Vec::new()),
            rng: RefCell::new(fastrand::Rng::new()),
            config,
            metrics,
            log: log.map(RefCell::new),
            draining: Cell::new(false),
            successor: RefCell::new(None),
            idle: RefCell::new(slab::Slab::new()),
        }
    }

    /// The config this worker was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the graceful stop has begun on this worker.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Begins the graceful stop: responses from now on say
    /// `Connection: close`, and connections idle between requests are
    /// woken (their read sees end of stream) and closed.
    pub fn begin_drain(&self) {
        self.draining.set(true);
        for (_, (closer, _)) in self.idle.borrow().iter() {
            closer.shutdown_read();
        }
    }

    /// A reload removed a listener: its connections idle between requests
    /// on this worker are woken and closed (the others close after their
    /// current response).
    pub fn close_idle_from(&self, listener: &ListenerRemoved) {
        for (_, (closer, from)) in self.idle.borrow().iter() {
            if Rc::ptr_eq(from, listener) {
                closer.shutdown_read();
            }
        }
    }

    /// After a reload: `next` serves every request that starts from now
    /// on, including the next request of connections open on this one.
    pub fn hand_over_to(&self, next: Rc<Worker>) {
        self.hand_over_pool(&next);
        *self.successor.borrow_mut() = Some(next);
    }

    /// Moves the idle pooled connections of every backend the new config
    /// keeps (same upstream name and address, same upstream TLS settings)
    /// to `next`'s pool.
    fn hand_over_pool(&self, next: &Worker) {
        let (old_ups, new_ups) = (self.upstreams.borrow(), next.upstreams.borrow());
        let (mut old_pool, mut new_pool) = (self.pool.borrow_mut(), next.pool.borrow_mut());
        let now = Instant::now();
        for (u, old_up) in old_ups.iter().enumerate() {
            let Some(v) = new_ups.iter().position(|n| n.name == old_up.name) else {
                continue;
            };
            if self.config.upstreams[u].tls != next.config.upstreams[v].tls {
                continue;
            }
            let new_up = &new_ups[v];
            for (i, backend) in old_up.backends.iter().enumerate() {
                let Some(j) = new_up.backends.iter().position(|b| b.addr == backend.addr) else {
                    continue;
                };
                while let Checkout::Hit(conn) = old_pool.checkout(old_up.first_slot + i, now) {
                    new_pool.checkin(new_up.first_slot + j, conn, now);
                }
            }
        }
    }

    /// The worker of the newest config (this one unless a reload happened).
    fn newest(self: &Rc<Self>) -> Rc<Worker> {
        let mut worker = self.clone();
        loop {
            let next = worker.successor.borrow().clone();
            match next {
                Some(next) => worker = next,
                None => return worker,
            }
        }
    }

    /// Whether requests are written to an access log.
    pub fn logs_requests(&self) -> bool {
        self.log.is_some()
    }

    /// Hands the access log buffer to the writer if its oldest line is due;
    /// run from a timer about every 100 ms.
    pub fn flush_log_if_due(&self) {
        if let Some(log) = &self.log {
            log.borrow_mut().flush_if_due(Instant::now());
        }
    }

    /// Hands the access log buffer to the writer now (at shutdown).
    pub fn flush_log(&self) {
        if let Some(log) = &self.log {
            log.borrow_mut().flush();
        }
    }

    /// Closes pooled connections past their idle timeout; run periodically.
    pub fn evict_idle(&self) {
        let evicted = self.pool.borrow_mut().evict_expired(Instant::now());
        self.metrics.pool_stale.add(evicted as u64);
    }

    /// Serves one client connection until it closes; `tls` is the
    /// listener's TLS config, for a TLS listener, and `listener_removed`
    /// its listener's flag.
    pub async fn serve(
        self: Rc<Self>,
        conn: Conn,
        tls: Option<Arc<rustls::ServerConfig>>,
        listener_removed: ListenerRemoved,
    ) {
        self.metrics.connections_accepted.inc();
        self.metrics.connections_open.inc();
        let tls = match tls
            .map(|c| ClientTls::new(c, self.metrics.clone(), self.config.server.buffer_size))
            .transpose()
        {
            Ok(tls) => tls,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a TLS session");
                self.metrics.connections_open.sub(1);
                return;
            }
        };
        // Both buffers are full size: the relays swap them with upstream
        // buffers instead of copying.
        let mut client = Client {
            conn,
            buf: self.take_buffer(),
            out: self.take_buffer(),
            buffer_size: self.config.server.buffer_size,
            sent: 0,
            rec: Record::default(),
            request_id: String::new(),
            tls: tls.map(Box::new),
            listener_removed,
            request_read: false,
        };
        let (end, last) = client_loop(self, &mut client).await;
        match end {
            End::KeepClosing if client.may_send_more() => client.linger().await,
            End::KeepClosing => client.conn.shutdown(Shutdown::Both),
            End::Closed => {}
        }
        last.give_buffer(client.buf);
        last.give_buffer(client.out);
        last.metrics.connections_open.sub(1);
    }

    fn take_buffer(&self) -> Vec<u8> {
        let spare = self.spare_buffers.borrow_mut().pop();
        spare.unwrap_or_else(|| Vec::with_capacity(self.config.server.buffer_size))
    }

    /// Keeps `buf` for reuse unless it grew (a large head) or enough are
    /// kept already.
    fn give_buffer(&self, mut buf: Vec<u8>) {
        let mut spare = self.spare_buffers.borrow_mut();
        if buf.capacity() <= 2 * self.config.server.buffer_size && spare.len() < MAX_SPARE_BUFFERS {
            buf.clear();
            spare.push(buf);
        }
    }
}

/// How a client connection ends.
enum End {
    /// Peer gone or idle: shut down and drop.
    Closed,
    /// We decided to close after a response: lingering close.
    KeepClosing,
}

/// The client side of a connection: its socket and buffers.
struct Client {
    conn: Conn,
    /// Bytes read from the client and not yet consumed.
    buf: Vec<u8>,
    /// Scratch for outgoing heads.
    out: Vec<u8>,
    buffer_size: usize,
    /// Bytes written to the client on this connection.
    sent: u64,
    /// What the current request did so far.
    rec: Record,
    /// The current request's `X-Request-ID` (the client's, or generated);
    /// empty before its head parsed.
    request_id: String,
    /// TLS termination, on a TLS listener: `buf` and `out` hold plaintext.
    tls: Option<Box<ClientTls>>,
    listener_removed: ListenerRemoved,
    /// Whether the current request, body included, was read whole.
    request_read: bool,
}

/// Set once a reload removed the listener a connection came in on: the
/// connection drains (closes after its current response, or now if idle).
pub type ListenerRemoved = Rc<Cell<bool>>;

impl Client {
    /// Whether this connection closes after its current response: a
    /// graceful stop began, or its listener was removed.
    fn winding_down(&self, worker: &Worker) -> bool {
        worker.is_draining() || self.listener_removed.get()
    }
}

/// What one request did, for the metrics and the access log.
#[derive(Debug, Default, Clone, Copy)]
struct Record {
    /// The status sent to the client; 0 when none was (the client left,
    /// or the response broke off before its head).
    status: u16,
    /// The last backend tried (index in the upstream).
    backend: Option<usize>,
    /// Whether the response came from `backend` (else a local reply).
    answered: bool,
    /// Attempts on backends, the transparent pooled re-send not counted.
    attempts: u32,
    /// `Client::sent` at the first byte of the final response's body.
    body_from: u64,
}

/// The request id header, forwarded and echoed.
const REQUEST_ID: &str = "X-Request-ID";

/// Inserts a header line before the blank line that ends the first head
/// in `out` (a body may follow it).
fn insert_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let line = format!("{name}: {value}\r\n");
    out.splice(end + 2..end + 2, line.into_bytes());
}

impl Client {
    /// Reads more client bytes, appending to `buf`.
    async fn fill(&mut self, deadline: Option<Duration>) -> io::Result<usize> {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(self.buffer_size);
        }
        client_tls::read_plaintext(&self.conn, self.tls.as_deref_mut(), &mut self.buf, deadline)
            .await
    }

    /// Writes `self.out` to the client.
    async fn send_out(&mut self, deadline: Duration) -> io::Result<()> {
        let len = self.out.len();
        let out = std::mem::take(&mut self.out);
        let (res, out) = write_plaintext(
            &self.conn,
            self.tls.as_deref_mut(),
            out,
            0..len,
            Some(deadline),
        )
        .await;
        self.out = out;
        if res.is_ok() {
            self.sent += len as u64;
        }
        res
    }

    /// Sends a locally generated reply.
    async fn reply(
        &mut self,
        reply: &LocalReply,
        keep_alive: bool,
        deadline: Duration,
    ) -> io::Result<()> {
        self.out.clear();
        reply.write(keep_alive, &mut self.out);
        if !self.request_id.is_empty() {
            insert_header(&mut self.out, REQUEST_ID, &self.request_id);
        }
        self.mark_body_start();
        self.send_out(deadline).await
    }

    /// Notes where the body of the response head in `out` starts, for the
    /// access log's body byte count.
    fn mark_body_start(&mut self) {
        let head = self
            .out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.out.len(), |p| p + 4);
        self.rec.body_from = self.sent + head as u64;
    }

    /// Whether closing now could reset the connection under our last
    /// response: the request was not read whole (a local reply before or
    /// during its body), bytes are buffered or waiting (pipelined), or TLS
    /// (its close has its own exchange). Otherwise nothing more can come,
    /// and the close need not wait (nginx's `lingering_close on`).
    fn may_send_more(&self) -> bool {
        !self.request_read || !self.buf.is_empty() || self.tls.is_some() || !self.conn.is_reusable()
    }

    /// Half-closes, then drains what the client still sends for a moment,
    /// so our last response is not destroyed by a reset.
    async fn linger(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.close(&self.conn, LINGER_TIME).await;
        }
        self.conn.shutdown(Shutdown::Write);
        let start = Instant::now();
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let Some(left) = LINGER_TIME.checked_sub(start.elapsed()) else {
                break;
            };
            self.buf.clear();
            match self.fill(Some(left)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
        self.conn.shutdown(Shutdown::Both);
    }
}

/// What the proxy keeps of a request head once the borrowed parse is gone.
struct RequestInfo {
    is_head: bool,
    idempotent: bool,
    version: Version,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    body: BodyKind,
    upstream: usize,
    /// The balancing key: a `consistent_hash`/`ip_hash` key, or the backend
    /// id from a `sticky_cookie` cookie.
    key: Option<u64>,
}

/// A request's method and target, copied for the log line of a failure
/// and the metrics, and when its head began to arrive.
#[derive(Default)]
struct LogLine {
    method: String,
    target: String,
    started: Option<Instant>,
    version: Option<Version>,
    /// Copied only when an access log is written.
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
}

/// Serves requests until the connection ends; returns how, and the worker
/// (config generation) the connection was on last.
async fn client_loop(mut worker: Rc<Worker>, client: &mut Client) -> (End, Rc<Worker>) {
    let end = serve_requests(&mut worker, client).await;
    (end, worker)
}

async fn serve_requests(worker: &mut Rc<Worker>, client: &mut Client) -> End {
    let mut first = true;
    let mut log = LogLine::default();
    let mut fwd = Vec::with_capacity(1024);
    loop {
        client.rec = Record::default();
        client.request_id.clear();
        client.request_read = false;
        let sent_before = client.sent;
        // 1. Read and parse a request head, with the head timeout running
        //    from its first byte (or the keep-alive timeout while idle).
        let info = match read_request(&mut *worker, client, first, &mut fwd, &mut log).await {
            Ok(Some(info)) => info,
            Ok(None) => return End::Closed,
            Err(reply) => {
                let next = exchange::reply_and_close(worker, client, &log, reply).await;
                finish_request(worker, client, None, &log, sent_before);
                return match next {
                    Next::Close => End::KeepClosing,
                    _ => End::Closed,
                };
            }
        };
        first = false;
        worker.metrics.requests.inc();
        worker.metrics.request_started();
        let next = exchange(worker, client, &info, &mut fwd, &log).await;
        worker.metrics.request_finished();
        finish_request(worker, client, Some(info.upstream), &log, sent_before);
        match next {
            Next::KeepAlive if client.winding_down(worker) => return End::KeepClosing,
            Next::KeepAlive => continue,
            Next::Close => return End::KeepClosing,
            Next::Abort => {
                client.conn.shutdown(Shutdown::Both);
                return End::Closed;
            }
        }
    }
}

/// Reads one request head and turns it into the forwarded head in `fwd`.
/// `Ok(None)`: the client closed or idled out between requests.
///
/// A request starts on the newest config: once its first bytes are in,
/// the connection moves to the reload's successor worker, if any.
async fn read_request(
    worker: &mut Rc<Worker>,
    client: &mut Client,
    first: bool,
    fwd: &mut Vec<u8>,
    log: &mut LogLine,
) -> Result<Option<RequestInfo>, LocalReply> {
    // The newest config's: a reload's timeouts apply from the next wait.
    let (head_timeout, keepalive_timeout) = {
        let newest = worker.newest();
        (
            newest.config.server.head_timeout,
            newest.config.server.keepalive_timeout,
        )
    };
    let mut head_started = if client.buf.is_empty() {
        None
    } else {
        move_to_newest(worker);
        Some(Instant::now())
    };
    loop {
        log.started = head_started;
        if head_started.is_some() {
            if let Some(info) = parse_request(worker, client, fwd, log)? {
                return Ok(Some(info));
            }
        }
        let deadline = match head_started {
            Some(start) => match head_timeout.checked_sub(start.elapsed()) {
                Some(left) => left,
                None => return Err(LocalReply::RequestTimeout),
            },
            // Idle between requests; the first request of a connection gets
            // the head timeout (a connection that never speaks is slowloris).
            None if first => head_timeout,
            None => keepalive_timeout,
        };
        // Idle between requests: registered so a graceful stop can end
        // the wait; once the stop began, no new wait starts.
        let idle = (head_started.is_none() && !first).then(|| {
            if client.winding_down(worker) {
                None
            } else {
                let entry = (client.conn.closer(), client.listener_removed.clone());
                Some(worker.idle.borrow_mut().insert(entry))
            }
        });
        if let Some(None) = idle {
            client.conn.shutdown(Shutdown::Both);
            return Ok(None);
        }
        let filled = client.fill(Some(deadline)).await;
        if let Some(Some(key)) = idle {
            worker.idle.borrow_mut().remove(key);
        }
        match filled {
            Ok(0) if client.buf.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(LocalReply::BadRequest(
                    "connection closed inside the request head",
                ))
            }
            Ok(n) => {
                worker.metrics.bytes_from_clients.add(n as u64);
                if head_started.is_none() {
                    move_to_newest(worker);
                    head_started = Some(Instant::now());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && head_started.is_some() => {
                return Err(LocalReply::RequestTimeout)
            }
            Err(_) => {
                // Idle timeout or a reset: close without a word, as nginx does.
                client.conn.shutdown(Shutdown::Both);
                return Ok(None);
            }
        }
    }
}

/// Moves a connection to the newest config's worker between requests.
fn move_to_newest(worker: &mut Rc<Worker>) {
    let newest = worker.newest();
    if !Rc::ptr_eq(&newest, worker) {
        worker.metrics.connections_open.sub(1);
        newest.metrics.connections_open.inc();
        *worker = newest;
    }
}

/// Parses what is buffered; `Ok(None)` needs more bytes.
fn parse_request(
    worker: &Worker,
    client: &mut Client,
    fwd: &mut Vec<u8>,
    log: &mut LogLine,
) -> Result<Option<RequestInfo>, LocalReply> {
    let server = &worker.config.server;
    let head = match http::parse_request(&client.buf, &worker.limits) {
        Ok(http::Status::Complete(head)) => head,
        Ok(http::Status::Partial) => return Ok(None),
        Err(e) => {
            log.method.clear();
            log.target.clear();
            log.version = None;
            log.referer = None;
            log.user_agent = None;
            return Err(LocalReply::from(e));
        }
    };
    log.method.clear();
    log.method.push_str(head.method());
    log.target.clear();
    log.target.push_str(head.target());
    log.version = Some(head.version());
    log.referer = None;
    log.user_agent = None;
    let logging = worker.logs_requests();
    let mut client_id = false;
    for (name, value) in head.headers() {
        if name.eq_ignore_ascii_case(REQUEST_ID) && !client_id {
            // The client's id is kept (and forwarded as it came).
            client.request_id.clear();
            client.request_id.push_str(&String::from_utf8_lossy(value));
            client_id = true;
        } else if logging && name.eq_ignore_ascii_case("referer") {
            log.referer = Some(value.to_vec());
        } else if logging && name.eq_ignore_ascii_case("user-agent") {
            log.user_agent = Some(value.to_vec());
        }
    }
    if !client_id {
        client.request_id.clear();
        client
            .request_id
            .push_str(access_log::request_id().as_str());
    }
    if let BodyKind::Length(n) = head.body() {
        if server.max_request_body.is_some_and(|max| n > max.get()) {
            return Err(LocalReply::PayloadTooLarge);
        }
    }
    let Some(route) = worker.routes.route(head.host(), head.path()) else {
        return Err(LocalReply::NotFound);
    };
    let client_ip = client.conn.peer_addr().ip();
    let key = {
        let ups = worker.upstreams.borrow();
        let up = &ups[route.upstream];
        match up.strategy {
            Strategy::ConsistentHash => balance::hash_key(&up.hash_key, &head, client_ip),
            Strategy::IpHash => Some(balance::ip_key(client_ip)),
            Strategy::StickyCookie => up
                .sticky
                .as_ref()
                .and_then(|c| balance::sticky::cookie_id(&head, &c.name)),
            _ => None,
        }
    };
    let info = RequestInfo {
        is_head: head.is_head(),
        idempotent: head.is_idempotent(),
        version: head.version(),
        keep_alive: head.keep_alive(),
        expect_continue: head.expect_continue(),
        upgrade: head.upgrade().is_some(),
        body: head.body(),
        upstream: route.upstream,
        key,
    };
    fwd.clear();
    let ctx = ForwardContext {
        client_ip,
        proto: if client.tls.is_some() {
            "https"
        } else {
            "http"
        },
        host_fallback: None,
    };
    http::write_request_head(&head, &ctx, fwd);
    if !client_id {
        exchange::append_header(fwd, REQUEST_ID, &client.request_id);
    }
    let head_len = head.head_len();
    client.buf.drain(..head_len);
    Ok(Some(info))
}

/// Counts one finished request (answered or not) in the worker's shard.
fn finish_request(
    worker: &Worker,
    client: &Client,
    upstream: Option<usize>,
    log: &LogLine,
    sent_before: u64,
) {
    let rec = &client.rec;
    let duration = log.started.map_or(Duration::ZERO, |s| s.elapsed());
    let backend = rec.backend.filter(|_| rec.answered);
    let method = Method::from_bytes(log.method.as_bytes());
    worker
        .metrics
        .request(upstream, backend, rec.status, method, duration);
    worker
        .metrics
        .bytes_to_clients
        .add(client.sent.wrapping_sub(sent_before));
    if let Some(access) = &worker.log {
        let backend = match (upstream, backend) {
            (Some(u), Some(b)) => worker.upstreams.borrow()[u].backends.get(b).map(|b| b.addr),
            _ => None,
        };
        let body_bytes = if rec.body_from == 0 {
            0
        } else {
            client.sent.saturating_sub(rec.body_from)
        };
        let entry = Entry {
            time: SystemTime::now()
                .checked_sub(duration)
                .unwrap_or_else(SystemTime::now),
            client: client.conn.peer_addr(),
            method: if log.method.is_empty() {
                b"-"
            } else {
                log.method.as_bytes()
            },
            target: if log.target.is_empty() {
                b"-"
            } else {
                log.target.as_bytes()
            },
            version: match log.version {
                Some(Version::Http10) => "HTTP/1.0",
                Some(Version::Http11) => "HTTP/1.1",
                None => "-",
            },
            status: rec.status,
            bytes: body_bytes,
            duration,
            backend,
            attempts: rec.attempts,
            request_id: if client.request_id.is_empty() {
                "-"
            } else {
                &client.request_id
            },
            referer: log.referer.as_deref(),
            user_agent: log.user_agent.as_deref(),
        };
        access.borrow_mut().log(&entry);
    }
}

/// Lines per second and worker logged for one reason of failure; the
/// rest are counted (the metrics have them all) and reported with the
/// next line as `suppressed`, so a client cannot decide the log volume.
const REPLY_LOG_LINES_PER_SECOND: u32 = 5;

thread_local! {
    /// Per reason: the current second's start, lines logged in it, and
    /// lines suppressed since the last one logged.
    static REPLY_LOG: RefCell<Vec<(&'static str, Instant, u32, u64)>> =
        const { RefCell::new(Vec::new()) };
}

/// `Some(suppressed since the last line)` if a line for `reason` may be
/// logged now.
fn reply_log_admit(reason: &'static str) -> Option<u64> {
    REPLY_LOG.with(|log| {
        let mut log = log.borrow_mut();
        let now = Instant::now();
        let i = match log.iter().position(|(r, ..)| *r == reason) {
            Some(i) => i,
            None => {
                log.push((reason, now, 0, 0));
                log.len() - 1
            }
        };
        let (_, start, lines, suppressed) = &mut log[i];
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *lines = 0;
        }
        if *lines < REPLY_LOG_LINES_PER_SECOND {
            *lines += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    })
}

fn log_reply(client: &Client, log: &LogLine, reply: &LocalReply) {
    let Some(suppressed) = reply_log_admit(reply.reason()) else {
        return;
    };
    // A rejected head has no parsed method and target: name what the
    // buffered request line shows of them.
    let (method, target) = if log.method.is_empty() {
        request_line_guess(&client.buf)
    } else {
        (log.method.clone(), log.target.clone())
    };
    tracing::warn!(
        client = %client.conn.peer_addr(),
        method = %method,
        target = %target,
        status = reply.status(),
        reason = reply.reason(),
        suppressed,
        "request failed"
    );
}

/// The first two words of the buffered request line, printable ASCII,
/// shortened.
fn request_line_guess(buf: &[u8]) -> (String, String) {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(line.len())];
    let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
    let mut word = |max: usize| -> String {
        let w = words.next().unwrap_or(b"");
        let mut s: String = w
            .iter()
            .take(max)
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect();
        if w.len() > max {
            s.push_str("...");
        }
        s
    };
    let method = word(16);
    let target = word(128);
    (method, target)
}
