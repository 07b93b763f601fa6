//! Gateway features of a route (issue 12): what a `[[routes]]` entry can
//! ask for beyond host and path prefix.
//!
//! Why a module of its own: each feature is plain data checked at config
//! load plus a pure function of a request head, so it is tested without
//! sockets and shared by the config (which builds it) and the proxy (which
//! runs it). A route without gateway keys carries `None` and costs nothing.
//! `compress` (issue 13) adds streaming pieces too: an encoder and a
//! compressed body framer, both sans-IO.

pub mod access;
pub mod cidr;
pub mod compress;
pub mod cors;
pub mod headers;
pub mod matching;
pub mod pages;
pub mod rate_limit;
pub mod redirect;
pub mod rewrite;
pub mod shared;

pub use access::AccessRules;
pub use cidr::{Cidr, CidrList};
pub use compress::Compress;
pub use cors::Cors;
pub use headers::{BackendFields, HeaderEdits};
pub use matching::{HeaderCondition, HeaderTest, Pattern, RouteMatch};
pub use pages::{ErrorPage, ErrorPages};
pub use rate_limit::RateLimit;
pub use redirect::{HttpsRedirect, Redirect};
pub use rewrite::{HostRewrite, Rewrite};
