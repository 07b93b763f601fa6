//! Body relays in both directions, with bounded buffers.
//!
//! Request bodies are forwarded as they arrive: Content-Length bodies byte
//! for byte, chunked bodies validated by the decoder and passed through
//! raw. Response bodies are passed through, de-chunked for an HTTP/1.0
//! client, or chunk-encoded when the backend delimits by close and the
//! client speaks HTTP/1.1 (so the client connection can stay open).

use crate::http::{self, BodyKind, ChunkedDecoder, LocalReply, OutFraming, ResponseBody};

use super::exchange::UpstreamConn;
use super::{Client, ClientFailure, Worker};

/// The request body still to forward.
pub(super) struct RequestBody {
    state: BodyState,
    /// Limit on the body's data bytes; 0 is unlimited.
    max: u64,
    data_seen: u64,
}

enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

pub(super) enum StreamError {
    Client(ClientFailure),
    Upstream,
}

impl RequestBody {
    pub(super) fn new(kind: BodyKind, max: u64) -> RequestBody {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
        };
        RequestBody {
            state,
            max,
            data_seen: 0,
        }
    }

    pub(super) fn is_complete(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Moves the body bytes at the front of `buf` into `out`, leaving any
    /// bytes after the body (a pipelined request) in `buf`.
    pub(super) fn take_buffered(
        &mut self,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), ClientFailure> {
        let take = match &mut self.state {
            BodyState::Done => return Ok(()),
            BodyState::Length(remaining) => {
                let take = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = BodyState::Done;
                }
                take
            }
            BodyState::Chunked(decoder) => {
                let mut consumed = 0;
                while !decoder.is_done() {
                    let decoded = decoder
                        .decode(&buf[consumed..])
                        .map_err(|e| ClientFailure::BadBody(LocalReply::BadRequest(e.reason())))?;
                    if decoded.consumed == 0 {
                        break;
                    }
                    self.data_seen += decoded.data.len() as u64;
                    consumed += decoded.consumed;
                }
                if self.max != 0 && self.data_seen > self.max {
                    return Err(ClientFailure::BadBody(LocalReply::PayloadTooLarge));
                }
                if decoder.is_done() {
                    self.state = BodyState::Done;
                }
                consumed
            }
        };
        move_front(buf, take, out);
        Ok(())
    }

    /// Reads the rest of the body from the client and writes it upstream.
    pub(super) async fn stream(
        &mut self,
        worker: &Worker,
        client: &mut Client,
        upstream: &mut UpstreamConn,
        kept: &mut Vec<u8>,
        keep: &mut Keep,
    ) -> Result<(), StreamError> {
        let timeout = worker.config.server.body_timeout;
        let mut chunk = Vec::with_capacity(client.buffer_size);
        while !self.is_complete() {
            if client.buf.is_empty() {
                match client.fill(Some(timeout)).await {
                    Ok(0) | Err(_) => return Err(StreamError::Client(ClientFailure::Gone)),
                    Ok(n) => worker.metrics.bytes_from_clients.add(n as u64),
                }
            }
            chunk.clear();
            self.take_buffered(&mut client.buf, &mut chunk)
                .map_err(StreamError::Client)?;
            if chunk.is_empty() {
                // A partial chunk line: need more bytes before forwarding.
                match client.fill(Some(timeout)).await {
                    Ok(0) | Err(_) => return Err(StreamError::Client(ClientFailure::Gone)),
                    Ok(n) => worker.metrics.bytes_from_clients.add(n as u64),
                }
                continue;
            }
            keep.append(kept, &chunk);
            let len = chunk.len();
            let (res, back) = upstream.write_all(chunk, 0..len, Some(timeout)).await;
            chunk = back;
            if res.is_err() {
                return Err(StreamError::Upstream);
            }
            worker.metrics.bytes_to_upstreams.add(len as u64);
        }
        Ok(())
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

/// Moves `buf[..n]` to the end of `out`. When that is all of `buf` and
/// `out` is empty the two are swapped instead of copied.
fn move_front(buf: &mut Vec<u8>, n: usize, out: &mut Vec<u8>) {
    if n == 0 {
        return;
    }
    if n == buf.len() && out.is_empty() {
        std::mem::swap(buf, out);
        buf.clear();
    } else {
        out.extend_from_slice(&buf[..n]);
        buf.drain(..n);
    }
}

/// Relays a response body from `up` to the client.
pub(super) struct ResponseRelay {
    pub framing: ResponseBody,
    pub out: OutFraming,
}

pub(super) enum RelayError {
    Client,
    Upstream,
}

enum ResponseState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl ResponseRelay {
    /// Sends the head already in `client.out` followed by the body.
    /// `Ok(true)`: the body ended exactly at its framing, so the upstream
    /// connection may be reused.
    pub(super) async fn run(
        self,
        worker: &Worker,
        client: &mut Client,
        up: &mut UpstreamConn,
    ) -> Result<bool, RelayError> {
        let server = &worker.config.server;
        let mut state = match self.framing {
            ResponseBody::Empty | ResponseBody::Length(0) => ResponseState::Done,
            ResponseBody::Length(n) => ResponseState::Length(n),
            ResponseBody::Chunked => ResponseState::Chunked(ChunkedDecoder::new()),
            ResponseBody::CloseDelimited => ResponseState::UntilClose,
        };
        let mut clean = true;
        loop {
            self.move_body(&mut state, &mut up.buf, &mut client.out)?;
            if let ResponseState::Done = state {
                // Bytes after the framed end: the connection is out of step.
                clean &= up.buf.is_empty();
            }
            if !client.out.is_empty() {
                client
                    .send_out(server.send_timeout)
                    .await
                    .map_err(|_| RelayError::Client)?;
                client.out.clear();
            }
            if let ResponseState::Done = state {
                return Ok(clean);
            }
            match up
                .read_more(server.buffer_size, Some(server.body_timeout))
                .await
            {
                Ok(0) => match state {
                    ResponseState::UntilClose => {
                        if let OutFraming::ChunkEncoded = self.out {
                            client.out.extend_from_slice(http::LAST_CHUNK);
                            client
                                .send_out(server.send_timeout)
                                .await
                                .map_err(|_| RelayError::Client)?;
                        }
                        return Ok(false);
                    }
                    _ => return Err(RelayError::Upstream),
                },
                Ok(n) => worker.metrics.bytes_from_upstreams.add(n as u64),
                Err(_) => return Err(RelayError::Upstream),
            }
        }
    }

    /// Moves the body bytes buffered in `buf` to `out`, re-framed.
    fn move_body(
        &self,
        state: &mut ResponseState,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), RelayError> {
        match state {
            ResponseState::Done => {}
            ResponseState::Length(remaining) => {
                let take = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= take as u64;
                move_front(buf, take, out);
                if *remaining == 0 {
                    *state = ResponseState::Done;
                }
            }
            ResponseState::Chunked(decoder) => {
                let mut consumed = 0;
                while !decoder.is_done() {
                    let decoded = decoder
                        .decode(&buf[consumed..])
                        .map_err(|_| RelayError::Upstream)?;
                    if decoded.consumed == 0 {
                        break;
                    }
                    if let OutFraming::Dechunked = self.out {
                        out.extend_from_slice(decoded.data);
                    }
                    consumed += decoded.consumed;
                }
                if let OutFraming::Dechunked = self.out {
                    buf.drain(..consumed);
                } else {
                    move_front(buf, consumed, out);
                }
                if decoder.is_done() {
                    *state = ResponseState::Done;
                }
            }
            ResponseState::UntilClose => {
                if buf.is_empty() {
                    return Ok(());
                }
                if let OutFraming::ChunkEncoded = self.out {
                    http::write_chunk_header(buf.len(), out);
                    out.extend_from_slice(buf);
                    out.extend_from_slice(b"\r\n");
                    buf.clear();
                } else {
                    let n = buf.len();
                    move_front(buf, n, out);
                }
            }
        }
        Ok(())
    }
}
