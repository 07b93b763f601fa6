//! proxy_basic
