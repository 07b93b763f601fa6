use super::*;

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn v1_tcp4_gives_the_source_and_leaves_the_request_alone() {
    let input = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
    let header = parse(input).unwrap().unwrap();
    assert_eq!(header.version, Version::V1);
    assert_eq!(
        header.addresses,
        Some((sa("192.0.2.7:56324"), sa("10.0.0.1:443")))
    );
    assert_eq!(&input[header.len..], b"GET / HTTP/1.1\r\n");
    assert_eq!(header.client_addr(sa("127.0.0.1:1")), sa("192.0.2.7:56324"));
}

#[test]
fn v1_tcp6_and_unknown() {
    let header = parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(
        header.addresses,
        Some((sa("[2001:db8::1]:1"), sa("[::1]:65535")))
    );
    let unknown = parse(b"PROXY UNKNOWN ff 1 2 3\r\nX").unwrap().unwrap();
    assert_eq!(unknown.addresses, None);
    assert_eq!(unknown.len, 24);
    let peer = sa("127.0.0.1:9");
    assert_eq!(unknown.client_addr(peer), peer);
    assert!(parse(b"PROXY UNKNOWN\r\n").unwrap().is_some());
}

#[test]
fn every_proper_prefix_of_a_header_asks_for_more() {
    let mut v2 = Vec::new();
    encode_v2(Some((sa("[2001:db8::5]:40000"), sa("[::1]:80"))), &mut v2);
    for whole in [&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..], &v2] {
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(whole).unwrap().unwrap().len, whole.len());
    }
}

#[test]
fn malformed_v1_headers_are_refused_with_a_reason() {
    let bad: &[&[u8]] = &[
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    ];
    for input in bad {
        assert!(
            matches!(parse(input), Err(Error::V1(_))),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // Fuzz (proxy_header): a bare LF before the CR, after UNKNOWN, was
    // accepted whole but refused as a prefix.
    assert_eq!(parse(b"PROXY UNKNOWN a\nb\r\n"), Err(Error::V1("bare LF")));
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
    assert_eq!(parse(&long), Err(Error::V1("no CRLF within 107 bytes")));
}

#[test]
fn anything_else_is_not_proxy() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::NotProxy));
    assert_eq!(parse(b"\x16\x03\x01"), Err(Error::NotProxy));
    assert_eq!(parse(b"PROXX"), Err(Error::NotProxy));
    assert_eq!(parse(b""), Ok(None));
}

#[test]
fn v2_ipv4_with_tlvs() {
    let mut input = Vec::new();
    input.extend_from_slice(&V2_SIGNATURE);
    input.extend_from_slice(&[0x21, 0x11, 0, 12 + 3 + 5 + 3]);
    input.extend_from_slice(&[203, 0, 113, 9, 10, 0, 0, 1]);
    input.extend_from_slice(&4000u16.to_be_bytes());
    input.extend_from_slice(&80u16.to_be_bytes());
    input.extend_from_slice(&[0x02, 0, 5]);
    input.extend_from_slice(b"a.com");
    input.extend_from_slice(&[0x04, 0, 0]);
    input.extend_from_slice(b"payload");
    let header = parse(&input).unwrap().unwrap();
    assert_eq!(header.version, Version::V2);
    assert_eq!(
        header.addresses,
        Some((sa("203.0.113.9:4000"), sa("10.0.0.1:80")))
    );
    assert_eq!(
        header.tlvs,
        vec![(0x02, b"a.com".to_vec()), (0x04, Vec::new())]
    );
    assert_eq!(&input[header.len..], b"payload");
}

#[test]
fn v2_local_keeps_the_peer_address() {
    let mut input = Vec::new();
    encode_v2(None, &mut input);
    let header = parse(&input).unwrap().unwrap();
    assert_eq!(header.addresses, None);
    assert_eq!(header.len, 16);
    // LOCAL with an INET family but no address block: still accepted.
    let mut short = V2_SIGNATURE.to_vec();
    short.extend_from_slice(&[0x20, 0x11, 0, 0]);
    assert_eq!(parse(&short).unwrap().unwrap().addresses, None);
}

#[test]
fn malformed_v2_headers_are_refused() {
    let with = |ver_cmd: u8, family: u8, body: &[u8]| {
        let mut v = V2_SIGNATURE.to_vec();
        v.extend_from_slice(&[ver_cmd, family]);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let address4 = [1u8; 12];
    let cases: Vec<Vec<u8>> = vec![
        with(0x11, 0x11, &address4),
        with(0x22, 0x11, &address4),
        with(0x21, 0x41, &address4),
        with(0x21, 0x13, &address4),
        with(0x21, 0x12, &address4),
        with(0x21, 0x11, &address4[..11]),
        with(0x21, 0x21, &address4),
        with(0x21, 0x11, &[&address4[..], &[1, 0]].concat()),
        with(0x21, 0x11, &[&address4[..], &[1, 0, 9, 1]].concat()),
        with(
            0x21,
            0x11,
            &[&address4[..], &[1, 0, 0].repeat(MAX_TLVS + 1)].concat(),
        ),
        with(0x21, 0x11, &vec![0; MAX_V2_PAYLOAD + 1]),
    ];
    for input in &cases {
        assert!(matches!(parse(input), Err(Error::V2(_))), "{input:?}");
    }
    // A bad version byte fails before the length arrives.
    let early = [&V2_SIGNATURE[..], &[0x31]].concat();
    assert_eq!(parse(&early), Err(Error::V2("version is not 2")));
}

#[test]
fn encoders_round_trip() {
    let pairs = [
        (sa("192.0.2.1:1234"), sa("10.1.2.3:80")),
        (sa("[2001:db8::1]:1"), sa("[::1]:443")),
        (sa("192.0.2.1:1234"), sa("[2001:db8::2]:443")),
        (sa("[::ffff:192.0.2.1]:5"), sa("10.0.0.1:6")),
    ];
    for (s, d) in pairs {
        let expect = same_family(s, d);
        let mut v1 = Vec::new();
        encode_v1(s, d, &mut v1);
        let mut v2 = Vec::new();
        encode_v2(Some((s, d)), &mut v2);
        for bytes in [v1, v2] {
            let header = parse(&bytes).unwrap().unwrap();
            assert_eq!(header.addresses, Some(expect));
            assert_eq!(header.len, bytes.len());
        }
    }
    assert_eq!(
        same_family(sa("[::ffff:192.0.2.1]:5"), sa("10.0.0.1:6")),
        (sa("192.0.2.1:5"), sa("10.0.0.1:6"))
    );
}

#[test]
fn input_beyond_the_bound_is_not_looked_at() {
    let mut input = Vec::new();
    encode_v2(Some((sa("1.2.3.4:5"), sa("6.7.8.9:10"))), &mut input);
    input.extend(std::iter::repeat_n(b'x', 100_000));
    assert_eq!(parse(&input).unwrap().unwrap().len, 28);
}
