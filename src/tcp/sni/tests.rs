use std::sync::Arc;

use super::*;

/// The first flight of a real rustls client for `name` (a DNS name, or an
/// IP address, which is sent without SNI).
fn hello_for(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn a_whole_hello_gives_its_name_and_a_cut_one_asks_for_more() {
    let hello = hello_for("DB.Example.com");
    assert_eq!(client_hello(&hello), Hello::Name("db.example.com".into()));
    for cut in [1, 5, 6, hello.len() / 2, hello.len() - 1] {
        assert_eq!(client_hello(&hello[..cut]), Hello::Partial, "cut at {cut}");
    }
    // Bytes after the hello (nothing else is sent before the server
    // answers, but a parser must not care) change nothing.
    let mut more = hello.clone();
    more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    assert_eq!(client_hello(&more), Hello::Name("db.example.com".into()));
}

#[test]
fn a_hello_without_sni_and_bytes_that_are_not_tls() {
    assert_eq!(client_hello(&hello_for("192.0.2.1")), Hello::NoName);
    assert_eq!(client_hello(b""), Hello::Partial);
    assert!(matches!(
        client_hello(b"GET / HTTP/1.1\r\n"),
        Hello::NotTls(_)
    ));
    assert!(matches!(client_hello(b"\x16\x09\x01"), Hello::NotTls(_)));
    // A handshake record whose message is not a ClientHello.
    let server_hello = [22, 3, 3, 0, 4, 2, 0, 0, 0];
    assert!(matches!(client_hello(&server_hello), Hello::NotTls(_)));
}

#[test]
fn a_hello_that_never_ends_is_refused_at_the_bound() {
    // A record header promising a handshake message longer than the bound,
    // then filler: never a whole hello.
    let mut bytes = vec![22, 3, 1, 0x40, 0x00, 1, 0x00, 0xff, 0xff];
    bytes.resize(MAX_CLIENT_HELLO + 10, 0);
    assert!(
        matches!(client_hello(&bytes), Hello::NotTls(_)),
        "{:?}",
        client_hello(&bytes)
    );
}

#[test]
fn exact_names_win_then_the_longest_wildcard() {
    let p = |s: &str| SniPattern::parse(s).unwrap();
    let routes = SniRoutes::new(vec![
        (p("*.example.com"), 0),
        (p("*.db.example.com"), 1),
        (p("Admin.Example.com"), 2),
    ]);
    assert_eq!(routes.find("admin.example.com"), Some(2));
    assert_eq!(routes.find("a.db.example.com"), Some(1));
    assert_eq!(routes.find("db.example.com"), Some(0));
    assert_eq!(routes.find("www.example.com"), Some(0));
    assert_eq!(
        routes.find("example.com"),
        None,
        "a wildcard needs one more label"
    );
    assert_eq!(routes.find("example.org"), None);
    assert_eq!(routes.upstreams().collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn patterns_are_dns_names() {
    for bad in [
        "",
        "*.",
        "*",
        "a..b",
        "-a.com",
        "a.com:443",
        "a b.com",
        "*.*.com",
        "é.com",
    ] {
        assert!(SniPattern::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        SniPattern::parse("*.Example.COM").unwrap(),
        SniPattern::Wildcard(".example.com".into())
    );
}
