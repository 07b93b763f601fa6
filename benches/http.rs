//! Criterion benchmarks of the sans-IO HTTP codec: the work done per request
//! on the data path, without sockets.
//!
//! Targets (printed, never asserted): a head parsed and framed within
//! 1.25× of `httparse_only` on the same head (httparse alone, called as
//! `parse_request` calls it). Throughput is reported in input bytes.

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringlb::http::{
    parse_request, parse_response, plan_response, write_chunk, write_request_head,
    write_response_head, ChunkedDecoder, ClientSide, ForwardContext, Limits, ResponseContext,
    Status, Version, LAST_CHUNK,
};

/// A Chrome-like GET of a page: 12 header fields, ~500 bytes.
const BROWSER_GET: &[u8] = b"GET /articles/2024/05/how-we-measure-latency?ref=home&utm_source=feed HTTP/1.1\r\n\
Host: www.example.com\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://www.example.com/\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=4f2a9c0e7b1d4e8f; theme=dark\r\n\
\r\n";

/// A typical `200 OK` from an application server: 8 header fields.
const RESPONSE_200: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 14 May 2024 10:12:31 GMT\r\n\
Server: app/1.4\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 12345\r\n\
Cache-Control: private, max-age=0\r\n\
ETag: \"5f3a-1b2c3d\"\r\n\
Vary: Accept-Encoding\r\n\
Set-Cookie: session=4f2a9c0e7b1d4e8f; Path=/; HttpOnly\r\n\
\r\n";

/// A request head with 50 fields (the browser head's start plus padding).
fn fifty_header_get() -> Vec<u8> {
    let mut head = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example.com\r\n".to_vec();
    for i in 1..50 {
        head.extend_from_slice(
            format!("X-Custom-Header-{i:02}: value-{i:04}-abcdef\r\n").as_bytes(),
        );
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Parses a request head and reads what the proxy reads for every request.
fn parse_and_frame(buf: &[u8], limits: &Limits) -> usize {
    match parse_request(buf, limits) {
        Ok(Status::Complete(head)) => {
            black_box(head.body());
            black_box(head.keep_alive());
            black_box(head.host());
            black_box(head.path());
            head.head_len()
        }
        other => panic!("bench input does not parse: {other:?}"),
    }
}

/// httparse alone on the same input, called as `parse_request` calls it:
/// the floor under `parse_and_frame`, which tells our overhead apart.
fn httparse_only(buf: &[u8]) -> usize {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("bench input does not parse: {other:?}"),
    }
}

fn request_heads(c: &mut Criterion) {
    let limits = Limits::default();
    let fifty = fifty_header_get();
    let mut group = c.benchmark_group("request_head");
    for (name, input) in [("browser_get_12", BROWSER_GET), ("fields_50", &fifty[..])] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| parse_and_frame(black_box(input), &limits))
        });
        group.bench_function(format!("{name}/httparse_only"), |b| {
            b.iter(|| httparse_only(black_box(input)))
        });
    }
    group.finish();
}

fn response_head(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("response_head");
    group.throughput(Throughput::Bytes(RESPONSE_200.len() as u64));
    group.bench_function("ok_200_8", |b| {
        b.iter(
            || match parse_response(black_box(RESPONSE_200), &limits, false) {
                Ok(Status::Complete(head)) => {
                    black_box(head.body());
                    black_box(head.keep_alive());
                    head.head_len()
                }
                other => panic!("bench input does not parse: {other:?}"),
            },
        )
    });
    group.finish();
}

/// 1 MiB of data in 4 KiB chunks, then the last chunk.
fn chunked_body() -> Vec<u8> {
    let chunk = vec![b'x'; 4096];
    let mut body = Vec::new();
    for _ in 0..256 {
        write_chunk(&chunk, &mut body);
    }
    body.extend_from_slice(LAST_CHUNK);
    body
}

fn chunked(c: &mut Criterion) {
    let body = chunked_body();
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("decode_1mib_4kib_chunks", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::new();
            let mut input = black_box(&body[..]);
            let mut data = 0;
            while !decoder.is_done() {
                let step = decoder.decode(input).expect("valid body");
                data += step.data.len();
                input = &input[step.consumed..];
            }
            data
        })
    });
    group.finish();
}

fn forward(c: &mut Criterion) {
    let limits = Limits::default();
    let Ok(Status::Complete(head)) = parse_request(BROWSER_GET, &limits) else {
        panic!("bench input does not parse");
    };
    let ctx = ForwardContext {
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        keep_client_xff: true,
        proto: "https",
        host_fallback: None,
        request_id: None,
    };
    let mut out = Vec::with_capacity(1024);
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    group.bench_function("write_request_head_browser_get", |b| {
        b.iter(|| {
            out.clear();
            write_request_head(black_box(&head), &ctx, &mut out);
            out.len()
        })
    });
    group.finish();
}

/// A `100 Continue` ahead of the final head, as one read brings them.
const CONTINUE_THEN_200: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The proxy's work on a response head, from the bytes in the upstream
/// buffer to the head for the client in `out` (request id echoed): parsed
/// once into a `ResponseInfo` when read, planned, then written from the
/// same bytes.
fn head_to_client(buf: &[u8], limits: &Limits, out: &mut Vec<u8>) -> usize {
    let Ok(Status::Complete(head)) = parse_response(buf, limits, false) else {
        panic!("bench input does not parse");
    };
    let info = black_box(head.info());
    let client = ClientSide {
        version: Version::Http11,
        keep_alive: true,
        upgrade: false,
        request_complete: true,
    };
    let plan = plan_response(&info, client).expect("bench input plans");
    let ctx = ResponseContext {
        framing: plan.out,
        keep_alive: plan.keep_alive,
        client_version: Version::Http11,
        request_id: Some("0123456789abcdef01234567"),
        set_cookie: None,
        content_coding: None,
        vary: None,
    };
    out.clear();
    write_response_head(&info.head(buf), &ctx, out);
    info.head_len
}

fn response_path(c: &mut Criterion) {
    let limits = Limits::default();
    let mut out = Vec::with_capacity(1024);
    let mut with_100 = CONTINUE_THEN_200.to_vec();
    with_100.extend_from_slice(RESPONSE_200);
    let mut group = c.benchmark_group("response_path");
    group.throughput(Throughput::Bytes(RESPONSE_200.len() as u64));
    group.bench_function("head_to_client_200", |b| {
        b.iter(|| head_to_client(black_box(RESPONSE_200), &limits, &mut out))
    });
    group.throughput(Throughput::Bytes(with_100.len() as u64));
    group.bench_function("head_to_client_100_then_200", |b| {
        b.iter(|| {
            let buf = black_box(&with_100[..]);
            let n = head_to_client(buf, &limits, &mut out);
            head_to_client(&buf[n..], &limits, &mut out)
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    request_heads,
    response_head,
    response_path,
    chunked,
    forward
);
criterion_main!(benches);
