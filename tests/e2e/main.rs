//! End-to-end tests: the real `ringlb` binary, real sockets, real processes.
//!
//! One test binary (ripgrep style). `harness` runs the proxy, `backend` and
//! `client` are the two ends of the wire, `loadgen` drives keep-alive load;
//! each other module covers one area of the behaviour spec. A regression test
//! goes to a `regression` module as `issue_NNN` (made with the first one).

mod backend;
mod client;
mod harness;
mod loadgen;

mod access_log;
mod admin;
mod admin_safety;
mod allocations;
mod balancing;
mod cache;
mod cli;
mod close_and_log;
mod compress;
mod config_errors;
mod continue100;
mod discovery;
mod edge;
mod errors;
mod framing;
mod gateway;
mod gateway_replies;
mod idle;
mod load;
mod packaging;
mod pipelining;
mod pool;
mod proxy_basic;
mod proxy_protocol;
mod reload;
mod reload_listeners;
mod resilience;
mod selftest;
mod shutdown;
mod startup;
mod status_page;
mod takeover;
mod tcp;
mod timeouts;
mod tls;
mod upgrade;
mod upstream_tls;
