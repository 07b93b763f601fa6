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
mod error;
mod tunnel;

pub use error::{ClientFailure, UpstreamFailure};

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::{self, BodyKind, ForwardContext, LocalReply, OutFraming, ResponseBody, Version};
use crate::io::{connect, Conn};
use crate::metrics::WorkerMetrics;
use crate::route::RouteTable;
use crate::upstream::balance::{self, Balancer};
use crate::upstream::pool::{Checkout, Pool};
use crate::upstream::{Backend, BackendState};

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
    backends: Vec<Backend>,
    /// Global index of `backends[0]` in the worker's pool.
    first_slot: usize,
    balancer: Box<dyn Balancer>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// Everything a worker owns: its config snapshot, routes, balancer cursors,
/// pool and metrics shard. Shared by the worker's connection tasks through
/// an `Rc`; no `RefCell` borrow is held across an await.
pub struct Worker {
    config: Arc<Config>,
    routes: RouteTable,
    upstreams: RefCell<Vec<UpstreamRt>>,
    pool: RefCell<Pool>,
    /// Spare relay buffers, so a request or a connection does not cost a
    /// `buffer_size` allocation.
    spare_buffers: RefCell<Vec<Vec<u8>>>,
    limits: http::Limits,
    pub metrics: Arc<WorkerMetrics>,
}

impl Worker {
    /// `backend_states[u][b]` is the shared state of backend `b` of
    /// upstream `u`; every worker gets the same `Arc`s.
    pub fn new(
        config: Arc<Config>,
        backend_states: &[Vec<Arc<BackendState>>],
        worker_index: usize,
        metrics: Arc<WorkerMetrics>,
    ) -> Worker {
        let mut upstreams = Vec::new();
        let mut pool_limits = Vec::new();
        for (u, up) in config.upstreams.iter().enumerate() {
            let backends: Vec<Backend> = up
                .backends
                .iter()
                .zip(&backend_states[u])
                .map(|(b, state)| Backend {
                    addr: b.addr,
                    weight: u32::from(b.weight.get()),
                    state: state.clone(),
                })
                .collect();
            let first_slot = pool_limits.len();
            pool_limits.extend(backends.iter().map(|_| (up.max_idle, up.idle_timeout)));
            upstreams.push(UpstreamRt {
                balancer: balance::build(
                    up.strategy,
                    &backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
                    worker_index,
                ),
                backends,
                first_slot,
                connect_timeout: up.connect_timeout,
                response_timeout: up.response_timeout,
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
            config,
            metrics,
        }
    }

    /// Closes pooled connections past their idle timeout; run periodically.
    pub fn evict_idle(&self) {
        let evicted = self.pool.borrow_mut().evict_expired(Instant::now());
        self.metrics.pool_stale.add(evicted as u64);
    }

    /// Serves one client connection until it closes.
    pub async fn serve(self: Rc<Self>, conn: Conn) {
        self.metrics.connections_accepted.inc();
        self.metrics.connections_open.inc();
        // Both buffers are full size: the relays swap them with upstream
        // buffers instead of copying.
        let mut client = Client {
            conn,
            buf: self.take_buffer(),
            out: self.take_buffer(),
            buffer_size: self.config.server.buffer_size,
        };
        let end = client_loop(&self, &mut client).await;
        match end {
            End::KeepClosing => client.linger().await,
            End::Closed => {}
        }
        self.give_buffer(client.buf);
        self.give_buffer(client.out);
        self.metrics.connections_open.sub(1);
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
}

impl Client {
    /// Reads more client bytes, appending to `buf`.
    async fn fill(&mut self, deadline: Option<Duration>) -> io::Result<usize> {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(self.buffer_size);
        }
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = self.conn.read(buf, deadline).await;
        self.buf = buf;
        res
    }

    /// Writes `self.out` to the client.
    async fn send_out(&mut self, deadline: Duration) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let len = out.len();
        let (res, out) = self.conn.write_all(out, 0..len, Some(deadline)).await;
        self.out = out;
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
        self.send_out(deadline).await
    }

    /// Half-closes, then drains what the client still sends for a moment,
    /// so our last response is not destroyed by a reset.
    async fn linger(&mut self) {
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
}

/// A request's method and target, copied for the log line of a failure.
#[derive(Default)]
struct LogLine {
    method: String,
    target: String,
}

async fn client_loop(worker: &Rc<Worker>, client: &mut Client) -> End {
    let server = &worker.config.server;
    let mut first = true;
    let mut log = LogLine::default();
    let mut fwd = Vec::with_capacity(1024);
    loop {
        // 1. Read and parse a request head, with the head timeout running
        //    from its first byte (or the keep-alive timeout while idle).
        let info = match read_request(worker, client, first, &mut fwd, &mut log).await {
            Ok(Some(info)) => info,
            Ok(None) => return End::Closed,
            Err(reply) => {
                log_reply(client, &log, &reply);
                worker.metrics.count_status(reply.status());
                if client
                    .reply(&reply, false, server.send_timeout)
                    .await
                    .is_err()
                {
                    return End::Closed;
                }
                return End::KeepClosing;
            }
        };
        first = false;
        worker.metrics.requests.inc();
        match exchange(worker, client, &info, &mut fwd, &log).await {
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
async fn read_request(
    worker: &Worker,
    client: &mut Client,
    first: bool,
    fwd: &mut Vec<u8>,
    log: &mut LogLine,
) -> Result<Option<RequestInfo>, LocalReply> {
    let server = &worker.config.server;
    let mut head_started = if client.buf.is_empty() {
        None
    } else {
        Some(Instant::now())
    };
    loop {
        if head_started.is_some() {
            if let Some(info) = parse_request(worker, client, fwd, log)? {
                return Ok(Some(info));
            }
        }
        let deadline = match head_started {
            Some(start) => match server.head_timeout.checked_sub(start.elapsed()) {
                Some(left) => left,
                None => return Err(LocalReply::RequestTimeout),
            },
            // Idle between requests; the first request of a connection gets
            // the head timeout (a connection that never speaks is slowloris).
            None if first => server.head_timeout,
            None => server.keepalive_timeout,
        };
        match client.fill(Some(deadline)).await {
            Ok(0) if client.buf.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(LocalReply::BadRequest(
                    "connection closed inside the request head",
                ))
            }
            Ok(n) => {
                worker.metrics.bytes_from_clients.add(n as u64);
                head_started.get_or_insert_with(Instant::now);
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
            return Err(LocalReply::from(e));
        }
    };
    log.method.clear();
    log.method.push_str(head.method());
    log.target.clear();
    log.target.push_str(head.target());
    if let BodyKind::Length(n) = head.body() {
        if server.max_request_body.is_some_and(|max| n > max.get()) {
            return Err(LocalReply::PayloadTooLarge);
        }
    }
    let Some(route) = worker.routes.route(head.host(), head.path()) else {
        return Err(LocalReply::NotFound);
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
    };
    fwd.clear();
    let ctx = ForwardContext {
        client_ip: client.conn.peer_addr().ip(),
        proto: "http",
        host_fallback: None,
    };
    http::write_request_head(&head, &ctx, fwd);
    let head_len = head.head_len();
    client.buf.drain(..head_len);
    Ok(Some(info))
}

fn log_reply(client: &Client, log: &LogLine, reply: &LocalReply) {
    tracing::warn!(
        client = %client.conn.peer_addr(),
        method = %log.method,
        target = %log.target,
        status = reply.status(),
        reason = reply.reason(),
        "request failed"
    );
}

/// What to do with the client connection after an exchange.
enum Next {
    KeepAlive,
    /// Response complete; close gracefully.
    Close,
    /// Mid-response failure: close at once.
    Abort,
}

/// An upstream connection in use, with the pool slot it returns to.
struct UpstreamConn {
    conn: Conn,
    slot: usize,
    reused: bool,
    buf: Vec<u8>,
}

/// Runs one request against a backend, with one transparent retry when a
/// reused pooled connection turns out dead before answering, and the
/// request can be sent again: its body (if any) is wholly in hand, and
/// either nothing reached the backend or the method is idempotent.
async fn exchange(
    worker: &Rc<Worker>,
    client: &mut Client,
    info: &RequestInfo,
    fwd: &mut Vec<u8>,
    log: &LogLine,
) -> Next {
    let server = &worker.config.server;
    let wait_for_continue =
        info.expect_continue && !matches!(info.body, BodyKind::Empty) && client.buf.is_empty();
    let mut body =
        body::RequestBody::new(info.body, server.max_request_body.map_or(0, |m| m.get()));
    // The head and whatever of the body is already buffered go in one write.
    if !wait_for_continue {
        if let Err(f) = body.take_buffered(&mut client.buf, fwd) {
            return client_failed(worker, client, log, f).await;
        }
    }
    let replayable = body.is_complete();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (up, backend_state) = match acquire(worker, info.upstream).await {
            Ok(pair) => pair,
            Err(reply) => return reply_and_close(worker, client, log, reply).await,
        };
        let _in_flight = backend_state.start_request();
        let reused = up.reused;
        match relay(worker, client, info, fwd, &mut body, wait_for_continue, up).await {
            Relayed::Done(next) => return next,
            Relayed::Failed {
                failure,
                sent,
                response_started,
            } => {
                backend_state.record_failure();
                let retry = attempt == 1
                    && reused
                    && !response_started
                    && replayable
                    && (!sent || info.idempotent);
                if retry {
                    worker.metrics.retries.inc();
                    tracing::debug!(
                        ?failure,
                        "pooled connection failed; retrying on a fresh one"
                    );
                    continue;
                }
                if response_started {
                    return Next::Abort;
                }
                return reply_and_close(worker, client, log, failure.reply()).await;
            }
            Relayed::ClientFailed(f) => return client_failed(worker, client, log, f).await,
        }
    }
}

async fn client_failed(
    worker: &Worker,
    client: &mut Client,
    log: &LogLine,
    failure: ClientFailure,
) -> Next {
    match failure {
        ClientFailure::Gone => Next::Abort,
        ClientFailure::BadBody(reply) => reply_and_close(worker, client, log, reply).await,
    }
}

async fn reply_and_close(
    worker: &Worker,
    client: &mut Client,
    log: &LogLine,
    reply: LocalReply,
) -> Next {
    log_reply(client, log, &reply);
    worker.metrics.count_status(reply.status());
    match client
        .reply(&reply, false, worker.config.server.send_timeout)
        .await
    {
        Ok(()) => Next::Close,
        Err(_) => Next::Abort,
    }
}

/// Picks a backend and gets a connection to it: a pooled one if alive,
/// else a new one.
async fn acquire(
    worker: &Worker,
    upstream: usize,
) -> Result<(UpstreamConn, Arc<BackendState>), LocalReply> {
    let (slot, addr, state, connect_timeout) = {
        let mut upstreams = worker.upstreams.borrow_mut();
        let up = &mut upstreams[upstream];
        let backends = &up.backends;
        let Some(b) = up.balancer.next(&|i| backends[i].state.is_available()) else {
            return Err(LocalReply::ServiceUnavailable("no backend available"));
        };
        let backend = &up.backends[b];
        (
            up.first_slot + b,
            backend.addr,
            backend.state.clone(),
            up.connect_timeout,
        )
    };
    let checkout = worker.pool.borrow_mut().checkout(slot, Instant::now());
    match checkout {
        Checkout::Hit(conn) => {
            worker.metrics.pool_hits.inc();
            let up = UpstreamConn {
                conn,
                slot,
                reused: true,
                buf: worker.take_buffer(),
            };
            Ok((up, state))
        }
        Checkout::Miss { stale } => {
            worker.metrics.pool_stale.add(stale as u64);
            worker.metrics.pool_misses.inc();
            match connect(addr, connect_timeout).await {
                Ok(conn) => {
                    let up = UpstreamConn {
                        conn,
                        slot,
                        reused: false,
                        buf: worker.take_buffer(),
                    };
                    Ok((up, state))
                }
                Err(e) => {
                    state.record_failure();
                    let failure = if e.kind() == io::ErrorKind::TimedOut {
                        UpstreamFailure::ConnectTimeout
                    } else {
                        UpstreamFailure::ConnectRefused
                    };
                    tracing::warn!(backend = %addr, error = %e, "upstream connect failed");
                    Err(failure.reply())
                }
            }
        }
    }
}

/// The result of one attempt.
enum Relayed {
    Done(Next),
    Failed {
        failure: UpstreamFailure,
        /// Some of the request may have reached the backend.
        sent: bool,
        /// Part of the response already reached the client: too late for a
        /// local reply.
        response_started: bool,
    },
    ClientFailed(ClientFailure),
}

/// Sends the request on `up` and relays the response back.
async fn relay(
    worker: &Rc<Worker>,
    client: &mut Client,
    info: &RequestInfo,
    first: &mut Vec<u8>,
    body: &mut body::RequestBody,
    wait_for_continue: bool,
    mut up: UpstreamConn,
) -> Relayed {
    let server = &worker.config.server;
    let response_timeout = worker.upstreams.borrow()[info.upstream].response_timeout;
    let failed = |failure| Relayed::Failed {
        failure,
        sent: true,
        response_started: false,
    };

    // 2. Send the head, with as much of the body as was already buffered.
    let len = first.len();
    let (res, back) = up
        .conn
        .write_all(std::mem::take(first), 0..len, Some(server.body_timeout))
        .await;
    *first = back;
    if res.is_err() {
        return Relayed::Failed {
            failure: UpstreamFailure::Closed,
            sent: false,
            response_started: false,
        };
    }

    // 3. `Expect: 100-continue`: let the backend answer first, briefly.
    let mut continue_sent = false;
    if wait_for_continue {
        match read_response_head(
            worker,
            &mut up,
            info,
            EXPECT_CONTINUE_WAIT.min(response_timeout),
        )
        .await
        {
            Ok(Some(100)) => {
                // Relay the backend's 100 and drop it from the buffer.
                if let Err(next) = forward_informational(worker, client, &mut up, info).await {
                    return Relayed::Done(next);
                }
                continue_sent = true;
            }
            Ok(Some(_)) => {
                // A final answer without wanting the body: relay it, then
                // close, since the client's body was never read.
                return respond(worker, client, info, up, false).await;
            }
            Ok(None) | Err(UpstreamFailure::ResponseTimeout) => {
                client.out.clear();
                client.out.extend_from_slice(http::CONTINUE_100);
                if client.send_out(server.send_timeout).await.is_err() {
                    return Relayed::ClientFailed(ClientFailure::Gone);
                }
                continue_sent = true;
            }
            Err(f) => return failed(f),
        }
    }

    // 4. Stream the rest of the request body.
    match body.stream(worker, client, &up.conn).await {
        Ok(()) => {}
        Err(body::StreamError::Client(f)) => return Relayed::ClientFailed(f),
        Err(body::StreamError::Upstream) => {
            // The backend may have answered early (e.g. 413) and closed;
            // try to relay that answer, else fail.
            match read_response_head(worker, &mut up, info, response_timeout).await {
                Ok(Some(_)) => return respond(worker, client, info, up, false).await,
                _ => return failed(UpstreamFailure::Closed),
            }
        }
    }

    // 5. Read the response head, relaying interim 1xx answers.
    loop {
        match read_response_head(worker, &mut up, info, response_timeout).await {
            Ok(Some(status)) if (100..200).contains(&status) && status != 101 => {
                if status == 100 && continue_sent {
                    drop_informational(worker, &mut up, info);
                    continue;
                }
                if let Err(next) = forward_informational(worker, client, &mut up, info).await {
                    return Relayed::Done(next);
                }
            }
            Ok(Some(_)) => return respond(worker, client, info, up, body.is_complete()).await,
            Ok(None) => return unreachable_partial(),
            Err(f) => return failed(f),
        }
    }
}

/// `read_response_head` never returns `Ok(None)` without a deadline.
fn unreachable_partial() -> Relayed {
    Relayed::Failed {
        failure: UpstreamFailure::Closed,
        sent: true,
        response_started: false,
    }
}

/// Reads until `up.buf` holds a complete response head; returns its status.
/// `Ok(None)`: `wait` elapsed with no byte received (only used for the
/// 100-continue wait; otherwise that is a `ResponseTimeout`).
async fn read_response_head(
    worker: &Worker,
    up: &mut UpstreamConn,
    info: &RequestInfo,
    wait: Duration,
) -> Result<Option<u16>, UpstreamFailure> {
    let start = Instant::now();
    loop {
        if !up.buf.is_empty() {
            match http::parse_response(&up.buf, &worker.limits, info.is_head) {
                Ok(http::Status::Complete(head)) => return Ok(Some(head.status())),
                Ok(http::Status::Partial) => {}
                Err(e) => return Err(UpstreamFailure::Malformed(e.reason())),
            }
        }
        let Some(left) = wait.checked_sub(start.elapsed()) else {
            return Err(UpstreamFailure::ResponseTimeout);
        };
        if up.buf.len() == up.buf.capacity() {
            up.buf.reserve(worker.config.server.buffer_size);
        }
        let buf = std::mem::take(&mut up.buf);
        let (res, buf) = up.conn.read(buf, Some(left)).await;
        up.buf = buf;
        match res {
            Ok(0) => return Err(UpstreamFailure::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if up.buf.is_empty() && wait == EXPECT_CONTINUE_WAIT {
                    return Ok(None);
                }
                return Err(UpstreamFailure::ResponseTimeout);
            }
            Err(_) => return Err(UpstreamFailure::Closed),
        }
    }
}

/// Removes the complete 1xx head at the front of `up.buf`.
fn drop_informational(worker: &Worker, up: &mut UpstreamConn, info: &RequestInfo) {
    if let Ok(http::Status::Complete(head)) =
        http::parse_response(&up.buf, &worker.limits, info.is_head)
    {
        let n = head.head_len();
        up.buf.drain(..n);
    }
}

/// Relays the interim head at the front of `up.buf` to an HTTP/1.1 client.
async fn forward_informational(
    worker: &Worker,
    client: &mut Client,
    up: &mut UpstreamConn,
    info: &RequestInfo,
) -> Result<(), Next> {
    client.out.clear();
    let n = match http::parse_response(&up.buf, &worker.limits, info.is_head) {
        Ok(http::Status::Complete(head)) => {
            if info.version == Version::Http11 {
                http::write_response_head(
                    &head,
                    OutFraming::AsIs,
                    true,
                    info.version,
                    &mut client.out,
                );
            }
            head.head_len()
        }
        _ => return Err(Next::Abort),
    };
    up.buf.drain(..n);
    if !client.out.is_empty()
        && client
            .send_out(worker.config.server.send_timeout)
            .await
            .is_err()
    {
        return Err(Next::Abort);
    }
    Ok(())
}

/// Writes the final response head (already complete in `up.buf`) and relays
/// the body; then pools or closes the upstream connection.
async fn respond(
    worker: &Rc<Worker>,
    client: &mut Client,
    info: &RequestInfo,
    mut up: UpstreamConn,
    request_complete: bool,
) -> Relayed {
    let server = &worker.config.server;
    let (status, framing, out_framing, keep_alive, head_len, upstream_keep_alive) = {
        let head = match http::parse_response(&up.buf, &worker.limits, info.is_head) {
            Ok(http::Status::Complete(head)) => head,
            _ => {
                return Relayed::Failed {
                    failure: UpstreamFailure::Malformed("malformed upstream response"),
                    sent: true,
                    response_started: false,
                }
            }
        };
        let status = head.status();
        if status == 101 && !info.upgrade {
            return Relayed::Failed {
                failure: UpstreamFailure::Malformed("upstream switched protocols unasked"),
                sent: true,
                response_started: false,
            };
        }
        let framing = head.body();
        let http10 = info.version == Version::Http10;
        let out_framing = match framing {
            ResponseBody::Chunked if http10 => OutFraming::Dechunked,
            ResponseBody::CloseDelimited if !http10 => OutFraming::ChunkEncoded,
            _ => OutFraming::AsIs,
        };
        let ends_by_close = matches!(out_framing, OutFraming::Dechunked)
            || (matches!(framing, ResponseBody::CloseDelimited) && http10);
        let keep_alive = info.keep_alive && request_complete && !ends_by_close && status != 101;
        client.out.clear();
        http::write_response_head(
            &head,
            out_framing,
            keep_alive,
            info.version,
            &mut client.out,
        );
        (
            status,
            framing,
            out_framing,
            keep_alive,
            head.head_len(),
            head.keep_alive(),
        )
    };
    worker.metrics.count_status(status);
    up.buf.drain(..head_len);

    if status == 101 {
        if client.send_out(server.send_timeout).await.is_err() {
            return Relayed::ClientFailed(ClientFailure::Gone);
        }
        tunnel::run(worker, client, up.conn, up.buf).await;
        return Relayed::Done(Next::Abort);
    }

    let relay = body::ResponseRelay {
        framing,
        out: out_framing,
    };
    let outcome = relay.run(worker, client, &mut up).await;
    let UpstreamConn {
        conn, slot, buf, ..
    } = up;
    let leftover = !buf.is_empty();
    worker.give_buffer(buf);
    match outcome {
        Ok(clean) => {
            if clean && upstream_keep_alive && request_complete && !leftover {
                worker.pool.borrow_mut().checkin(slot, conn, Instant::now());
            }
            Relayed::Done(if keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            })
        }
        Err(body::RelayError::Client | body::RelayError::Upstream) => Relayed::Done(Next::Abort),
    }
}
