//! The canonical request path: `path::canonicalize` (and `path::decode`).
//!
//! Input: the path part of a request target (lossy UTF-8; hyper hands the
//! gateway a `&str`).
//!
//! Invariants, from the module's doc comments:
//! - canonicalising twice gives the same result, and a canonical path
//!   comes back borrowed; an input returned borrowed is returned as is;
//! - the output starts with `/`, holds only `pchar` literals (less `;`),
//!   `/` and upper-case `%XX` escapes of bytes that may not be literal;
//! - it has no `.` / `..` segments, no empty segment but one trailing
//!   slash, no `;`, `\`, `%2F`, `%2E`, `%25`, `%5C`, `%3B`, and no control
//!   character, literal or escaped;
//! - it decodes to UTF-8 without the case-fold confusables (U+0131,
//!   U+017F, U+212A), and to the same bytes as the input decodes to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::path;
use portcullis_fuzz::text;
use std::borrow::Cow;

/// RFC 3986 `pchar` less `;` and `%`: what a canonical path writes
/// literally (besides `/`).
fn literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

fn unhex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Decodes every well-formed `%XX`, independently of `path`.
fn decode_all(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(unhex),
                b.get(i + 2).copied().and_then(unhex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let input: &str = &input;
    let Ok(c) = path::canonicalize(input) else {
        return;
    };
    if let Cow::Borrowed(b) = &c {
        assert_eq!(*b, input);
    }
    let c: &str = &c;

    // Idempotent, and borrowed the second time.
    match path::canonicalize(c) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, c),
        Ok(Cow::Owned(again)) => {
            panic!("canonical {c:?} was rewritten to {again:?}")
        }
        Err(e) => panic!("canonical {c:?} is refused: {e:?}"),
    }

    // Only literals, `/` and upper-case escapes of non-literal bytes.
    let b = c.as_bytes();
    assert_eq!(b.first(), Some(&b'/'), "{c:?} does not start with /");
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).unwrap_or_default();
                assert!(
                    hex.len() == 2
                        && hex
                            .iter()
                            .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                    "{c:?}: not an upper-case escape at {i}"
                );
                let byte = unhex(hex[0]).unwrap_or(0) << 4 | unhex(hex[1]).unwrap_or(0);
                assert!(
                    !literal(byte) && byte != b'/',
                    "{c:?}: {byte:#04x} escaped but may be literal"
                );
                assert!(
                    !matches!(byte, b'%' | b'\\' | b';' | 0..=0x1f | 0x7f),
                    "{c:?}: refused byte {byte:#04x} escaped"
                );
                i += 3;
            }
            x => {
                assert!(literal(x) || x == b'/', "{c:?}: {x:#04x} written literally");
                i += 1;
            }
        }
    }
    for bad in [";", "\\", "%2F", "%2E", "%25", "%5C", "%3B", "%2f", "%2e"] {
        assert!(!c.contains(bad), "{c:?} contains {bad:?}");
    }

    // Segments.
    let body = &c[1..];
    if !body.is_empty() {
        let segments: Vec<&str> = body.split('/').collect();
        for (n, seg) in segments.iter().enumerate() {
            assert!(*seg != "." && *seg != "..", "{c:?} has a dot segment");
            assert!(
                !seg.is_empty() || n + 1 == segments.len(),
                "{c:?} has an empty segment"
            );
        }
    }

    // Decoding: UTF-8, no confusables, the same bytes as the input.
    let decoded = decode_all(c);
    let Ok(text) = std::str::from_utf8(&decoded) else {
        panic!("{c:?} does not decode to UTF-8");
    };
    assert!(
        !text.contains(['\u{131}', '\u{17f}', '\u{212a}']),
        "{c:?} decodes to a case-fold confusable"
    );
    // ASCII controls; C1 controls (U+0080..U+009F) are UTF-8 text to
    // `path` and are kept, escaped.
    assert!(
        !text.bytes().any(|b| b < 0x20 || b == 0x7f),
        "{c:?}: control"
    );
    assert_eq!(path::decode(c).as_deref(), Some(text));
    assert_eq!(
        decoded,
        decode_all(input),
        "{input:?} and {c:?} decode differently"
    );

    // The path with a query after it is not a path: `?` is always escaped.
    assert!(!c.contains('?') && !c.contains('#'));
});
