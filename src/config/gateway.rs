//! Checks a route's gateway keys (issue 12) into `crate::gateway` types.
//!
//! Why apart from `resolve`: the gateway keys are many and self-contained;
//! each is checked here with the key path and span an operator needs.

use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::raw::{RawErrorPage, RawHeaderEdits, RawHeaderMatch, RawRoute};
use super::resolve::Cx;
use std::sync::Arc;

use crate::gateway::compress::{Level, MediaRange};
use crate::gateway::headers::{Template, FORBIDDEN, HEADER_VARIABLES};
use crate::gateway::pages::{MAX_PAGE_BYTES, PAGE_STATUSES, PAGE_VARIABLES};
use crate::gateway::redirect::{REDIRECT_STATUSES, REDIRECT_VARIABLES};
use crate::gateway::rewrite::valid_path_piece;
use crate::gateway::{
    Compress, ErrorPage, ErrorPages, HeaderCondition, HeaderEdits, HeaderTest, HostRewrite,
    Pattern, Redirect, Rewrite, RouteMatch,
};
use crate::http::Coding;

/// Most `methods` or `headers` entries on one route (bounded work per request).
const MAX_CONDITIONS: usize = 32;

/// `methods`, `headers`, `path_regex` of route `i`; `None` when none is set,
/// so that a plain route costs nothing when matched.
pub(super) fn resolve_route_match(
    cx: &Cx<'_>,
    i: usize,
    route: &RawRoute,
) -> Result<Option<Box<RouteMatch>>, ConfigError> {
    let mut m = RouteMatch::default();
    if let Some(methods) = &route.methods {
        if methods.get_ref().is_empty() || methods.get_ref().len() > MAX_CONDITIONS {
            let kind = Kind::InvalidValue(format!(
                "give 1 to {MAX_CONDITIONS} methods (leave the key out for any method)"
            ));
            return Err(cx.at(methods.span(), format!("routes[{i}].methods"), kind));
        }
        for (j, method) in methods.get_ref().iter().enumerate() {
            let text = method.get_ref();
            if !is_token(text) {
                let kind = Kind::InvalidValue(format!("{text:?} is not an HTTP method token"));
                return Err(cx.at(method.span(), format!("routes[{i}].methods[{j}]"), kind));
            }
            m.methods.push(text.clone());
        }
    }
    if let Some(headers) = &route.headers {
        if headers.get_ref().len() > MAX_CONDITIONS {
            let kind = Kind::InvalidValue(format!("at most {MAX_CONDITIONS} header conditions"));
            return Err(cx.at(headers.span(), format!("routes[{i}].headers"), kind));
        }
        for (j, h) in headers.get_ref().iter().enumerate() {
            m.headers.push(header_condition(
                cx,
                &format!("routes[{i}].headers[{j}]"),
                h,
            )?);
        }
    }
    if let Some(p) = &route.path_regex {
        let pattern = Pattern::new(p.get_ref()).map_err(|e| {
            let kind = Kind::InvalidValue(format!("invalid regex {:?}: {e}", p.get_ref()));
            cx.at(p.span(), format!("routes[{i}].path_regex"), kind)
        })?;
        m.path_regex = Some(pattern);
    }
    Ok((!m.is_empty()).then(|| Box::new(m)))
}

fn header_condition(
    cx: &Cx<'_>,
    key: &str,
    raw: &Spanned<RawHeaderMatch>,
) -> Result<HeaderCondition, ConfigError> {
    let h = raw.get_ref();
    let name = h.name.get_ref();
    if !is_token(name) {
        let kind = Kind::InvalidValue(format!("{name:?} is not a header field name"));
        return Err(cx.at(h.name.span(), format!("{key}.name"), kind));
    }
    let test = match (&h.value, &h.regex) {
        (Some(_), Some(r)) => {
            let kind = Kind::InvalidValue("give `value` or `regex`, not both".to_owned());
            return Err(cx.at(r.span(), format!("{key}.regex"), kind));
        }
        (Some(v), None) => HeaderTest::Exact(v.get_ref().clone()),
        (None, Some(r)) => HeaderTest::Regex(Pattern::new(r.get_ref()).map_err(|e| {
            let kind = Kind::InvalidValue(format!("invalid regex {:?}: {e}", r.get_ref()));
            cx.at(r.span(), format!("{key}.regex"), kind)
        })?),
        (None, None) => HeaderTest::Present,
    };
    Ok(HeaderCondition {
        name: name.clone(),
        test,
    })
}

/// An RFC 9110 token (method names, field names).
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The rewrites of route `i`; `None` when none is set. Every literal must
/// be a valid path piece starting with `/`, so that a rewrite cannot make
/// an invalid target (see `crate::gateway::rewrite`).
pub(super) fn resolve_rewrite(
    cx: &Cx<'_>,
    i: usize,
    route: &RawRoute,
) -> Result<Option<Arc<Rewrite>>, ConfigError> {
    let path_piece = |value: &Spanned<String>, key: &str| -> Result<String, ConfigError> {
        let text = value.get_ref();
        if text.starts_with('/') && text.len() <= 1024 && valid_path_piece(text) {
            return Ok(text.clone());
        }
        let kind = Kind::InvalidValue(format!(
            "{text:?} must start with \"/\" and hold only visible ASCII without \"?\" or \"#\" (at most 1024 bytes)"
        ));
        Err(cx.at(value.span(), format!("routes[{i}].{key}"), kind))
    };
    let mut r = Rewrite::default();
    if let Some(p) = &route.strip_prefix {
        r.strip_prefix = Some(path_piece(p, "strip_prefix")?);
    }
    if let Some(rp) = &route.replace_prefix {
        let rp = rp.get_ref();
        r.replace_prefix = Some((
            path_piece(&rp.from, "replace_prefix.from")?,
            path_piece(&rp.to, "replace_prefix.to")?,
        ));
    }
    if let Some(p) = &route.add_prefix {
        r.add_prefix = Some(path_piece(p, "add_prefix")?);
    }
    if let Some(rr) = &route.regex_rewrite {
        let rr = rr.get_ref();
        let pattern = Pattern::new(rr.pattern.get_ref()).map_err(|e| {
            let kind = Kind::InvalidValue(format!("invalid regex {:?}: {e}", rr.pattern.get_ref()));
            cx.at(
                rr.pattern.span(),
                format!("routes[{i}].regex_rewrite.pattern"),
                kind,
            )
        })?;
        let substitution = path_piece(&rr.substitution, "regex_rewrite.substitution")?;
        r.regex_rewrite = Some((pattern, substitution));
    }
    if let Some(h) = &route.host_rewrite {
        let text = h.get_ref();
        let key = format!("routes[{i}].host_rewrite");
        if text == "backend" {
            r.host = Some(HostRewrite::Backend);
        } else if !valid_host_value(text) {
            let kind = Kind::InvalidValue(format!(
                "{text:?} is not a host name (with an optional :port)"
            ));
            return Err(cx.at(h.span(), key, kind));
        } else {
            r.host = Some(HostRewrite::Name(text.clone()));
        }
    }
    Ok((r != Rewrite::default()).then(|| Arc::new(r)))
}

/// A `Host` value: a name of letters, digits, `-`, `_` and dots, or a
/// bracketed IPv6 literal, with an optional `:port`.
fn valid_host_value(text: &str) -> bool {
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(':') && (name.ends_with(']') || !name.contains(':')) =>
        {
            (name, Some(port))
        }
        _ => (text, None),
    };
    let name_ok = if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    name_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// Most edits in one `request_headers` (bounded work per request).
const MAX_HEADER_EDITS: usize = 64;

/// `request_headers` of route `i`; `None` when unset or empty.
pub(super) fn resolve_request_headers(
    cx: &Cx<'_>,
    i: usize,
    route: &RawRoute,
) -> Result<Option<Arc<HeaderEdits>>, ConfigError> {
    match &route.request_headers {
        None => Ok(None),
        Some(raw) => header_edits(cx, &format!("routes[{i}].request_headers"), raw),
    }
}

/// `response_headers` of route `i`; `None` when unset or empty.
pub(super) fn resolve_response_headers(
    cx: &Cx<'_>,
    i: usize,
    route: &RawRoute,
) -> Result<Option<Arc<HeaderEdits>>, ConfigError> {
    match &route.response_headers {
        None => Ok(None),
        Some(raw) => header_edits(cx, &format!("routes[{i}].response_headers"), raw),
    }
}

/// One `request_headers` or `response_headers` table at `key`.
fn header_edits(
    cx: &Cx<'_>,
    key: &str,
    raw: &Spanned<RawHeaderEdits>,
) -> Result<Option<Arc<HeaderEdits>>, ConfigError> {
    let span = raw.span();
    let raw = raw.get_ref();
    let name_error = |name: &str, at: std::ops::Range<usize>, key: String| {
        let lower = name.to_ascii_lowercase();
        let reason = if !is_token(name) {
            format!("{name:?} is not a header field name")
        } else if FORBIDDEN.contains(&lower.as_str()) {
            format!(
                "{name} carries framing or hop-by-hop meaning and cannot be changed{}",
                if lower == "host" {
                    " (use host_rewrite)"
                } else {
                    ""
                }
            )
        } else {
            return None;
        };
        Some(cx.at(at, key, Kind::InvalidValue(reason)))
    };
    let mut edits = HeaderEdits::default();
    for (list, out) in [(&raw.set, &mut edits.set), (&raw.add, &mut edits.add)] {
        let which = if std::ptr::eq(list, &raw.set) {
            "set"
        } else {
            "add"
        };
        for (name, value) in list.iter().flatten() {
            let at = format!("{key}.{which}.{name}");
            if let Some(e) = name_error(name, value.span(), at.clone()) {
                return Err(e);
            }
            let template = Template::parse(value.get_ref(), &HEADER_VARIABLES)
                .map_err(|e| cx.at(value.span(), at, Kind::InvalidValue(e)))?;
            out.push((name.clone(), template));
        }
    }
    for (j, name) in raw.remove.iter().flatten().enumerate() {
        if let Some(e) = name_error(name.get_ref(), name.span(), format!("{key}.remove[{j}]")) {
            return Err(e);
        }
        edits.remove.push(name.get_ref().clone());
    }
    if edits.remove.len() + edits.set.len() + edits.add.len() > MAX_HEADER_EDITS {
        let kind = Kind::InvalidValue(format!("at most {MAX_HEADER_EDITS} edits"));
        return Err(cx.at(span, key, kind));
    }
    Ok((!edits.is_empty()).then(|| Arc::new(edits)))
}

/// `redirect` of route `i`, and the keys it cannot go with: a redirect
/// route answers itself, so what only shapes a forwarded request or a
/// backend's response would be dead config.
pub(super) fn resolve_redirect(
    cx: &Cx<'_>,
    i: usize,
    route: &RawRoute,
) -> Result<Option<Arc<Redirect>>, ConfigError> {
    let Some(raw) = &route.redirect else {
        return Ok(None);
    };
    let key = format!("routes[{i}].redirect");
    let conflicts = [
        ("upstream", route.upstream.as_ref().map(|u| u.span())),
        (
            "https_redirect",
            route.https_redirect.as_ref().map(|u| u.span()),
        ),
        (
            "host_rewrite",
            route.host_rewrite.as_ref().map(|u| u.span()),
        ),
        (
            "request_headers",
            route.request_headers.as_ref().map(|u| u.span()),
        ),
        (
            "response_headers",
            route.response_headers.as_ref().map(|u| u.span()),
        ),
        (
            "intercept_errors",
            route.intercept_errors.as_ref().map(|u| u.span()),
        ),
    ];
    for (other, span) in conflicts {
        if let Some(span) = span {
            let kind = Kind::InvalidValue(format!(
                "a route with `redirect` answers itself and cannot have `{other}`"
            ));
            return Err(cx.at(span, format!("routes[{i}].{other}"), kind));
        }
    }
    let raw = raw.get_ref();
    let text = raw.to.get_ref();
    let to_key = format!("{key}.to");
    let shape_ok = ["http://", "https://", "$scheme://", "/"]
        .iter()
        .any(|start| text.starts_with(start))
        && !text.starts_with("//")
        && text.len() <= 2048
        && !text
            .bytes()
            .any(|b| b == b' ' || b.is_ascii_control() || !b.is_ascii());
    if !shape_ok {
        let kind = Kind::InvalidValue(format!(
            "{text:?} must be an absolute http:// or https:// URL (or $scheme://...) or a path starting with \"/\", of visible ASCII, at most 2048 bytes"
        ));
        return Err(cx.at(raw.to.span(), to_key, kind));
    }
    let to = Template::parse(text, &REDIRECT_VARIABLES)
        .map_err(|e| cx.at(raw.to.span(), to_key, Kind::InvalidValue(e)))?;
    let status = match &raw.status {
        None => 302,
        Some(s) => match u16::try_from(*s.get_ref()) {
            Ok(status) if REDIRECT_STATUSES.contains(&status) => status,
            _ => {
                let kind = Kind::InvalidValue(format!(
                    "{} is not a redirect status (301, 302, 307 or 308)",
                    s.get_ref()
                ));
                return Err(cx.at(s.span(), format!("{key}.status"), kind));
            }
        },
    };
    Ok(Some(Arc::new(Redirect { to, status })))
}

/// `error_pages` at `key` (`server.error_pages` or `routes[i].error_pages`):
/// each file is read now, relative to the config file.
pub(super) fn resolve_error_pages(
    cx: &Cx<'_>,
    key: &str,
    raw: &Spanned<Vec<Spanned<RawErrorPage>>>,
) -> Result<ErrorPages, ConfigError> {
    let mut pages = ErrorPages::default();
    for (j, entry) in raw.get_ref().iter().enumerate() {
        let key = format!("{key}[{j}]");
        let page = entry.get_ref();
        let content_type = match &page.content_type {
            None => "text/plain".to_owned(),
            Some(ct) => {
                let text = ct.get_ref();
                if text.is_empty()
                    || text.len() > 256
                    || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                {
                    let kind = Kind::InvalidValue(format!(
                        "{text:?} is not a content type (visible ASCII, at most 256 bytes)"
                    ));
                    return Err(cx.at(ct.span(), format!("{key}.content_type"), kind));
                }
                text.clone()
            }
        };
        let (text, span, body_key) = match (&page.file, &page.text) {
            (Some(_), Some(t)) => {
                let kind = Kind::InvalidValue("give `file` or `text`, not both".to_owned());
                return Err(cx.at(t.span(), format!("{key}.text"), kind));
            }
            (None, None) => {
                let kind = Kind::InvalidValue("give the body as `file` or `text`".to_owned());
                return Err(cx.at(entry.span(), key, kind));
            }
            (None, Some(t)) => (t.get_ref().clone(), t.span(), format!("{key}.text")),
            (Some(f), None) => {
                let path = cx.path(f.get_ref());
                let file_key = format!("{key}.file");
                let too_big = |size: u64| {
                    Kind::InvalidValue(format!(
                        "{} is {size} bytes; a page is at most {MAX_PAGE_BYTES}",
                        path.display()
                    ))
                };
                let meta = std::fs::metadata(&path).map_err(|e| {
                    let kind = Kind::InvalidValue(format!("cannot read {}: {e}", path.display()));
                    cx.at(f.span(), file_key.clone(), kind)
                })?;
                if meta.len() > MAX_PAGE_BYTES as u64 {
                    return Err(cx.at(f.span(), file_key, too_big(meta.len())));
                }
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    let kind = Kind::InvalidValue(format!("cannot read {}: {e}", path.display()));
                    cx.at(f.span(), file_key.clone(), kind)
                })?;
                if text.len() > MAX_PAGE_BYTES {
                    return Err(cx.at(f.span(), file_key, too_big(text.len() as u64)));
                }
                (text, f.span(), file_key)
            }
        };
        if text.len() > MAX_PAGE_BYTES {
            let kind = Kind::InvalidValue(format!(
                "the text is {} bytes; a page is at most {MAX_PAGE_BYTES}",
                text.len()
            ));
            return Err(cx.at(span, body_key, kind));
        }
        let body = Template::parse_body(&text, &PAGE_VARIABLES)
            .map_err(|e| cx.at(span.clone(), body_key.clone(), Kind::InvalidValue(e)))?;
        let page = Arc::new(ErrorPage { content_type, body });
        if entry.get_ref().status.get_ref().is_empty() {
            let kind = Kind::InvalidValue("give at least one status".to_owned());
            return Err(cx.at(entry.get_ref().status.span(), format!("{key}.status"), kind));
        }
        for (k, status) in entry.get_ref().status.get_ref().iter().enumerate() {
            let status_key = format!("{key}.status[{k}]");
            let code = u16::try_from(*status.get_ref()).unwrap_or(0);
            if !PAGE_STATUSES.contains(&code) {
                let list: Vec<String> = PAGE_STATUSES.iter().map(u16::to_string).collect();
                let kind = Kind::InvalidValue(format!(
                    "{} has no page (statuses: {})",
                    status.get_ref(),
                    list.join(", ")
                ));
                return Err(cx.at(status.span(), status_key, kind));
            }
            if pages.get(code).is_some() {
                let kind = Kind::InvalidValue(format!("a second page for {code}"));
                return Err(cx.at(status.span(), status_key, kind));
            }
            pages.pages.push((code, page.clone()));
        }
    }
    Ok(pages)
}

/// `error_pages` and `intercept_errors` of route `i`; every intercepted
/// status needs a page, the route's or the server's.
pub(super) fn resolve_route_pages(
    cx: &Cx<'_>,
    i: usize,
    route: &RawRoute,
    server: &ErrorPages,
) -> Result<Option<Arc<ErrorPages>>, ConfigError> {
    let mut pages = match &route.error_pages {
        None => ErrorPages::default(),
        Some(raw) => resolve_error_pages(cx, &format!("routes[{i}].error_pages"), raw)?,
    };
    if let Some(raw) = &route.intercept_errors {
        for (j, status) in raw.get_ref().iter().enumerate() {
            let key = format!("routes[{i}].intercept_errors[{j}]");
            let code = u16::try_from(*status.get_ref()).unwrap_or(0);
            if !(400..=599).contains(&code) {
                let kind = Kind::InvalidValue(format!(
                    "{} is not an error status (400-599)",
                    status.get_ref()
                ));
                return Err(cx.at(status.span(), key, kind));
            }
            if pages.get(code).is_none() && server.get(code).is_none() {
                let kind = Kind::InvalidValue(format!(
                    "no error page for {code}, in the route's error_pages or the server's"
                ));
                return Err(cx.at(status.span(), key, kind));
            }
            if !pages.intercept.contains(&code) {
                pages.intercept.push(code);
            }
        }
    }
    Ok((!pages.is_empty()).then(|| Arc::new(pages)))
}

/// Most `types` entries of one `compress` (bounded work per response).
const MAX_COMPRESS_TYPES: usize = 64;

/// `compress` of route `i`; `None` when unset.
pub(super) fn resolve_compress(
    cx: &Cx<'_>,
    i: usize,
    route: &RawRoute,
) -> Result<Option<Arc<Compress>>, ConfigError> {
    let Some(raw) = &route.compress else {
        return Ok(None);
    };
    let key = format!("routes[{i}].compress");
    let mut codings = Vec::new();
    match &raw.algorithms {
        None => codings.extend(Compress::DEFAULT_ALGORITHMS),
        Some(list) => {
            if list.get_ref().is_empty() {
                let kind = Kind::InvalidValue(
                    "give at least one of \"br\", \"gzip\", \"deflate\", \"zstd\" (leave `compress` out for none)"
                        .to_owned(),
                );
                return Err(cx.at(list.span(), format!("{key}.algorithms"), kind));
            }
            for (j, name) in list.get_ref().iter().enumerate() {
                let at = format!("{key}.algorithms[{j}]");
                let Some(coding) = Coding::from_token(name.get_ref().as_bytes())
                    .filter(|c| c.token() == name.get_ref())
                else {
                    let kind = Kind::InvalidValue(format!(
                        "unknown algorithm {:?}; give \"br\", \"gzip\", \"deflate\" or \"zstd\"",
                        name.get_ref()
                    ));
                    return Err(cx.at(name.span(), at, kind));
                };
                if codings.contains(&coding) {
                    let kind = Kind::InvalidValue(format!("{:?} is listed twice", name.get_ref()));
                    return Err(cx.at(name.span(), at, kind));
                }
                codings.push(coding);
            }
        }
    }
    let mut algorithms: Vec<(Coding, u32)> = codings
        .iter()
        .map(|&c| (c, Level::default_for(c)))
        .collect();
    if let Some(levels) = &raw.level {
        let given = [
            (Coding::Br, &levels.br),
            (Coding::Gzip, &levels.gzip),
            (Coding::Deflate, &levels.deflate),
            (Coding::Zstd, &levels.zstd),
        ];
        for (coding, level) in given {
            let Some(level) = level else { continue };
            let at = format!("{key}.level.{}", coding.token());
            let range = Level::range(coding);
            let Some(slot) = algorithms.iter_mut().find(|(c, _)| *c == coding) else {
                let kind = Kind::InvalidValue(format!(
                    "a level for {}, which is not in `algorithms`",
                    coding.token()
                ));
                return Err(cx.at(level.span(), at, kind));
            };
            match u32::try_from(*level.get_ref()) {
                Ok(l) if range.contains(&l) => slot.1 = l,
                _ => {
                    let kind = Kind::InvalidValue(format!(
                        "{} levels are {} to {}, not {}",
                        coding.token(),
                        range.start(),
                        range.end(),
                        level.get_ref()
                    ));
                    return Err(cx.at(level.span(), at, kind));
                }
            }
        }
    }
    let mut types = Vec::new();
    match &raw.types {
        None => types.extend(
            Compress::DEFAULT_TYPES
                .iter()
                .filter_map(|t| MediaRange::parse(t)),
        ),
        Some(list) => {
            let n = list.get_ref().len();
            if n == 0 || n > MAX_COMPRESS_TYPES {
                let kind = Kind::InvalidValue(format!(
                    "give 1 to {MAX_COMPRESS_TYPES} media types (leave the key out for the defaults)"
                ));
                return Err(cx.at(list.span(), format!("{key}.types"), kind));
            }
            for (j, t) in list.get_ref().iter().enumerate() {
                let Some(range) = MediaRange::parse(t.get_ref()) else {
                    let kind = Kind::InvalidValue(format!(
                        "{:?} is not a media type such as \"text/html\", \"text/*\" or \"*/*\" (no parameters)",
                        t.get_ref()
                    ));
                    return Err(cx.at(t.span(), format!("{key}.types[{j}]"), kind));
                };
                types.push(range);
            }
        }
    }
    let min_length = raw
        .min_length
        .as_ref()
        .map_or(Compress::DEFAULT_MIN_LENGTH, |m| *m.get_ref());
    Ok(Some(Arc::new(Compress::new(algorithms, min_length, types))))
}
