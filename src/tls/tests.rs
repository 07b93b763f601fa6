//! Both ends in memory: a client [`TlsSession`] and a server one, with
//! ciphertext pumped between them through `Vec`s.

use super::*;
use rustls::version::{TLS12, TLS13};

fn cert_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

fn pair(stem: &str) -> CertKeyPaths {
    CertKeyPaths {
        cert: cert_path(&format!("{stem}.pem")),
        key: cert_path(&format!("{stem}.key")),
    }
}

fn listen_config() -> TlsListenConfig {
    TlsListenConfig {
        default: pair("server"),
        sni: vec![pair("other")],
    }
}

fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(&cert_path("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

#[derive(Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Moves ciphertext both ways until neither side has anything to send.
fn pump(
    client: &mut TlsSession,
    server: &mut TlsSession,
    client_got: &mut Vec<u8>,
    server_got: &mut Vec<u8>,
) -> Result<(), (Side, TlsError)> {
    for _ in 0..64 {
        let mut to_server = Vec::new();
        client.take_ciphertext(&mut to_server).unwrap();
        if !to_server.is_empty() {
            server
                .receive(&to_server, server_got)
                .map_err(|e| (Side::Server, e))?;
        }
        let mut to_client = Vec::new();
        server.take_ciphertext(&mut to_client).unwrap();
        if !to_client.is_empty() {
            client
                .receive(&to_client, client_got)
                .map_err(|e| (Side::Client, e))?;
        }
        if to_server.is_empty() && to_client.is_empty() {
            return Ok(());
        }
    }
    panic!("the handshake did not settle");
}

fn connect(
    server_config: &Arc<ServerConfig>,
    client_config: &Arc<ClientConfig>,
    name: &str,
) -> Result<(TlsSession, TlsSession), (Side, TlsError)> {
    let mut server = TlsSession::server(server_config.clone()).unwrap();
    let mut client = TlsSession::client(client_config.clone(), server_name(name).unwrap()).unwrap();
    assert!(client.wants_write() && server.is_handshaking());
    pump(&mut client, &mut server, &mut Vec::new(), &mut Vec::new())?;
    assert!(!client.is_handshaking() && !server.is_handshaking());
    Ok((client, server))
}

fn leaf_names(session: &TlsSession) -> Vec<String> {
    let chain = session.peer_certificates().expect("peer certificates");
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    leaf.valid_dns_names().map(str::to_owned).collect()
}

#[test]
fn handshake_alpn_and_both_directions() {
    let server_config = load_server_config(&listen_config()).unwrap();
    let client_config = load_client_config(&cert_path("ca.pem")).unwrap();
    let (mut client, mut server) = connect(&server_config, &client_config, "localhost").unwrap();
    assert_eq!(server.alpn(), Some(ALPN_HTTP_1_1));
    assert_eq!(client.alpn(), Some(ALPN_HTTP_1_1));
    assert_eq!(server.sni(), Some("localhost"));
    assert_eq!(server.protocol_version(), Some(ProtocolVersion::TLSv1_3));

    // Client to server: a request.
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut wire = Vec::new();
    client.write_plaintext(request, &mut wire).unwrap();
    let mut got = Vec::new();
    let seen = server.receive(&wire, &mut got).unwrap();
    assert_eq!(got, request);
    assert_eq!(seen.plaintext, request.len());
    assert!(!seen.peer_closed);

    // Server to client: 1 MiB in one call, far over rustls' 64 KiB buffer.
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    server.write_plaintext(&body, &mut wire).unwrap();
    assert!(wire.len() > body.len());
    let mut got = Vec::new();
    // Delivered in odd-sized TCP reads.
    for chunk in wire.chunks(7001) {
        client.receive(chunk, &mut got).unwrap();
    }
    assert!(got == body, "1 MiB arrived intact");

    // close_notify.
    let mut wire = Vec::new();
    server.close(&mut wire).unwrap();
    let seen = client.receive(&wire, &mut Vec::new()).unwrap();
    assert!(seen.peer_closed);
}

#[test]
fn handshake_done_is_reported_once() {
    let server_config = load_server_config(&listen_config()).unwrap();
    let client_config = load_client_config(&cert_path("ca.pem")).unwrap();
    let mut server = TlsSession::server(server_config).unwrap();
    let mut client = TlsSession::client(client_config, server_name("localhost").unwrap()).unwrap();
    let mut done = 0;
    for _ in 0..10 {
        let mut wire = Vec::new();
        client.take_ciphertext(&mut wire).unwrap();
        done += usize::from(
            server
                .receive(&wire, &mut Vec::new())
                .unwrap()
                .handshake_done,
        );
        let mut wire = Vec::new();
        server.take_ciphertext(&mut wire).unwrap();
        client.receive(&wire, &mut Vec::new()).unwrap();
    }
    assert_eq!(done, 1);
}

#[test]
fn sni_picks_the_certificate_by_san() {
    let server_config = load_server_config(&listen_config()).unwrap();
    let client_config = load_client_config(&cert_path("ca.pem")).unwrap();
    for (name, want) in [
        ("localhost", "localhost"),
        ("other.test", "other.test"),
        ("a.other.test", "other.test"),
        // An IP address is not sent as SNI: the default certificate.
        ("127.0.0.1", "localhost"),
    ] {
        let (client, server) = connect(&server_config, &client_config, name).unwrap();
        assert!(leaf_names(&client).contains(&want.to_owned()), "{name}");
        let sent = if name.parse::<std::net::IpAddr>().is_ok() {
            None
        } else {
            Some(name)
        };
        assert_eq!(server.sni(), sent);
    }
    // A name no certificate has gets the default one, which the client
    // then rejects for the wrong name.
    let err = connect(&server_config, &client_config, "unknown.test").unwrap_err();
    assert_eq!(err.0, Side::Client);
    assert!(matches!(
        err.1,
        TlsError::Protocol(rustls::Error::InvalidCertificate(_))
    ));
}

#[test]
fn resumption_in_tls13_and_tls12() {
    let server_config = load_server_config(&listen_config()).unwrap();
    for version in [&TLS13, &TLS12] {
        let client_config = client_config(&[version], &[ALPN_HTTP_1_1]);
        let (client, server) = connect(&server_config, &client_config, "localhost").unwrap();
        assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
        assert_eq!(server.protocol_version(), Some(version.version));
        let (client, server) = connect(&server_config, &client_config, "localhost").unwrap();
        assert_eq!(
            client.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
        assert_eq!(server.handshake_kind(), Some(HandshakeKind::Resumed));
    }
}

#[test]
fn a_reloaded_config_serves_the_new_certificate_and_resumes_old_sessions() {
    let before = load_server_config(&listen_config()).unwrap();
    let swapped = TlsListenConfig {
        default: pair("other"),
        sni: Vec::new(),
    };
    let after = reload_server_config(&swapped, &before).unwrap();
    for version in [&TLS13, &TLS12] {
        let client_config = client_config(&[version], &[ALPN_HTTP_1_1]);
        let (client, _) = connect(&before, &client_config, "localhost").unwrap();
        assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
        // The session from before the reload resumes after it.
        let (client, server) = connect(&after, &client_config, "localhost").unwrap();
        assert_eq!(
            client.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
        assert_eq!(server.handshake_kind(), Some(HandshakeKind::Resumed));
    }
    // A full handshake gets the new default certificate.
    let fresh = client_config(&[&TLS13], &[ALPN_HTTP_1_1]);
    let (client, _) = connect(&after, &fresh, "other.test").unwrap();
    assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
    assert!(leaf_names(&client).contains(&"other.test".to_owned()));
    // A config built from scratch has other ticket keys: no resumption.
    let unrelated = load_server_config(&listen_config()).unwrap();
    let (client, _) = connect(&before, &fresh, "localhost").unwrap();
    assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
    let (client, _) = connect(&unrelated, &fresh, "localhost").unwrap();
    assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
}

#[test]
fn h2_only_alpn_is_refused_and_no_alpn_is_fine() {
    let server_config = load_server_config(&listen_config()).unwrap();
    let h2 = client_config(&[&TLS13, &TLS12], &[b"h2"]);
    let err = connect(&server_config, &h2, "localhost").unwrap_err();
    assert_eq!(err.0, Side::Server);
    assert!(matches!(
        err.1,
        TlsError::Protocol(rustls::Error::NoApplicationProtocol)
    ));

    let both = client_config(&[&TLS13], &[b"h2", ALPN_HTTP_1_1]);
    let (client, _) = connect(&server_config, &both, "localhost").unwrap();
    assert_eq!(client.alpn(), Some(ALPN_HTTP_1_1));

    let none = client_config(&[&TLS13], &[]);
    let (client, _) = connect(&server_config, &none, "localhost").unwrap();
    assert_eq!(client.alpn(), None);
}

#[test]
fn tls11_client_hello_is_refused_with_an_alert() {
    // A ClientHello with version 3.2 (TLS 1.1) and no supported_versions.
    let mut hello = vec![0x03, 0x02];
    hello.extend([7u8; 32]); // random
    hello.push(0); // session id
    hello.extend([0x00, 0x02, 0xc0, 0x2f]); // one suite
    hello.extend([0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0, 0, hello.len() as u8];
    handshake.extend(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend(&handshake);

    let server_config = load_server_config(&listen_config()).unwrap();
    let mut server = TlsSession::server(server_config).unwrap();
    let err = server.receive(&record, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)), "{err}");
    let mut alert = Vec::new();
    server.take_ciphertext(&mut alert).unwrap();
    assert_eq!(alert.first(), Some(&0x15), "an alert record is queued");
}

#[test]
fn garbage_gets_an_alert() {
    let server_config = load_server_config(&listen_config()).unwrap();
    let mut server = TlsSession::server(server_config).unwrap();
    let err = server
        .receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)));
    let mut alert = Vec::new();
    server.take_ciphertext(&mut alert).unwrap();
    assert_eq!(alert.first(), Some(&0x15));
}

#[test]
fn bad_files_name_the_file() {
    let dir = std::env::temp_dir().join(format!("ringlb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not pem at all\n").unwrap();

    let missing = CertKeyPaths {
        cert: dir.join("missing.pem"),
        key: cert_path("server.key"),
    };
    let err = load_certified_key(&missing).unwrap_err();
    assert_eq!(
        (err.path(), err.which()),
        (Some(&*missing.cert), Some(Which::Cert))
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let unparsable = CertKeyPaths {
        cert: garbage.clone(),
        key: cert_path("server.key"),
    };
    let err = load_certified_key(&unparsable).unwrap_err();
    assert_eq!(
        (err.path(), err.which()),
        (Some(&*garbage), Some(Which::Cert))
    );

    let bad_key = CertKeyPaths {
        cert: cert_path("server.pem"),
        key: garbage.clone(),
    };
    let err = load_certified_key(&bad_key).unwrap_err();
    assert_eq!(
        (err.path(), err.which()),
        (Some(&*garbage), Some(Which::Key))
    );

    let mismatch = CertKeyPaths {
        cert: cert_path("server.pem"),
        key: cert_path("other.key"),
    };
    let err = load_certified_key(&mismatch).unwrap_err();
    assert_eq!(err.which(), Some(Which::Key));
    assert!(err.to_string().contains("does not match"), "{err}");

    assert!(load_client_config(&garbage).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn san_names_are_read() {
    let cert = load_certified_key(&pair("other")).unwrap();
    assert_eq!(cert.names, ["other.test", "*.other.test"]);
    let cert = load_certified_key(&pair("server")).unwrap();
    assert_eq!(cert.names, ["localhost"]);
}
