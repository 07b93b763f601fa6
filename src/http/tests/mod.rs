//! Codec tests, one module per concern. Every table case is also fed split
//! at every byte: each prefix must give `Partial` or the very same answer as
//! the whole input (STYLE.md rule 6; hyper's `all_async_cases`).

mod body;
mod chunked;
mod forward;
mod plan;
mod request;
mod response;

use std::fmt::Debug;

use super::Status;

/// Parses `input` and every prefix of it with `parse`, asserting that each
/// prefix is `Partial` or agrees with the whole. Returns the whole's answer.
pub(super) fn parse_every_prefix<'b, T, E>(
    case: &str,
    input: &'b [u8],
    parse: impl Fn(&'b [u8]) -> Result<Status<T>, E>,
) -> Result<Status<T>, E>
where
    T: PartialEq + Debug,
    E: PartialEq + Debug,
{
    let whole = parse(input);
    for end in 0..input.len() {
        let prefix = parse(&input[..end]);
        if prefix != Ok(Status::Partial) {
            assert_eq!(
                prefix, whole,
                "case {case:?}: prefix of {end} bytes disagrees with the whole input"
            );
        }
    }
    whole
}

/// A head of exactly `len` bytes: `start` followed by one padding field.
pub(super) fn head_of_len(start: &str, len: usize) -> Vec<u8> {
    let fixed = start.len() + "X-Pad: \r\n\r\n".len();
    assert!(len > fixed, "head_of_len: {len} is too short");
    let mut head = format!("{start}X-Pad: {}\r\n\r\n", "a".repeat(len - fixed)).into_bytes();
    head.truncate(len);
    assert_eq!(head.len(), len);
    head
}

/// A head with `start` and then `count` fields in total (`first` included).
pub(super) fn head_with_fields(start: &str, first: &str, count: usize) -> Vec<u8> {
    let mut head = format!("{start}{first}");
    for i in 1..count {
        head.push_str(&format!("X-F{i}: v\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}
