//! Any bytes as a request head: parsing never panics, and a complete head
//! can be read through every accessor and forwarded; the forwarded head
//! parses back to the same request and framing.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use ringlb::http::{
    parse_request, write_request_head, ForwardContext, Limits, Status, Version, MAX_HEADERS_CAP,
};

fuzz_target!(|data: &[u8]| {
    let head = match parse_request(data, &Limits::default()) {
        Ok(Status::Complete(head)) => head,
        Ok(Status::Partial) => return,
        Err(e) => {
            assert!(matches!(e.status(), 400 | 431 | 501));
            assert_eq!(e.to_string(), e.reason());
            return;
        }
    };
    assert!(head.head_len() <= data.len());
    assert_eq!(head.as_bytes(), &data[..head.head_len()]);
    let _ = (head.method(), head.is_head(), head.is_idempotent());
    let _ = (head.target(), head.is_absolute_form(), head.version());
    let _ = (head.keep_alive(), head.expect_continue(), head.upgrade());
    for (name, value) in head.headers() {
        assert!(!name.is_empty());
        assert_eq!(value.trim_ascii(), value);
    }
    // Both a trusted peer's X-Forwarded-For (kept, appended to) and an
    // untrusted one's (replaced).
    for (host_fallback, keep_client_xff) in [
        (None, true),
        (Some("fallback.example"), true),
        (Some("fallback.example"), false),
    ] {
        let ctx = ForwardContext {
            client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            keep_client_xff,
            proto: "https",
            host_fallback,
            request_id: None,
        };
        let mut out = Vec::new();
        write_request_head(&head, &ctx, &mut out);
        let host = head.host().or(host_fallback);
        if host.is_none() {
            // HTTP/1.0 without Host and no fallback: an HTTP/1.1 head without
            // Host, which the proxy never sends (it always has a fallback).
            continue;
        }
        let limits = Limits {
            max_head_bytes: out.len() + 1,
            max_headers: MAX_HEADERS_CAP,
        };
        let again = match parse_request(&out, &limits) {
            Ok(Status::Complete(again)) => again,
            other => panic!(
                "forwarded head does not parse: {other:?}\n{:?}",
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(again.head_len(), out.len());
        assert_eq!(again.method(), head.method());
        assert_eq!(again.path(), head.path());
        assert_eq!(again.host(), host);
        assert_eq!(again.version(), Version::Http11);
        assert_eq!(again.body(), head.body());
        assert_eq!(again.upgrade(), head.upgrade());
    }
});
