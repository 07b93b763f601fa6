//! The proxy: client connections, each a loop over requests that runs the
//! pipeline
//!
//! ```text
//! read head -> route -> (request filters) -> choose backend -> send
//!   -> read response head -> (response filters) -> relay body -> finish
//! ```
//!
//! Layout, by layer (each file imports only those above it):
//! - `error`: why an exchange failed and what the client is told;
//! - `filter`: the request/response filter trait and chain (sans-IO);
//! - `client`: the client connection (transport, buffers, local replies,
//!   lingering close) and the per-request records;
//! - `worker`: a worker's state for one config generation, spare buffers,
//!   and the hand-over to the next generation on a reload;
//! - `body`, `tunnel`: the I/O loops that move bodies and tunnel bytes;
//! - `reject_log`: the bounded log line of a request answered locally;
//! - `relay`: one attempt: send, 1xx, response filters, the response;
//! - `cache`: the cache stage (answer from a zone, or store what the
//!   relay sends);
//! - `exchange`: attempts and retries of one request;
//! - `proxy_header`: a listener's PROXY protocol header, before the first
//!   request (and before a TLS handshake);
//! - `session`: the request loop and its stages, top to bottom;
//! - `park`: connections idle past the grace, held in a table with a
//!   readiness poll instead of a task;
//! - `tcp`: a `[[tcp]]` listener's session (SNI, connect with retries,
//!   the relay of `tunnel`), beside the HTTP pipeline.
//!
//! Invariants: a response head goes to the client only once the whole
//! upstream head is valid, so every upstream failure before that point
//! becomes a 502/503/504; an upstream connection returns to the pool only
//! when both bodies ended exactly at their framing and the backend allowed
//! keep-alive; buffers are bounded by `buffer_size` (bodies) and
//! `max_head_bytes` (heads); no body is held whole, except a copy of one
//! being stored in a cache zone, bounded by the zone's `max_object`.

mod body;
mod cache;
mod client;
mod error;
mod exchange;
pub mod filter;
mod park;
mod proxy_header;
mod reject_log;
mod relay;
mod session;
mod tcp;
mod tunnel;
mod worker;

pub use client::{ConnPermit, ListenerRemoved};
pub use error::{ClientFailure, UpstreamFailure};
pub use park::{drop_parked, sweep_parked};
pub use worker::{ProcessShared, Worker};
