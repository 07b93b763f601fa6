//! Any bytes as the start of a connection on a `proxy_protocol` listener:
//! parsing never panics; a header it returns is no longer than the input
//! or the bound, parses the same from its own bytes alone (nothing after it
//! was needed), every strict prefix of it asks for more, and its addresses
//! survive a re-encoding as v1 and v2.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::proxy_protocol::{encode_v1, encode_v2, parse, MAX_HEADER_BYTES, MAX_TLVS};
use std::net::SocketAddr;

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fuzz_target!(|data: &[u8]| {
    let header = match parse(data) {
        Ok(Some(header)) => header,
        Ok(None) => {
            assert!(data.len() < MAX_HEADER_BYTES, "asked for more past the bound");
            return;
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(header.len <= data.len() && header.len <= MAX_HEADER_BYTES);
    assert!(header.tlvs.len() <= MAX_TLVS);
    let own = &data[..header.len];
    assert_eq!(parse(own), Ok(Some(header.clone())));
    for cut in [0, header.len / 2, header.len - 1] {
        assert_eq!(parse(&own[..cut]), Ok(None), "prefix of {cut} bytes");
    }
    if let Some((source, destination)) = header.addresses {
        let mixed = source.is_ipv4() != destination.is_ipv4()
            || source.ip().to_canonical().is_ipv4() != destination.ip().to_canonical().is_ipv4();
        let mut v1 = Vec::new();
        encode_v1(source, destination, &mut v1);
        let mut v2 = Vec::new();
        encode_v2(Some((source, destination)), &mut v2);
        for bytes in [v1, v2] {
            let again = parse(&bytes).unwrap().expect("an encoded header is complete");
            assert_eq!(again.len, bytes.len());
            let (s, d) = again.addresses.expect("addresses kept");
            if !mixed {
                assert_eq!((canonical(s), canonical(d)), (canonical(source), canonical(destination)));
            }
            assert_eq!((s.port(), d.port()), (source.port(), destination.port()));
        }
    }
});
