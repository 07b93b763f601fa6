//! One request against the upstream: attempts, retries and the relay.
//!
//! Each attempt picks a backend through [`balance::pick_and_admit`] (which
//! applies health, breaker, draining and panic mode), takes a pooled or new
//! connection, sends the request and relays the response. The outcome of
//! every attempt is recorded on the backend's shared state (passive health,
//! breaker, latency), except a failure on a reused pooled connection before
//! any answer: that is the pool's staleness, not the backend's fault, and
//! gets one free re-send.
//!
//! Retries (from `[upstreams.NAME.retry]`) go to a backend not yet tried
//! when one exists, only when the request can be sent again (its body is
//! empty, or was kept whole within `retry_buffer`) and either nothing of it
//! reached the backend or the method is idempotent, and only while the
//! worker's retry budget allows.

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{self, BodyKind, LocalReply, OutFraming, ResponseBody, Version};
use crate::io::connect;
use crate::metrics::WorkerMetrics;
use crate::upstream::balance::{self, Picked};
use crate::upstream::clock;
use crate::upstream::pool::{Checkout, Reusable};
use crate::upstream::retry::FailureKind;
use crate::upstream::{Admission, Changes, Outcome};

use super::body::{self, Keep};
use super::client_tls::{read_plaintext, write_plaintext, ClientTls};
use super::{
    log_reply, tunnel, Client, ClientFailure, LogLine, RequestInfo, UpstreamFailure, Worker,
    EXPECT_CONTINUE_WAIT,
};

/// Backends remembered as tried for one request; beyond this many attempts
/// the oldest are forgotten (and may be tried again).
const MAX_TRACKED: usize = 8;

/// What to do with the client connection after an exchange.
pub(super) enum Next {
    KeepAlive,
    /// Response complete; close gracefully.
    Close,
    /// Mid-response failure: close at once.
    Abort,
}

/// An upstream connection in use, with the pool slot it returns to.
pub(super) struct UpstreamConn {
    pub(super) conn: crate::io::Conn,
    /// TLS to the backend, for an upstream with `tls = true`.
    tls: Option<Box<ClientTls>>,
    /// Keeps the connection counted as open until dropped.
    open: OpenGuard,
    slot: usize,
    reused: bool,
    pub(super) buf: Vec<u8>,
}

/// Counts one connection in its upstream's `ringlb_upstream_connections_open`
/// while it exists, in use or pooled.
pub(super) struct OpenGuard {
    metrics: Arc<WorkerMetrics>,
    upstream: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.metrics.upstream_closed(self.upstream);
    }
}

impl UpstreamConn {
    /// Reads more (plaintext) bytes into `buf`, first growing a full `buf`
    /// by `grow`; `Ok(0)` is end of stream.
    pub(super) async fn read_more(
        &mut self,
        grow: usize,
        deadline: Option<Duration>,
    ) -> io::Result<usize> {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(grow);
        }
        read_plaintext(&self.conn, self.tls.as_deref_mut(), &mut self.buf, deadline).await
    }

    /// Writes `buf[range]` (plaintext); hands `buf` back.
    pub(super) async fn write_all(
        &mut self,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
        deadline: Option<Duration>,
    ) -> (io::Result<()>, Vec<u8>) {
        write_plaintext(&self.conn, self.tls.as_deref_mut(), buf, range, deadline).await
    }
}

/// What the worker's pool holds: an idle connection, its TLS session if
/// any, and its gauge guard.
pub(crate) struct Pooled {
    conn: crate::io::Conn,
    tls: Option<Box<ClientTls>>,
    open: OpenGuard,
}

impl Reusable for Pooled {
    fn is_reusable(&self) -> bool {
        self.conn.is_reusable()
    }
}

/// What one attempt carries besides the connection.
struct Attempt {
    /// Recorded on the backend when the response head arrives.
    admission: Option<Admission>,
    started: Instant,
    backend: std::net::SocketAddr,
    /// `Set-Cookie` value for `sticky_cookie`, when the client's cookie
    /// does not name this backend.
    set_cookie: Option<String>,
    /// A retryable 5xx may be retried instead of relayed (more attempts
    /// left, request replayable and idempotent).
    may_retry_status: bool,
}

impl Attempt {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(admission) = self.admission.take() {
            let changes = admission.finish(outcome, self.started.elapsed(), clock::now_nanos());
            log_changes(self.backend, changes);
        }
    }
}

fn log_changes(backend: std::net::SocketAddr, changes: Changes) {
    if !changes.is_empty() {
        tracing::warn!(%backend, "backend state changed: {changes}");
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

impl UpstreamFailure {
    fn outcome(self) -> Outcome {
        match self {
            UpstreamFailure::ConnectRefused | UpstreamFailure::ConnectTimeout => {
                Outcome::ConnectFailure
            }
            UpstreamFailure::Closed | UpstreamFailure::Malformed(_) => Outcome::Reset,
            UpstreamFailure::ResponseTimeout | UpstreamFailure::SendTimeout => Outcome::Timeout,
            UpstreamFailure::RetryableStatus(s) => Outcome::Response(s),
        }
    }

    fn kind(self) -> FailureKind {
        match self.outcome() {
            Outcome::ConnectFailure => FailureKind::Connect,
            Outcome::Reset => FailureKind::Reset,
            Outcome::Timeout => FailureKind::Timeout,
            Outcome::Response(s) => FailureKind::Status(s),
        }
    }
}

/// Runs one request against the upstream, with retries as described in
/// the module docs.
pub(super) async fn exchange(
    worker: &Rc<Worker>,
    client: &mut Client,
    info: &RequestInfo,
    fwd: &mut Vec<u8>,
    log: &LogLine,
) -> Next {
    let server = &worker.config.server;
    let (policy, retries_configured) = {
        let ups = worker.upstreams.borrow();
        let up = &ups[info.upstream];
        (up.retry, up.retry.attempts() > 1)
    };
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
    // A body still to stream is kept for a replay when retries are on and
    // it fits `retry_buffer` (the bytes go after the head in `fwd`).
    let mut keep = Keep::new(retries_configured, fwd.len(), policy.retry_buffer());
    let mut replayable = body.is_complete();
    worker.upstreams.borrow_mut()[info.upstream]
        .budget
        .deposit(clock::now_nanos());

    let mut tried = [usize::MAX; MAX_TRACKED];
    let mut attempts: u32 = 0;
    let mut free_resend_used = false;
    loop {
        attempts += 1;
        let now = clock::now_nanos();
        let chosen = choose(worker, info, &tried, attempts, now);
        let Some(Chosen {
            index,
            admission,
            addr,
            slot,
            connect_timeout,
            set_cookie,
        }) = chosen
        else {
            let reply = LocalReply::ServiceUnavailable("no backend available");
            return reply_and_close(worker, client, log, reply).await;
        };
        tried[(attempts as usize - 1) % MAX_TRACKED] = index;
        client.rec.backend = Some(index);
        client.rec.attempts = attempts;
        let mut attempt = Attempt {
            admission: Some(admission),
            started: Instant::now(),
            backend: addr,
            set_cookie,
            may_retry_status: attempts < policy.attempts() && info.idempotent,
        };

        let result = match acquire(worker, info.upstream, slot, addr, connect_timeout).await {
            Ok(up) => {
                let reused = up.reused;
                let first_attempt = attempts == 1 && !free_resend_used;
                let wait = wait_for_continue && first_attempt;
                let r = relay(
                    worker,
                    client,
                    info,
                    fwd,
                    &mut body,
                    &mut keep,
                    wait,
                    up,
                    &mut attempt,
                )
                .await;
                replayable = replayable || keep.whole(&body);
                (r, reused)
            }
            Err(failure) => (
                Relayed::Failed {
                    failure,
                    sent: false,
                    response_started: false,
                },
                false,
            ),
        };
        match result {
            (Relayed::Done(next), _) => return next,
            (Relayed::ClientFailed(f), _) => return client_failed(worker, client, log, f).await,
            (
                Relayed::Failed {
                    failure,
                    sent,
                    response_started,
                },
                reused,
            ) => {
                // A dead pooled connection: re-send once, uncounted, as
                // long as the request can be sent again.
                if reused
                    && !response_started
                    && !free_resend_used
                    && replayable
                    && (!sent || info.idempotent)
                {
                    free_resend_used = true;
                    attempts -= 1;
                    tried[attempts as usize % MAX_TRACKED] = usize::MAX;
                    drop(attempt);
                    worker.metrics.retry(info.upstream);
                    tracing::debug!(
                        ?failure,
                        "pooled connection failed; re-sending on a fresh one"
                    );
                    continue;
                }
                attempt.finish(failure.outcome());
                if response_started {
                    return Next::Abort;
                }
                let retry = match failure {
                    // The budget was already charged when it was decided.
                    UpstreamFailure::RetryableStatus(_) => true,
                    _ => {
                        policy.should_retry(
                            attempts,
                            failure.kind(),
                            info.idempotent,
                            sent,
                            replayable,
                        ) && withdraw_budget(worker, info.upstream)
                    }
                };
                if retry {
                    worker.metrics.retry(info.upstream);
                    let backoff = policy.backoff(attempts, &mut worker.rng.borrow_mut());
                    tracing::debug!(
                        backend = %addr,
                        ?failure,
                        attempt = attempts,
                        ?backoff,
                        "retrying on another backend"
                    );
                    if !backoff.is_zero() {
                        tokio::time::sleep(backoff).await;
                    }
                    continue;
                }
                tracing::warn!(backend = %addr, ?failure, "upstream attempt failed");
                return reply_and_close(worker, client, log, failure.reply()).await;
            }
        }
    }
}

/// A backend picked and admitted for one attempt, with what reaching it
/// takes.
struct Chosen {
    index: usize,
    admission: Admission,
    addr: std::net::SocketAddr,
    slot: usize,
    connect_timeout: Duration,
    set_cookie: Option<String>,
}

/// Picks and admits a backend not yet `tried`; on a retry with every
/// available backend tried already, one of them again (rather than giving
/// up with a 503).
fn choose(
    worker: &Worker,
    info: &RequestInfo,
    tried: &[usize],
    attempts: u32,
    now: u64,
) -> Option<Chosen> {
    let mut ups = worker.upstreams.borrow_mut();
    let up = &mut ups[info.upstream];
    let mut picked = balance::pick_and_admit(
        &mut *up.balancer,
        &up.backends,
        info.key,
        &|i| tried.contains(&i),
        up.panic_mode,
        now,
    );
    if picked.is_none() && attempts > 1 {
        picked = balance::pick_and_admit(
            &mut *up.balancer,
            &up.backends,
            info.key,
            &|_| false,
            up.panic_mode,
            now,
        );
    }
    let Picked {
        index,
        admission,
        panicked,
    } = picked?;
    if panicked {
        tracing::debug!(upstream = %up.name, "no healthy backend: panic mode pick");
    }
    let backend = &up.backends[index];
    let set_cookie = up
        .sticky
        .as_ref()
        .filter(|_| balance::sticky::needs_cookie(info.key, backend))
        .map(|cookie| balance::sticky::set_cookie_value(cookie, backend));
    Some(Chosen {
        index,
        admission,
        addr: backend.addr,
        slot: up.first_slot + index,
        connect_timeout: up.connect_timeout,
        set_cookie,
    })
}

/// Takes one retry from the worker's budget for `upstream`.
fn withdraw_budget(worker: &Worker, upstream: usize) -> bool {
    let ok = worker.upstreams.borrow_mut()[upstream]
        .budget
        .try_withdraw(clock::now_nanos());
    if !ok {
        worker.metrics.retry_refused(upstream);
    }
    ok
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

pub(super) async fn reply_and_close(
    worker: &Worker,
    client: &mut Client,
    log: &LogLine,
    reply: LocalReply,
) -> Next {
    log_reply(client, log, &reply);
    worker.metrics.count_status(reply.status());
    client.rec.status = reply.status();
    client.rec.answered = false;
    match client
        .reply(&reply, false, worker.config.server.send_timeout)
        .await
    {
        Ok(()) => Next::Close,
        Err(_) => Next::Abort,
    }
}

/// A connection to the picked backend: a pooled one if alive, else new.
async fn acquire(
    worker: &Worker,
    upstream: usize,
    slot: usize,
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
) -> Result<UpstreamConn, UpstreamFailure> {
    let checkout = worker.pool.borrow_mut().checkout(slot, Instant::now());
    match checkout {
        Checkout::Hit(Pooled { conn, tls, open }) => {
            worker.metrics.pool_hits.inc();
            Ok(UpstreamConn {
                conn,
                tls,
                open,
                slot,
                reused: true,
                buf: worker.take_buffer(),
            })
        }
        Checkout::Miss { stale } => {
            worker.metrics.pool_stale.add(stale as u64);
            worker.metrics.pool_misses.inc();
            let started = Instant::now();
            let tls_config = worker.upstreams.borrow()[upstream].tls.clone();
            let connected = match connect(addr, connect_timeout).await {
                Ok(conn) => match tls_config {
                    None => Ok((conn, None)),
                    Some(super::UpstreamTls { config: None, .. }) => {
                        conn.shutdown(std::net::Shutdown::Both);
                        Err(io::Error::other("no TLS client config"))
                    }
                    Some(super::UpstreamTls {
                        config: Some(config),
                        name,
                    }) => {
                        let name = name.unwrap_or_else(|| addr.ip().into());
                        let left = connect_timeout.saturating_sub(started.elapsed());
                        let size = worker.config.server.buffer_size;
                        match ClientTls::connect(&conn, config, name, size, left).await {
                            Ok(tls) => Ok((conn, Some(Box::new(tls)))),
                            Err(e) => {
                                conn.shutdown(std::net::Shutdown::Both);
                                Err(e)
                            }
                        }
                    }
                },
                Err(e) => Err(e),
            };
            worker.metrics.upstream_connect(upstream, connected.is_ok());
            match connected {
                Ok((conn, tls)) => Ok(UpstreamConn {
                    conn,
                    tls,
                    open: OpenGuard {
                        metrics: worker.metrics.clone(),
                        upstream,
                    },
                    slot,
                    reused: false,
                    buf: worker.take_buffer(),
                }),
                Err(e) => {
                    tracing::warn!(backend = %addr, error = %e, "upstream connect failed");
                    Err(if e.kind() == io::ErrorKind::TimedOut {
                        UpstreamFailure::ConnectTimeout
                    } else {
                        UpstreamFailure::ConnectRefused
                    })
                }
            }
        }
    }
}

/// Sends the request on `up` and relays the response back.
#[allow(clippy::too_many_arguments)]
async fn relay(
    worker: &Rc<Worker>,
    client: &mut Client,
    info: &RequestInfo,
    first: &mut Vec<u8>,
    body: &mut body::RequestBody,
    keep: &mut Keep,
    wait_for_continue: bool,
    mut up: UpstreamConn,
    attempt: &mut Attempt,
) -> Relayed {
    let server = &worker.config.server;
    let response_timeout = worker.upstreams.borrow()[info.upstream].response_timeout;
    let failed = |failure| Relayed::Failed {
        failure,
        sent: true,
        response_started: false,
    };

    // 2. Send the head, with as much of the body as was already buffered
    //    (or, on a retry, the whole kept request).
    let len = first.len();
    let (res, back) = up
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
    worker.metrics.bytes_to_upstreams.add(len as u64);

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
            Ok(100) => {
                // Relay the backend's 100 and drop it from the buffer.
                if let Err(next) = forward_informational(worker, client, &mut up, info).await {
                    return Relayed::Done(next);
                }
                continue_sent = true;
            }
            Ok(_) => {
                // A final answer without wanting the body: relay it, then
                // close, since the client's body was never read.
                return respond(worker, client, info, up, false, attempt).await;
            }
            Err(UpstreamFailure::ResponseTimeout) => {
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
    match body.stream(worker, client, &mut up, first, keep).await {
        Ok(()) => {}
        Err(body::StreamError::Client(f)) => return Relayed::ClientFailed(f),
        Err(body::StreamError::Upstream) => {
            // The backend may have answered early (e.g. 413) and closed;
            // try to relay that answer, else fail.
            match read_response_head(worker, &mut up, info, response_timeout).await {
                Ok(_) => return respond(worker, client, info, up, false, attempt).await,
                _ => return failed(UpstreamFailure::Closed),
            }
        }
    }

    // 5. Read the response head, relaying interim 1xx answers.
    loop {
        match read_response_head(worker, &mut up, info, response_timeout).await {
            Ok(status) if (100..200).contains(&status) && status != 101 => {
                if status == 100 && continue_sent {
                    drop_informational(worker, &mut up, info);
                    continue;
                }
                if let Err(next) = forward_informational(worker, client, &mut up, info).await {
                    return Relayed::Done(next);
                }
            }
            Ok(status) => {
                if attempt.may_retry_status && retry_on_status(worker, info.upstream, status) {
                    return failed(UpstreamFailure::RetryableStatus(status));
                }
                return respond(worker, client, info, up, body.is_complete(), attempt).await;
            }
            Err(f) => return failed(f),
        }
    }
}

/// Whether a final response with `status` should be retried rather than
/// relayed: listed in `on`, and the budget allows (charged here).
fn retry_on_status(worker: &Worker, upstream: usize, status: u16) -> bool {
    let listed = worker.upstreams.borrow()[upstream]
        .retry
        .retries_on(FailureKind::Status(status));
    listed && withdraw_budget(worker, upstream)
}

/// Reads until `up.buf` holds a complete response head; returns its status.
/// `wait` elapsing is a `ResponseTimeout` (the 100-continue wait treats it
/// as "no 100 yet").
async fn read_response_head(
    worker: &Worker,
    up: &mut UpstreamConn,
    info: &RequestInfo,
    wait: Duration,
) -> Result<u16, UpstreamFailure> {
    let start = Instant::now();
    loop {
        if !up.buf.is_empty() {
            match http::parse_response(&up.buf, &worker.limits, info.is_head) {
                Ok(http::Status::Complete(head)) => return Ok(head.status()),
                Ok(http::Status::Partial) => {}
                Err(e) => return Err(UpstreamFailure::Malformed(e.reason())),
            }
        }
        let Some(left) = wait.checked_sub(start.elapsed()) else {
            return Err(UpstreamFailure::ResponseTimeout);
        };
        match up
            .read_more(worker.config.server.buffer_size, Some(left))
            .await
        {
            Ok(0) => return Err(UpstreamFailure::Closed),
            Ok(n) => worker.metrics.bytes_from_upstreams.add(n as u64),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(UpstreamFailure::ResponseTimeout)
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

/// Appends a header to the complete head at the end of `out` (which ends
/// with the blank line).
pub(super) fn append_header(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(out.ends_with(b"\r\n\r\n"));
    out.truncate(out.len() - 2);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Writes the final response head (already complete in `up.buf`) and relays
/// the body; then pools or closes the upstream connection.
async fn respond(
    worker: &Rc<Worker>,
    client: &mut Client,
    info: &RequestInfo,
    mut up: UpstreamConn,
    request_complete: bool,
    attempt: &mut Attempt,
) -> Relayed {
    let server = &worker.config.server;
    client.request_read = request_complete;
    let (status, framing, out_framing, keep_alive, head_len, upstream_keep_alive, has_id) = {
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
        let keep_alive = info.keep_alive
            && request_complete
            && !ends_by_close
            && status != 101
            && !client.winding_down(worker);
        client.out.clear();
        http::write_response_head(
            &head,
            out_framing,
            keep_alive,
            info.version,
            &mut client.out,
        );
        let has_id = head
            .headers()
            .any(|(name, _)| name.eq_ignore_ascii_case(super::REQUEST_ID));
        (
            status,
            framing,
            out_framing,
            keep_alive,
            head.head_len(),
            head.keep_alive(),
            has_id,
        )
    };
    attempt.finish(Outcome::Response(status));
    client.rec.status = status;
    client.rec.answered = true;
    if let Some(cookie) = attempt.set_cookie.take() {
        append_header(&mut client.out, "Set-Cookie", &cookie);
    }
    if !has_id && !client.request_id.is_empty() {
        append_header(&mut client.out, super::REQUEST_ID, &client.request_id);
    }
    client.mark_body_start();
    worker.metrics.count_status(status);
    up.buf.drain(..head_len);

    if status == 101 {
        if client.send_out(server.send_timeout).await.is_err() {
            return Relayed::ClientFailed(ClientFailure::Gone);
        }
        tunnel::run(worker, client, up.conn, up.tls, up.buf).await;
        return Relayed::Done(Next::Abort);
    }

    let relay = body::ResponseRelay {
        framing,
        out: out_framing,
    };
    let outcome = relay.run(worker, client, &mut up).await;
    let UpstreamConn {
        conn,
        tls,
        open,
        slot,
        buf,
        ..
    } = up;
    // `clean` already says no bytes followed the response.
    worker.give_buffer(buf);
    match outcome {
        Ok(clean) => {
            if clean && upstream_keep_alive && request_complete {
                worker
                    .pool
                    .borrow_mut()
                    .checkin(slot, Pooled { conn, tls, open }, Instant::now());
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
