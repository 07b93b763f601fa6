//! The decisions about a final response that do not need a socket: how its
//! body is framed towards the client, and whether either connection stays
//! open afterwards.
//!
//! Why here and not in the relay: these are HTTP rules (RFC 9112 §6.3,
//! §9.3), and a wrong answer is a desynchronised connection; as a pure
//! function they are a table of tests.
//!
//! Invariants: `ChunkEncoded` only for a close-delimited body to an
//! HTTP/1.1 client, `Dechunked` only for a chunked body to an HTTP/1.0
//! client (the pair `write_response_head` asserts); a response whose end the
//! client can only see as end of stream never keeps the client connection;
//! a 101 keeps neither (the connections become a tunnel).

use super::{OutFraming, ResponseBody, ResponseInfo, Version};

/// What the client side of the exchange allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSide {
    pub version: Version,
    /// The request allowed keep-alive, and the proxy is not winding the
    /// connection down (graceful stop, listener removed).
    pub keep_alive: bool,
    /// The request asked for an upgrade.
    pub upgrade: bool,
    /// The whole request body reached the backend: otherwise neither
    /// connection is in step for another request.
    pub request_complete: bool,
}

/// How the proxy relays one final response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponsePlan {
    /// The body as the backend frames it.
    pub body: ResponseBody,
    /// How it goes to the client.
    pub out: OutFraming,
    /// The client connection stays open after the response.
    pub keep_alive: bool,
    /// The upstream connection may go back to the pool, if the body also
    /// ends exactly at its framing.
    pub reuse_upstream: bool,
    /// A 101: the connections become a tunnel after the head.
    pub tunnel: bool,
}

/// Why a final response cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A 101 to a request that asked for no upgrade.
    UnaskedSwitch,
}

impl PlanError {
    pub fn reason(self) -> &'static str {
        match self {
            PlanError::UnaskedSwitch => "upstream switched protocols unasked",
        }
    }
}

/// Decides framing and keep-alive for the final response `resp`.
///
/// 1. A 101 is relayed only to a request that asked to upgrade; then it is
///    a tunnel, and neither connection is reused for HTTP.
/// 2. A chunked body to an HTTP/1.0 client is de-chunked; it then ends by
///    close.
/// 3. A close-delimited body to an HTTP/1.1 client is chunk-encoded, so the
///    client connection can stay open; to an HTTP/1.0 client it ends by
///    close.
/// 4. The client connection stays open only if the client allowed it, the
///    request went whole, and the body does not end by close.
/// 5. The upstream connection is reusable only if the backend allowed it and
///    the request went whole.
pub fn plan_response(resp: &ResponseInfo, client: ClientSide) -> Result<ResponsePlan, PlanError> {
    let tunnel = resp.status == 101;
    // 1.
    if tunnel && !client.upgrade {
        return Err(PlanError::UnaskedSwitch);
    }
    let http10 = client.version == Version::Http10;
    // 2. and 3.
    let (out, ends_by_close) = match resp.body {
        ResponseBody::Chunked if http10 => (OutFraming::Dechunked, true),
        ResponseBody::CloseDelimited if http10 => (OutFraming::AsIs, true),
        ResponseBody::CloseDelimited => (OutFraming::ChunkEncoded, false),
        _ => (OutFraming::AsIs, false),
    };
    Ok(ResponsePlan {
        body: resp.body,
        out,
        // 4.
        keep_alive: client.keep_alive && client.request_complete && !ends_by_close && !tunnel,
        // 5.
        reuse_upstream: resp.keep_alive && client.request_complete && !tunnel,
        tunnel,
    })
}

impl ResponsePlan {
    /// This plan for a body the proxy re-codes (compresses), whose length
    /// is then known only at its end: chunk-encoded to an HTTP/1.1 client,
    /// so the client connection may stay open as planned; ended by close to
    /// an HTTP/1.0 client, so it does not. The upstream side is unchanged:
    /// the backend's body is still read to its own framed end.
    pub fn recoded(self, client: ClientSide) -> ResponsePlan {
        debug_assert!(self.body != ResponseBody::Empty && !self.tunnel);
        ResponsePlan {
            out: OutFraming::Recoded,
            keep_alive: self.keep_alive && client.version == Version::Http11,
            ..self
        }
    }
}
