//! ringlb: an HTTP/1.1 edge load balancer for Linux, thread-per-core on io_uring.
//!
//! The crate is split so that everything that decides (HTTP framing, routing,
//! balancing, config validation) is plain synchronous code over bytes and
//! state, testable and fuzzable without sockets, while `io` is the only module
//! that talks to the kernel, through io_uring (`io::rt` is its runtime). See `docs/lifecycle.md`.
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod cache;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod gateway;
pub mod http;
pub mod io;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod proxy_protocol;
pub mod route;
pub mod server;
pub mod tcp;
pub mod tls;
pub mod upstream;
