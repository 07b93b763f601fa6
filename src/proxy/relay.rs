//! One attempt on a connection to the chosen backend, stage by stage:
//! send the request (head, buffered body, `Expect: 100-continue`, the rest
//! of the body), read the response head (relaying 1xx answers), run the
//! response filters, write the head and relay the body (or run the 101
//! tunnel), then give the connection back to the pool or close it.
//!
//! Invariants: a response head goes to the client only once the whole
//! upstream head is valid, so every upstream failure before that point is
//! an [`UpstreamFailure`] the exchange may retry or answer with 502/503/504;
//! each head is parsed once, when it is read ([`ResponseInfo`]); the
//! connection returns to the pool only when both bodies ended exactly at
//! their framing and the backend allowed keep-alive.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::gateway::compress::{CompressedBody, Decision, Encoder, VARY_ACCEPT_ENCODING};
use crate::http::{
    self, BodyFramer, BodyKind, ClientSide, LocalReply, OutFraming, ResponseBody, ResponseContext,
    ResponseInfo, ResponsePlan, Version,
};
use crate::upstream::clock;
use crate::upstream::connector::UpstreamConn;
use crate::upstream::{Admission, Changes, Outcome};

use super::body::{self, read_more, Keep, RequestBody, ResponseFramer};
use super::cache::{self, OnResponse};
use super::client::{Client, LogLine, Next, RequestInfo};
use super::error::{ClientFailure, UpstreamFailure};
use super::filter::ResponseCtx;
use super::tunnel;
use super::worker::Env;

/// How long a request with `Expect: 100-continue` waits for the backend's
/// interim answer before the proxy sends `100 Continue` itself (curl waits
/// one second too).
const EXPECT_CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// What one attempt carries besides the connection.
pub(super) struct Attempt {
    /// Recorded on the backend when the response head arrives.
    pub admission: Option<Admission>,
    pub started: Instant,
    pub backend: SocketAddr,
    /// `Set-Cookie` value from the balancer (`sticky_cookie`), when the
    /// client's cookie does not name this backend.
    pub set_cookie: Option<String>,
    /// A retryable 5xx may be retried instead of relayed (more attempts
    /// left, request replayable and idempotent); `retry_on_status` says
    /// whether a status is listed and the budget allows it.
    pub may_retry_status: bool,
    pub response_timeout: Duration,
}

impl Attempt {
    pub fn finish(&mut self, outcome: Outcome) {
        if let Some(admission) = self.admission.take() {
            let changes = admission.finish(outcome, self.started.elapsed(), clock::now_nanos());
            log_changes(self.backend, changes);
        }
    }
}

pub(super) fn log_changes(backend: SocketAddr, changes: Changes) {
    if !changes.is_empty() {
        tracing::warn!(%backend, "backend state changed: {changes}");
    }
}

/// The result of one attempt.
pub(super) enum Relayed {
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

/// The upstream side of an attempt: the connection and what was read from
/// it and not yet relayed.
struct Upstream {
    conn: UpstreamConn,
    buf: Vec<u8>,
}

/// What the request side of an attempt brings to [`relay`].
pub(super) struct Sending<'a> {
    pub info: &'a RequestInfo,
    /// The forwarded head and whatever of the body went with it (on a
    /// retry, the whole kept request).
    pub first: &'a mut Vec<u8>,
    pub body: &'a mut RequestBody,
    pub keep: &'a mut Keep,
    /// Send the body only after the backend's `100 Continue` (or a wait).
    pub wait_for_continue: bool,
}

/// Runs one attempt on `conn`: send, read the response head, respond.
/// `retry_on_status(status)` says whether a final status is to be retried
/// rather than relayed (charging the retry budget).
pub(super) async fn relay(
    env: &Env<'_>,
    client: &mut Client,
    req: Sending<'_>,
    conn: UpstreamConn,
    attempt: &mut Attempt,
    retry_on_status: impl Fn(u16) -> bool,
) -> Relayed {
    let Sending {
        info,
        first,
        body,
        keep,
        wait_for_continue,
    } = req;
    let server = env.server;
    let response_timeout = attempt.response_timeout;
    let failed = |failure| Relayed::Failed {
        failure,
        sent: true,
        response_started: false,
    };
    let mut up = Upstream {
        conn,
        buf: env.buffers.take(),
    };

    // Send the head, with as much of the body as was already buffered.
    let len = first.len();
    let (res, back) = up
        .conn
        .transport
        .write_all(std::mem::take(first), 0..len, Some(server.body_timeout))
        .await;
    *first = back;
    if res.is_err() {
        env.buffers.give(up.buf);
        return Relayed::Failed {
            failure: UpstreamFailure::Closed,
            sent: false,
            response_started: false,
        };
    }
    env.metrics.bytes_to_upstreams.add(len as u64);

    // `Expect: 100-continue`: let the backend answer first, briefly.
    let mut continue_sent = false;
    if wait_for_continue {
        let wait = EXPECT_CONTINUE_WAIT.min(response_timeout);
        match read_response_head(env, &mut up, info, wait).await {
            Ok(head) if head.status == 100 => {
                // Relay the backend's 100 and drop it from the buffer.
                if let Err(next) = forward_informational(env, client, &mut up, info, &head).await {
                    return done(env, up, next);
                }
                continue_sent = true;
            }
            Ok(head) => {
                // A final answer without wanting the body: relay it, then
                // close, since the client's body was never read.
                return respond(env, client, info, up, head, false, attempt).await;
            }
            Err(UpstreamFailure::ResponseTimeout) => {
                client.out.clear();
                client.out.extend_from_slice(http::CONTINUE_100);
                if client.send_out(server.send_timeout).await.is_err() {
                    env.buffers.give(up.buf);
                    return Relayed::ClientFailed(ClientFailure::Gone);
                }
                continue_sent = true;
            }
            Err(f) => {
                env.buffers.give(up.buf);
                return failed(f);
            }
        }
    }

    // Stream the rest of the request body.
    let streamed = body
        .stream(env, client, &mut up.conn.transport, first, keep)
        .await;
    match streamed {
        Ok(()) => {}
        Err(body::StreamError::Client(f)) => {
            env.buffers.give(up.buf);
            return Relayed::ClientFailed(f);
        }
        Err(body::StreamError::Upstream) => {
            // The backend may have answered early (e.g. 413) and closed;
            // try to relay that answer, else fail.
            return match read_response_head(env, &mut up, info, response_timeout).await {
                Ok(head) => respond(env, client, info, up, head, false, attempt).await,
                Err(_) => {
                    env.buffers.give(up.buf);
                    failed(UpstreamFailure::Closed)
                }
            };
        }
    }

    // Read the response head, relaying interim 1xx answers.
    loop {
        match read_response_head(env, &mut up, info, response_timeout).await {
            Ok(head) if head.is_informational() => {
                if head.status == 100 && continue_sent {
                    // The 100 the proxy already sent on its own.
                    up.buf.drain(..head.head_len);
                    continue;
                }
                if let Err(next) = forward_informational(env, client, &mut up, info, &head).await {
                    return done(env, up, next);
                }
            }
            Ok(head) => {
                let status = head.status;
                if attempt.may_retry_status && retry_on_status(status) {
                    env.buffers.give(up.buf);
                    return failed(UpstreamFailure::RetryableStatus(status));
                }
                let complete = body.is_complete();
                return respond(env, client, info, up, head, complete, attempt).await;
            }
            Err(f) => {
                env.buffers.give(up.buf);
                return failed(f);
            }
        }
    }
}

/// Ends an attempt with `next`, closing the upstream connection.
fn done(env: &Env<'_>, up: Upstream, next: Next) -> Relayed {
    env.buffers.give(up.buf);
    Relayed::Done(next)
}

/// Reads until `up.buf` holds a complete response head, parsed once here;
/// the head stays at the front of `up.buf` for [`ResponseInfo::head`].
/// `wait` elapsing is a `ResponseTimeout` (the 100-continue wait treats it
/// as "no 100 yet").
async fn read_response_head(
    env: &Env<'_>,
    up: &mut Upstream,
    info: &RequestInfo,
    wait: Duration,
) -> Result<ResponseInfo, UpstreamFailure> {
    let start = Instant::now();
    loop {
        if !up.buf.is_empty() {
            match http::parse_response(&up.buf, env.limits, info.is_head) {
                Ok(http::Status::Complete(head)) => return Ok(head.info()),
                Ok(http::Status::Partial) => {}
                Err(e) => return Err(UpstreamFailure::Malformed(e.reason())),
            }
        }
        let Some(left) = wait.checked_sub(start.elapsed()) else {
            return Err(UpstreamFailure::ResponseTimeout);
        };
        let read = read_more(
            &mut up.conn.transport,
            &mut up.buf,
            env.server.buffer_size,
            Some(left),
        )
        .await;
        match read {
            Ok(0) => return Err(UpstreamFailure::Closed),
            Ok(n) => env.metrics.bytes_from_upstreams.add(n as u64),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(UpstreamFailure::ResponseTimeout)
            }
            Err(_) => return Err(UpstreamFailure::Closed),
        }
    }
}

/// Relays the interim head `head` at the front of `up.buf` to an HTTP/1.1
/// client (an HTTP/1.0 client gets none), and drops it from `up.buf`.
async fn forward_informational(
    env: &Env<'_>,
    client: &mut Client,
    up: &mut Upstream,
    info: &RequestInfo,
    head: &ResponseInfo,
) -> Result<(), Next> {
    client.out.clear();
    if info.version == Version::Http11 {
        let ctx = ResponseContext {
            framing: OutFraming::AsIs,
            keep_alive: true,
            client_version: info.version,
            request_id: None,
            set_cookie: None,
            content_coding: None,
            vary: None,
        };
        http::write_response_head(&head.head(&up.buf), &ctx, &mut client.out);
    }
    up.buf.drain(..head.head_len);
    if !client.out.is_empty() && client.send_out(env.server.send_timeout).await.is_err() {
        return Err(Next::Abort);
    }
    Ok(())
}

/// The final response `head` (at the front of `up.buf`): plan it, run the
/// response filters, write the head and relay the body (or the tunnel);
/// then pool or close the upstream connection.
async fn respond(
    env: &Env<'_>,
    client: &mut Client,
    info: &RequestInfo,
    mut up: Upstream,
    head: ResponseInfo,
    request_complete: bool,
    attempt: &mut Attempt,
) -> Relayed {
    let server = env.server;
    client.request_read = request_complete;
    let side = ClientSide {
        version: info.version,
        keep_alive: info.keep_alive && !client.winding_down(env.draining.get()),
        upgrade: info.upgrade,
        request_complete,
    };
    let plan = match http::plan_response(&head, side) {
        Ok(plan) => plan,
        Err(e) => {
            env.buffers.give(up.buf);
            return Relayed::Failed {
                failure: UpstreamFailure::Malformed(e.reason()),
                sent: true,
                response_started: false,
            };
        }
    };
    let status = head.status;
    attempt.finish(Outcome::Response(status));

    // `intercept_errors`: the route's page replaces the backend's answer.
    // Its body is not read, so the connection is closed, never pooled.
    let intercepted = !plan.tunnel
        && client
            .route_pages
            .as_ref()
            .is_some_and(|pages| pages.intercepts(status));
    if intercepted {
        env.buffers.give(up.buf);
        drop(up.conn);
        let next = reply_and_close_now(env, client, LocalReply::Intercepted(status)).await;
        // The backend answered; the access log names it.
        client.rec.answered = true;
        return Relayed::Done(next);
    }
    // The cache: keep a copy, or answer with the stored entry instead.
    let store = match cache::on_response(client, &head, &up.buf) {
        OnResponse::Relay => false,
        OnResponse::Store => true,
        OnResponse::ServeStored(object, label) => {
            // A 304 that ends at its head leaves the connection in step.
            let Upstream { conn, buf } = up;
            if plan.reuse_upstream
                && matches!(plan.body, ResponseBody::Empty)
                && buf.len() == head.head_len
            {
                env.connector.release(conn);
            }
            env.buffers.give(buf);
            return Relayed::Done(cache::serve_fill(env, client, info, &object, label).await);
        }
    };
    // Compression (the route's `compress`): decided on the head, applied
    // by the body relay.
    let (plan, compress) = compression(info, &head.head(&up.buf), plan, side);

    // Response filters.
    let set_cookie = attempt.set_cookie.take();
    let mut filtered = ResponseCtx {
        info: &head,
        request_id: &client.request_id,
        echo_request_id: None,
        set_cookie: set_cookie.as_deref(),
    };
    if let Err(reply) = env.filters.on_response(&mut filtered) {
        // The backend's answer is replaced; its connection is out of step.
        env.buffers.give(up.buf);
        return Relayed::Done(reply_and_close_now(env, client, reply).await);
    }
    let ctx = ResponseContext {
        framing: plan.out,
        keep_alive: plan.keep_alive,
        client_version: info.version,
        request_id: filtered.echo_request_id,
        set_cookie: filtered.set_cookie,
        content_coding: compress.coding.map(http::Coding::token),
        vary: compress.vary.then_some(VARY_ACCEPT_ENCODING),
    };
    client.out.clear();
    http::write_response_head(&head.head(&up.buf), &ctx, &mut client.out);
    if let Some(edits) = &info.response_headers {
        edits
            .edits
            .apply_rendered(&mut client.out, &edits.rendered, attempt.backend);
    }
    if !client.response_fields.is_empty() {
        // The request filters' fields (CORS).
        client.response_fields.apply_to_head(&mut client.out);
    }
    if let Some(label) = cache::label(client) {
        // Before the empty line that ends the head.
        client.out.truncate(client.out.len() - 2);
        client.out.extend_from_slice(b"X-Cache-Status: ");
        client.out.extend_from_slice(label.as_bytes());
        client.out.extend_from_slice(b"\r\n\r\n");
        client.rec.cache = Some(label);
    }
    // What is stored is what the client gets (after the response filters,
    // e.g. a compressed variant).
    let mut capture = if store && !info.is_head {
        cache::begin_capture(client, set_cookie.as_deref())
    } else {
        None
    };
    client.rec.status = status;
    client.rec.answered = true;
    let head_len = client.out.len();
    client.mark_body_start(head_len);
    env.metrics.count_status(status);
    up.buf.drain(..head.head_len);

    if plan.tunnel {
        if client.send_out(server.send_timeout).await.is_err() {
            env.buffers.give(up.buf);
            return Relayed::ClientFailed(ClientFailure::Gone);
        }
        let Upstream { conn, buf } = up;
        tunnel::run(
            server.tunnel_timeout,
            env.metrics,
            client,
            conn.transport,
            buf,
        )
        .await;
        return Relayed::Done(Next::Abort);
    }

    let Upstream { mut conn, mut buf } = up;
    let framer = match compress.encoder {
        Some(encoder) => ResponseFramer::Compressed(Box::new(CompressedBody::new(
            plan.body,
            encoder,
            info.version == Version::Http11,
        ))),
        None => ResponseFramer::Plain(BodyFramer::response(plan.body, plan.out)),
    };
    let outcome = body::relay_response(
        env,
        client,
        (&mut conn.transport, &mut buf),
        framer,
        capture.as_deref_mut(),
    )
    .await;
    if let Some(capture) = capture {
        cache::finish_capture(client, capture, outcome.is_ok());
    }
    // `clean` already says no bytes followed the response.
    env.buffers.give(buf);
    match outcome {
        Ok(clean) => {
            if clean && plan.reuse_upstream {
                env.connector.release(conn);
            }
            Relayed::Done(if plan.keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            })
        }
        Err(body::RelayError::Client | body::RelayError::Upstream) => Relayed::Done(Next::Abort),
    }
}

/// What the route's `compress` made of one response.
#[derive(Default)]
struct Compression {
    /// The coding applied (its encoder is in `encoder`).
    coding: Option<http::Coding>,
    encoder: Option<Encoder>,
    /// Add `Vary: Accept-Encoding`.
    vary: bool,
}

/// Decides compression for the final response `head` (see
/// `gateway::compress`) and re-plans its framing when compressed.
fn compression(
    info: &RequestInfo,
    head: &http::ResponseHead<'_>,
    plan: ResponsePlan,
    side: ClientSide,
) -> (ResponsePlan, Compression) {
    let Some((policy, chosen)) = &info.compress else {
        return (plan, Compression::default());
    };
    match policy.decide(head, *chosen) {
        Decision::Leave(_) => (plan, Compression::default()),
        Decision::Vary => (
            plan,
            Compression {
                vary: true,
                ..Compression::default()
            },
        ),
        Decision::Compress(coding, level) => match Encoder::new(coding, level) {
            Ok(encoder) => (
                plan.recoded(side),
                Compression {
                    coding: Some(coding),
                    encoder: Some(encoder),
                    vary: true,
                },
            ),
            Err(e) => {
                // A library fault: relay the response as it came.
                tracing::warn!(coding = coding.token(), "{}", e.reason());
                (
                    plan,
                    Compression {
                        vary: true,
                        ..Compression::default()
                    },
                )
            }
        },
    }
}

/// Answers the request with a local reply and closes (gracefully when the
/// reply went out).
pub(super) async fn reply_and_close(
    env: &Env<'_>,
    client: &mut Client,
    log: &LogLine,
    reply: LocalReply,
) -> Next {
    // A redirect is an answer, not a rejection.
    if !matches!(reply, LocalReply::Redirect(_)) {
        super::reject_log::log_reply(client, log, &reply);
    }
    reply_and_close_now(env, client, reply).await
}

/// Answers the request with a local reply and keeps the connection (a
/// request filter refused a request that was read whole).
pub(super) async fn reply_and_keep_alive(
    env: &Env<'_>,
    client: &mut Client,
    log: &LogLine,
    reply: LocalReply,
) -> Next {
    super::reject_log::log_reply(client, log, &reply);
    reply_now(env, client, reply, true).await
}

async fn reply_and_close_now(env: &Env<'_>, client: &mut Client, reply: LocalReply) -> Next {
    reply_now(env, client, reply, false).await
}

/// Sends a local reply; `Next::KeepAlive` or `Next::Close` as asked once
/// it went out, `Next::Abort` when it could not.
async fn reply_now(
    env: &Env<'_>,
    client: &mut Client,
    reply: LocalReply,
    keep_alive: bool,
) -> Next {
    env.metrics.count_status(reply.status());
    client.rec.status = reply.status();
    client.rec.answered = false;
    let sent = client
        .reply(
            &reply,
            &env.server.error_pages,
            keep_alive,
            env.server.send_timeout,
        )
        .await;
    match (sent, keep_alive) {
        (Ok(()), true) => Next::KeepAlive,
        (Ok(()), false) => Next::Close,
        (Err(_), _) => Next::Abort,
    }
}

/// What to do after a client-side failure.
pub(super) async fn client_failed(
    env: &Env<'_>,
    client: &mut Client,
    log: &LogLine,
    failure: ClientFailure,
) -> Next {
    match failure {
        ClientFailure::Gone => Next::Abort,
        ClientFailure::BadBody(reply) => reply_and_close(env, client, log, reply).await,
    }
}

/// Whether a request with this body, and nothing of it buffered yet, waits
/// for the backend's `100 Continue` before sending the body.
pub(super) fn waits_for_continue(info: &RequestInfo, buffered: bool) -> bool {
    info.expect_continue && !matches!(info.body, BodyKind::Empty) && !buffered
}
