//! Response compression (issue 13), end to end: the real proxy and real
//! backends on 127.0.0.1. Round trips for every coding and every backend
//! framing, to HTTP/1.1 and HTTP/1.0 clients; `Accept-Encoding`
//! negotiation; each rule of what is left alone; the head changes (`Vary`,
//! `ETag`); a 100 MB body streaming in bounded memory; reload and
//! `ringlb check`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

use crate::admin::admin;
use crate::backend::{Backend, Reply, Request, Resp};
use crate::client::{request, Framing, Headers, Response};
use crate::harness::{check_rejects, run_bin, wait_until, Proxy, TempDir, WAIT};
use crate::reload::rewrite;

const ALL: &str = "compress = { algorithms = [\"br\", \"gzip\", \"deflate\", \"zstd\"], min_length = 1024, types = [\"text/*\", \"application/json\"] }";

/// About 24 KiB of JSON.
fn json() -> Vec<u8> {
    let mut s = String::from("[");
    for i in 0..400 {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item number {i}\",\"tags\":[\"edge\",\"proxy\"],\"ok\":{}}},",
            i % 3 == 0
        ));
    }
    s.push_str("{}]");
    s.into_bytes()
}

/// Answers by path: `/len`, `/chunked` and `/close` frame the JSON body
/// that way; the others are the cases left alone.
fn handler(req: &Request) -> Reply {
    let body = json();
    let json_resp = |status| Resp::new(status).header("Content-Type", "application/json");
    let path = req.target.split('?').next().unwrap_or("");
    match path {
        "/len" => json_resp(200)
            .header("ETag", "\"v1\"")
            .header("Vary", "Origin")
            .body(body),
        "/chunked" => {
            let pieces: Vec<&[u8]> = body.chunks(1000).collect();
            json_resp(200).chunked(&pieces, &[("X-Sum", "1")])
        }
        "/close" => json_resp(200).close_delimited(body),
        "/encoded" => json_resp(200)
            .header("Content-Encoding", "gzip")
            .body(gzip(&body)),
        "/no-transform" => json_resp(200)
            .header("Cache-Control", "public, no-transform")
            .body(body),
        "/partial" => json_resp(206)
            .header("Content-Range", &format!("bytes 0-4999/{}", body.len()))
            .body(&body[..5000]),
        "/small" => json_resp(200).body(&body[..1023]),
        "/image" => Resp::new(200)
            .header("Content-Type", "image/png")
            .body(body),
        "/untyped" => Resp::new(200).body(body),
        "/no-content" => Resp::new(204)
            .header("Content-Type", "text/plain")
            .no_body(),
        "/not-modified" => Resp::new(304)
            .header("Content-Type", "text/plain")
            .header("ETag", "\"v1\"")
            .no_body(),
        _ => Resp::new(404).body("no such case"),
    }
    .into()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The body decoded by `coding` (a real decoder of each format).
fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    let res = match coding {
        "gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut plain),
        "deflate" => flate2::read::ZlibDecoder::new(bytes).read_to_end(&mut plain),
        "br" => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut plain),
        "zstd" => {
            zstd::stream::read::Decoder::new(bytes).and_then(|mut d| d.read_to_end(&mut plain))
        }
        other => panic!("no decoder for {other:?}"),
    };
    res.unwrap_or_else(|e| panic!("{coding} body does not decode: {e}"));
    plain
}

fn vary_lists_accept_encoding(resp: &Response) -> bool {
    resp.headers_named("vary")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding"))
}

fn proxy_with(backend: &Backend, compress: &str) -> Proxy {
    Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route_with("/", None, "app", &[compress])
        .start()
}

/// Every coding, every backend framing: the body decodes to the original;
/// chunked to HTTP/1.1 on a connection that stays open for the next
/// request, until close to HTTP/1.0.
#[test]
fn round_trips_every_coding_and_framing() {
    let backend = Backend::start(handler);
    let proxy = proxy_with(&backend, ALL);
    let original = json();
    for coding in ["br", "gzip", "deflate", "zstd"] {
        // One keep-alive connection for the three framings.
        let mut c = proxy.client();
        for path in ["/len", "/chunked", "/close"] {
            let resp = c.roundtrip(&request("GET", path, &[("Accept-Encoding", coding)], b""));
            assert_eq!(resp.status, 200, "{coding} {path}");
            assert_eq!(
                resp.header("content-encoding"),
                Some(coding),
                "{coding} {path}"
            );
            assert_eq!(resp.framing, Framing::Chunked, "{coding} {path}");
            assert_eq!(resp.header("content-length"), None, "{coding} {path}");
            assert!(vary_lists_accept_encoding(&resp), "{coding} {path}");
            assert!(!resp.closes(), "{coding} {path}");
            assert!(
                resp.body.len() < original.len() / 3,
                "{coding} {path} compresses"
            );
            assert_eq!(decode(coding, &resp.body), original, "{coding} {path}");
        }
        // HTTP/1.0: the compressed body ends by close.
        for path in ["/len", "/chunked", "/close"] {
            let mut c = proxy.client();
            c.send(format!("GET {path} HTTP/1.0\r\nAccept-Encoding: {coding}\r\n\r\n").as_bytes());
            let resp = c.read_response();
            assert_eq!(
                resp.header("content-encoding"),
                Some(coding),
                "1.0 {coding} {path}"
            );
            assert_eq!(resp.framing, Framing::Close, "1.0 {coding} {path}");
            assert!(resp.closes(), "1.0 {coding} {path}");
            assert_eq!(decode(coding, &resp.body), original, "1.0 {coding} {path}");
        }
    }
}

/// A compressed response weakens a strong `ETag` and merges `Vary`.
#[test]
fn etag_is_weakened_and_vary_merged() {
    let backend = Backend::start(handler);
    let proxy = proxy_with(&backend, ALL);
    let resp =
        proxy
            .client()
            .roundtrip(&request("GET", "/len", &[("Accept-Encoding", "gzip")], b""));
    assert_eq!(resp.header("etag"), Some("W/\"v1\""));
    assert_eq!(resp.headers_named("vary"), vec!["Origin, Accept-Encoding"]);
    // Not compressed (the client takes no coding): the tag stays strong,
    // the length stays, and the response still varies.
    let resp = proxy.client().roundtrip(&request("GET", "/len", &[], b""));
    assert_eq!(resp.header("etag"), Some("\"v1\""));
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.framing, Framing::Length);
    assert_eq!(resp.headers_named("vary"), vec!["Origin, Accept-Encoding"]);
    assert_eq!(resp.body, json());
}

/// `Accept-Encoding` as RFC 9110 §12.5.3 reads it; the route offers br,
/// then gzip.
#[test]
fn negotiation_edge_cases() {
    let backend = Backend::start(handler);
    let proxy = proxy_with(
        &backend,
        "compress = { algorithms = [\"br\", \"gzip\"], level = { br = 5, gzip = 6 } }",
    );
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("no field", None, None),
        ("empty field", Some(""), None),
        ("browser", Some("gzip, deflate, br, zstd"), Some("br")),
        ("q-values", Some("br;q=0.4, gzip;q=0.9"), Some("gzip")),
        ("q=0 excludes", Some("br;q=0, gzip"), Some("gzip")),
        ("star", Some("*"), Some("br")),
        ("star after an exclusion", Some("br;q=0, *"), Some("gzip")),
        ("star q=0", Some("*;q=0"), None),
        ("nothing offered", Some("deflate, zstd"), None),
        (
            "identity;q=0 and nothing offered",
            Some("identity;q=0, zstd"),
            None,
        ),
        (
            "identity;q=0 and gzip",
            Some("identity;q=0, gzip"),
            Some("gzip"),
        ),
        ("identity preferred", Some("identity, br;q=0.5"), None),
        ("x-gzip", Some("x-gzip"), Some("gzip")),
        ("case and spaces", Some(" GZIP ; Q=0.5 "), Some("gzip")),
        (
            "bad qvalue ignored",
            Some("br;q=2, gzip;q=0.1"),
            Some("gzip"),
        ),
    ];
    let original = json();
    for (name, accept, want) in cases {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let resp = proxy
            .client()
            .roundtrip(&request("GET", "/len", &headers, b""));
        assert_eq!(resp.status, 200, "{name}");
        assert_eq!(resp.header("content-encoding"), *want, "{name}");
        assert!(vary_lists_accept_encoding(&resp), "{name}");
        let body = match want {
            Some(coding) => decode(coding, &resp.body),
            None => resp.body.clone(),
        };
        assert_eq!(body, original, "{name}");
    }
}

/// Each rule of what is left alone: the response comes as the backend
/// sent it (no `Content-Encoding` added, same bytes).
#[test]
fn responses_left_alone() {
    let backend = Backend::start(handler);
    let proxy = proxy_with(&backend, ALL);
    let gz = [("Accept-Encoding", "gzip, br")];
    let original = json();
    let cases: &[(&str, &str, u16, &[u8])] = &[
        ("already encoded", "/encoded", 200, &gzip(&original)),
        ("no-transform", "/no-transform", 200, &original),
        ("partial", "/partial", 206, &original[..5000]),
        ("below min_length", "/small", 200, &original[..1023]),
        ("type not listed", "/image", 200, &original),
        ("no type", "/untyped", 200, &original),
        ("204", "/no-content", 204, b""),
        ("304", "/not-modified", 304, b""),
    ];
    for (name, path, status, body) in cases {
        let resp = proxy.client().roundtrip(&request("GET", path, &gz, b""));
        assert_eq!(resp.status, *status, "{name}");
        let encoding = resp.header("content-encoding");
        let want = (*path == "/encoded").then_some("gzip");
        assert_eq!(encoding, want, "{name}");
        assert_eq!(resp.body, *body, "{name}");
        assert!(!vary_lists_accept_encoding(&resp), "{name}");
    }
    // HEAD: the head as for GET would be, minus compression.
    let mut c = proxy.client();
    let resp = c.roundtrip(&request("HEAD", "/len", &gz, b""));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(
        resp.header("content-length"),
        Some(original.len().to_string().as_str())
    );
    // The connection is still in step.
    let resp = c.roundtrip(&request("GET", "/len", &gz, b""));
    assert_eq!(resp.header("content-encoding"), Some("br"));
}

/// `compress` is reloaded: the offered codings change with the file, and a
/// refused reload keeps the running policy.
#[test]
fn compress_is_reloaded() {
    let backend = Backend::start(handler);
    let proxy = proxy_with(&backend, "compress = { algorithms = [\"gzip\"] }");
    let coding = || {
        let resp = proxy.client().roundtrip(&request(
            "GET",
            "/len",
            &[("Accept-Encoding", "br, gzip")],
            b"",
        ));
        resp.header("content-encoding").map(str::to_string)
    };
    assert_eq!(coding().as_deref(), Some("gzip"));
    rewrite(&proxy, |t| t.replace("[\"gzip\"]", "[\"br\"]"));
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(wait_until(WAIT, || (0..4).all(|_| coding().as_deref() == Some("br"))));
    // An out-of-range level is refused, and br stays.
    rewrite(&proxy, |t| {
        t.replace("[\"br\"] }", "[\"br\"], level = { br = 12 } }")
    });
    let r = admin(&proxy, "POST", "/reload");
    assert_ne!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().contains("level.br"), "{}", r.body_str());
    assert_eq!(coding().as_deref(), Some("br"));
    // Without the key, nothing is compressed.
    rewrite(&proxy, |t| {
        t.lines()
            .filter(|l| !l.starts_with("compress"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let r = admin(&proxy, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(wait_until(WAIT, || (0..4).all(|_| coding().is_none())));
}

/// `ringlb check` names file, line, column and key for each bad `compress`.
#[test]
fn check_reports_bad_compress() {
    let dir = TempDir::new();
    let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.app]\n\
                backends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"app\"\n";
    for (line, want) in [
        (
            "compress = { algorithms = [\"gzip\", \"lzma\"] }",
            ":7:36: routes[0].compress.algorithms[1]: unknown algorithm \"lzma\"",
        ),
        (
            "compress = { algorithms = [\"gzip\", \"gzip\"] }",
            ":7:36: routes[0].compress.algorithms[1]: \"gzip\" is listed twice",
        ),
        (
            "compress = { algorithms = [] }",
            ":7:27: routes[0].compress.algorithms: give at least one",
        ),
        (
            "compress = { level = { gzip = 0 } }",
            ":7:31: routes[0].compress.level.gzip: gzip levels are 1 to 9, not 0",
        ),
        (
            "compress = { level = { zstd = 3 } }",
            ":7:31: routes[0].compress.level.zstd: a level for zstd, which is not in `algorithms`",
        ),
        (
            "compress = { types = [\"text/html; charset=utf-8\"] }",
            ":7:23: routes[0].compress.types[0]: \"text/html; charset=utf-8\" is not a media type",
        ),
        ("compress = { min_length = -1 }", ":7:"),
        ("compress = { level = 5 }", ":7:"),
        ("compress = { algorithm = [\"gzip\"] }", ":7:"),
    ] {
        check_rejects(&dir, &format!("{base}{line}\n"), want);
    }
    let good = dir.write(
        "good.toml",
        &format!(
            "{base}compress = {{ algorithms = [\"zstd\", \"gzip\"], level = {{ zstd = 19 }} }}\n"
        ),
    );
    let out = run_bin(&["check", "--config", good.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("(compress zstd,gzip) -> app"), "{text}");
}

/// 64 KiB of block `i` of the large body: text, so it compresses, but
/// different per block.
fn big_block(i: usize) -> Vec<u8> {
    let line = format!("block {i:08}: ringlb streams this body through gzip\n");
    line.bytes().cycle().take(BLOCK).collect()
}

const BLOCK: usize = 64 * 1024;
const BIG_BLOCKS: usize = 1600; // 100 MiB

/// Checks decoded bytes against the large body as they arrive.
struct Verify {
    at: usize,
    block: Vec<u8>,
}

impl Write for Verify {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for &b in data {
            let (i, off) = (self.at / BLOCK, self.at % BLOCK);
            if off == 0 {
                self.block = big_block(i);
            }
            assert!(i < BIG_BLOCKS, "more bytes than the body has");
            assert_eq!(b, self.block[off], "decoded byte {} differs", self.at);
            self.at += 1;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 100 MiB body compresses as it streams: the backend sends half and
/// waits until the client has decoded most of that half (it would wait
/// forever if the proxy buffered the body), and the proxy's RSS stays far
/// below the body's size.
#[test]
fn a_large_body_streams_in_bounded_memory() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let (go_on, wait) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let mut out = stream;
        let len = BLOCK * BIG_BLOCKS;
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
        )
        .unwrap();
        for i in 0..BIG_BLOCKS {
            if i == BIG_BLOCKS / 2 && wait.recv_timeout(WAIT).is_err() {
                return; // The client never saw the first half: fail there.
            }
            if out.write_all(&big_block(i)).is_err() {
                return;
            }
        }
    });
    let proxy = Proxy::builder()
        .upstream("app", &[backend_addr], &[])
        .route_with(
            "/",
            None,
            "app",
            &["compress = { algorithms = [\"gzip\"], level = { gzip = 1 } }"],
        )
        .start();
    let before = proxy.rss_kib();

    let stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    (&stream)
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::with_capacity(64 * 1024, &stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-encoding: gzip\r\n"), "{head}");
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{head}");

    let mut decoder = flate2::write::GzDecoder::new(Verify {
        at: 0,
        block: Vec::new(),
    });
    let (mut released, mut peak, mut wire, mut chunks) = (false, before, 0usize, 0usize);
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim_end(), 16)
            .unwrap_or_else(|_| panic!("bad chunk line {size:?}"));
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk).unwrap();
        if n == 0 {
            assert_eq!(chunk, b"\r\n");
            break;
        }
        wire += n;
        decoder.write_all(&chunk[..n]).unwrap();
        decoder.flush().unwrap();
        let decoded = decoder.get_ref().at;
        if !released && decoded >= BLOCK * BIG_BLOCKS * 2 / 5 {
            go_on.send(()).unwrap();
            released = true;
        }
        chunks += 1;
        if chunks % 32 == 0 {
            peak = peak.max(proxy.rss_kib());
        }
    }
    let verify = decoder.finish().unwrap();
    assert_eq!(verify.at, BLOCK * BIG_BLOCKS, "the whole body decoded");
    assert!(
        released,
        "the first half streamed before the second was sent"
    );
    assert!(wire < BLOCK * BIG_BLOCKS / 10, "{wire} bytes on the wire");
    // Buffering the body would cost 100 MiB; the relay holds a few buffers
    // and the compressor's window.
    assert!(
        peak - before < 32 * 1024,
        "proxy RSS grew from {before} KiB to {peak} KiB"
    );
    server.join().unwrap();
}

/// With a cache on the route, each coding is stored as its own variant
/// (the compressed response varies on `Accept-Encoding`): a hit is the
/// stored compressed bytes, not compressed again, and decodes whole.
#[test]
fn the_cache_stores_one_compressed_variant_per_coding() {
    let backend = Backend::start(|_: &Request| {
        Resp::new(200)
            .header("Content-Type", "application/json")
            .header("Cache-Control", "max-age=600")
            .body(json())
            .into()
    });
    let proxy = Proxy::builder()
        .admin()
        .upstream("app", &[backend.addr], &[])
        .route_with("/", None, "app", &[ALL, "cache = { zone = \"main\" }"])
        .toml("[cache.zones.main]\nmax_size = \"16MiB\"")
        .start();
    let original = json();
    for (n, coding) in ["gzip", "br", "zstd"].into_iter().enumerate() {
        let mut bodies = Vec::new();
        for want in ["MISS", "HIT", "HIT"] {
            let resp = proxy.client().roundtrip(&request(
                "GET",
                "/doc",
                &[("Accept-Encoding", coding)],
                b"",
            ));
            assert_eq!(resp.header("x-cache-status"), Some(want), "{coding}");
            assert_eq!(
                resp.header("content-encoding"),
                Some(coding),
                "{coding} {want}"
            );
            assert!(vary_lists_accept_encoding(&resp), "{coding} {want}");
            assert_eq!(decode(coding, &resp.body), original, "{coding} {want}");
            bodies.push(resp.body);
            if want == "MISS" {
                // The copy is stored once its last byte went out; a new
                // variant's next request is not coalesced with the fetch,
                // so wait for the store (the Vary marker and n+1 variants).
                let stored = n as f64 + 2.0;
                assert!(wait_until(WAIT, || {
                    crate::admin::metric(&proxy, "ringlb_cache_entries") >= stored
                }));
            }
        }
        // The hits are the stored bytes of the miss.
        assert_eq!(bodies[1], bodies[0], "{coding}");
        assert_eq!(bodies[2], bodies[0], "{coding}");
    }
    // A client without Accept-Encoding gets the plain variant.
    let plain = proxy.client().roundtrip(&request("GET", "/doc", &[], b""));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, original);
    // One backend request per variant: three codings and the plain one.
    assert_eq!(backend.proxied_count(), 4);
}
