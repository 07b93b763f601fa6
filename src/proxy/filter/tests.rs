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
    RequestCtx {
        head,
        upstream: Some(0),
        request_id: id,
        forward_request_id: None,
        target: None,
        scheme: "http",
        location: None,
    }
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
