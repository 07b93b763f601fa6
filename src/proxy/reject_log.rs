//! The log line of a request the proxy answered itself, bounded per
//! reason so that a client cannot decide the log volume.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::http::LocalReply;

use super::client::{Client, LogLine};

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

pub(super) fn log_reply(client: &Client, log: &LogLine, reply: &LocalReply) {
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
        client = %client.client_addr,
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
