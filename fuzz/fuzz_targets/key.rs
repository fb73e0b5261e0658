//! API key format: `key::ApiKey::parse`, `key::check_format`,
//! `key::looks_like_key`.
//!
//! Input: the presented string (lossy UTF-8). The same bytes also seed a
//! generated key, which must parse, and refuse every one-character change.
//!
//! Invariants:
//! - `parse` succeeds exactly when `check_format` does, with the same error;
//! - a parsed key's `expose()` is the input, its `env()` is the label
//!   `check_format` measured, its length is the fixed shape's, its
//!   `display_prefix()` is a prefix of it, and `looks_like_key` says yes;
//! - a generated key parses, and changing any one character of it to
//!   another base62 digit makes it refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::key::{self, ApiKey, RANDOM_BYTES};
use portcullis_fuzz::{Rng, text};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let input: &str = &input;

    let parsed = ApiKey::parse(input);
    let checked = key::check_format(input);
    match (&parsed, checked) {
        (Ok(k), Ok(env_len)) => {
            assert_eq!(k.expose(), input, "expose() is not the input");
            assert_eq!(k.env(), &input[3..3 + env_len]);
            assert!(key::valid_env(k.env()));
            assert_eq!(input.len(), 3 + env_len + 1 + 43 + 1 + 6);
            assert!(input.len() <= key::MAX_KEY_LEN);
            assert!(input.starts_with(&k.display_prefix()));
            assert!(key::looks_like_key(input));
            assert_eq!(k.hash(), key::KeyHash::of(input));
        }
        (Err(a), Err(b)) => assert_eq!(*a, b, "parse and check_format disagree"),
        (p, c) => panic!(
            "parse and check_format disagree: {:?} vs {c:?}",
            p.as_ref().map(|_| ())
        ),
    }
    assert_eq!(key::looks_like_key(input), input.starts_with("pc_"));

    // A generated key from the same bytes.
    let mut random = [0u8; RANDOM_BYTES];
    for (slot, b) in random.iter_mut().zip(data.iter().rev()) {
        *slot = *b;
    }
    let env = input
        .split(['_', ' ', '\n'])
        .find(|e| key::valid_env(e))
        .unwrap_or("live");
    let Ok(generated) = ApiKey::generate(env, &random) else {
        panic!("generate refused a valid env {env:?}");
    };
    let s = generated.expose();
    let again = ApiKey::parse(s).map_err(|e| format!("{e:?}"));
    assert!(again.is_ok(), "a generated key does not parse: {again:?}");
    assert_eq!(key::check_format(s), Ok(env.len()));

    let mut rng = Rng::new(data);
    let body_start = 3 + env.len() + 1;
    for _ in 0..4 {
        let at = body_start + rng.below(s.len() - body_start);
        let orig = s.as_bytes()[at];
        if orig == b'_' {
            continue;
        }
        let mut with = BASE62[rng.below(BASE62.len())];
        if with == orig {
            with = if orig == b'0' { b'1' } else { b'0' };
        }
        let mut changed = s.as_bytes().to_vec();
        changed[at] = with;
        let changed = String::from_utf8(changed).unwrap_or_default();
        assert!(
            ApiKey::parse(&changed).is_err(),
            "a key changed at {at} still parses"
        );
    }
});
