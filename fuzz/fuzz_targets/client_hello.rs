//! Any bytes as the start of a connection on a `[[tcp]]` listener with
//! `sni_routes`: `tcp::sni::client_hello` never panics; more bytes are
//! asked for only below the bound; a server name it finds is non-empty
//! lowercase ASCII, and every strict prefix of such an input asks for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::tcp::sni::{client_hello, Hello, MAX_CLIENT_HELLO};

fuzz_target!(|data: &[u8]| {
    match client_hello(data) {
        Hello::Partial => assert!(data.len() < MAX_CLIENT_HELLO, "asked for more past the bound"),
        Hello::NotTls(why) => assert!(!why.is_empty()),
        Hello::NoName => {}
        Hello::Name(name) => {
            assert!(!name.is_empty());
            assert!(name.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()), "{name:?}");
            assert_eq!(client_hello(&data[..data.len() / 2]), Hello::Partial);
        }
    }
});
