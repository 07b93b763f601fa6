//! The cache stage of the pipeline (issue 13): between the request
//! filters and choosing a backend, a route with `cache` looks the request
//! up in its zone; a hit is answered here, a miss goes on to the exchange
//! with a [`CacheFill`] that the relay uses to store the response.
//!
//! Why here and thin: the rules (what is stored, for how long, what may
//! be served stale, 304s) are `crate::cache`'s pure functions; this file
//! only moves an entry to the client, or a response into the zone.
//!
//! Invariants:
//! - Only GET and HEAD without a body are looked up; HEAD is answered from
//!   the GET entry, and a HEAD miss is forwarded and not stored.
//! - A response is stored only when `cache::decide_store` allows it and
//!   its whole body, as the client got it, fits the zone's `max_object`;
//!   anything else passes through untouched (and a miss that led wakes
//!   the requests waiting for it, which then fetch for themselves).
//! - A stale entry is served only inside the bounds `cache::usable` gives:
//!   while one request revalidates it (`stale-while-revalidate`), or when
//!   the backend fails, answers 500/502/503/504, or none is available
//!   (`stale-if-error`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::cache::key::{primary_key, KeyParts};
use crate::cache::policy::{self, CacheMethod, ResponseFacts, Use};
use crate::cache::{Found, Leader, Object, RequestFacts, Zone, Zones};
use crate::config::RouteCache;
use crate::http::chunked::ChunkedDecoder;
use crate::http::stored::{stored_fields, write_stored_head, StoredReply};
use crate::http::{BodyKind, LocalReply, RequestHead, ResponseHead, ResponseInfo};

use super::client::{Client, LogLine, Next, RequestInfo};
use super::relay::reply_and_close;
use super::worker::Env;

/// Largest stored body written with its head in one send (a copy into
/// the head buffer costs less than a second op).
const INLINE_BODY: usize = 16 * 1024;

/// What the cache needs of a request, taken while its head is parsed.
pub(super) struct CacheRequest {
    zone: Arc<Zone>,
    route: Arc<RouteCache>,
    primary: Vec<u8>,
    facts: RequestFacts,
    /// The request's field lines (for `Vary`).
    fields: Vec<u8>,
    /// The client sent its own `If-None-Match`/`If-Modified-Since`.
    conditional: bool,
}

/// A request of a caching route, as it goes to the backend.
pub(super) struct CacheFill {
    req: CacheRequest,
    /// This request fetches the key for others too.
    leader: Option<Leader>,
    /// The stale entry being revalidated, to serve on a 304 or a failure.
    stale: Option<Arc<Object>>,
    /// `X-Cache-Status` of a response relayed from the backend.
    label: &'static str,
}

/// Reads what the cache needs from a request head; `None` when the route
/// does not cache it (method, body, or a key too long).
pub(super) fn plan(
    route: &Arc<RouteCache>,
    zones: &Zones,
    head: &RequestHead<'_>,
    scheme: &str,
    rewritten: Option<&str>,
) -> Option<Box<CacheRequest>> {
    let zone = zones.get(route.zone)?;
    let facts = RequestFacts::read(head.method(), head.headers());
    if facts.method == CacheMethod::Other || !matches!(head.body(), BodyKind::Empty) {
        return None;
    }
    let target = rewritten.unwrap_or_else(|| origin_form(head.target()));
    let parts = KeyParts {
        // HEAD shares GET's entry.
        method: CacheMethod::Get,
        scheme,
        host: head.host().unwrap_or(""),
        target,
    };
    let primary = primary_key(&parts, head.headers(), &route.key)?;
    let mut fields = Vec::new();
    for (name, value) in head.headers() {
        fields.extend_from_slice(name.as_bytes());
        fields.push(b':');
        fields.extend_from_slice(value);
        fields.extend_from_slice(b"\r\n");
    }
    let conditional = facts.if_none_match.is_some() || facts.if_modified_since.is_some();
    Some(Box::new(CacheRequest {
        zone: zone.clone(),
        route: route.clone(),
        primary,
        facts,
        fields,
        conditional,
    }))
}

/// `PURGE` on a caching route: from a peer in `trusted_proxies`, removes
/// the entry of the request's URL (its variants and key extras too) and
/// answers 204; from anyone else, 403. `None` for any other method.
pub(super) fn purge_request(
    route: &RouteCache,
    zones: &Zones,
    head: &RequestHead<'_>,
    scheme: &str,
    rewritten: Option<&str>,
    trusted_peer: bool,
) -> Option<LocalReply> {
    if head.method() != "PURGE" {
        return None;
    }
    if !trusted_peer {
        return Some(LocalReply::Forbidden(
            "PURGE is allowed from trusted_proxies only",
        ));
    }
    let zone = zones.get(route.zone)?;
    let parts = KeyParts {
        method: CacheMethod::Get,
        scheme,
        host: head.host().unwrap_or(""),
        target: rewritten.unwrap_or_else(|| origin_form(head.target())),
    };
    let Some(key) = primary_key(&parts, std::iter::empty(), &Default::default()) else {
        return Some(LocalReply::BadRequest("target too long for a cache key"));
    };
    let url = String::from_utf8_lossy(&key[4..]).into_owned();
    let removed = zone.purge(&crate::cache::Purge::Url(url));
    tracing::info!(zone = %zone.name, removed, "cache purged by a PURGE request");
    Some(LocalReply::NoContent("purged"))
}

/// The path and query of a target in origin or absolute form.
fn origin_form(target: &str) -> &str {
    match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => target,
    }
}

/// `(name, value)` of each line of `fields` (lines the parser accepted).
fn field_pairs(fields: &[u8]) -> impl Iterator<Item = (&str, &[u8])> + Clone {
    fields.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        Some((name, line[colon + 1..].trim_ascii()))
    })
}

/// What the cache stage decided.
pub(super) enum Lookup {
    /// Answered from the cache.
    Served(Next),
    /// Go to the backend with this state in `client.cache`.
    Fetch,
}

/// The cache stage: answer from the zone, or prepare the fetch.
pub(super) async fn lookup(
    env: &Env<'_>,
    client: &mut Client,
    info: &RequestInfo,
    req: Box<CacheRequest>,
    fwd: &mut Vec<u8>,
) -> Lookup {
    let zone = req.zone.clone();
    let found = zone
        .lookup(
            &req.primary,
            field_pairs(&req.fields),
            req.route.lock_timeout,
        )
        .await;
    let (leader, stale, label) = match found {
        Found::Object(object) => {
            let age = object.age(SystemTime::now());
            match policy::usable(&object.life, age, &req.facts) {
                Use::Fresh => {
                    zone.stats.hits.fetch_add(1, Ordering::Relaxed);
                    let next = serve(env, client, info, &req, &object, "HIT").await;
                    return Lookup::Served(next);
                }
                Use::StaleWhileRevalidate => match zone.try_lead(&req.primary) {
                    // This request revalidates; the others get the stale
                    // entry meanwhile.
                    Some(leader) => (Some(leader), Some(object), "EXPIRED"),
                    None => {
                        zone.stats.hits.fetch_add(1, Ordering::Relaxed);
                        let next = serve(env, client, info, &req, &object, "STALE").await;
                        return Lookup::Served(next);
                    }
                },
                Use::Revalidate { .. } => match zone.try_lead(&req.primary) {
                    Some(leader) => (Some(leader), Some(object), "EXPIRED"),
                    // Another request revalidates it: wait for that (as a
                    // miss waits for a fetch), then use what it stored.
                    None => {
                        if zone
                            .wait_for_flight(&req.primary, req.route.lock_timeout)
                            .await
                        {
                            if let Some(fresh) = zone.peek(&req.primary, field_pairs(&req.fields)) {
                                let age = fresh.age(SystemTime::now());
                                if policy::usable(&fresh.life, age, &req.facts) == Use::Fresh {
                                    zone.stats.hits.fetch_add(1, Ordering::Relaxed);
                                    zone.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                                    let next = serve(env, client, info, &req, &fresh, "HIT").await;
                                    return Lookup::Served(next);
                                }
                            }
                        }
                        (None, Some(object), "EXPIRED")
                    }
                },
            }
        }
        Found::Lead(leader) => (Some(leader), None, "MISS"),
        Found::Pass => (None, None, "MISS"),
    };
    zone.stats.misses.fetch_add(1, Ordering::Relaxed);
    if let Some(object) = &stale {
        if !req.conditional {
            add_validators(fwd, object);
        }
    }
    client.cache = Some(Box::new(CacheFill {
        req: *req,
        leader,
        stale,
        label,
    }));
    Lookup::Fetch
}

/// Asks the backend whether `object` is still current (RFC 9111 §4.3.1).
fn add_validators(fwd: &mut Vec<u8>, object: &Object) {
    let mut extra = Vec::new();
    if let Some(etag) = &object.etag {
        extra.extend_from_slice(b"If-None-Match: ");
        extra.extend_from_slice(etag.as_bytes());
        extra.extend_from_slice(b"\r\n");
    }
    if let Some(modified) = object.last_modified {
        extra.extend_from_slice(b"If-Modified-Since: ");
        extra.extend_from_slice(httpdate::fmt_http_date(modified).as_bytes());
        extra.extend_from_slice(b"\r\n");
    }
    if extra.is_empty() {
        return;
    }
    // Before the empty line that ends the head (nothing of a body is in
    // `fwd` yet: cached requests have none).
    if let Some(end) = fwd.windows(4).position(|w| w == b"\r\n\r\n") {
        let at = end + 2;
        fwd.splice(at..at, extra);
    }
}

/// Writes `object` to the client (a 304 when the request's conditions
/// match it).
async fn serve(
    env: &Env<'_>,
    client: &mut Client,
    info: &RequestInfo,
    req: &CacheRequest,
    object: &Object,
    label: &'static str,
) -> Next {
    let now = SystemTime::now();
    let not_modified = req.conditional
        && policy::not_modified(&req.facts, object.etag.as_deref(), object.last_modified);
    let keep_alive = info.keep_alive && !client.winding_down(env.draining.get());
    let request_id = client.request_id.clone();
    let reply = StoredReply {
        status: object.status,
        fields: &object.head,
        body_len: object.body.len() as u64,
        age: object.age(now).as_secs(),
        cache_status: req.route.status_header.then_some(label),
        keep_alive,
        client_version: info.version,
        request_id: Some(request_id.as_str()).filter(|id| !id.is_empty()),
        not_modified,
    };
    client.out.clear();
    write_stored_head(&reply, &mut client.out);
    let head_len = client.out.len();
    client.mark_body_start(head_len);
    let with_body = !info.is_head && !not_modified && object.status != 204;
    let status = if not_modified { 304 } else { object.status };
    client.rec.status = status;
    client.rec.answered = true;
    client.rec.cache = Some(label);
    env.metrics.count_status(status);
    // A small body goes with the head in one send; a large one is sent
    // from the stored bytes, without a copy.
    let body = &object.body;
    let inline = with_body && body.len() <= INLINE_BODY;
    if inline {
        client.out.extend_from_slice(body);
    }
    if client.send_out(env.server.send_timeout).await.is_err() {
        return Next::Abort;
    }
    if with_body
        && !inline
        && client
            .send_bytes(body.clone(), env.server.send_timeout)
            .await
            .is_err()
    {
        return Next::Abort;
    }
    client.request_read = true;
    if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// What the relay does with a final response of a caching route.
pub(super) enum OnResponse {
    /// Not a caching request, or not storable: relay it as usual.
    Relay,
    /// Relay it and keep a copy ([`begin_capture`] once its head is
    /// written).
    Store,
    /// Answer with the stored entry instead (a 304 to our revalidation, or
    /// a failure within `stale-if-error`); the backend's response is
    /// dropped.
    ServeStored(Arc<Object>, &'static str),
}

/// Decides what happens to the final response `head` (parsed from `buf`).
pub(super) fn on_response(client: &mut Client, head: &ResponseInfo, buf: &[u8]) -> OnResponse {
    let Some(fill) = client.cache.as_mut() else {
        return OnResponse::Relay;
    };
    let now = SystemTime::now();
    let view = head.head(buf);
    if let Some(stale) = &fill.stale {
        if head.status == 304 && !fill.req.conditional {
            // Still current: refresh its freshness from the 304's fields
            // (RFC 9111 §4.3.4) and serve it.
            let refreshed = Arc::new(refresh(stale, &view, &fill.req, now));
            store_object(fill, refreshed.clone());
            return OnResponse::ServeStored(refreshed, "REVALIDATED");
        }
        if matches!(head.status, 500 | 502 | 503 | 504) {
            let age = stale.age(now);
            if let Use::Revalidate { on_error: true } =
                policy::usable(&stale.life, age, &fill.req.facts)
            {
                return OnResponse::ServeStored(stale.clone(), "STALE");
            }
        }
    }
    let facts = ResponseFacts::read(head.status, view.headers());
    match policy::decide_store(&fill.req.facts, &facts, &fill.req.route.rules, now) {
        Ok(_) if fill.req.facts.method == CacheMethod::Get => OnResponse::Store,
        // A HEAD miss is relayed, not stored.
        Ok(_) => OnResponse::Relay,
        Err(why) => {
            tracing::debug!(reason = why.as_str(), "response not stored");
            fill.label = "BYPASS";
            let leader = fill.leader.take();
            if leader.is_some() || fill.stale.is_some() {
                fill.req.zone.pass(leader, &fill.req.primary);
            }
            OnResponse::Relay
        }
    }
}

/// Starts the copy of a response whose head, as the client gets it, is in
/// `client.out`; `sticky_cookie` is the balancer's `Set-Cookie` value for
/// this client, which is not stored.
pub(super) fn begin_capture(
    client: &mut Client,
    sticky_cookie: Option<&str>,
) -> Option<Box<BodyCapture>> {
    let now = SystemTime::now();
    let limits = crate::http::Limits {
        max_head_bytes: client.out.len() + 1,
        max_headers: crate::http::MAX_HEADERS_CAP,
    };
    let fill = client.cache.as_mut()?;
    let parsed = match crate::http::parse_response(&client.out, &limits, false) {
        Ok(crate::http::Status::Complete(head)) => head,
        _ => return None,
    };
    let status = parsed.status();
    // What went out chunked is stored de-chunked.
    let chunked = (parsed.body() == crate::http::ResponseBody::Chunked).then(ChunkedDecoder::new);
    let mut head = Vec::with_capacity(parsed.head_len());
    for (name, value) in field_pairs(&stored_fields(&parsed)) {
        let ours = name.eq_ignore_ascii_case("x-cache-status")
            || (name.eq_ignore_ascii_case("set-cookie")
                && sticky_cookie.is_some_and(|c| c.as_bytes() == value));
        if !ours {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
    }
    let facts = ResponseFacts::read(status, field_pairs(&head));
    let life = match policy::decide_store(&fill.req.facts, &facts, &fill.req.route.rules, now) {
        Ok(life) => life,
        Err(why) => {
            tracing::debug!(reason = why.as_str(), "response not stored");
            let leader = fill.leader.take();
            fill.req.zone.pass(leader, &fill.req.primary);
            return None;
        }
    };
    Some(Box::new(BodyCapture {
        head,
        status,
        chunked,
        body: Vec::new(),
        limit: fill.req.zone.max_object(),
        over: false,
        stored_at: now,
        life,
        etag: facts.etag.map(String::into_boxed_str),
        last_modified: facts.last_modified,
        vary: facts.vary,
    }))
}

/// `stale` with freshness recomputed from a 304's `Cache-Control`,
/// `Expires` and `Date` (its own fields where the 304 has none).
fn refresh(stale: &Object, view: &ResponseHead<'_>, req: &CacheRequest, now: SystemTime) -> Object {
    // The 304's end-to-end fields replace the stored ones of the same
    // name (§4.3.4); its framing fields describe nothing here.
    let update_lines = stored_fields(view);
    let updates: Vec<(&str, &[u8])> = field_pairs(&update_lines).collect();
    let updated = |name: &str| updates.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut fields: Vec<(&str, &[u8])> = field_pairs(&stale.head)
        .filter(|(n, _)| !updated(n))
        .collect();
    fields.extend(updates.iter().copied());
    let facts = ResponseFacts::read(stale.status, fields.iter().copied());
    let life =
        policy::decide_store(&req.facts, &facts, &req.route.rules, now).unwrap_or(stale.life);
    let mut head = Vec::with_capacity(stale.head.len() + update_lines.len());
    for (name, value) in &fields {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    Object {
        status: stale.status,
        head: Bytes::from(head),
        body: stale.body.clone(),
        stored_at: now,
        life,
        etag: stale.etag.clone(),
        last_modified: stale.last_modified,
        vary: stale.vary.clone(),
    }
}

fn store_object(fill: &mut CacheFill, object: Arc<Object>) {
    let leader = fill.leader.take();
    fill.req.zone.fill(
        leader,
        &fill.req.primary,
        field_pairs(&fill.req.fields),
        object,
    );
}

/// The label of a response relayed from the backend, if the route shows
/// it.
pub(super) fn label(client: &Client) -> Option<&'static str> {
    let fill = client.cache.as_ref()?;
    fill.req.route.status_header.then_some(fill.label)
}

/// A copy of a response body as the client gets it, for the zone.
pub(super) struct BodyCapture {
    head: Vec<u8>,
    status: u16,
    /// Decodes what went out when it went out chunked.
    chunked: Option<ChunkedDecoder>,
    body: Vec<u8>,
    limit: u64,
    over: bool,
    stored_at: SystemTime,
    life: crate::cache::Lifetime,
    etag: Option<Box<str>>,
    last_modified: Option<SystemTime>,
    vary: Option<String>,
}

impl BodyCapture {
    /// Bytes that went to the client after the head.
    pub(super) fn feed(&mut self, sent: &[u8]) {
        if self.over {
            return;
        }
        match &mut self.chunked {
            None => self.body.extend_from_slice(sent),
            Some(decoder) => {
                let mut at = 0;
                while at < sent.len() && !decoder.is_done() {
                    match decoder.decode(&sent[at..]) {
                        Ok(d) if d.consumed > 0 => {
                            self.body.extend_from_slice(d.data);
                            at += d.consumed;
                        }
                        _ => {
                            self.over = true;
                            return;
                        }
                    }
                }
            }
        }
        if (self.head.len() + self.body.len()) as u64 > self.limit {
            // Too big for the zone: stop copying; it passes through.
            self.over = true;
            self.body = Vec::new();
        }
    }
}

/// Stores the captured response once its body went out whole.
pub(super) fn finish_capture(client: &mut Client, capture: Box<BodyCapture>, complete: bool) {
    let Some(fill) = client.cache.as_mut() else {
        return;
    };
    let leader = fill.leader.take();
    let zone = fill.req.zone.clone();
    if !complete || capture.over {
        zone.pass(leader, &fill.req.primary);
        return;
    }
    let c = *capture;
    let object = Object {
        status: c.status,
        head: Bytes::from(c.head),
        body: Bytes::from(c.body),
        stored_at: c.stored_at,
        life: c.life,
        etag: c.etag,
        last_modified: c.last_modified,
        vary: c.vary.map(String::into_boxed_str),
    };
    zone.fill(
        leader,
        &fill.req.primary,
        field_pairs(&fill.req.fields),
        Arc::new(object),
    );
}

/// The exchange could not get an answer from the backend: serve the
/// stale entry when `stale-if-error` allows, else `reply`.
pub(super) async fn upstream_failed(
    env: &Env<'_>,
    client: &mut Client,
    info: &RequestInfo,
    log: &LogLine,
    reply: LocalReply,
) -> Next {
    let stale = client.cache.as_ref().and_then(|fill| {
        let stale = fill.stale.as_ref()?;
        let age = stale.age(SystemTime::now());
        matches!(
            policy::usable(&stale.life, age, &fill.req.facts),
            Use::Revalidate { on_error: true } | Use::Fresh | Use::StaleWhileRevalidate
        )
        .then(|| stale.clone())
    });
    match stale {
        Some(object) => {
            tracing::info!(
                reason = reply.reason(),
                "backend failed; serving the stale entry"
            );
            serve_fill(env, client, info, &object, "STALE").await
        }
        None => reply_and_close(env, client, log, reply).await,
    }
}

/// Serves `object` for the request in `client.cache`.
pub(super) async fn serve_fill(
    env: &Env<'_>,
    client: &mut Client,
    info: &RequestInfo,
    object: &Object,
    label: &'static str,
) -> Next {
    let Some(fill) = client.cache.take() else {
        return Next::Abort;
    };
    if label == "STALE" {
        fill.req.zone.stats.hits.fetch_add(1, Ordering::Relaxed);
    }
    let next = serve(env, client, info, &fill.req, object, label).await;
    client.cache = Some(fill);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_of_targets() {
        assert_eq!(origin_form("/a?b"), "/a?b");
        assert_eq!(origin_form("http://h:80/a?b"), "/a?b");
        assert_eq!(origin_form("http://h"), "/");
    }

    #[test]
    fn field_pairs_reads_lines() {
        let f = b"Accept: a\r\nX-Y:  b c \r\n";
        let pairs: Vec<_> = field_pairs(f).collect();
        assert_eq!(pairs, [("Accept", &b"a"[..]), ("X-Y", &b"b c"[..])]);
    }

    #[test]
    fn validators_go_before_the_end_of_the_head() {
        let object = Object {
            status: 200,
            head: Bytes::new(),
            body: Bytes::new(),
            stored_at: SystemTime::UNIX_EPOCH,
            life: crate::cache::Lifetime {
                fresh: std::time::Duration::ZERO,
                initial_age: std::time::Duration::ZERO,
                stale_while_revalidate: std::time::Duration::ZERO,
                stale_if_error: std::time::Duration::ZERO,
            },
            etag: Some("\"v1\"".into()),
            last_modified: None,
            vary: None,
        };
        let mut fwd = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        add_validators(&mut fwd, &object);
        assert_eq!(
            fwd,
            b"GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v1\"\r\n\r\n"
        );
    }
}
