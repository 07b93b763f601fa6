//! One request against its upstream: attempts and retries.
//!
//! Each attempt picks a backend through the upstream's balance `Picker` (which
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

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::{self, LocalReply};
use crate::metrics::WorkerMetrics;
use crate::upstream::balance::Picked;
use crate::upstream::clock;
use crate::upstream::connector::{ConnectError, Target};
use crate::upstream::pool::Liveness;
use crate::upstream::retry::FailureKind;
use crate::upstream::{Admission, Outcome};

use super::body::{Keep, RequestBody};
use super::cache;
use super::client::{Client, LogLine, Next, RequestInfo};
use super::error::UpstreamFailure;
use super::relay::{self, client_failed, Attempt, Relayed, Sending};
use super::worker::{Env, Upstreams};

/// Backends remembered as tried for one request; beyond this many attempts
/// the oldest are forgotten (and may be tried again).
const MAX_TRACKED: usize = 8;

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

impl From<ConnectError> for UpstreamFailure {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Failed => UpstreamFailure::ConnectRefused,
            ConnectError::TimedOut => UpstreamFailure::ConnectTimeout,
            // Answered by `exchange` before it gets here; never a backend's.
            ConnectError::Local(_) | ConnectError::QueueTimeout => UpstreamFailure::ConnectRefused,
        }
    }
}

/// Runs one request against its upstream, with retries as described in
/// the module docs: choose a backend, then [`relay::relay`] sends the
/// request and relays the response.
pub(super) async fn exchange(
    env: &Env<'_>,
    upstreams: &Upstreams,
    client: &mut Client,
    info: &RequestInfo,
    fwd: &mut Vec<u8>,
    log: &LogLine,
) -> Next {
    let policy = upstreams.get(info.upstream).retry;
    let retries_configured = policy.attempts() > 1;
    let wait_for_continue = relay::waits_for_continue(info, !client.buf.is_empty());
    let max_body = env.server.max_request_body.map_or(0, |m| m.get());
    let mut body = RequestBody::new(info.body, max_body);
    // The head and whatever of the body is already buffered go in one write.
    if !wait_for_continue {
        if let Err(f) = body.take_buffered(&mut client.buf, fwd) {
            return client_failed(env, client, log, f).await;
        }
    }
    // A body still to stream is kept for a replay when retries are on and
    // it fits `retry_buffer` (the bytes go after the head in `fwd`).
    let mut keep = Keep::new(retries_configured, fwd.len(), policy.retry_buffer());
    let mut replayable = body.is_complete();
    upstreams
        .get_mut(info.upstream)
        .budget
        .deposit(clock::now_nanos());

    let mut tried = [usize::MAX; MAX_TRACKED];
    let mut attempts: u32 = 0;
    let mut free_resend_used = false;
    // The per-attempt fields after the request line, and their length.
    let mut backend_lines = Vec::new();
    let mut backend_lines_len = 0;
    loop {
        attempts += 1;
        let now = clock::now_nanos();
        let destination = || {
            client
                .transport
                .conn()
                .local_addr()
                .unwrap_or(client.client_addr)
        };
        let chosen = choose(
            upstreams,
            info,
            &tried,
            attempts,
            now,
            client.client_addr,
            destination,
        );
        let Some(chosen) = chosen else {
            let reply = LocalReply::ServiceUnavailable("no backend available");
            return cache::upstream_failed(env, client, info, log, reply).await;
        };
        let Chosen {
            index,
            admission,
            target,
            response_timeout,
            set_cookie,
        } = chosen;
        if let Some(fields) = &info.backend_fields {
            backend_lines.clear();
            fields.write(target.addr, &mut backend_lines);
            backend_lines_len =
                http::put_after_request_line(fwd, backend_lines_len, &backend_lines);
        }
        tried[(attempts as usize - 1) % MAX_TRACKED] = index;
        client.rec.backend = Some(index);
        client.rec.attempts = attempts;
        let mut attempt = Attempt {
            admission: Some(admission),
            started: crate::io::now(),
            backend: target.addr,
            set_cookie,
            may_retry_status: attempts < policy.attempts() && info.idempotent,
            response_timeout,
        };

        // A request that can be re-sent for free loses only that re-send
        // if a pooled connection turns out dead, so it skips the pool's
        // liveness syscall for a recently used connection.
        let liveness = if info.idempotent && replayable && !free_resend_used {
            Liveness::Trusted
        } else {
            Liveness::Checked
        };
        let acquired = match env.connector.acquire(&target, liveness).await {
            Err(ConnectError::Local(kind)) => {
                // Our shortage, not the backend's: the admission is dropped
                // unfinished, so health, ejection and breaker do not count
                // it, and another backend would fare no better.
                drop(attempt);
                let reply = LocalReply::ServiceUnavailable(kind.reason());
                return cache::upstream_failed(env, client, info, log, reply).await;
            }
            Err(ConnectError::QueueTimeout) => {
                // The backend's configured capacity, not its failure:
                // health, ejection and breaker do not count it either.
                drop(attempt);
                let reply = LocalReply::ServiceUnavailable(
                    "no upstream connection free within queue_timeout",
                );
                return cache::upstream_failed(env, client, info, log, reply).await;
            }
            acquired => acquired,
        };
        let (result, reused) = match acquired {
            Ok(conn) => {
                let reused = conn.reused;
                let first_attempt = attempts == 1 && !free_resend_used;
                let sending = Sending {
                    info,
                    first: fwd,
                    body: &mut body,
                    keep: &mut keep,
                    wait_for_continue: wait_for_continue && first_attempt,
                };
                let retry_on_status =
                    |status| retry_on_status(upstreams, env.metrics, info.upstream, status);
                let r =
                    relay::relay(env, client, sending, conn, &mut attempt, retry_on_status).await;
                replayable = replayable || keep.whole(&body);
                (r, reused)
            }
            Err(e) => (
                Relayed::Failed {
                    failure: e.into(),
                    sent: false,
                    response_started: false,
                },
                false,
            ),
        };
        let (failure, sent, response_started) = match result {
            Relayed::Done(next) => return next,
            Relayed::ClientFailed(f) => return client_failed(env, client, log, f).await,
            Relayed::Failed {
                failure,
                sent,
                response_started,
            } => (failure, sent, response_started),
        };
        // A dead pooled connection: re-send once, uncounted, as long as the
        // request can be sent again.
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
            env.metrics.retry(info.upstream);
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
                policy.should_retry(attempts, failure.kind(), info.idempotent, sent, replayable)
                    && withdraw_budget(upstreams, env.metrics, info.upstream)
            }
        };
        if retry {
            env.metrics.retry(info.upstream);
            let backoff = policy.backoff(attempts, &mut upstreams.rng());
            tracing::debug!(
                backend = %target.addr,
                ?failure,
                attempt = attempts,
                ?backoff,
                "retrying on another backend"
            );
            if !backoff.is_zero() {
                crate::io::sleep(backoff).await;
            }
            continue;
        }
        tracing::warn!(backend = %target.addr, ?failure, "upstream attempt failed");
        return cache::upstream_failed(env, client, info, log, failure.reply()).await;
    }
}

/// A backend picked and admitted for one attempt, with what reaching it
/// takes.
struct Chosen {
    index: usize,
    admission: Admission,
    target: Target,
    response_timeout: Duration,
    set_cookie: Option<String>,
}

/// Picks and admits a backend not yet `tried` (see [`UpstreamRt::pick`]),
/// with what reaching it takes.
fn choose(
    upstreams: &Upstreams,
    info: &RequestInfo,
    tried: &[usize],
    attempts: u32,
    now: u64,
    client: SocketAddr,
    destination: impl FnOnce() -> SocketAddr,
) -> Option<Chosen> {
    let mut up = upstreams.get_mut(info.upstream);
    let Picked {
        index,
        admission,
        panicked,
        set_cookie,
    } = up.pick(info.key, tried, attempts > 1, now)?;
    if panicked {
        tracing::debug!(upstream = %up.name, "no healthy backend: panic mode pick");
    }
    Some(Chosen {
        index,
        admission,
        target: up.target(info.upstream, index, client, destination),
        response_timeout: up.response_timeout,
        set_cookie,
    })
}

/// Whether a final response with `status` should be retried rather than
/// relayed: listed in `on`, and the budget allows (charged here).
fn retry_on_status(
    upstreams: &Upstreams,
    metrics: &WorkerMetrics,
    upstream: usize,
    status: u16,
) -> bool {
    let listed = upstreams
        .get(upstream)
        .retry
        .retries_on(FailureKind::Status(status));
    listed && withdraw_budget(upstreams, metrics, upstream)
}

/// Takes one retry from the worker's budget for `upstream`.
pub(super) fn withdraw_budget(
    upstreams: &Upstreams,
    metrics: &WorkerMetrics,
    upstream: usize,
) -> bool {
    let ok = upstreams
        .get_mut(upstream)
        .budget
        .try_withdraw(clock::now_nanos());
    if !ok {
        metrics.retry_refused(upstream);
    }
    ok
}
