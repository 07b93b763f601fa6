//! `Cache-Control` directives (RFC 9111 §5.2), parsed from header values.
//!
//! Why a parser of our own: it is a few lines over the header list grammar
//! (`#cache-directive`, each `token [ "=" ( token / quoted-string ) ]`),
//! and the cache needs the shared-cache reading of each directive, not a
//! general one. Invariants: parsing never fails and never allocates; an
//! unknown directive is ignored (§5.2.3); a directive given twice with
//! different durations keeps the smaller, and a duration that is not a
//! plain decimal counts as 0 (§4.2.1: treat such a response as stale); a
//! field-list form (`private="Set-Cookie"`, `no-cache="x"`) is read as the
//! unqualified directive, which is the stricter reading.

/// Longest duration we keep (§1.2.2: a delta-seconds too large for the
/// cache is read as 2^31).
pub const MAX_DELTA_SECONDS: u32 = 1 << 31;

/// Most directives read from one message; the rest are ignored, so a
/// hostile header costs bounded work.
pub const MAX_DIRECTIVES: usize = 64;

/// The directives a shared cache acts on, request and response ones
/// together (each message uses its own subset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub no_transform: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u32>,
    pub s_maxage: Option<u32>,
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
    pub min_fresh: Option<u32>,
    /// `max-stale` without a value accepts any staleness.
    pub max_stale: Option<u32>,
}

impl CacheControl {
    /// Reads every `Cache-Control` value of a message, in order.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        let mut seen = 0;
        for value in values {
            for item in Items::new(value) {
                seen += 1;
                if seen > MAX_DIRECTIVES {
                    return cc;
                }
                cc.apply(item);
            }
        }
        cc
    }

    fn apply(&mut self, (name, arg): (&[u8], Option<&[u8]>)) {
        let seconds = || arg.map_or(0, delta_seconds);
        let keep_min = |slot: &mut Option<u32>, v: u32| {
            *slot = Some(slot.map_or(v, |old| old.min(v)));
        };
        match name.to_ascii_lowercase().as_slice() {
            b"no-store" => self.no_store = true,
            b"no-cache" => self.no_cache = true,
            b"private" => self.private = true,
            b"public" => self.public = true,
            b"no-transform" => self.no_transform = true,
            b"must-revalidate" => self.must_revalidate = true,
            b"proxy-revalidate" => self.proxy_revalidate = true,
            b"only-if-cached" => self.only_if_cached = true,
            b"max-age" => keep_min(&mut self.max_age, seconds()),
            b"s-maxage" => keep_min(&mut self.s_maxage, seconds()),
            b"stale-while-revalidate" => keep_min(&mut self.stale_while_revalidate, seconds()),
            b"stale-if-error" => keep_min(&mut self.stale_if_error, seconds()),
            b"min-fresh" => keep_min(&mut self.min_fresh, seconds()),
            b"max-stale" => {
                let v = arg.map_or(MAX_DELTA_SECONDS, delta_seconds);
                keep_min(&mut self.max_stale, v);
            }
            _ => {}
        }
    }
}

/// A delta-seconds argument (§1.2.2); not a plain decimal reads as 0.
fn delta_seconds(arg: &[u8]) -> u32 {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    let mut v: u64 = 0;
    for d in arg {
        v = v * 10 + u64::from(d - b'0');
        if v >= u64::from(MAX_DELTA_SECONDS) {
            return MAX_DELTA_SECONDS;
        }
    }
    v as u32
}

/// The directives of one header value: `(name, argument)`, the argument
/// without its quotes (escapes are left as sent; no directive we act on
/// takes a quoted duration).
struct Items<'a> {
    rest: &'a [u8],
}

impl<'a> Items<'a> {
    fn new(value: &'a [u8]) -> Items<'a> {
        Items { rest: value }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = trim_start(self.rest);
            if s.is_empty() {
                self.rest = s;
                return None;
            }
            if s[0] == b',' {
                self.rest = &s[1..];
                continue;
            }
            let name_end = s
                .iter()
                .position(|&b| b == b'=' || b == b',' || b == b' ' || b == b'\t')
                .unwrap_or(s.len());
            let name = &s[..name_end];
            let after = trim_start(&s[name_end..]);
            if after.first() != Some(&b'=') {
                self.rest = skip_to_comma(after);
                return Some((name, None));
            }
            let arg_start = trim_start(&after[1..]);
            let (arg, rest) = if arg_start.first() == Some(&b'"') {
                quoted(arg_start)
            } else {
                let end = arg_start
                    .iter()
                    .position(|&b| b == b',' || b == b' ' || b == b'\t')
                    .unwrap_or(arg_start.len());
                (&arg_start[..end], &arg_start[end..])
            };
            self.rest = skip_to_comma(rest);
            return Some((name, Some(arg)));
        }
    }
}

/// A quoted string at the start of `s` (which begins with `"`): its inside
/// and what follows the closing quote; an unclosed quote takes the rest.
fn quoted(s: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return (&s[1..i], &s[i + 1..]),
            _ => i += 1,
        }
    }
    (&s[1.min(s.len())..], &[])
}

fn skip_to_comma(s: &[u8]) -> &[u8] {
    match s.iter().position(|&b| b == b',') {
        Some(i) => &s[i + 1..],
        None => &[],
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(values: &[&str]) -> CacheControl {
        CacheControl::parse(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn reads_the_directives_a_shared_cache_acts_on() {
        let c = cc(&[
            "public, max-age=60, s-maxage=30",
            "stale-while-revalidate=5",
        ]);
        assert!(c.public && !c.private && !c.no_store);
        assert_eq!(c.max_age, Some(60));
        assert_eq!(c.s_maxage, Some(30));
        assert_eq!(c.stale_while_revalidate, Some(5));
        let c = cc(&[
            "No-Store",
            "PRIVATE",
            "no-cache",
            "no-transform, must-revalidate",
        ]);
        assert!(c.no_store && c.private && c.no_cache && c.no_transform && c.must_revalidate);
    }

    #[test]
    fn quoted_and_spaced_arguments() {
        let c = cc(&[r#"max-age="120" , stale-if-error = 7,private="Set-Cookie, X""#]);
        assert_eq!(c.max_age, Some(120));
        assert_eq!(c.stale_if_error, Some(7));
        // The field-list form is read as plain `private`, the stricter.
        assert!(c.private);
    }

    #[test]
    fn conflicting_or_invalid_durations_are_read_strictly() {
        assert_eq!(cc(&["max-age=60, max-age=10"]).max_age, Some(10));
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=-5"]).max_age, Some(0));
        assert_eq!(cc(&["max-age"]).max_age, Some(0));
        assert_eq!(
            cc(&["max-age=99999999999999999999"]).max_age,
            Some(MAX_DELTA_SECONDS)
        );
        assert_eq!(cc(&["max-stale"]).max_stale, Some(MAX_DELTA_SECONDS));
    }

    #[test]
    fn unknown_empty_and_broken_items_are_ignored() {
        assert_eq!(cc(&[""]), CacheControl::default());
        assert_eq!(cc(&[",,, ,"]), CacheControl::default());
        assert_eq!(cc(&["community=\"UCI\", foo"]), CacheControl::default());
        let c = cc(&["max-age=\"5, no-store"]);
        assert_eq!(c.max_age, Some(0), "an unclosed quote takes the rest");
        assert!(!c.no_store);
    }

    #[test]
    fn the_directive_count_is_bounded() {
        let many = "x, ".repeat(MAX_DIRECTIVES) + "no-store";
        assert!(!cc(&[many.as_str()]).no_store);
        let just = "x, ".repeat(MAX_DIRECTIVES - 1) + "no-store";
        assert!(cc(&[just.as_str()]).no_store);
    }
}
