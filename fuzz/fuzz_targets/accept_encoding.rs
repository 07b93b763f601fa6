//! `Accept-Encoding` values, one per line of the input (each line a field
//! of the request), parsed and negotiated as the compression filter does.
//!
//! Checks: no panic; the choice is one of the offered codings and never
//! one of weight 0; reversing the offer changes which coding wins only
//! between codings of equal weight; splitting one value into fields at its
//! commas changes nothing (fields combine as one list, RFC 9110 §5.3).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::http::{AcceptEncoding, Coding};

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let accept = AcceptEncoding::parse(fields.iter().copied());
    let offers: [&[Coding]; 3] = [
        &Coding::ALL,
        &[Coding::Gzip],
        &[Coding::Zstd, Coding::Deflate, Coding::Gzip, Coding::Br],
    ];
    for offered in offers {
        let chosen = accept.choose(offered);
        if let Some(c) = chosen {
            assert!(offered.contains(&c), "{c:?} was not offered");
            assert!(accept.weight(c) > 0, "{c:?} has weight 0");
            assert!(offered.iter().all(|&o| accept.weight(o) <= accept.weight(c)));
        }
        let reversed: Vec<Coding> = offered.iter().rev().copied().collect();
        let other = accept.choose(&reversed);
        assert_eq!(chosen.is_some(), other.is_some());
        if let (Some(a), Some(b)) = (chosen, other) {
            assert_eq!(accept.weight(a), accept.weight(b));
        }
    }
    // The same elements as one field.
    let joined: Vec<u8> = data
        .iter()
        .map(|&b| if b == b'\n' { b',' } else { b })
        .collect();
    assert_eq!(AcceptEncoding::parse([joined.as_slice()]), accept);
});
