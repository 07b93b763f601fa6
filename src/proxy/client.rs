//! The client side of a connection: its transport (plain or TLS), its
//! buffers, what the current request did, and how the connection closes.
//!
//! Invariants: `buf` holds client bytes not yet consumed (the next
//! request's, after a pipelined one); `out` is scratch for what goes to the
//! client and is empty between writes; `sent` counts every byte written.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::pages::{self, ErrorPages};
use crate::gateway::{BackendFields, Compress, HeaderEdits};
use crate::http::{BodyKind, Coding, LocalReply, ReplyParts, Version};
use crate::io::Transport;

use super::filter::AddedFields;

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, so the kernel does not answer with a reset that
/// would destroy the response in flight (nginx's lingering close).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Set once a reload removed the listener a connection came in on: the
/// connection drains (closes after its current response, or now if idle).
pub type ListenerRemoved = Rc<Cell<bool>>;

/// A connection's place under `max_connections`.
pub type ConnPermit = tokio::sync::OwnedSemaphorePermit;

/// What a client connection holds until it ends, busy or parked: its
/// slots under the per-address limits and its place under
/// `max_connections`. Only held: dropping them gives them back.
pub(super) struct Holds {
    pub _slots: [Option<crate::gateway::shared::ConnGuard>; 2],
    pub _permit: ConnPermit,
}

/// How a client connection ends.
pub(super) enum End {
    /// Peer gone or idle: shut down and drop.
    Closed,
    /// We decided to close after a response: lingering close.
    KeepClosing,
}

/// What to do with the client connection after a request.
pub(super) enum Next {
    KeepAlive,
    /// Response complete; close gracefully.
    Close,
    /// Mid-response failure: close at once.
    Abort,
}

/// What the proxy keeps of a request head once the borrowed parse is gone.
pub(super) struct RequestInfo {
    pub is_head: bool,
    pub idempotent: bool,
    pub version: Version,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
    pub body: BodyKind,
    /// The upstream the route chose.
    pub upstream: usize,
    /// The balancing key: a `consistent_hash`/`ip_hash` key, or the backend
    /// id from a `sticky_cookie` cookie.
    pub key: Option<u64>,
    /// Fields each attempt writes with its backend's address: `Host` for
    /// a request without one (HTTP/1.0; the upstream request is HTTP/1.1)
    /// or with `host_rewrite = "backend"`, and `request_headers` that use
    /// `$backend`. `None` when there are none.
    pub backend_fields: Option<Box<BackendFields>>,
    /// The route's `response_headers`, rendered but for `$backend`.
    pub response_headers: Option<Box<ResponseEdits>>,
    /// Set on a caching route for a GET or HEAD (see `cache`).
    pub cache: Option<Box<super::cache::CacheRequest>>,
    /// The route's `compress` policy and the coding this request
    /// negotiated (`None`: it accepts none of the route's).
    pub compress: Option<(Arc<Compress>, Option<Coding>)>,
}

/// A route's `response_headers` for one request: the edits, and their
/// values rendered when the request was routed (the request's head is
/// gone by the time the response comes).
pub(super) struct ResponseEdits {
    pub edits: Arc<HeaderEdits>,
    pub rendered: BackendFields,
}

/// A request's method and target, copied for the log line of a failure
/// and the metrics, and when its head began to arrive.
#[derive(Default)]
pub(super) struct LogLine {
    pub method: String,
    pub target: String,
    pub started: Option<Instant>,
    pub version: Option<Version>,
    /// Copied only when an access log is written.
    pub referer: Option<Vec<u8>>,
    pub user_agent: Option<Vec<u8>>,
}

/// The client side of a connection: its transport and buffers.
pub(super) struct Client {
    pub transport: Transport,
    /// The client's address: the peer's, or the source a PROXY protocol
    /// header gave. The one value every use of "the client address" reads
    /// (X-Forwarded-For, the access log, ip_hash, consistent_hash).
    pub client_addr: std::net::SocketAddr,
    /// Bytes read from the client and not yet consumed.
    pub buf: Vec<u8>,
    /// Scratch for outgoing heads and bodies.
    pub out: Vec<u8>,
    pub buffer_size: usize,
    /// Bytes written to the client on this connection.
    pub sent: u64,
    /// What the current request did so far.
    pub rec: Record,
    /// The current request's `X-Request-ID` (the client's, or generated);
    /// empty before its head parsed.
    pub request_id: String,
    /// The `server.listen` address the connection came in on.
    pub listener: SocketAddr,
    pub listener_removed: ListenerRemoved,
    /// Whether the current request, body included, was read whole.
    pub request_read: bool,
    /// The current request's route's `error_pages` (and
    /// `intercept_errors`), once routed.
    pub route_pages: Option<Arc<ErrorPages>>,
    /// The current request is `HEAD`: a local reply has no body.
    pub is_head: bool,
    /// The `Location` of the current request's redirect, if it has one.
    pub location: String,
    /// The cache's state for the request being served on a caching route
    /// (see `cache`); cleared between requests.
    pub cache: Option<Box<super::cache::CacheFill>>,
    /// The current request's client address (after `trusted_proxies`),
    /// once its head was routed.
    pub client_ip: Option<IpAddr>,
    /// Header lines for a local reply to the current request (a 429's
    /// `Retry-After`), from the request filters.
    pub reply_fields: Vec<u8>,
    /// Fields for every response to the current request (CORS).
    pub response_fields: AddedFields,
    /// A request filter refused the current request, and nothing of it is
    /// left to read (no body, keep-alive): its reply need not close.
    pub refused_whole: bool,
}

/// What one request did, for the metrics and the access log.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Record {
    /// The status sent to the client; 0 when none was (the client left,
    /// or the response broke off before its head).
    pub status: u16,
    /// The last backend tried (index in the upstream).
    pub backend: Option<usize>,
    /// Whether the response came from `backend` (else a local reply).
    pub answered: bool,
    /// Attempts on backends, the transparent pooled re-send not counted.
    pub attempts: u32,
    /// `Client::sent` at the first byte of the final response's body.
    pub body_from: u64,
    /// `X-Cache-Status` of the response, on a caching route.
    pub cache: Option<&'static str>,
}

impl Client {
    pub fn new(
        transport: Transport,
        client_addr: std::net::SocketAddr,
        buf: Vec<u8>,
        out: Vec<u8>,
        buffer_size: usize,
        listener: SocketAddr,
        listener_removed: ListenerRemoved,
    ) -> Client {
        Client {
            transport,
            client_addr,
            buf,
            out,
            buffer_size,
            sent: 0,
            rec: Record::default(),
            request_id: String::new(),
            listener,
            listener_removed,
            request_read: false,
            route_pages: None,
            is_head: false,
            location: String::new(),
            cache: None,
            client_ip: None,
            reply_fields: Vec::new(),
            response_fields: AddedFields::default(),
            refused_whole: false,
        }
    }

    /// Whether this connection closes after its current response: a
    /// graceful stop began (`draining`), or its listener was removed.
    pub fn winding_down(&self, draining: bool) -> bool {
        draining || self.listener_removed.get()
    }

    /// The client address for logs: the request's (after
    /// `trusted_proxies`) with the connection's port, or the connection's.
    pub fn log_addr(&self) -> SocketAddr {
        let peer = self.client_addr;
        self.client_ip
            .map_or(peer, |ip| SocketAddr::new(ip, peer.port()))
    }

    /// The request id, if the current request has one yet.
    pub fn request_id(&self) -> Option<&str> {
        Some(self.request_id.as_str()).filter(|id| !id.is_empty())
    }

    /// Reads more client bytes, appending to `buf`.
    pub async fn fill(&mut self, deadline: Option<Duration>) -> io::Result<usize> {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(self.buffer_size);
        }
        self.transport.read(&mut self.buf, deadline).await
    }

    /// Writes shared bytes (a cached body) to the client.
    pub async fn send_bytes(&mut self, bytes: bytes::Bytes, deadline: Duration) -> io::Result<()> {
        let len = bytes.len() as u64;
        self.transport.write_bytes(bytes, Some(deadline)).await?;
        self.sent += len;
        Ok(())
    }

    /// Writes `self.out` to the client.
    pub async fn send_out(&mut self, deadline: Duration) -> io::Result<()> {
        let len = self.out.len();
        let out = std::mem::take(&mut self.out);
        let (res, out) = self.transport.write_all(out, 0..len, Some(deadline)).await;
        self.out = out;
        if res.is_ok() {
            self.sent += len as u64;
        }
        res
    }

    /// Sends a locally generated reply: with the route's page for its
    /// status, else the server's (`server_pages`), else the standard text;
    /// a redirect's `Location`; no body for a `HEAD` request.
    pub async fn reply(
        &mut self,
        reply: &LocalReply,
        server_pages: &ErrorPages,
        keep_alive: bool,
        deadline: Duration,
    ) -> io::Result<()> {
        self.out.clear();
        let status = reply.status();
        let page = pages::choose(self.route_pages.as_deref(), server_pages, status);
        let mut body = Vec::new();
        if let Some(page) = page {
            page.render(status, reply.reason(), &self.request_id, &mut body);
        }
        let parts = ReplyParts {
            keep_alive,
            request_id: Some(self.request_id.as_str()).filter(|id| !id.is_empty()),
            head_only: self.is_head,
            location: matches!(reply, LocalReply::Redirect(_)).then_some(self.location.as_str()),
            page: page.map(|p| (p.content_type.as_str(), body.as_slice())),
        };
        let mut head_len = reply.write_with(&parts, &mut self.out);
        // The filters' fields (CORS, `Retry-After`) go before the head's
        // final CRLF.
        for fields in [&self.response_fields.lines, &self.reply_fields] {
            let at = head_len - 2;
            self.out.splice(at..at, fields.iter().copied());
            head_len += fields.len();
        }
        self.mark_body_start(head_len);
        self.send_out(deadline).await
    }

    /// Notes that the response body starts `head_len` bytes into `out`,
    /// for the access log's body byte count.
    pub fn mark_body_start(&mut self, head_len: usize) {
        self.rec.body_from = self.sent + head_len as u64;
    }

    /// Whether closing now could reset the connection under our last
    /// response: the request was not read whole (a local reply before or
    /// during its body), bytes are buffered or waiting (pipelined), or TLS
    /// (its close has its own exchange). Otherwise nothing more can come,
    /// and the close need not wait (nginx's `lingering_close on`).
    pub fn may_send_more(&self) -> bool {
        !self.request_read
            || !self.buf.is_empty()
            || self.transport.is_tls()
            || !self.transport.is_reusable()
    }

    /// Half-closes, then drains what the client still sends for a moment,
    /// so our last response is not destroyed by a reset.
    pub async fn linger(&mut self) {
        self.transport.close_notify(LINGER_TIME).await;
        self.transport.shutdown(Shutdown::Write);
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
        self.transport.shutdown(Shutdown::Both);
    }
}
