//! HTTP Basic credentials: `basic::parse` (and `basic::encode`).
//!
//! Input: the part of `Authorization: Basic …` after the scheme (lossy
//! UTF-8). The same text, read as `user:password`, is also encoded and
//! parsed back.
//!
//! Invariants:
//! - parsed credentials have a non-empty user name without `:`, and came
//!   from at most `MAX_ENCODED` bytes of base64;
//! - `encode(user, password)` of parsed credentials parses back to the
//!   same user and password;
//! - any `user:password` with a non-empty user without `:` survives
//!   `encode` then `parse` unchanged, unless the encoding is too long (then
//!   it is refused as `TooLong`, never misread).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::basic::{self, BasicError};
use portcullis_fuzz::text;

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let input: &str = &input;

    if let Ok(c) = basic::parse(input) {
        assert!(!c.username.is_empty());
        assert!(!c.username.contains(':'));
        assert!(input.trim().len() <= basic::MAX_ENCODED);
        round_trip(&c.username, c.password.expose());
    }

    // The input as a name and password.
    if let Some((user, pass)) = input.split_once(':')
        && !user.is_empty()
    {
        round_trip(user, pass);
    }
});

fn round_trip(user: &str, pass: &str) {
    let header = basic::encode(user, pass);
    let Some(encoded) = header.strip_prefix("Basic ") else {
        panic!("encode did not write `Basic `: {header:?}");
    };
    match basic::parse(encoded) {
        Ok(back) => {
            assert_eq!(back.username, user, "user name changed in a round trip");
            assert_eq!(back.password.expose(), pass, "password changed");
        }
        Err(BasicError::TooLong) => assert!(encoded.len() > basic::MAX_ENCODED),
        Err(e) => panic!("encode({user:?}, ..) does not parse back: {e:?}"),
    }
}
