//! Body relays in both directions, with bounded buffers.
//!
//! Request bodies are forwarded as they arrive: Content-Length bodies byte
//! for byte, chunked bodies validated by the decoder and passed through
//! raw. Response bodies are passed through, de-chunked for an HTTP/1.0
//! client, or chunk-encoded when the backend delimits by close and the
//! client speaks HTTP/1.1 (so the client connection can stay open); or
//! compressed (`gateway::compress::CompressedBody`), between the read and
//! the write, on this worker's thread.

use crate::gateway::compress::{CompressError, CompressedBody};
use crate::http::{BodyFramer, BodyKind, LocalReply};

use std::io;
use std::time::Duration;

use crate::io::Transport;

use super::cache::BodyCapture;
use super::client::Client;
use super::error::ClientFailure;
use super::worker::{Buffers, Env};

/// The request body still to forward.
pub(super) struct RequestBody {
    framer: BodyFramer,
    /// Limit on the body's data bytes; 0 is unlimited.
    max: u64,
    data_seen: u64,
}

pub(super) enum StreamError {
    Client(ClientFailure),
    Upstream,
}

impl RequestBody {
    pub(super) fn new(kind: BodyKind, max: u64) -> RequestBody {
        RequestBody {
            framer: BodyFramer::request(kind),
            max,
            data_seen: 0,
        }
    }

    pub(super) fn is_complete(&self) -> bool {
        self.framer.is_done()
    }

    /// Moves the body bytes at the front of `buf` into `out`, leaving any
    /// bytes after the body (a pipelined request) in `buf`.
    pub(super) fn take_buffered(
        &mut self,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), ClientFailure> {
        let stepped = self
            .framer
            .step(buf, out)
            .map_err(|e| ClientFailure::BadBody(LocalReply::BadRequest(e.reason())))?;
        // A Content-Length body was checked against the limit with its head.
        self.data_seen += stepped.data;
        if self.max != 0 && self.data_seen > self.max {
            return Err(ClientFailure::BadBody(LocalReply::PayloadTooLarge));
        }
        Ok(())
    }

    /// Reads the rest of the body from the client and writes it upstream.
    pub(super) async fn stream(
        &mut self,
        env: &Env<'_>,
        client: &mut Client,
        upstream: &mut Transport,
        kept: &mut Vec<u8>,
        keep: &mut Keep,
    ) -> Result<(), StreamError> {
        if self.is_complete() {
            // Most requests: nothing (more) to send, and nothing to allocate.
            return Ok(());
        }
        let (metrics, timeout) = (env.metrics, env.server.body_timeout);
        // A spare relay buffer, not a new one: buffers of this size are
        // mapped on their own (`io::tune_allocator`), and an upload should
        // not cost a map and an unmap. Every way out of the loop breaks,
        // so the buffer goes back whatever the outcome.
        let mut chunk = env.buffers.take();
        let streamed = loop {
            if self.is_complete() {
                break Ok(());
            }
            if client.buf.is_empty() {
                match client.fill(Some(timeout)).await {
                    Ok(0) | Err(_) => break Err(StreamError::Client(ClientFailure::Gone)),
                    Ok(n) => metrics.bytes_from_clients.add(n as u64),
                }
            }
            chunk.clear();
            if let Err(f) = self.take_buffered(&mut client.buf, &mut chunk) {
                break Err(StreamError::Client(f));
            }
            if chunk.is_empty() {
                // A partial chunk line: need more bytes before forwarding.
                match client.fill(Some(timeout)).await {
                    Ok(0) | Err(_) => break Err(StreamError::Client(ClientFailure::Gone)),
                    Ok(n) => metrics.bytes_from_clients.add(n as u64),
                }
                continue;
            }
            keep.append(kept, &chunk);
            let len = chunk.len();
            let (res, back) = upstream.write_all(chunk, 0..len, Some(timeout)).await;
            chunk = back;
            if res.is_err() {
                break Err(StreamError::Upstream);
            }
            metrics.bytes_to_upstreams.add(len as u64);
        };
        env.buffers.give(chunk);
        streamed
    }
}

/// Keeping a streamed request body for a replay, within `retry_buffer`.
pub(super) struct Keep {
    enabled: bool,
    /// Most bytes the kept request (head included) may reach.
    limit: usize,
    overflowed: bool,
}

impl Keep {
    /// `head_len`: the bytes already in the kept buffer (the head and any
    /// body sent with it); `retry_buffer`: the most body bytes kept.
    pub(super) fn new(enabled: bool, head_len: usize, retry_buffer: usize) -> Keep {
        Keep {
            enabled,
            limit: head_len.saturating_add(retry_buffer),
            overflowed: false,
        }
    }

    fn append(&mut self, kept: &mut Vec<u8>, chunk: &[u8]) {
        if !self.enabled || self.overflowed {
            return;
        }
        if kept.len() + chunk.len() > self.limit {
            // Too big to replay: stop keeping.
            self.overflowed = true;
            return;
        }
        kept.extend_from_slice(chunk);
    }

    /// Whether `kept` now holds the whole request, ready to send again.
    pub(super) fn whole(&self, body: &RequestBody) -> bool {
        self.enabled && !self.overflowed && body.is_complete()
    }
}

/// How a response body goes to the client: re-framed, or compressed.
pub(super) enum ResponseFramer {
    Plain(BodyFramer),
    Compressed(Box<CompressedBody>),
}

impl ResponseFramer {
    fn step(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), RelayError> {
        match self {
            ResponseFramer::Plain(f) => {
                f.step(buf, out).map(drop).map_err(|_| RelayError::Upstream)
            }
            ResponseFramer::Compressed(c) => c.step(buf, out).map(drop).map_err(compress_error),
        }
    }

    /// Body bytes still to come from the backend, where its framing says.
    fn remaining(&self) -> Option<u64> {
        match self {
            ResponseFramer::Plain(f) => f.remaining(),
            ResponseFramer::Compressed(c) => c.input_remaining(),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            ResponseFramer::Plain(f) => f.is_done(),
            ResponseFramer::Compressed(c) => c.is_done(),
        }
    }

    /// Whether the head goes out before any body bytes are ready: not for
    /// a compressed body that holds its output (it goes with the first).
    fn sends_head_alone(&self) -> bool {
        match self {
            ResponseFramer::Plain(_) => true,
            ResponseFramer::Compressed(c) => c.streams(),
        }
    }

    fn end_of_input(&mut self, out: &mut Vec<u8>) -> Result<(), RelayError> {
        match self {
            ResponseFramer::Plain(f) => f.end_of_input(out).map_err(|_| RelayError::Upstream),
            ResponseFramer::Compressed(c) => c.end_of_input(out).map_err(compress_error),
        }
    }
}

fn compress_error(e: CompressError) -> RelayError {
    if let CompressError::Encode(e) = e {
        tracing::warn!("{}", e.reason());
    }
    RelayError::Upstream
}

/// Relays a response body from `up` to the client through `framer`, after
/// the head already in `client.out`.
/// `Ok(true)`: the body ended exactly at its framing, so the upstream
/// connection may be reused.
pub(super) async fn relay_response(
    env: &Env<'_>,
    client: &mut Client,
    (up, up_buf): (&mut Transport, &mut Vec<u8>),
    mut framer: ResponseFramer,
    mut capture: Option<&mut BodyCapture>,
) -> Result<bool, RelayError> {
    let (server, metrics) = (env.server, env.metrics);
    let head_alone = framer.sends_head_alone();
    loop {
        // The head, and bytes held back, are in `client.out` before these.
        let before = client.out.len();
        framer.step(up_buf, &mut client.out)?;
        if let Some(capture) = capture.as_deref_mut() {
            capture.feed(&client.out[before..]);
        }
        let ready = head_alone || client.out.len() > before || framer.is_done();
        if ready && !client.out.is_empty() {
            client
                .send_out(server.send_timeout)
                .await
                .map_err(|_| RelayError::Client)?;
            client.out.clear();
        }
        if framer.is_done() {
            // Bytes after the framed end: the connection is out of step.
            return Ok(up_buf.is_empty());
        }
        use_body_buffer(env.buffers, up_buf, framer.remaining());
        match read_more(up, up_buf, server.buffer_size, Some(server.body_timeout)).await {
            Ok(0) => {
                // Only a close-delimited body may end here; it leaves the
                // connection unusable.
                let before = client.out.len();
                framer.end_of_input(&mut client.out)?;
                if let Some(capture) = capture.as_deref_mut() {
                    capture.feed(&client.out[before..]);
                }
                if !client.out.is_empty() {
                    client
                        .send_out(server.send_timeout)
                        .await
                        .map_err(|_| RelayError::Client)?;
                }
                return Ok(false);
            }
            Ok(n) => metrics.bytes_from_upstreams.add(n as u64),
            Err(_) => return Err(RelayError::Upstream),
        }
    }
}

/// Before a read of a response body: an empty `buf` smaller than a body
/// buffer is swapped for one, unless the framing says the rest fits in
/// `buf`. Fewer, larger reads (and writes, as the relay swaps whole
/// buffers to the client) for a large body.
fn use_body_buffer(buffers: &Buffers, buf: &mut Vec<u8>, remaining: Option<u64>) {
    let fits = remaining.is_some_and(|n| n <= buf.capacity() as u64);
    if buf.is_empty() && !fits && buf.capacity() < buffers.body_size() {
        buffers.give(std::mem::replace(buf, buffers.take_body()));
    }
}

pub(super) enum RelayError {
    Client,
    Upstream,
}

/// Reads more (plaintext) bytes from `from` into `buf`, first growing a
/// full `buf` by `grow`; `Ok(0)` is end of stream.
pub(super) async fn read_more(
    from: &mut Transport,
    buf: &mut Vec<u8>,
    grow: usize,
    deadline: Option<Duration>,
) -> io::Result<usize> {
    if buf.len() == buf.capacity() {
        buf.reserve(grow);
    }
    from.read(buf, deadline).await
}
