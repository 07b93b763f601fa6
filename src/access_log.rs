//! The access log: one line per request, formatted on the worker, written
//! by one writer thread, never blocking an event loop.
//!
//! Why this shape: a worker must not wait for a disk. Each worker formats
//! lines into its own [`WorkerLog`] buffer and hands the whole buffer to the
//! writer thread over a bounded channel when it reaches [`FLUSH_BYTES`], or
//! when [`WorkerLog::flush_if_due`] finds it older than [`FLUSH_INTERVAL`]
//! (the worker calls that from a timer). If the channel is full the buffer
//! is dropped and its lines are counted ([`AccessLog::dropped_lines`]):
//! losing log lines under a stalled disk beats stalling requests.
//!
//! Invariants: `try_send` only on the worker side; the file is opened in
//! append mode (safe with other appenders and with logrotate's
//! `copytruncate`); [`AccessLog::reopen`] reopens the path so that a
//! rename-style rotation (`mv access.log access.log.1; kill -HUP`) moves
//! to the new file; every line ends in `\n` and holds no raw control
//! character (request text is escaped).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{AccessLogConfig, AccessLogFormat};

/// A worker hands its buffer over once it holds this many bytes.
pub const FLUSH_BYTES: usize = 32 * 1024;
/// ... or once its oldest line is this old.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffers queued for the writer before workers start dropping lines
/// (at most about `CHANNEL_BUFFERS * FLUSH_BYTES` of memory).
pub const CHANNEL_BUFFERS: usize = 64;

enum Msg {
    Lines(Vec<u8>),
    Reopen,
    /// Answered once everything sent before it is written.
    Sync(mpsc::Sender<()>),
}

/// The shared side: the writer thread and its channel.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    format: AccessLogFormat,
    dropped: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// Opens (creates, appends to) the file and starts the writer thread.
    /// An error here (a directory that does not exist, no permission) is
    /// a start-up error for the caller to report.
    pub fn start(config: &AccessLogConfig) -> io::Result<AccessLog> {
        let file = open(&config.path)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BUFFERS);
        let errors = Arc::new(AtomicU64::new(0));
        let path = config.path.clone();
        let writer_errors = errors.clone();
        let thread = std::thread::Builder::new()
            .name("ringlb-access-log".into())
            .spawn(move || write_loop(rx, path, file, &writer_errors))?;
        Ok(AccessLog {
            tx,
            format: config.format,
            dropped: Arc::new(AtomicU64::new(0)),
            errors,
            thread: Some(thread),
        })
    }

    /// One worker's buffer; call once per worker and move it there.
    pub fn worker(&self) -> WorkerLog {
        WorkerLog {
            tx: self.tx.clone(),
            format: self.format,
            buf: Vec::with_capacity(FLUSH_BYTES + 1024),
            lines: 0,
            oldest: None,
            dropped: self.dropped.clone(),
        }
    }

    /// Reopens the file at the same path (SIGHUP after log rotation). Does
    /// not wait for the reopen; lines sent before it go to the old file.
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }

    /// Waits until everything sent before this call is written to the
    /// file (on shutdown, after the workers flushed; and in tests).
    pub fn sync(&self) {
        let (ack_tx, ack_rx) = mpsc::channel();
        if self.tx.send(Msg::Sync(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes or reopens (each is logged once with tracing).
    pub fn write_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for AccessLog {
    /// Lets the writer drain what is queued and stop; it ends when the last
    /// [`WorkerLog`] is gone too.
    fn drop(&mut self) {
        self.sync();
        // The thread is detached: workers may still hold senders.
        drop(self.thread.take());
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_loop(rx: Receiver<Msg>, path: PathBuf, mut file: File, errors: &AtomicU64) {
    let report = |what: &str, e: io::Error| {
        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::error!(path = %path.display(), error = %e, "access log {what} failed");
        }
    };
    for msg in rx {
        match msg {
            Msg::Lines(buf) => {
                if let Err(e) = file.write_all(&buf) {
                    report("write", e);
                }
            }
            Msg::Reopen => match open(&path) {
                Ok(new) => file = new,
                Err(e) => report("reopen", e),
            },
            Msg::Sync(ack) => {
                let _ = file.flush();
                let _ = ack.send(());
            }
        }
    }
}

/// What one request line says.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// When the request head arrived.
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: &'a [u8],
    /// The request target as received.
    pub target: &'a [u8],
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: &'a str,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    pub duration: Duration,
    /// The backend that answered, if any.
    pub backend: Option<SocketAddr>,
    /// Upstream attempts (0: answered locally).
    pub attempts: u32,
    pub request_id: &'a str,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// `X-Cache-Status` on a caching route (`HIT`, `MISS`, ...); the
    /// field is left out of the line otherwise.
    pub cache: Option<&'static str>,
}

/// What one `[[tcp]]` session's line says.
#[derive(Debug, Clone, Copy)]
pub struct TcpEntry<'a> {
    /// When the connection was accepted.
    pub time: SystemTime,
    pub client: SocketAddr,
    /// The listener's `name`.
    pub listener: &'a str,
    /// The upstream chosen (`None`: none, e.g. no SNI route).
    pub upstream: Option<&'a str>,
    /// The backend connected to, if any.
    pub backend: Option<SocketAddr>,
    /// `ok`, or why the session was refused (`crate::tcp::SessionEnd`).
    pub status: &'static str,
    /// Payload bytes written to the client, and read from it.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration: Duration,
    /// Connect attempts made.
    pub attempts: u32,
    /// The ClientHello's server name, on a listener with `sni_routes`.
    pub sni: Option<&'a str>,
}

/// One worker's side: a buffer and a sender. Not shared.
pub struct WorkerLog {
    tx: SyncSender<Msg>,
    format: AccessLogFormat,
    buf: Vec<u8>,
    lines: u64,
    oldest: Option<Instant>,
    dropped: Arc<AtomicU64>,
}

impl WorkerLog {
    /// Formats one line into the buffer; hands the buffer over when full.
    pub fn log(&mut self, entry: &Entry<'_>) {
        let format = match self.format {
            AccessLogFormat::Combined => format_combined,
            AccessLogFormat::Json => format_json,
        };
        format(entry, &mut self.buf);
        self.line_added();
    }

    /// Formats one `[[tcp]]` session's line into the buffer.
    pub fn log_tcp(&mut self, entry: &TcpEntry<'_>) {
        let format = match self.format {
            AccessLogFormat::Combined => format_tcp_combined,
            AccessLogFormat::Json => format_tcp_json,
        };
        format(entry, &mut self.buf);
        self.line_added();
    }

    fn line_added(&mut self) {
        self.lines += 1;
        self.oldest.get_or_insert_with(Instant::now);
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Hands the buffer over if its oldest line is [`FLUSH_INTERVAL`] old.
    /// Call from a timer on the worker, about every 100 ms.
    pub fn flush_if_due(&mut self, now: Instant) {
        if self
            .oldest
            .is_some_and(|t| now.duration_since(t) >= FLUSH_INTERVAL)
        {
            self.flush();
        }
    }

    /// Hands the buffer to the writer now, or drops it (counted) if the
    /// writer is behind. Never blocks.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_BYTES + 1024));
        match self.tx.try_send(Msg::Lines(buf)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(self.lines, Ordering::Relaxed);
            }
        }
        self.lines = 0;
        self.oldest = None;
    }
}

impl Drop for WorkerLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Appends `bytes` as nginx escapes log text: `"`, `\` and bytes outside
/// printable ASCII become `\xHH`.
fn push_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(format!("\\x{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// UTC civil time of `t`: (year, month 1..=12, day, hour, minute, second,
/// millisecond). Howard Hinnant's days-to-civil algorithm.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis(),
    )
}

/// `client - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 2326
/// "referer" "agent" rt=0.012 upstream=10.0.0.1:80 attempts=1 rid=...`:
/// the combined format, then duration in seconds, the backend (`-` if
/// none), attempts and request id; then ` cache=HIT` (or another cache
/// status) on a caching route.
pub fn format_combined(e: &Entry<'_>, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, _) = civil(e.time);
    let month = MONTHS[(mo as usize).clamp(1, 12) - 1];
    let _ = write!(
        out,
        "{} - - [{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"",
        e.client.ip()
    );
    push_escaped(e.method, out);
    out.push(b' ');
    push_escaped(e.target, out);
    out.push(b' ');
    push_escaped(e.version.as_bytes(), out);
    let _ = write!(out, "\" {} {} \"", e.status, e.bytes);
    push_escaped(e.referer.unwrap_or(b"-"), out);
    out.extend_from_slice(b"\" \"");
    push_escaped(e.user_agent.unwrap_or(b"-"), out);
    let _ = write!(out, "\" rt={:.3} upstream=", e.duration.as_secs_f64());
    match e.backend {
        Some(b) => {
            let _ = write!(out, "{b}");
        }
        None => out.push(b'-'),
    }
    let _ = write!(out, " attempts={} rid=", e.attempts);
    push_escaped(e.request_id.as_bytes(), out);
    if let Some(cache) = e.cache {
        let _ = write!(out, " cache={cache}");
    }
    out.push(b'\n');
}

/// `client - - [10/Oct/2000:13:55:36 +0000] "TCP listener" ok 1234 567
/// rt=1.204 upstream=10.0.0.1:5432 attempts=1 sni=-`: a `[[tcp]]` session
/// in the combined format's shape: the listener's name, how it ended,
/// bytes sent to the client and received from it (nginx stream's order),
/// duration in seconds, the backend (`-` if none), connect attempts and
/// the SNI server name (`-` without `sni_routes` or without a name).
pub fn format_tcp_combined(e: &TcpEntry<'_>, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, _) = civil(e.time);
    let month = MONTHS[(mo as usize).clamp(1, 12) - 1];
    let _ = write!(
        out,
        "{} - - [{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"TCP ",
        e.client.ip()
    );
    push_escaped(e.listener.as_bytes(), out);
    let _ = write!(
        out,
        "\" {} {} {} rt={:.3} upstream=",
        e.status,
        e.bytes_sent,
        e.bytes_received,
        e.duration.as_secs_f64()
    );
    match e.backend {
        Some(b) => {
            let _ = write!(out, "{b}");
        }
        None => out.push(b'-'),
    }
    let _ = write!(out, " attempts={} sni=", e.attempts);
    push_escaped(e.sni.unwrap_or("-").as_bytes(), out);
    out.push(b'\n');
}

/// A `[[tcp]]` session as one JSON object: `time`, `client`, `protocol`
/// (`"tcp"`), `listener`, `upstream`, `backend`, `status`, `bytes_sent`,
/// `bytes_received`, `duration_ms`, `attempts`, `sni` (null when absent).
pub fn format_tcp_json(e: &TcpEntry<'_>, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, ms) = civil(e.time);
    let _ = write!(
        out,
        "{{\"time\":\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z\",\"client\":\"{}\",\"protocol\":\"tcp\",\"listener\":",
        e.client
    );
    push_json_str(e.listener.as_bytes(), out);
    out.extend_from_slice(b",\"upstream\":");
    match e.upstream {
        Some(u) => push_json_str(u.as_bytes(), out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"backend\":");
    match e.backend {
        Some(b) => {
            let _ = write!(out, "\"{b}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(
        out,
        ",\"status\":\"{}\",\"bytes_sent\":{},\"bytes_received\":{},\"duration_ms\":{:.3},\"attempts\":{},\"sni\":",
        e.status,
        e.bytes_sent,
        e.bytes_received,
        e.duration.as_secs_f64() * 1000.0,
        e.attempts
    );
    match e.sni {
        Some(name) => push_json_str(name.as_bytes(), out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

/// A JSON string; invalid UTF-8 is replaced (U+FFFD), control characters
/// escaped by serde_json.
fn push_json_str(bytes: &[u8], out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(bytes);
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &*text);
}

/// One JSON object per line: `time` (RFC 3339 UTC, ms), `client`,
/// `method`, `target`, `version`, `status`, `bytes`, `duration_ms`,
/// `backend` (null if none), `attempts`, `request_id`, `referer`,
/// `user_agent` (null if absent); `cache` (the cache status) on a caching
/// route only.
pub fn format_json(e: &Entry<'_>, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, ms) = civil(e.time);
    let _ = write!(
        out,
        "{{\"time\":\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z\",\"client\":\"{}\",\"method\":",
        e.client
    );
    push_json_str(e.method, out);
    out.extend_from_slice(b",\"target\":");
    push_json_str(e.target, out);
    out.extend_from_slice(b",\"version\":");
    push_json_str(e.version.as_bytes(), out);
    let _ = write!(
        out,
        ",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3},\"backend\":",
        e.status,
        e.bytes,
        e.duration.as_secs_f64() * 1000.0
    );
    match e.backend {
        Some(b) => {
            let _ = write!(out, "\"{b}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"attempts\":{},\"request_id\":", e.attempts);
    push_json_str(e.request_id.as_bytes(), out);
    for (key, value) in [("referer", e.referer), ("user_agent", e.user_agent)] {
        let _ = write!(out, ",\"{key}\":");
        match value {
            Some(v) => push_json_str(v, out),
            None => out.extend_from_slice(b"null"),
        }
    }
    if let Some(cache) = e.cache {
        let _ = write!(out, ",\"cache\":\"{cache}\"");
    }
    out.extend_from_slice(b"}\n");
}

/// Length of a request id: 8 hex digits of a per-process random prefix, 4
/// of a per-thread index, 12 of a per-thread counter.
pub const REQUEST_ID_LEN: usize = 24;

/// A request id, ASCII hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId([u8; REQUEST_ID_LEN]);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new `X-Request-ID`: unique within the process (a per-thread index and
/// counter, no shared write per call) and, by its random 32-bit prefix,
/// unlikely to repeat across restarts.
pub fn request_id() -> RequestId {
    use std::cell::Cell;
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STATE: Cell<(u64, u64)> = Cell::new((
            THREADS.fetch_add(1, Ordering::Relaxed),
            0,
        ));
    }
    let prefix = *PREFIX.get_or_init(|| fastrand::u32(..));
    let (thread, n) = STATE.with(|s| {
        let (thread, n) = s.get();
        s.set((thread, n + 1));
        (thread, n)
    });
    let mut id = [0u8; REQUEST_ID_LEN];
    let hex = b"0123456789abcdef";
    let mut put = |at: usize, digits: usize, v: u64| {
        for i in 0..digits {
            id[at + i] = hex[((v >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
    };
    put(0, 8, u64::from(prefix));
    put(8, 4, thread & 0xffff);
    put(12, 12, n & 0xffff_ffff_ffff);
    RequestId(id)
}

#[cfg(test)]
mod tests;
