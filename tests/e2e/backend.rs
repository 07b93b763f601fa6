//! A std-thread HTTP/1.1 test backend with scripted behaviour.
//!
//! Each backend listens on its own 127.0.0.1 ephemeral port and serves each
//! connection on its own thread. A handler closure maps every complete
//! request to a [`Reply`]; [`Options`] script connection-level behaviour
//! (100-continue, closing idle or used keep-alive connections silently).
//! Every complete request is recorded, with the index of the connection it
//! arrived on and when it arrived, so tests can assert exactly what reached
//! the backend, when, and how often connections were reused.
//!
//! [`Backend::kill`] simulates a crash (the listener closes, every open
//! connection is closed) and [`Backend::restart`] listens again on the same
//! port with the same handler and the same records.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{checksum, Head, Headers, Wire};
use crate::harness::WAIT;

/// One complete request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub chunked: bool,
    /// 1-based index of the connection it arrived on.
    pub conn: usize,
    /// When the request was complete (head and body read).
    pub at: Instant,
}

impl Headers for Request {
    fn header_list(&self) -> &[(String, String)] {
        &self.head.headers
    }
}

impl Request {
    /// Whether this is one of the proxy's own active health checks
    /// (`User-Agent: ringlb-health`) rather than proxied traffic.
    pub fn is_health_check(&self) -> bool {
        self.header("user-agent") == Some("ringlb-health")
    }
}

/// How a response body goes on the wire.
#[derive(Clone)]
pub enum Body {
    /// No body bytes and no framing header added (HEAD-style, 204, 304).
    None,
    /// With a Content-Length header.
    Length(Vec<u8>),
    /// Chunked, one chunk per element, then the trailers.
    Chunked(Vec<Vec<u8>>, Vec<(String, String)>),
    /// No framing header; the backend closes the connection after it.
    Close(Vec<u8>),
}

/// A scripted HTTP response.
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Sleep before writing the head.
    pub delay: Duration,
    /// After this many body bytes, sleep this long, then write the rest.
    pub pause: Option<(usize, Duration)>,
    /// Write the head and this many body bytes, then never finish.
    pub stall_after: Option<usize>,
}

impl Resp {
    pub fn new(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Body::Length(Vec::new()),
            delay: Duration::ZERO,
            pause: None,
            stall_after: None,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Resp {
        self.body = Body::Length(b.into());
        self
    }

    pub fn no_body(mut self) -> Resp {
        self.body = Body::None;
        self
    }

    pub fn chunked(mut self, chunks: &[&[u8]], trailers: &[(&str, &str)]) -> Resp {
        self.body = Body::Chunked(
            chunks.iter().map(|c| c.to_vec()).collect(),
            trailers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    pub fn close_delimited(mut self, b: impl Into<Vec<u8>>) -> Resp {
        self.body = Body::Close(b.into());
        self
    }

    pub fn delay(mut self, d: Duration) -> Resp {
        self.delay = d;
        self
    }

    pub fn pause_at(mut self, at: usize, d: Duration) -> Resp {
        self.pause = Some((at, d));
        self
    }

    pub fn stall_after(mut self, n: usize) -> Resp {
        self.stall_after = Some(n);
        self
    }
}

/// What the backend does with a request.
pub enum Reply {
    Http(Resp),
    /// Write these bytes verbatim, then close.
    Raw(Vec<u8>),
    /// Reset the connection (RST) without answering.
    Reset,
    /// Close the connection (FIN) without answering.
    Close,
    /// Never answer; hold the connection until the peer closes it.
    Hang,
    /// Answer `101 Switching Protocols` with these headers, then echo every
    /// byte back until the peer closes.
    Upgrade(Vec<(String, String)>),
}

impl From<Resp> for Reply {
    fn from(r: Resp) -> Reply {
        Reply::Http(r)
    }
}

impl Reply {
    /// 200 with a text body describing the request (see [`echo_text`]).
    pub fn echo(req: &Request) -> Reply {
        Resp::new(200)
            .header("Content-Type", "text/plain")
            .body(echo_text(req))
            .into()
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Resp::new(status)
            .header("Content-Type", "text/plain")
            .body(body)
            .into()
    }
}

/// The echo body: one `key value` line per fact, headers as seen, then the
/// body's length and checksum, then (for bodies up to 64 KiB) the body.
pub fn echo_text(req: &Request) -> Vec<u8> {
    let mut s = format!(
        "method {}\ntarget {}\nversion {}\nconn {}\n",
        req.method, req.target, req.version, req.conn
    );
    for (k, v) in &req.head.headers {
        s.push_str(&format!("header {}: {v}\n", k.to_ascii_lowercase()));
    }
    for (k, v) in &req.trailers {
        s.push_str(&format!("trailer {}: {v}\n", k.to_ascii_lowercase()));
    }
    s.push_str(&format!(
        "body-length {}\nbody-checksum {:016x}\n\n",
        req.body.len(),
        checksum(&req.body)
    ));
    let mut out = s.into_bytes();
    if req.body.len() <= 65536 {
        out.extend_from_slice(&req.body);
    }
    out
}

/// Connection-level behaviour.
#[derive(Clone, Copy)]
pub struct Options {
    /// Send `100 Continue` before reading a body when `Expect: 100-continue`.
    pub send_continue: bool,
    /// Call the handler right after the head, before reading any body, and
    /// close the connection after replying.
    pub reply_before_body: bool,
    /// Close a keep-alive connection that stays idle this long, silently.
    pub idle_close: Option<Duration>,
    /// Close after every response without announcing `Connection: close`.
    pub close_after_response: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            send_continue: true,
            reply_before_body: false,
            idle_close: None,
            close_after_response: false,
        }
    }
}

#[derive(Default)]
struct Stats {
    connections: AtomicUsize,
    open: AtomicUsize,
    continues: AtomicUsize,
    requests: Mutex<Vec<Request>>,
    /// A handle on every open connection, by index, so `kill` can close it.
    live: Mutex<HashMap<usize, TcpStream>>,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// The accept loop of one listening period (start or restart to kill).
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// A running test backend; stops accepting when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    opts: Options,
    handler: Arc<Handler>,
    acceptor: Mutex<Option<Acceptor>>,
}

impl Backend {
    /// Answers every request with [`Reply::echo`].
    pub fn echo() -> Backend {
        Backend::start(Reply::echo)
    }

    /// Answers every request with a clone of `resp`.
    pub fn fixed(resp: Resp) -> Backend {
        Backend::start(move |_| resp.clone().into())
    }

    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Backend {
        Backend::with_options(Options::default(), handler)
    }

    /// Answers every request with 200, an `X-Backend: NAME` header and the
    /// body `NAME`, so a client can tell which backend served it.
    pub fn named(name: &str) -> Backend {
        let resp = Resp::new(200).header("X-Backend", name).body(name);
        Backend::fixed(resp)
    }

    /// Like [`named`](Self::named), listening on `addr` (another loopback
    /// address, for backends that DNS A records name at one port).
    pub fn named_at(name: &str, addr: SocketAddr) -> Backend {
        let resp = Resp::new(200).header("X-Backend", name).body(name);
        let listener = TcpListener::bind(addr).expect("bind backend");
        Backend::on(listener, Options::default(), move |_| resp.clone().into())
    }

    pub fn with_options(
        opts: Options,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        Backend::on(listener, opts, handler)
    }

    fn on(
        listener: TcpListener,
        opts: Options,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Backend {
        let addr = listener.local_addr().unwrap();
        let backend = Backend {
            addr,
            stats: Arc::new(Stats::default()),
            opts,
            handler: Arc::new(handler),
            acceptor: Mutex::new(None),
        };
        *backend.acceptor.lock().unwrap() = Some(backend.accept_on(listener));
        backend
    }

    fn accept_on(&self, listener: TcpListener) -> Acceptor {
        let stop = Arc::new(AtomicBool::new(false));
        let (stats, handler, opts) = (self.stats.clone(), self.handler.clone(), self.opts);
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = stats.connections.fetch_add(1, Ordering::SeqCst) + 1;
                stats.open.fetch_add(1, Ordering::SeqCst);
                let handle = stream.try_clone().expect("clone an accepted stream");
                stats.live.lock().unwrap().insert(conn, handle);
                let (stats, handler) = (stats.clone(), handler.clone());
                thread::spawn(move || {
                    let _ = serve(stream, conn, opts, &stats, &*handler);
                    stats.live.lock().unwrap().remove(&conn);
                    stats.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Acceptor { stop, thread }
    }

    /// Simulates a crash: the listening socket is closed (connects are
    /// refused from now on) and every open connection is shut down (the
    /// peer sees a FIN; a request being served gets no answer). Returns
    /// once the listener is closed. Panics if the backend is not running.
    pub fn kill(&self) {
        let acceptor = self
            .acceptor
            .lock()
            .unwrap()
            .take()
            .expect("kill: the backend is not running");
        acceptor.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the loop then drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        acceptor.thread.join().expect("accept thread panicked");
        for (_, stream) in self.stats.live.lock().unwrap().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same address after [`kill`](Self::kill), with
    /// the same handler; records and counters carry on. Retries the bind
    /// for up to [`WAIT`] in case the port is briefly held.
    pub fn restart(&self) {
        let mut acceptor = self.acceptor.lock().unwrap();
        assert!(acceptor.is_none(), "restart: the backend is running");
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("restart: bind {} again: {e}", self.addr),
            }
        };
        *acceptor = Some(self.accept_on(listener));
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Connections currently open (closed by either side are not counted).
    pub fn open_connections(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// `100 Continue` responses sent.
    pub fn continues_sent(&self) -> usize {
        self.stats.continues.load(Ordering::SeqCst)
    }

    /// Every complete request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.stats.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.stats.requests.lock().unwrap().len()
    }

    /// Every request so far except the proxy's active health checks.
    pub fn proxied(&self) -> Vec<Request> {
        let all = self.stats.requests.lock().unwrap();
        all.iter()
            .filter(|r| !r.is_health_check())
            .cloned()
            .collect()
    }

    /// Requests so far, not counting the proxy's active health checks.
    pub fn proxied_count(&self) -> usize {
        let all = self.stats.requests.lock().unwrap();
        all.iter().filter(|r| !r.is_health_check()).count()
    }

    /// The last request; panics if there is none.
    pub fn last_request(&self) -> Request {
        self.requests()
            .pop()
            .expect("the backend received no complete request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let acceptor = self.acceptor.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(acceptor) = acceptor.take() {
            acceptor.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        }
    }
}

fn serve(
    stream: TcpStream,
    conn: usize,
    opts: Options,
    stats: &Stats,
    handler: &Handler,
) -> io::Result<()> {
    // Long enough for any test, short enough that stray threads end.
    let long = Some(WAIT * 6);
    stream.set_read_timeout(long)?;
    stream.set_nodelay(true)?;
    let mut wire = Wire::new(stream);
    let mut served = 0usize;
    loop {
        if served > 0 {
            if let Some(idle) = opts.idle_close {
                wire.stream.set_read_timeout(Some(idle))?;
            }
        }
        let head = match wire.read_head() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Idle keep-alive connection: close it without a word.
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        wire.stream.set_read_timeout(long)?;
        let mut parts = head.start.splitn(3, ' ');
        let mut req = Request {
            method: parts.next().unwrap_or("").to_string(),
            target: parts.next().unwrap_or("").to_string(),
            version: parts.next().unwrap_or("").to_string(),
            head,
            body: Vec::new(),
            trailers: Vec::new(),
            chunked: false,
            conn,
            at: Instant::now(),
        };
        let close_requested = req.has_token("connection", "close") || req.version == "HTTP/1.0";
        if opts.reply_before_body {
            if !record(stats, &mut req) {
                return Ok(());
            }
            write_reply(&mut wire, &req, handler(&req))?;
            return Ok(());
        }
        if opts.send_continue && req.has_token("expect", "100-continue") {
            wire.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            stats.continues.fetch_add(1, Ordering::SeqCst);
        }
        match req.head.framing()? {
            (true, _) => {
                let (body, trailers) = wire.read_chunked()?;
                req.body = body;
                req.trailers = trailers;
                req.chunked = true;
            }
            (false, Some(n)) => req.body = wire.read_exact_n(n)?,
            (false, None) => {}
        }
        if !record(stats, &mut req) {
            return Ok(());
        }
        served += 1;
        let keep = write_reply(&mut wire, &req, handler(&req))?;
        if !keep || close_requested || opts.close_after_response {
            let _ = wire.stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Stamps and records a complete request; false if the backend was killed
/// meanwhile (the request sat in the receive queue, and a crashed process
/// would never have seen it).
fn record(stats: &Stats, req: &mut Request) -> bool {
    req.at = Instant::now();
    if !stats.live.lock().unwrap().contains_key(&req.conn) {
        return false;
    }
    stats.requests.lock().unwrap().push(req.clone());
    true
}

/// Writes the reply; returns whether the connection may serve more requests.
fn write_reply(wire: &mut Wire, req: &Request, reply: Reply) -> io::Result<bool> {
    let resp = match reply {
        Reply::Http(r) => r,
        Reply::Raw(bytes) => {
            wire.stream.write_all(&bytes)?;
            return Ok(false);
        }
        Reply::Reset => {
            // Linger 0 makes the close send RST; skip the polite shutdown.
            socket2::SockRef::from(&wire.stream).set_linger(Some(Duration::ZERO))?;
            return Err(io::Error::other("reset by script"));
        }
        Reply::Close => return Ok(false),
        Reply::Hang => {
            let _ = wire.read_to_eof();
            return Ok(false);
        }
        Reply::Upgrade(headers) => {
            let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
            for (k, v) in &headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            wire.stream.write_all(head.as_bytes())?;
            echo_bytes(wire)?;
            return Ok(false);
        }
    };
    thread::sleep(resp.delay);
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let head_only = req.method == "HEAD";
    // The body bytes exactly as they go on the wire.
    let (wire_body, keep) = match &resp.body {
        Body::None => (Vec::new(), true),
        Body::Length(b) => {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
            (if head_only { Vec::new() } else { b.clone() }, true)
        }
        Body::Chunked(chunks, trailers) => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let tr: Vec<(&str, &str)> = trailers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let encoded = crate::client::chunked(&refs, &tr);
            (if head_only { Vec::new() } else { encoded }, true)
        }
        Body::Close(b) => (if head_only { Vec::new() } else { b.clone() }, false),
    };
    head.push_str("\r\n");
    let paused = matches!(resp.pause, Some((at, _)) if at < wire_body.len());
    if resp.stall_after.is_none() && !paused {
        // One write, as a real server's small response: a kill (shutdown
        // of every connection) lands before the response or after it,
        // never between head and body.
        let mut whole = head.into_bytes();
        whole.extend_from_slice(&wire_body);
        wire.stream.write_all(&whole)?;
        return Ok(keep);
    }
    wire.stream.write_all(head.as_bytes())?;
    if let Some(n) = resp.stall_after {
        wire.stream
            .write_all(&wire_body[..n.min(wire_body.len())])?;
        let _ = wire.read_to_eof();
        return Ok(false);
    }
    match resp.pause {
        Some((at, d)) if at < wire_body.len() => {
            wire.stream.write_all(&wire_body[..at])?;
            thread::sleep(d);
            wire.stream.write_all(&wire_body[at..])?;
        }
        _ => wire.stream.write_all(&wire_body)?,
    }
    Ok(keep)
}

fn echo_bytes(wire: &mut Wire) -> io::Result<()> {
    let pending = wire.buffered().to_vec();
    wire.stream.write_all(&pending)?;
    wire.read_exact_n(pending.len())?;
    loop {
        match wire.fill() {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => {
                let data = wire.read_exact_n(n)?;
                wire.stream.write_all(&data)?;
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}
