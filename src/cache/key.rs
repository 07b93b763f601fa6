//! Cache keys: the primary key of a request, and the variant key that
//! adds the request headers a stored response's `Vary` names (RFC 9111
//! §2, §4.1).
//!
//! Why bytes and not a struct: keys are hashed and compared in the shared
//! zone and matched by prefix on purge; one flat byte string does both.
//! Invariants: the primary key is `METHOD scheme://host/target`, then one
//! `\n`-led line per extra header or cookie the route names, so a purge
//! by URL prefix matches it; the host is lowercased and loses one trailing
//! dot; a variant key is the primary key, a `\0`, then each varied
//! header's values (whitespace trimmed, joined by `,`) on its own line,
//! so two requests that differ only in those values differ in their key.

use super::policy::CacheMethod;

/// Longest key we build; a longer request is not cached (BYPASS).
pub const MAX_KEY_LEN: usize = 4096;

/// What a route adds to its keys (`cache.key`): request headers (names
/// lowercased) and cookies by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    pub headers: Vec<String>,
    pub cookies: Vec<String>,
}

/// The request parts a key is built from.
pub struct KeyParts<'a> {
    pub method: CacheMethod,
    pub scheme: &'a str,
    pub host: &'a str,
    /// Path and query as forwarded.
    pub target: &'a str,
}

/// The primary key, or `None` when it would exceed [`MAX_KEY_LEN`] or the
/// method is not cached.
pub fn primary_key<'a, H>(parts: &KeyParts<'_>, headers: H, spec: &KeySpec) -> Option<Vec<u8>>
where
    H: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
{
    let method = match parts.method {
        CacheMethod::Get => "GET",
        CacheMethod::Head => "HEAD",
        CacheMethod::Other => return None,
    };
    let host = parts.host.strip_suffix('.').unwrap_or(parts.host);
    let mut key =
        Vec::with_capacity(method.len() + parts.scheme.len() + host.len() + parts.target.len() + 8);
    key.extend_from_slice(method.as_bytes());
    key.push(b' ');
    key.extend_from_slice(parts.scheme.as_bytes());
    key.extend_from_slice(b"://");
    key.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
    key.extend_from_slice(parts.target.as_bytes());
    for name in &spec.headers {
        key.push(b'\n');
        key.extend_from_slice(name.as_bytes());
        key.push(b':');
        append_values(&mut key, headers.clone(), name);
    }
    for cookie in &spec.cookies {
        key.push(b'\n');
        key.extend_from_slice(b"cookie ");
        key.extend_from_slice(cookie.as_bytes());
        key.push(b'=');
        if let Some(v) = cookie_value(headers.clone(), cookie) {
            key.extend_from_slice(v);
        }
    }
    (key.len() <= MAX_KEY_LEN).then_some(key)
}

/// The key of one variant: `primary`, then the values of each header in
/// `vary` (the stored response's normalised `Vary`, comma-joined names).
pub fn variant_key<'a, H>(primary: &[u8], vary: &str, headers: H) -> Option<Vec<u8>>
where
    H: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
{
    let mut key = Vec::with_capacity(primary.len() + 64);
    key.extend_from_slice(primary);
    key.push(0);
    for name in vary.split(',') {
        key.extend_from_slice(name.as_bytes());
        key.push(b':');
        append_values(&mut key, headers.clone(), name);
        key.push(b'\n');
    }
    (key.len() <= MAX_KEY_LEN).then_some(key)
}

/// Appends every value of header `name`, trimmed, joined by `,`.
fn append_values<'a>(
    key: &mut Vec<u8>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    name: &str,
) {
    let mut first = true;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case(name) {
            if !first {
                key.push(b',');
            }
            first = false;
            key.extend_from_slice(v.trim_ascii());
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie_value<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    name: &str,
) -> Option<&'a [u8]> {
    headers
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
        list.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    fn parts(target: &'static str) -> KeyParts<'static> {
        KeyParts {
            method: CacheMethod::Get,
            scheme: "http",
            host: "Example.COM.",
            target,
        }
    }

    #[test]
    fn the_primary_key_is_method_scheme_host_and_target() {
        let k = primary_key(&parts("/a?b=1"), h(&[]), &KeySpec::default()).unwrap();
        assert_eq!(k, b"GET http://example.com/a?b=1");
        let head = KeyParts {
            method: CacheMethod::Head,
            ..parts("/a")
        };
        assert_eq!(
            primary_key(&head, h(&[]), &KeySpec::default()).unwrap(),
            b"HEAD http://example.com/a"
        );
        let post = KeyParts {
            method: CacheMethod::Other,
            ..parts("/a")
        };
        assert_eq!(primary_key(&post, h(&[]), &KeySpec::default()), None);
    }

    #[test]
    fn a_route_can_add_headers_and_cookies() {
        let spec = KeySpec {
            headers: vec!["x-tenant".into()],
            cookies: vec!["lang".into()],
        };
        let req = h(&[
            ("X-Tenant", " t1 "),
            ("Cookie", "a=1; lang=de"),
            ("Cookie", "z=2"),
        ]);
        let k = primary_key(&parts("/"), req, &spec).unwrap();
        assert_eq!(k, b"GET http://example.com/\nx-tenant:t1\ncookie lang=de");
        let other = h(&[("X-Tenant", "t2"), ("Cookie", "lang=de")]);
        assert_ne!(primary_key(&parts("/"), other, &spec).unwrap(), k);
        // Absent parts still take their place, so "no tenant" is its own key.
        let none = primary_key(&parts("/"), h(&[]), &spec).unwrap();
        assert_eq!(none, b"GET http://example.com/\nx-tenant:\ncookie lang=");
    }

    #[test]
    fn variant_keys_follow_the_varied_headers() {
        let p = b"GET http://example.com/";
        let gzip = h(&[("Accept-Encoding", "gzip"), ("Accept-Language", "en")]);
        let br = h(&[("Accept-Encoding", "br"), ("Accept-Language", "en")]);
        let v1 = variant_key(p, "accept-encoding", gzip.clone()).unwrap();
        assert_eq!(v1, b"GET http://example.com/\0accept-encoding:gzip\n");
        assert_ne!(v1, variant_key(p, "accept-encoding", br.clone()).unwrap());
        // Headers Vary does not name do not matter.
        let gzip_de = h(&[("Accept-Encoding", "gzip"), ("Accept-Language", "de")]);
        assert_eq!(v1, variant_key(p, "accept-encoding", gzip_de).unwrap());
        assert!(v1.starts_with(p), "purge by primary key finds its variants");
    }

    #[test]
    fn keys_are_bounded() {
        let long: &'static str =
            Box::leak(format!("/{}", "a".repeat(MAX_KEY_LEN)).into_boxed_str());
        assert_eq!(primary_key(&parts(long), h(&[]), &KeySpec::default()), None);
    }
}
