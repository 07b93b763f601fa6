//! Criterion benchmarks of response compression: the CPU one compressed
//! response costs the worker thread.
//!
//! `compress_64k_json/CODING`: a 64 KiB JSON response compressed whole, as
//! the relay does it (`CompressedBody` over a Content-Length body, fed in
//! 16 KiB reads, output framed as chunks), at each coding's default level
//! (`Level::default_for`). Target (printed, never asserted): under 1 ms
//! per response for every default, so a worker compressing still serves
//! about a thousand such responses a second. Throughput is in input bytes.
//!
//! `encoder_levels/CODING/LEVEL`: the bare encoder at a few levels around
//! the default, to see where a level stops paying.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringlb::gateway::compress::{CompressedBody, Encoder, Level};
use ringlb::http::{Coding, ResponseBody};

/// About 64 KiB of API-like JSON: records with ids, names, numbers and
/// repeated keys, as a list endpoint returns.
fn json_64k() -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0u64;
    while s.len() < 64 * 1024 - 200 {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"user-{:x}\",\"email\":\"user{i}@example.com\",\"score\":{},\"active\":{},\"tags\":[\"t{}\",\"t{}\"]}},",
            i.wrapping_mul(0x9e37_79b9),
            (i * 7919) % 1000,
            i % 3 == 0,
            i % 17,
            i % 5
        ));
        i += 1;
    }
    s.push_str("{}]");
    s.into_bytes()
}

/// The relay's read size (`server.buffer_size` default).
const READ: usize = 16 * 1024;

fn compress_response(c: &mut Criterion) {
    let body = json_64k();
    let mut group = c.benchmark_group("compress_64k_json");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for coding in Coding::ALL {
        let level = Level::default_for(coding);
        let mut size = 0;
        group.bench_function(format!("{}/{level}", coding.token()), |b| {
            let (mut buf, mut out) = (Vec::with_capacity(READ), Vec::with_capacity(32 * 1024));
            b.iter(|| {
                let encoder = Encoder::new(coding, level).expect("encoder");
                let mut relay =
                    CompressedBody::new(ResponseBody::Length(body.len() as u64), encoder, true);
                out.clear();
                for read in body.chunks(READ) {
                    buf.extend_from_slice(read);
                    relay.step(&mut buf, &mut out).expect("step");
                }
                assert!(relay.is_done());
                size = out.len();
                black_box(&out);
            });
        });
        println!(
            "compress_64k_json/{}/{level}: {} -> {size} bytes ({:.1}%)",
            coding.token(),
            body.len(),
            size as f64 * 100.0 / body.len() as f64
        );
    }
    group.finish();
}

fn encoder_levels(c: &mut Criterion) {
    let body = json_64k();
    let mut group = c.benchmark_group("encoder_levels");
    group.throughput(Throughput::Bytes(body.len() as u64));
    let levels: [(Coding, &[u32]); 3] = [
        (Coding::Gzip, &[1, 5, 6, 9]),
        (Coding::Br, &[1, 4, 5, 6]),
        (Coding::Zstd, &[1, 3, 6]),
    ];
    for (coding, list) in levels {
        for &level in list {
            group.bench_function(format!("{}/{level}", coding.token()), |b| {
                let mut out = Vec::with_capacity(64 * 1024);
                b.iter(|| {
                    out.clear();
                    let mut e = Encoder::new(coding, level).expect("encoder");
                    e.write(&body, &mut out).expect("write");
                    e.finish(&mut out).expect("finish");
                    black_box(&out);
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compress_response, encoder_levels);
criterion_main!(benches);
