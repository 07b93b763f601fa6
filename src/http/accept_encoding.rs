//! `Accept-Encoding` (RFC 9110 §12.5.3): which content coding, if any, a
//! response may be compressed with.
//!
//! Why here: it is a request field parser like the others, pure and
//! fuzzed (`fuzz/fuzz_targets/accept_encoding.rs`); the compression filter
//! (`crate::gateway::compress`) only asks it for a choice.
//!
//! Invariants: parsing looks at no more than [`MAX_ELEMENTS`] list
//! elements in all, never allocates and never fails: an element that does
//! not fit the grammar is ignored, as if the client had not sent it; the
//! choice is always one of the offered codings, and never one whose weight
//! is 0.
//!
//! The rules, in the RFC's words and order:
//! 1. No `Accept-Encoding` field: the client has no preference, but may not
//!    be able to decode anything: the proxy does not compress (as nginx).
//! 2. An empty field value: the client wants no coding.
//! 3. A coding's weight is its own `q` if listed, else that of `*` if `*`
//!    is listed, else 0 (not acceptable). `q=0` means "not acceptable".
//! 4. The offered coding with the highest weight wins; ties go to the
//!    earlier in the offer (the route's `algorithms` order).
//! 5. `identity` listed with a weight above the winner's: the client
//!    prefers no coding, so none is applied. `identity;q=0` (or `*;q=0`
//!    without `identity`) with nothing acceptable: the proxy still relays
//!    the uncoded response; answering 406 is for the origin, not a proxy.

use super::headers::{eq_ci, list_elements, trim_ows};

/// Most list elements read from one request's `Accept-Encoding` fields;
/// the rest are ignored (bounded work per request; browsers send 3 to 5).
pub const MAX_ELEMENTS: usize = 32;

/// The content codings the proxy can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Coding {
    /// `br`, RFC 7932.
    Br,
    /// `gzip` (and its alias `x-gzip`), RFC 9110 §8.4.1.3.
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), RFC 9110 §8.4.1.2.
    Deflate,
    /// `zstd`, RFC 8878.
    Zstd,
}

impl Coding {
    /// Every coding, in no particular order.
    pub const ALL: [Coding; 4] = [Coding::Br, Coding::Gzip, Coding::Deflate, Coding::Zstd];

    /// The token as written in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Zstd => "zstd",
        }
    }

    /// The coding a token names (case-insensitive), `x-gzip` included.
    pub fn from_token(token: &[u8]) -> Option<Coding> {
        if eq_ci(token, b"x-gzip") {
            return Some(Coding::Gzip);
        }
        Coding::ALL
            .into_iter()
            .find(|c| eq_ci(token, c.token().as_bytes()))
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A weight in thousandths: `q=0.5` is 500, `q=1` (the default) 1000.
pub type Weight = u16;

const FULL: Weight = 1000;

/// The weights one request's `Accept-Encoding` fields give, as parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptEncoding {
    /// At least one field was present (rule 1).
    present: bool,
    /// The weight listed for each [`Coding`] (by `Coding::index`).
    codings: [Option<Weight>; 4],
    identity: Option<Weight>,
    star: Option<Weight>,
}

impl AcceptEncoding {
    /// Reads the values of every `Accept-Encoding` field of a request, in
    /// order. A coding listed twice keeps its first weight.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> AcceptEncoding {
        let mut accept = AcceptEncoding::default();
        let mut seen = 0;
        for value in values {
            accept.present = true;
            for element in list_elements(value) {
                if seen == MAX_ELEMENTS {
                    return accept;
                }
                seen += 1;
                let Some((name, weight)) = parse_element(element) else {
                    continue;
                };
                let slot = if name == b"*" {
                    &mut accept.star
                } else if eq_ci(name, b"identity") {
                    &mut accept.identity
                } else if let Some(c) = Coding::from_token(name) {
                    &mut accept.codings[c.index()]
                } else {
                    continue;
                };
                slot.get_or_insert(weight);
            }
        }
        accept
    }

    /// The weight of `coding` (rule 3).
    pub fn weight(&self, coding: Coding) -> Weight {
        self.codings[coding.index()].or(self.star).unwrap_or(0)
    }

    /// The coding to apply among `offered` (in preference order), or
    /// `None` for none (rules 1, 2, 4, 5).
    pub fn choose(&self, offered: &[Coding]) -> Option<Coding> {
        if !self.present {
            return None;
        }
        let mut best: Option<(Coding, Weight)> = None;
        for &c in offered {
            let w = self.weight(c);
            if w > 0 && best.is_none_or(|(_, b)| w > b) {
                best = Some((c, w));
            }
        }
        let (coding, weight) = best?;
        match self.identity {
            Some(id) if id > weight => None,
            _ => Some(coding),
        }
    }
}

/// One list element: `coding [ OWS ";" OWS "q=" qvalue ]`. `None` for an
/// element that does not fit (empty, not a token, another parameter, a bad
/// qvalue).
fn parse_element(element: &[u8]) -> Option<(&[u8], Weight)> {
    if element.is_empty() {
        return None;
    }
    let (name, params) = match element.iter().position(|&b| b == b';') {
        Some(at) => (trim_ows(&element[..at]), Some(&element[at + 1..])),
        None => (element, None),
    };
    if name.is_empty() || !name.iter().all(|&b| super::headers::is_tchar(b)) {
        return None;
    }
    let weight = match params {
        None => FULL,
        Some(params) => {
            let param = trim_ows(params);
            let value = match param {
                [b'q' | b'Q', b'=', rest @ ..] => rest,
                _ => return None,
            };
            parse_qvalue(value)?
        }
    };
    Some((name, weight))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_qvalue(value: &[u8]) -> Option<Weight> {
    let (int, frac) = match value {
        [d, b'.', frac @ ..] => (*d, frac),
        [d] => (*d, &[][..]),
        _ => return None,
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: Weight = 0;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| Weight::from(d - b'0'));
    }
    match int {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(FULL),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Coding::{Br, Deflate, Gzip, Zstd};
    use super::*;

    fn choose(fields: &[&str], offered: &[Coding]) -> Option<Coding> {
        AcceptEncoding::parse(fields.iter().map(|f| f.as_bytes())).choose(offered)
    }

    /// (name, field values, offered codings, expected choice)
    type Case = (
        &'static str,
        &'static [&'static str],
        &'static [Coding],
        Option<Coding>,
    );

    #[test]
    fn negotiation_table() {
        let all = &[Br, Gzip, Deflate, Zstd];
        let cases: &[Case] = &[
            ("1 no field", &[], all, None),
            ("2 empty value", &[""], all, None),
            ("plain gzip", &["gzip"], all, Some(Gzip)),
            ("browser", &["gzip, deflate, br, zstd"], all, Some(Br)),
            (
                "offer order breaks ties",
                &["gzip, br"],
                &[Gzip, Br],
                Some(Gzip),
            ),
            ("q decides", &["br;q=0.5, gzip;q=0.8"], all, Some(Gzip)),
            ("q=0 excludes", &["br;q=0, gzip"], all, Some(Gzip)),
            ("only q=0", &["gzip;q=0"], all, None),
            ("not offered", &["br"], &[Gzip], None),
            ("unknown coding", &["compress, exi"], all, None),
            ("3 star", &["*"], &[Gzip, Br], Some(Gzip)),
            (
                "3 star with exclusion",
                &["br;q=0, *"],
                &[Br, Gzip],
                Some(Gzip),
            ),
            (
                "3 star low, listed high",
                &["*;q=0.1, deflate"],
                all,
                Some(Deflate),
            ),
            ("3 star q=0", &["*;q=0"], all, None),
            ("5 identity preferred", &["identity, gzip;q=0.5"], all, None),
            (
                "5 identity tie compresses",
                &["gzip, identity"],
                all,
                Some(Gzip),
            ),
            ("5 identity;q=0", &["identity;q=0"], all, None),
            (
                "5 identity;q=0 and gzip",
                &["identity;q=0, gzip"],
                all,
                Some(Gzip),
            ),
            ("x-gzip alias", &["x-gzip"], all, Some(Gzip)),
            ("case-insensitive", &["GZIP;Q=1.0"], all, Some(Gzip)),
            ("spaces", &["  br ; q=0.9 ,gzip;q=0.8 "], all, Some(Br)),
            ("two fields", &["gzip;q=0.1", "br"], all, Some(Br)),
            ("first weight kept", &["gzip;q=0, gzip"], all, None),
            ("bad q ignored", &["br;q=2, gzip;q=0.5"], all, Some(Gzip)),
            ("q=1.000", &["br;q=1.000"], all, Some(Br)),
            ("q=1.001 bad", &["br;q=1.001"], all, None),
            ("q=0.0001 bad", &["br;q=0.0001"], all, None),
            ("q=0.001 ok", &["br;q=0.001"], all, Some(Br)),
            ("q=. bad", &["br;q=."], all, None),
            ("q= empty bad", &["br;q="], all, None),
            (
                "other param ignored",
                &["br;level=1, gzip"],
                all,
                Some(Gzip),
            ),
            ("empty elements", &[",,gzip,,"], all, Some(Gzip)),
            ("not a token", &["g\"zip, br"], all, Some(Br)),
        ];
        for (name, fields, offered, want) in cases {
            assert_eq!(choose(fields, offered), *want, "case {name:?}");
        }
    }

    #[test]
    fn qvalues() {
        let cases: &[(&str, Option<Weight>)] = &[
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.123", Some(123)),
            ("0.1234", None),
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.0", Some(1000)),
            ("1.5", None),
            ("2", None),
            ("-1", None),
            ("", None),
            ("0.a", None),
            (".5", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_qvalue(text.as_bytes()), *want, "qvalue {text:?}");
        }
    }

    /// `MAX_ELEMENTS` elements are read, one more is not.
    #[test]
    fn element_limit() {
        let filler = vec!["exi"; MAX_ELEMENTS - 1].join(", ");
        let at_limit = format!("{filler}, gzip");
        assert_eq!(choose(&[&at_limit], &[Gzip]), Some(Gzip));
        let over = format!("{filler}, exi, gzip");
        assert_eq!(choose(&[&over], &[Gzip]), None);
    }

    /// Splitting a value into several fields at a comma changes nothing.
    #[test]
    fn fields_combine_as_one_list() {
        let whole = "br;q=0.2, gzip;q=0.7, identity;q=0.1, *;q=0";
        let one = AcceptEncoding::parse([whole.as_bytes()]);
        for (at, _) in whole.match_indices(',') {
            let (a, b) = (&whole[..at], &whole[at + 1..]);
            assert_eq!(AcceptEncoding::parse([a.as_bytes(), b.as_bytes()]), one);
        }
    }
}
