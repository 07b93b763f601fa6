//! The filter plumbing, without sockets.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::http::{parse_request, parse_response, Limits, RequestHead, ResponseInfo, Status};

fn request(raw: &str) -> RequestHead<'_> {
    match parse_request(raw.as_bytes(), &Limits::default()) {
        Ok(Status::Complete(head)) => head,
        other => panic!("{raw:?}: {other:?}"),
    }
}

fn response(raw: &str) -> ResponseInfo {
    match parse_response(raw.as_bytes(), &Limits::default(), false) {
        Ok(Status::Complete(head)) => head.info(),
        other => panic!("{raw:?}: {other:?}"),
    }
}

fn request_ctx<'r, 'b>(head: &'r RequestHead<'b>, id: &'r str) -> RequestCtx<'r, 'b> {
    // Leaked: a few tables per test run, and contexts borrow them.
    let shared: &'static Shared = Box::leak(Box::new(Shared::new()));
    RequestCtx::new(head, Some(0), id, "192.0.2.1".parse().unwrap(), shared)
}

fn response_ctx<'r>(info: &'r ResponseInfo, id: &'r str) -> ResponseCtx<'r> {
    ResponseCtx {
        info,
        request_id: id,
        echo_request_id: None,
        set_cookie: None,
    }
}

#[test]
fn request_id_is_forwarded_only_when_generated() {
    let filters = Filters::standard();
    let head = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut ctx = request_ctx(&head, "gen-1");
    filters.on_request(&mut ctx).unwrap();
    assert_eq!(ctx.forward_request_id, Some("gen-1"));

    let head = request("GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: theirs\r\n\r\n");
    let mut ctx = request_ctx(&head, "theirs");
    filters.on_request(&mut ctx).unwrap();
    assert_eq!(ctx.forward_request_id, None);
}

#[test]
fn request_id_is_echoed_unless_the_backend_set_one() {
    let filters = Filters::standard();
    let info = response("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let mut ctx = response_ctx(&info, "id-1");
    filters.on_response(&mut ctx).unwrap();
    assert_eq!(ctx.echo_request_id, Some("id-1"));

    let info = response("HTTP/1.1 200 OK\r\nX-Request-Id: b\r\nContent-Length: 0\r\n\r\n");
    let mut ctx = response_ctx(&info, "id-1");
    filters.on_response(&mut ctx).unwrap();
    assert_eq!(ctx.echo_request_id, None);
}

/// Records which stage ran, and refuses when told to.
struct Probe {
    name: &'static str,
    seen: Rc<RefCell<Vec<String>>>,
    refuse: Option<LocalReply>,
}

impl Filter for Probe {
    fn on_request(&self, req: &mut RequestCtx<'_, '_>) -> Result<(), LocalReply> {
        self.seen
            .borrow_mut()
            .push(format!("{} request {}", self.name, req.head.path()));
        self.refuse.map_or(Ok(()), Err)
    }

    fn on_response(&self, resp: &mut ResponseCtx<'_>) -> Result<(), LocalReply> {
        self.seen
            .borrow_mut()
            .push(format!("{} response {}", self.name, resp.info.status));
        resp.set_cookie = Some("probe=1");
        self.refuse.map_or(Ok(()), Err)
    }
}

#[test]
fn chain_runs_in_order_and_stops_at_a_refusal() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let probe = |name, refuse| -> Box<dyn Filter> {
        Box::new(Probe {
            name,
            seen: seen.clone(),
            refuse,
        })
    };
    let filters = Filters::new(vec![
        probe("a", None),
        probe("b", Some(LocalReply::PayloadTooLarge)),
        probe("c", None),
    ]);
    let head = request("POST /up HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        filters.on_request(&mut request_ctx(&head, "x")),
        Err(LocalReply::PayloadTooLarge)
    );
    let info = response("HTTP/1.1 204 No Content\r\n\r\n");
    let mut ctx = response_ctx(&info, "x");
    assert_eq!(
        filters.on_response(&mut ctx),
        Err(LocalReply::PayloadTooLarge)
    );
    assert_eq!(ctx.set_cookie, Some("probe=1"));
    assert_eq!(
        *seen.borrow(),
        [
            "a request /up",
            "b request /up",
            "a response 204",
            "b response 204"
        ]
    );
}

#[test]
fn a_filter_without_hooks_passes_everything() {
    struct Nothing;
    impl Filter for Nothing {}
    let filters = Filters::new(vec![Box::new(Nothing)]);
    let head = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut ctx = request_ctx(&head, "id");
    assert_eq!(filters.on_request(&mut ctx), Ok(()));
    assert_eq!(ctx.forward_request_id, None);
}

/// The route's edge filters through the context, as the session runs them.
mod edge {
    use super::*;
    use crate::gateway::access::AccessRules;
    use crate::gateway::cidr::{Cidr, CidrList};
    use crate::gateway::cors::{Cors, OriginPattern};
    use crate::gateway::rate_limit::{RateKey, RateLimit};

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn access_rules_judge_the_client_address() {
        let rules = AccessRules {
            allow: CidrList(vec![Cidr::parse("192.0.2.0/24").unwrap()]),
            deny: CidrList(vec![Cidr::parse("192.0.2.66").unwrap()]),
        };
        let head = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut ctx = request_ctx(&head, "x");
        assert_eq!(rules.on_request(&mut ctx), Ok(()));
        ctx.client_ip = "192.0.2.66".parse().unwrap();
        assert_eq!(
            rules.on_request(&mut ctx),
            Err(LocalReply::Forbidden(crate::gateway::access::DENIED))
        );
        ctx.client_ip = "2001:db8::1".parse().unwrap();
        assert!(rules.on_request(&mut ctx).is_err());
    }

    #[test]
    fn rate_limit_refuses_with_retry_after_and_counts_the_route() {
        let limit = RateLimit {
            interval: 10 * SEC,
            burst: 2,
            key: RateKey::Header("x-api-key".into()),
            identity: "r".into(),
        };
        let a = request("GET / HTTP/1.1\r\nHost: a\r\nX-API-Key: k1\r\n\r\n");
        let b = request("GET / HTTP/1.1\r\nHost: a\r\nx-api-key: k2\r\n\r\n");
        let none = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut ctx = request_ctx(&a, "x");
        let shared = ctx.shared;
        ctx.route = 7;
        ctx.now = 100 * SEC;
        assert_eq!(limit.on_request(&mut ctx), Ok(()));
        assert_eq!(limit.on_request(&mut ctx), Ok(()));
        assert_eq!(
            limit.on_request(&mut ctx),
            Err(LocalReply::TooManyRequests(
                crate::gateway::rate_limit::LIMITED
            ))
        );
        assert_eq!(ctx.reply_fields, b"Retry-After: 10\r\n");
        assert_eq!(shared.rate_limited(), vec![(7, 1)]);
        // Another key has its own budget; no key falls back to the address.
        let mut ctx = RequestCtx::new(&b, Some(0), "x", "192.0.2.1".parse().unwrap(), shared);
        ctx.now = 100 * SEC;
        assert_eq!(limit.on_request(&mut ctx), Ok(()));
        let mut ctx = RequestCtx::new(&none, Some(0), "x", "192.0.2.1".parse().unwrap(), shared);
        ctx.now = 100 * SEC;
        assert_eq!(limit.on_request(&mut ctx), Ok(()));
        assert_eq!(limit.on_request(&mut ctx), Ok(()));
        assert!(limit.on_request(&mut ctx).is_err());
        // Half an interval later nothing more passes for k1; a whole one
        // later, one does.
        let mut ctx = RequestCtx::new(&a, Some(0), "x", "192.0.2.1".parse().unwrap(), shared);
        ctx.now = 105 * SEC;
        assert!(limit.on_request(&mut ctx).is_err());
        ctx.now = 110 * SEC;
        assert_eq!(limit.on_request(&mut ctx), Ok(()));
        assert!(limit.on_request(&mut ctx).is_err());
    }

    #[test]
    fn cors_answers_preflights_and_marks_actual_requests() {
        let cors = Cors {
            allow_origins: vec![OriginPattern::parse("*.example.com").unwrap()],
            allow_methods: "GET, PUT".into(),
            ..Cors::default()
        };
        let preflight = request(
            "OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.com\r\n\
             Access-Control-Request-Method: PUT\r\n\r\n",
        );
        let mut ctx = request_ctx(&preflight, "x");
        assert_eq!(
            cors.on_request(&mut ctx),
            Err(LocalReply::NoContent(crate::gateway::cors::PREFLIGHT))
        );
        let fields = String::from_utf8(ctx.response_fields.lines.clone()).unwrap();
        assert!(
            fields.contains("Access-Control-Allow-Methods: GET, PUT\r\n"),
            "{fields}"
        );
        // An OPTIONS without Access-Control-Request-Method is forwarded.
        let plain =
            request("OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.com\r\n\r\n");
        let mut ctx = request_ctx(&plain, "x");
        assert_eq!(cors.on_request(&mut ctx), Ok(()));
        let fields = String::from_utf8(ctx.response_fields.lines.clone()).unwrap();
        assert_eq!(
            fields,
            "Vary: Origin\r\nAccess-Control-Allow-Origin: https://app.example.com\r\n"
        );
        let other = request("GET /x HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.org\r\n\r\n");
        let mut ctx = request_ctx(&other, "x");
        assert_eq!(cors.on_request(&mut ctx), Ok(()));
        assert_eq!(ctx.response_fields.lines, b"Vary: Origin\r\n");
    }
}

#[test]
fn added_fields_replace_the_backends_and_go_last() {
    let fields = AddedFields {
        lines: b"Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n".to_vec(),
        replaces: Some("access-control-"),
    };
    let mut head =
        b"HTTP/1.1 200 OK\r\naccess-control-allow-origin: *\r\nVary: Accept-Encoding\r\n\
ACCESS-CONTROL-MAX-AGE: 5\r\nContent-Length: 0\r\n\r\n"
            .to_vec();
    fields.apply_to_head(&mut head);
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "HTTP/1.1 200 OK\r\nVary: Accept-Encoding\r\nContent-Length: 0\r\n\
         Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n\r\n"
    );
    let only_lines = AddedFields {
        lines: b"X-A: 1\r\n".to_vec(),
        replaces: None,
    };
    let mut head = b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\n\r\n".to_vec();
    only_lines.apply_to_head(&mut head);
    assert_eq!(
        head,
        b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\nX-A: 1\r\n\r\n"
    );
}
