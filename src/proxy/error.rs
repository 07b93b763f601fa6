//! Why an exchange with a backend failed, and what the client is told.
//!
//! Every failure carries its source and whether a retry on a fresh
//! connection is safe (pingora's "reused only" retry type): only a failure
//! on a *reused* pooled connection before any response byte arrived, for a
//! request that can be sent again, is retried.

use crate::http::LocalReply;

/// A failure talking to the backend, before the response head reached the
/// client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    ConnectRefused,
    ConnectTimeout,
    /// The connection was closed or reset before a complete response head.
    Closed,
    ResponseTimeout,
    /// The response head (or its framing) is not valid HTTP/1.1.
    Malformed(&'static str),
    /// A request body relay to the backend stalled past `body_timeout`.
    SendTimeout,
    /// A complete response with a status listed in the retry policy's `on`,
    /// held back so the request can go to another backend.
    RetryableStatus(u16),
}

impl UpstreamFailure {
    pub fn reply(self) -> LocalReply {
        match self {
            UpstreamFailure::ConnectRefused => LocalReply::BadGateway("upstream connect failed"),
            UpstreamFailure::ConnectTimeout => {
                LocalReply::GatewayTimeout("upstream connect timed out")
            }
            UpstreamFailure::Closed => LocalReply::BadGateway("upstream closed the connection"),
            UpstreamFailure::ResponseTimeout => {
                LocalReply::GatewayTimeout("upstream response timed out")
            }
            UpstreamFailure::Malformed(why) => LocalReply::BadGateway(why),
            UpstreamFailure::SendTimeout => {
                LocalReply::GatewayTimeout("upstream stopped reading the request")
            }
            UpstreamFailure::RetryableStatus(_) => {
                LocalReply::BadGateway("upstream answered with an error")
            }
        }
    }
}

/// Why the client side of an exchange ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// The client closed, reset, or stalled past a timeout mid-request.
    Gone,
    /// The request body broke its framing rules.
    BadBody(LocalReply),
}
