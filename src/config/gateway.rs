//! Checks a route's gateway keys (issue 12) into `crate::gateway` types.
//!
//! Why apart from `resolve`: the gateway keys are many and self-contained;
//! each is checked here with the key path and span an operator needs.

use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind as Kind};
use super::raw::{RawHeaderMatch, RawRoute};
use super::resolve::Cx;
use crate::gateway::{HeaderCondition, HeaderTest, Pattern, RouteMatch};

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
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
