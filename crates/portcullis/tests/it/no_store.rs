//! What never reaches the store: malformed keys, and keys answered from the
//! positive or negative cache.
//!
//! "Did not ask the store" is shown by making every key query fail: the
//! `api_keys` table is renamed away from a connection outside the library.
//! A verification that still answers `Ok` did not query the store; as a
//! control, a key the caches do not know answers `Err` at the same moment.

use crate::common::*;
use portcullis::auth::verifier::KeyRejection;
use portcullis::core::key::{KeyFormatError, MAX_KEY_LEN};

/// Asserts the store really is broken: a fresh well-formed key errors.
async fn assert_store_is_broken(env: &Env, seed: u8) {
    let fresh = made_up_key(seed);
    assert!(
        env.verifier.verify(fresh.expose()).await.is_err(),
        "control: a key that must reach the store did not fail"
    );
}

fn malformed(r: &KeyRejection) -> KeyFormatError {
    match r {
        KeyRejection::Malformed(e) => *e,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_keys_are_refused_without_a_store_query() {
    let env = Env::new().await;
    let created = env.create(&spec("data:read")).await;
    let good = created.key.expose().to_owned();
    env.hide_keys_table().await;
    assert_store_is_broken(&env, 1).await;

    let mut last = good.clone().into_bytes();
    let end = last.len() - 1;
    last[end] = if last[end] == b'A' { b'B' } else { b'A' };
    let bad_checksum = String::from_utf8(last).unwrap();
    let mut random_part = good.clone().into_bytes();
    random_part[10] = if random_part[10] == b'x' { b'y' } else { b'x' };
    let bad_random = String::from_utf8(random_part).unwrap();
    let wrong_prefix = format!("sk{}", &good[2..]);
    let upper_env = good.replacen("pc_live_", "pc_LIVE_", 1);
    let non_ascii = format!("{}é{}", &good[..20], &good[22..]); // same byte length
    assert_eq!(non_ascii.len(), good.len());
    let non_ascii_env = good.replacen("pc_live_", "pc_lïve_", 1);

    let cases: Vec<(&str, String, KeyFormatError)> = vec![
        ("empty", String::new(), KeyFormatError::Shape),
        ("prefix only", "pc_".into(), KeyFormatError::Shape),
        ("huge", "x".repeat(1 << 20), KeyFormatError::TooLong),
        (
            "huge key-like",
            format!("{good}{}", "A".repeat(100_000)),
            KeyFormatError::TooLong,
        ),
        (
            "one byte too long",
            format!("pc_{}", "a".repeat(MAX_KEY_LEN - 2)),
            KeyFormatError::TooLong,
        ),
        ("non-ASCII random part", non_ascii, KeyFormatError::Shape),
        ("non-ASCII env", non_ascii_env, KeyFormatError::Env),
        ("only non-ASCII", "ключ".repeat(4), KeyFormatError::Shape),
        ("wrong prefix", wrong_prefix, KeyFormatError::Shape),
        ("upper-case env", upper_env, KeyFormatError::Env),
        (
            "truncated",
            good[..good.len() - 1].to_owned(),
            KeyFormatError::Shape,
        ),
        ("trailing space", format!("{good} "), KeyFormatError::Shape),
        ("bad checksum", bad_checksum, KeyFormatError::Checksum),
        ("changed random part", bad_random, KeyFormatError::Checksum),
        (
            "JWT",
            "eyJhbGciOiJIUzI1NiJ9.e30.sig".into(),
            KeyFormatError::Shape,
        ),
    ];
    for (what, input, want) in &cases {
        let r = rejected(&env.verifier, input).await;
        assert_eq!(malformed(&r), *want, "{what}");
        let expect_reason = if *want == KeyFormatError::Checksum {
            "bad_checksum"
        } else {
            "malformed_key"
        };
        assert_eq!(r.reason(), expect_reason, "{what}");
        assert_eq!(r.key_id(), None, "{what}");
    }

    // Every single-character change of a real key is caught by the format
    // check (CRC32 catches every single-byte error).
    for i in 0..good.len() {
        for c in [b'0', b'z', b'Z', b'_', b'-', 0x7f] {
            let mut b = good.clone().into_bytes();
            if b[i] == c {
                continue;
            }
            b[i] = c;
            let s = String::from_utf8(b).unwrap();
            let r = rejected(&env.verifier, &s).await;
            malformed(&r);
        }
    }

    // The store was broken throughout, and is still.
    assert_store_is_broken(&env, 2).await;
    env.restore_keys_table().await;
    valid(&env.verifier, &good).await;
}

#[tokio::test]
async fn unknown_keys_ask_the_store_once_per_negative_ttl() {
    let env = Env::new().await;
    let unknown = made_up_key(7);

    // First sight of the key: it goes to the store (which fails here).
    env.hide_keys_table().await;
    assert!(env.verifier.verify(unknown.expose()).await.is_err());
    env.restore_keys_table().await;
    // Store answers "unknown"; the answer is remembered.
    assert_eq!(
        rejected(&env.verifier, unknown.expose()).await,
        KeyRejection::Unknown
    );

    // Within negative_ttl (30 s by default) no query: with the store broken
    // the answer is still Ok(Unknown), many times over.
    env.hide_keys_table().await;
    for _ in 0..100 {
        assert_eq!(reason(&env.verifier, unknown.expose()).await, "unknown_key");
    }
    assert_store_is_broken(&env, 8).await;
    env.restore_keys_table().await;
}

#[tokio::test]
async fn a_cached_key_is_served_without_the_store_and_a_limited_one_is_not() {
    let env = Env::new().await;
    let unlimited = env.create(&spec("data:read")).await;
    let mut s = spec("data:read");
    s.uses = Some(10);
    let limited = env.create(&s).await;
    valid(&env.verifier, unlimited.key.expose()).await;
    valid(&env.verifier, limited.key.expose()).await;

    env.hide_keys_table().await;
    // A cache hit needs no query...
    for _ in 0..10 {
        valid(&env.verifier, unlimited.key.expose()).await;
    }
    // ...but a limited key spends its use in the store, every time, and a
    // store failure is an error, never a pass.
    assert!(env.verifier.verify(limited.key.expose()).await.is_err());
    env.restore_keys_table().await;
    valid(&env.verifier, limited.key.expose()).await;
    assert_eq!(
        env.keys
            .show(&limited.record.id)
            .await
            .unwrap()
            .remaining_uses,
        Some(8)
    );
}
