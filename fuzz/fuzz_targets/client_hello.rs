//! Any bytes as the start of a connection on a `[[tcp]]` listener with
//! `sni_routes`: `tcp::sni::client_hello` never panics; more bytes are
//! asked for only below the bound; a server name it finds is non-empty
//! lowercase ASCII; a prefix of such an input either asks for more or
//! finds the same name (the hello may end before the input does), and its
//! first five bytes (a record header at most) ask for more.
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
            for cut in [5, data.len() / 2, data.len() - 1] {
                let prefix = client_hello(&data[..cut.min(data.len())]);
                assert!(
                    prefix == Hello::Partial || prefix == Hello::Name(name.clone()),
                    "prefix of {cut}: {prefix:?}"
                );
            }
            assert_eq!(client_hello(&data[..5]), Hello::Partial);
        }
    }
});
