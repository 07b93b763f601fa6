//! Request and response filters: the pipeline's two seams for gateway
//! features (header edits, rewrites, CORS, limits, caching, compression).
//!
//! Why a trait: each feature is a small, synchronous type over plain data
//! that the session calls at a named stage, in the manner of Sozu's
//! `on_request_headers`/`on_response_headers` and Pingora's `ProxyHttp`
//! phases. Filters are sans-IO, so they are tested without sockets.
//!
//! Invariants: filters run in the order of the chain, request filters after
//! routing and before a backend is chosen, response filters after the final
//! response head was read and before it goes to the client (1xx heads are
//! not filtered). A filter sees the parsed head read-only and states what
//! the proxy adds through the context's fields; an `Err` is answered with
//! that local reply (a response filter's reply replaces the backend's
//! response, whose connection is then closed).

use std::net::IpAddr;

use crate::gateway::shared::Shared;
use crate::http::{LocalReply, RequestHead, ResponseInfo};

/// A request after routing, as the request filters see it.
pub struct RequestCtx<'r, 'b> {
    pub head: &'r RequestHead<'b>,
    /// The upstream the route chose (index in the config); `None` for a
    /// route that answers itself (`redirect`), or before routing.
    pub upstream: Option<usize>,
    /// The request's id: the client's `X-Request-ID`, or one generated.
    pub request_id: &'r str,
    /// An `X-Request-ID` to add to the forwarded head.
    pub forward_request_id: Option<&'r str>,
    /// A rewritten target (path and query) to forward instead of the
    /// request's (a route's path rewrite).
    pub target: Option<String>,
    /// `"http"` or `"https"`: how the client reached the proxy.
    pub scheme: &'r str,
    /// The `Location` of a redirect the filter answers with
    /// (`LocalReply::Redirect`).
    pub location: Option<String>,
    /// The client's address: the connection's, or the one a trusted
    /// proxy named in `X-Forwarded-For` (`trusted_proxies`).
    pub client_ip: IpAddr,
    /// The route's position in the file (`$route`, metric labels).
    pub route: usize,
    /// Now, in nanoseconds of `upstream::clock` (limits take it from here,
    /// so tests choose the time).
    pub now: u64,
    /// The process-wide tables of the edge limits.
    pub shared: &'r Shared,
    /// Header lines (each ending in CRLF) for a local reply to this
    /// request only (`Retry-After` of a 429).
    pub reply_fields: Vec<u8>,
    /// Fields for every response to this request, the backend's or a
    /// local reply (CORS).
    pub response_fields: AddedFields,
}

/// Header fields the proxy adds to every response to a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AddedFields {
    /// Lines, each ending in CRLF.
    pub lines: Vec<u8>,
    /// The backend's fields whose names start with this (lowercase,
    /// compared ASCII case-insensitively) are dropped: the proxy answers
    /// for them (`access-control-` on a CORS route).
    pub replaces: Option<&'static str>,
}

impl AddedFields {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.replaces.is_none()
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.replaces = None;
    }

    /// Applies the fields to a written response head (status line,
    /// fields, final CRLF): drops the backend's that `replaces` names,
    /// then puts `lines` before the final CRLF.
    pub fn apply_to_head(&self, head: &mut Vec<u8>) {
        if let Some(prefix) = self.replaces {
            let mut out = Vec::with_capacity(head.len() + self.lines.len());
            for (i, line) in head.split_inclusive(|&b| b == b'\n').enumerate() {
                let dropped = i > 0
                    && line.len() > prefix.len()
                    && line[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes());
                if !dropped {
                    out.extend_from_slice(line);
                }
            }
            *head = out;
        }
        let at = head.len().saturating_sub(2);
        head.splice(at..at, self.lines.iter().copied());
    }
}

impl<'r, 'b> RequestCtx<'r, 'b> {
    /// A context with nothing added yet.
    pub fn new(
        head: &'r RequestHead<'b>,
        upstream: Option<usize>,
        request_id: &'r str,
        client_ip: IpAddr,
        shared: &'r Shared,
    ) -> RequestCtx<'r, 'b> {
        RequestCtx {
            head,
            upstream,
            request_id,
            forward_request_id: None,
            target: None,
            scheme: "http",
            location: None,
            client_ip,
            route: 0,
            now: 0,
            shared,
            reply_fields: Vec::new(),
            response_fields: AddedFields::default(),
        }
    }
}

/// A final response head, as the response filters see it.
pub struct ResponseCtx<'r> {
    pub info: &'r ResponseInfo,
    /// The request's id.
    pub request_id: &'r str,
    /// An `X-Request-ID` to echo (unless the backend sent its own).
    pub echo_request_id: Option<&'r str>,
    /// A `Set-Cookie` value to add (the balancer's sticky cookie).
    pub set_cookie: Option<&'r str>,
}

/// One gateway feature at the pipeline's filter stages. Both hooks do
/// nothing by default, so a filter implements only the stages it needs.
pub trait Filter {
    /// After routing, before a backend is chosen.
    fn on_request(&self, _req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        Ok(())
    }

    /// After the final response head was read, before it is written.
    fn on_response(&self, _resp: &mut ResponseCtx<'_>) -> Result<(), LocalReply> {
        Ok(())
    }
}

/// A worker's filters, in order.
#[derive(Default)]
pub struct Filters {
    chain: Vec<Box<dyn Filter>>,
}

impl Filters {
    /// The chain every worker runs today: the request id.
    pub fn standard() -> Filters {
        Filters::new(vec![Box::new(RequestIdFilter)])
    }

    pub fn new(chain: Vec<Box<dyn Filter>>) -> Filters {
        Filters { chain }
    }

    /// Runs the request filters in order; the first `Err` stops the chain.
    pub fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        self.chain.iter().try_for_each(|f| f.on_request(req))
    }

    /// Runs the response filters in order; the first `Err` stops the chain.
    pub fn on_response(&self, resp: &mut ResponseCtx<'_>) -> Result<(), LocalReply> {
        self.chain.iter().try_for_each(|f| f.on_response(resp))
    }
}

/// `X-Request-ID`: forwarded upstream when the proxy generated it (a
/// client's own id is forwarded as it came), and echoed on the response
/// unless the backend set one. The id itself is assigned when the head is
/// read, so that local replies and the access log carry it too.
pub struct RequestIdFilter;

impl Filter for RequestIdFilter {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        if req.head.request_id().is_none() && !req.request_id.is_empty() {
            req.forward_request_id = Some(req.request_id);
        }
        Ok(())
    }

    fn on_response(&self, resp: &mut ResponseCtx<'_>) -> Result<(), LocalReply> {
        if !resp.info.has_request_id && !resp.request_id.is_empty() {
            resp.echo_request_id = Some(resp.request_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
