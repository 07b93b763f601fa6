//! The request loop of one client connection: the pipeline, stage by stage.
//!
//! 1. read head: read until `http::parse_request` has a complete head
//!    (head timeout, or keep-alive timeout while idle); the request id is
//!    assigned here, so every reply and log line carries it;
//! 2. route: host, path (and a route's method, header and path-regex
//!    conditions) pick the upstream (`404` otherwise); a plain listener
//!    with `https_redirect` answers before routing;
//! 3. request filters (`Filters::on_request`, then the route's HTTPS
//!    redirect, rewrite and redirect); then the forwarded head is written
//!    at once, so no borrow of the buffer lives across an await (fields
//!    naming the backend are left to each attempt);
//! 4. choose backend, 5. send, 6. read response head, 7. response filters,
//!    8. relay body: one [`exchange`] (attempts and retries), each attempt a
//!    [`relay`](super::relay) on a connection from the connector;
//! 9. finish: the metrics and the access log line; then the next request,
//!    or a lingering close.
//!
//! Invariants: bytes the client sent after the current request's body stay
//! in the client buffer and are parsed as the next request (pipelining, and
//! an `Upgrade` the backend did not accept); a request starts on the newest
//! config (the connection moves to a reload's successor worker when its
//! next request's first bytes arrive); heads are bounded by
//! `max_head_bytes`, bodies by `buffer_size` buffers.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::access_log::{self, Entry};
use crate::gateway;
use crate::gateway::redirect::REDIRECT_FAILED;
use crate::gateway::rewrite::REWRITE_FAILED;
use crate::gateway::{BackendFields, HostRewrite};
use crate::http::{self, BodyKind, ForwardContext, LocalReply, RequestHead, Version};
use crate::io::{recycled, Conn};
use crate::metrics::Method;
use crate::upstream::clock;

use super::cache::{self, Lookup};
use super::client::{
    Client, ConnPermit, End, Holds, ListenerRemoved, LogLine, Next, Record, RequestInfo,
    ResponseEdits,
};
use super::exchange::exchange;
use super::filter::{Filter, RequestCtx};
use super::park;
use super::relay::{reply_and_close, reply_and_keep_alive};
use super::worker::Worker;

impl Worker {
    /// Serves one client connection until it closes; `client_addr` is
    /// the client's address (the peer's, or a PROXY header's), `tls` the
    /// listener's TLS config, for a TLS listener, `listener` its
    /// `server.listen` address, `listener_removed` its listener's flag,
    /// and `permit` its place under `max_connections`, held until it ends.
    pub async fn serve(
        self: Rc<Self>,
        conn: Conn,
        client_addr: std::net::SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        listener: SocketAddr,
        listener_removed: ListenerRemoved,
        permit: ConnPermit,
    ) {
        // Dropping `conn` closes it at once; the slots are held (and the
        // counts kept) until the connection ends.
        let Some(slots) = self.admit_connection(client_addr.ip(), listener) else {
            return;
        };
        let Some(client) = self.accept_client(conn, client_addr, tls, listener, listener_removed)
        else {
            return;
        };
        serve_requests(
            self,
            client,
            Holds {
                _slots: slots,
                _permit: permit,
            },
            true,
        )
        .await;
    }
}

/// Serves requests until the connection ends, or parks it (see
/// [`park`](super::park)) when it idles past [`IDLE_GRACE`]: then this
/// task ends, and the connection's next bytes start a new one.
/// `worker` is the config generation the connection is on (it moves
/// between requests); `first`: no request came on it yet.
pub(super) async fn serve_requests(
    mut worker: Rc<Worker>,
    mut client: Client,
    holds: Holds,
    first: bool,
) {
    let end = match recycled(|| serve_busy(&mut worker, &mut client, first)).await {
        Busy::Ended(end) => end,
        Busy::Idle { rest, first } => {
            park::park(worker, client, holds, rest, first);
            return;
        }
    };
    match end {
        End::KeepClosing if client.may_send_more() => Box::pin(client.linger()).await,
        End::KeepClosing => client.transport.shutdown(Shutdown::Both),
        End::Closed => {}
    }
    worker.release_client(client);
    drop(holds);
}

/// How [`serve_busy`] ended.
enum Busy {
    Ended(End),
    /// Idle past [`IDLE_GRACE`], its buffers given back; the keep-alive
    /// timeout (or the head timeout, before the `first` request) has `rest`
    /// left.
    Idle {
        rest: Duration,
        first: bool,
    },
}

/// Serves requests until the connection ends or idles past
/// [`IDLE_GRACE`]; `first`: no request came on it yet.
async fn serve_busy(worker: &mut Rc<Worker>, client: &mut Client, mut first: bool) -> Busy {
    let mut log = LogLine::default();
    let mut fwd = Vec::with_capacity(1024);
    loop {
        client.rec = Record::default();
        client.request_id.clear();
        client.reply_fields.clear();
        client.response_fields.clear();
        client.client_ip = None;
        client.refused_whole = false;
        client.request_read = false;
        client.route_pages = None;
        client.is_head = false;
        client.location.clear();
        let sent_before = client.sent;
        // 1.-3. Read head, route, request filters; the forwarded head is
        // in `fwd`.
        client.cache = None;
        let mut info = match read_request(worker, client, first, &mut fwd, &mut log).await {
            Ok(Read::Request(info)) => info,
            Ok(Read::Closed) => return Busy::Ended(End::Closed),
            Ok(Read::Idle(rest)) => return Busy::Idle { rest, first },
            // A filter refused a request with no body, whose head is
            // consumed: answer and keep the connection.
            Err(reply) if client.refused_whole && !client.winding_down(worker.is_draining()) => {
                let next = Box::pin(reply_and_keep_alive(&worker.env(), client, &log, reply)).await;
                finish(worker, client, None, &log, sent_before);
                match next {
                    Next::KeepAlive => {
                        first = false;
                        continue;
                    }
                    _ => return Busy::Ended(End::Closed),
                }
            }
            Err(reply) => {
                let next = Box::pin(reply_and_close(&worker.env(), client, &log, reply)).await;
                finish(worker, client, None, &log, sent_before);
                return Busy::Ended(match next {
                    Next::Close => End::KeepClosing,
                    _ => End::Closed,
                });
            }
        };
        first = false;
        worker.metrics.requests.inc();
        worker.metrics.request_started();
        let env = worker.env();
        // The cache stage: a hit is answered here.
        let served = match info.cache.take() {
            // In a recycled slot: only caching routes need its space.
            Some(req) => match recycled(|| cache::lookup(&env, client, &info, req, &mut fwd)).await
            {
                Lookup::Served(next) => Some(next),
                Lookup::Fetch => None,
            },
            None => None,
        };
        let next = match served {
            Some(next) => next,
            None => {
                // 4.-8. Choose backend, send, read response head, response
                // filters, relay body. On the heap, in a recycled slot: the
                // exchange's future is large (retries, connect, TLS, relays),
                // and a connection idle between requests should not carry
                // its space.
                let next =
                    recycled(|| exchange(&env, &worker.upstreams, client, &info, &mut fwd, &log))
                        .await;
                // A fetch this request led ends here, stored or not: its
                // waiters go on.
                client.cache = None;
                next
            }
        };
        worker.metrics.request_finished();
        // 9. Finish.
        finish(worker, client, Some(info.upstream), &log, sent_before);
        match next {
            Next::KeepAlive if client.winding_down(worker.is_draining()) => {
                return Busy::Ended(End::KeepClosing)
            }
            Next::KeepAlive => continue,
            Next::Close => return Busy::Ended(End::KeepClosing),
            Next::Abort => {
                client.transport.shutdown(Shutdown::Both);
                return Busy::Ended(End::Closed);
            }
        }
    }
}

/// What [`read_request`] read.
enum Read {
    Request(RequestInfo),
    /// The client closed, or idled out, between requests.
    Closed,
    /// No byte within [`IDLE_GRACE`]; the buffers are given back, and the
    /// timeout has this much left (the connection is then parked: [`park::park`]).
    Idle(Duration),
}

/// Stage 1, read head: reads until a request head is complete, then runs
/// stages 2 and 3 on it ([`on_head`]).
///
/// A request starts on the newest config: once its first bytes are in,
/// the connection moves to the reload's successor worker, if any.
async fn read_request(
    worker: &mut Rc<Worker>,
    client: &mut Client,
    first: bool,
    fwd: &mut Vec<u8>,
    log: &mut LogLine,
) -> Result<Read, LocalReply> {
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
            if let Some(info) = on_head(worker, client, fwd, log)? {
                return Ok(Read::Request(info));
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
        let idle = (head_started.is_none() && !first).then(|| worker.register_idle(client));
        if let Some(None) = idle {
            client.transport.shutdown(Shutdown::Both);
            return Ok(Read::Closed);
        }
        let filled = if head_started.is_none() && deadline > IDLE_GRACE {
            fill_or_shed(worker, client, fwd).await
        } else {
            Some(client.fill(Some(deadline)).await)
        };
        if let Some(Some(key)) = idle {
            worker.unregister_idle(key);
        }
        let Some(filled) = filled else {
            return Ok(Read::Idle(deadline - IDLE_GRACE));
        };
        if let Some(ok) = client.transport.take_handshake_outcome() {
            worker.metrics.tls_handshake(ok);
        }
        match filled {
            Ok(0) if client.buf.is_empty() => return Ok(Read::Closed),
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
                client.transport.shutdown(Shutdown::Both);
                return Ok(Read::Closed);
            }
        }
    }
}

/// How long a connection idle between requests keeps its buffers. After
/// that it hands them back and waits for readability holding none, so an
/// idle keep-alive connection costs no buffer memory, while a busy one
/// (its next request comes sooner) costs no extra op. At 200 ms, the
/// `many` benchmark (1,000 connections, each with a request every 150-300
/// ms) spent two extra ops on most requests.
pub(super) const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Waits up to [`IDLE_GRACE`] for the next request's first bytes, as
/// [`Client::fill`]; `None` when none came, after handing the buffers (and
/// `fwd`'s) back to the worker. A timed-out read consumed nothing, so no
/// byte is lost.
async fn fill_or_shed(
    worker: &Worker,
    client: &mut Client,
    fwd: &mut Vec<u8>,
) -> Option<io::Result<usize>> {
    match client.fill(Some(IDLE_GRACE)).await {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        other => return Some(other),
    }
    let buffers = &worker.buffers;
    buffers.give(std::mem::take(&mut client.buf));
    buffers.give(std::mem::take(&mut client.out));
    *fwd = Vec::new();
    client.transport.shed_buffer();
    None
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

/// Parses what is buffered (`Ok(None)` needs more bytes); on a complete
/// head notes it for the log, assigns the request id, then routes (stage
/// 2), runs the request filters (stage 3) and writes the forwarded head
/// into `fwd`, consuming the head from the client buffer.
fn on_head(
    worker: &Worker,
    client: &mut Client,
    fwd: &mut Vec<u8>,
    log: &mut LogLine,
) -> Result<Option<RequestInfo>, LocalReply> {
    let head = match http::parse_request(&client.buf, &worker.limits) {
        Ok(http::Status::Complete(head)) => head,
        Ok(http::Status::Partial) => return Ok(None),
        Err(e) => {
            *log = LogLine {
                started: log.started,
                ..LogLine::default()
            };
            return Err(LocalReply::from(e));
        }
    };
    note_head(log, &head, worker.logs_requests());
    // The client's id is kept (and forwarded as it came); else one is made.
    client.request_id.clear();
    match head.request_id() {
        Some(id) => client.request_id.push_str(&String::from_utf8_lossy(id)),
        None => client
            .request_id
            .push_str(access_log::request_id().as_str()),
    }
    client.is_head = head.is_head();
    let is_tls = client.transport.is_tls();
    let scheme = if is_tls { "https" } else { "http" };
    // A plain listener with `https_redirect` answers every request itself,
    // before routing.
    if !is_tls
        && worker
            .config
            .server
            .listen
            .iter()
            .any(|l| l.https_redirect && l.addr == client.listener)
    {
        let peer_ip = client.client_addr.ip();
        let mut filtered =
            RequestCtx::new(&head, None, &client.request_id, peer_ip, &worker.shared);
        filtered.scheme = scheme;
        let result = gateway::HttpsRedirect.on_request(&mut filtered);
        let location = filtered.location.take();
        return Err(answered_itself(client, location, result));
    }
    // 2. Route.
    let Some(route) = worker.routes.route_request(&head) else {
        return Err(LocalReply::NotFound);
    };
    client.route_pages = route.error_pages.clone();
    if let BodyKind::Length(n) = head.body() {
        let max = worker.config.server.max_request_body;
        if max.is_some_and(|max| n > max.get()) {
            return Err(LocalReply::PayloadTooLarge);
        }
    }
    // The client address for rules, keys and logs; the connection's
    // unless a trusted proxy named another.
    let peer = client.client_addr;
    let trusted = &worker.config.server.trusted_proxies;
    let client_ip = gateway::cidr::client_ip(
        peer.ip(),
        head.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|(_, v)| v),
        trusted,
    );
    client.client_ip = Some(client_ip);
    // 3. Request filters: the worker's, the route's edge filters (access,
    // CORS, rate limit), its HTTPS redirect, path rewrite, then redirect
    // (which sees the rewritten path).
    let mut filtered = RequestCtx::new(
        &head,
        route.upstream,
        &client.request_id,
        client_ip,
        &worker.shared,
    );
    filtered.scheme = scheme;
    filtered.route = route.index;
    if route.rate_limit.is_some() {
        // Only limits read the clock; a plain route does not pay for it.
        filtered.now = clock::now_nanos();
    }
    let mut result = worker.filters.on_request(&mut filtered).and_then(|()| {
        route
            .edge_filters()
            .try_for_each(|f| f.on_request(&mut filtered))
    });
    if result.is_ok() && route.https_redirect {
        result = gateway::HttpsRedirect.on_request(&mut filtered);
    }
    if let (Ok(()), Some(rewrite)) = (&result, &route.rewrite) {
        result = rewrite.on_request(&mut filtered).inspect_err(|_| {
            tracing::warn!(route = route.index, path = head.path(), "{REWRITE_FAILED}");
        });
    }
    if let (Ok(()), Some(redirect)) = (&result, &route.redirect) {
        result = redirect.on_request(&mut filtered).inspect_err(|reply| {
            if reply.status() == 500 {
                tracing::warn!(route = route.index, path = head.path(), "{REDIRECT_FAILED}");
            }
        });
    }
    let RequestCtx {
        forward_request_id,
        target,
        reply_fields,
        response_fields,
        location,
        ..
    } = filtered;
    client.reply_fields = reply_fields;
    client.response_fields = response_fields;
    if result.is_err() {
        // Nothing of an HTTP/1.1 keep-alive request without a body is left
        // to read: the connection can stay.
        if head.body() == BodyKind::Empty
            && head.keep_alive()
            && head.version() == Version::Http11
            && head.upgrade().is_none()
        {
            let head_len = head.head_len();
            client.buf.drain(..head_len);
            client.request_read = true;
            client.refused_whole = true;
        }
        return Err(answered_itself(client, location, result));
    }
    // A route without upstream has a redirect, which answered above.
    let Some(upstream) = route.upstream else {
        return Err(LocalReply::InternalError("route has no upstream"));
    };
    if let Some(c) = &route.cache {
        let trusted_peer = trusted.contains(peer.ip());
        let purge = cache::purge_request(
            c,
            &worker.zones,
            &head,
            scheme,
            target.as_deref(),
            trusted_peer,
        );
        if let Some(reply) = purge {
            return Err(reply);
        }
    }
    let cache = route
        .cache
        .as_ref()
        .and_then(|c| cache::plan(c, &worker.zones, &head, scheme, target.as_deref()));
    let ctx = ForwardContext {
        client_ip: peer.ip(),
        keep_client_xff: trusted.contains(peer.ip()),
        proto: scheme,
        host_fallback: None,
        request_id: forward_request_id,
    };
    fwd.clear();
    http::write_request_head(&head, &ctx, fwd);
    // Fields that name the backend are written per attempt (exchange).
    let mut backend_fields = BackendFields {
        host: head.host().is_none(),
        fields: Vec::new(),
    };
    if let Some(rewrite) = &route.rewrite {
        let host = rewrite.host.as_ref();
        gateway::rewrite::splice_head(fwd, target.as_deref(), host.and_then(HostRewrite::name));
        if host == Some(&HostRewrite::Backend) {
            gateway::rewrite::remove_host(fwd);
            backend_fields.host = true;
        }
    }
    let request_id = client.request_id.as_str();
    let upstream_name = worker.config.upstreams[upstream].name.as_str();
    let var = |name: &str, out: &mut Vec<u8>| {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = match name {
            "client_ip" => write!(out, "{client_ip}"),
            "client_port" => write!(out, "{}", peer.port()),
            "request_id" => write!(out, "{request_id}"),
            "host" => write!(out, "{}", head.host().unwrap_or("")),
            "scheme" => write!(out, "{scheme}"),
            "upstream" => write!(out, "{upstream_name}"),
            "route" => write!(out, "{}", route.index),
            _ => Ok(()),
        };
    };
    if let Some(edits) = &route.request_headers {
        let deferred = edits.uses_backend().then_some(&mut backend_fields);
        edits.apply_deferring(fwd, &var, deferred);
    }
    let response_headers = route.response_headers.as_ref().map(|edits| {
        Box::new(ResponseEdits {
            rendered: edits.render(&var),
            edits: edits.clone(),
        })
    });
    let backend_fields =
        (backend_fields != BackendFields::default()).then(|| Box::new(backend_fields));
    let info = RequestInfo {
        is_head: head.is_head(),
        idempotent: head.is_idempotent(),
        version: head.version(),
        keep_alive: head.keep_alive(),
        expect_continue: head.expect_continue(),
        upgrade: head.upgrade().is_some(),
        body: head.body(),
        upstream,
        key: worker
            .upstreams
            .get(upstream)
            .picker
            .request_key(&head, client_ip),
        backend_fields,
        response_headers,
        cache,
        compress: route
            .compress
            .as_ref()
            .map(|c| (Arc::clone(c), c.negotiate(&head))),
    };
    let head_len = head.head_len();
    client.buf.drain(..head_len);
    Ok(Some(info))
}

/// The reply of a request the proxy answers itself (`result` is `Err`),
/// keeping a redirect's `location` for the reply to send.
fn answered_itself(
    client: &mut Client,
    location: Option<String>,
    result: Result<(), LocalReply>,
) -> LocalReply {
    if let Some(location) = location {
        client.location = location;
    }
    match result {
        Err(reply) => reply,
        Ok(()) => LocalReply::InternalError("a filter passed a request it answered"),
    }
}

/// Copies what the log line of the request needs from its head.
fn note_head(log: &mut LogLine, head: &RequestHead<'_>, logging: bool) {
    log.method.clear();
    log.method.push_str(head.method());
    log.target.clear();
    log.target.push_str(head.target());
    log.version = Some(head.version());
    log.referer = None;
    log.user_agent = None;
    if logging {
        for (name, value) in head.headers() {
            if name.eq_ignore_ascii_case("referer") {
                log.referer = Some(value.to_vec());
            } else if name.eq_ignore_ascii_case("user-agent") {
                log.user_agent = Some(value.to_vec());
            }
        }
    }
}

/// Stage 9: counts one finished request (answered or not) in the worker's
/// shard and writes its access log line.
fn finish(
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
    let Some(access) = &worker.log else {
        return;
    };
    let backend = match (upstream, backend) {
        (Some(u), Some(b)) => worker.upstreams.get(u).backends.get(b).map(|b| b.addr),
        _ => None,
    };
    let body_bytes = if rec.body_from == 0 {
        0
    } else {
        client.sent.saturating_sub(rec.body_from)
    };
    let or_dash = |s: &'static [u8], v: &[u8]| v.is_empty().then_some(s);
    let entry = Entry {
        time: SystemTime::now()
            .checked_sub(duration)
            .unwrap_or_else(SystemTime::now),
        client: client.log_addr(),
        method: or_dash(b"-", log.method.as_bytes()).unwrap_or(log.method.as_bytes()),
        target: or_dash(b"-", log.target.as_bytes()).unwrap_or(log.target.as_bytes()),
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
        request_id: client.request_id().unwrap_or("-"),
        referer: log.referer.as_deref(),
        user_agent: log.user_agent.as_deref(),
        cache: rec.cache,
    };
    access.borrow_mut().log(&entry);
}
