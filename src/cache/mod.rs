//! The response cache (issue 13): RFC 9111 rules, keys and the shared
//! zones.
//!
//! Why these parts: `control` and `policy` are the RFC's rules as pure
//! functions over header facts; `key` builds the primary and variant keys;
//! `zone` is the store every worker shares. None of them does I/O, so the
//! rules that keep a private response private are tested without sockets.

pub mod control;
pub mod key;
pub mod policy;
pub mod zone;

pub use control::CacheControl;
pub use policy::{
    decide_store, not_modified, usable, Lifetime, NotStored, RequestFacts, ResponseFacts, Rules,
    Use,
};
pub use zone::{Found, Leader, Object, Purge, Zone, Zones};
