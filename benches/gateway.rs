//! Criterion benchmarks of the gateway work per request (issue 12): route
//! matching in a table of 1,000 routes with mixed prefixes, hosts and
//! regexes, and the typical set of changes a gateway route applies (a path
//! rewrite, three header edits, CORS) on top of writing the forwarded head.
//!
//! Printed, never asserted: the lead times these on a quiet machine.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use ringlb::config::Config;
use ringlb::gateway::rewrite::splice_head;
use ringlb::gateway::shared::Shared;
use ringlb::http::{
    parse_request, write_request_head, ForwardContext, Limits, RequestHead, Status,
};
use ringlb::proxy::filter::{Filter, RequestCtx};
use ringlb::route::RouteTable;

const ROUTES: usize = 1000;

/// 1,000 routes: a quarter with an exact host, a quarter with a wildcard
/// host, a tenth with a `path_regex`, a tenth with `methods`, the rest
/// plain; prefixes of 1 to 3 segments. Route 0 is the gateway route the
/// `apply` benchmark uses.
fn config() -> Config {
    let mut src = String::from("[server]\nlisten = [\"127.0.0.1:1\"]\n");
    src.push_str(
        "[[routes]]\npath_prefix = \"/gw/\"\nhost = \"api.example.com\"\nupstream = \"u0\"\n\
         strip_prefix = \"/gw\"\nadd_prefix = \"/v2\"\n\
         request_headers = { set = { X-Real-IP = \"$client_ip\", X-Route = \"$route\" }, remove = [\"Cookie\"] }\n\
         cors = { allow_origins = [\"https://app.example.com\", \"*.example.org\"], allow_methods = [\"GET\", \"POST\"], max_age = 600 }\n",
    );
    for i in 1..ROUTES {
        let prefix = match i % 3 {
            0 => format!("/s{i}/"),
            1 => format!("/a{}/b{i}/", i % 17),
            _ => format!("/a{}/b{}/c{i}", i % 17, i % 5),
        };
        src.push_str(&format!(
            "[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"u{}\"\n",
            i % 10
        ));
        match i % 4 {
            0 => src.push_str(&format!("host = \"h{}.example.com\"\n", i % 50)),
            1 => src.push_str(&format!("host = \"*.z{}.example.net\"\n", i % 20)),
            _ => {}
        }
        if i % 10 == 3 {
            src.push_str(&format!("path_regex = \"^{prefix}[0-9]+/(edit|view)$\"\n"));
        } else if i % 10 == 7 {
            src.push_str("methods = [\"POST\", \"PUT\"]\n");
        }
    }
    for u in 0..10 {
        src.push_str(&format!(
            "[upstreams.u{u}]\nbackends = [{{ addr = \"10.0.0.{}:80\" }}]\n",
            u + 1
        ));
    }
    Config::from_toml_str(&src, Path::new("bench.toml")).expect("bench config")
}

fn head(raw: &[u8]) -> RequestHead<'_> {
    match parse_request(raw, &Limits::default()) {
        Ok(Status::Complete(head)) => head,
        other => panic!("{other:?}"),
    }
}

const DEEP: &[u8] =
    b"GET /a9/b1/c26/x?y=1 HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\r\n";
const REGEX: &[u8] = b"GET /s3/42/edit HTTP/1.1\r\nHost: q.example.com\r\n\r\n";
const WILDCARD: &[u8] = b"GET /s9/x HTTP/1.1\r\nHost: a.z9.example.net\r\n\r\n";
const MISS: &[u8] = b"GET /nothing/here HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
const GATEWAY: &[u8] = b"GET /gw/users/42?full=1 HTTP/1.1\r\nHost: api.example.com\r\n\
Origin: https://app.example.com\r\nCookie: s=1\r\nAccept: application/json\r\n\
User-Agent: bench/1.0\r\n\r\n";

fn route_match(c: &mut Criterion) {
    let config = config();
    let table = RouteTable::from_config(&config);
    let mut group = c.benchmark_group("route_1000");
    for (name, raw, want) in [
        ("deep_prefix", DEEP, Some(26)),
        ("path_regex", REGEX, Some(3)),
        ("wildcard_host", WILDCARD, Some(9)),
        ("no_match", MISS, None),
        ("gateway_route", GATEWAY, Some(0)),
    ] {
        let head = head(raw);
        assert_eq!(table.route_request(&head).map(|r| r.index), want, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(table.route_request(black_box(&head)).map(|r| r.index)))
        });
    }
    group.finish();
}

/// What the session does for the gateway route after matching: the
/// filters (CORS here), the path rewrite, writing the forwarded head,
/// splicing the target, and the header edits.
fn apply(c: &mut Criterion) {
    let config = config();
    let table = RouteTable::from_config(&config);
    let shared = Shared::new();
    let head = head(GATEWAY);
    let route = table.route_request(&head).expect("gateway route");
    assert_eq!(route.index, 0);
    let client_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let mut fwd = Vec::with_capacity(1024);
    c.bench_function("gateway_apply/rewrite_3_headers_cors", |b| {
        b.iter(|| {
            let mut ctx = RequestCtx::new(&head, route.upstream, "rid", client_ip, &shared);
            for f in route.edge_filters() {
                f.on_request(&mut ctx).expect("passes");
            }
            let rewrite = route.rewrite.as_deref().expect("rewrite");
            rewrite.on_request(&mut ctx).expect("rewrites");
            let fctx = ForwardContext {
                client_ip,
                keep_client_xff: false,
                proto: "http",
                host_fallback: None,
                request_id: None,
            };
            fwd.clear();
            write_request_head(&head, &fctx, &mut fwd);
            splice_head(&mut fwd, ctx.target.as_deref(), None);
            let edits = route.request_headers.as_deref().expect("edits");
            edits.apply(&mut fwd, &|name, out| match name {
                "client_ip" => out.extend_from_slice(b"203.0.113.7"),
                _ => out.extend_from_slice(b"0"),
            });
            black_box((fwd.len(), ctx.response_fields.lines.len()))
        })
    });
}

criterion_group!(benches, route_match, apply);
criterion_main!(benches);
