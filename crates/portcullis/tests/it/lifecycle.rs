//! A key's life in one process: create, verify, expire, disable, revoke,
//! last-used times and the audit trail.

use crate::common::*;
use portcullis::auth::keys::{KeyError, KeySpec};
use portcullis::auth::verifier::KeyRejection;
use portcullis::core::KeyState;
use portcullis::store::KeyFilter;
use sha2::{Digest, Sha256};

fn all_keys() -> KeyFilter {
    KeyFilter {
        include_revoked: true,
        limit: 1000,
        ..KeyFilter::default()
    }
}

#[tokio::test]
async fn created_key_verifies_with_owner_and_scopes() {
    let env = Env::new().await;
    let mut s = spec("data:read data:write");
    s.rate_limit = Some("100/minute".into());
    s.metadata = serde_json::json!({"team": "payments"});
    let created = env.create(&s).await;
    let key = created.key.expose().to_owned();
    let rec = &created.record;

    assert!(
        key.starts_with("pc_live_"),
        "{}",
        created.key.display_prefix()
    );
    assert!(rec.id.starts_with("key_"));
    assert_eq!(rec.prefix, created.key.display_prefix());
    assert!(key.starts_with(&rec.prefix));
    assert_eq!(rec.owner, "alice");
    assert_eq!(rec.name, "test key");
    assert_eq!(rec.env, "live");
    assert_eq!(rec.scopes, "data:read data:write");
    assert_eq!(rec.created_at, T0);
    assert_eq!(rec.expires_at, None);
    assert_eq!(rec.revoked_at, None);
    assert!(!rec.disabled);
    assert_eq!(rec.remaining_uses, None);
    assert_eq!(rec.rate_limit.as_deref(), Some("100/minute"));
    assert_eq!(rec.metadata, serde_json::json!({"team": "payments"}));
    assert_eq!(rec.last_used_at, None);

    let c = valid(&env.verifier, &key).await;
    assert_eq!(c.grant.key_id, rec.id);
    assert_eq!(c.grant.owner, "alice");
    assert!(c.grant.scopes.contains("data:read"));
    assert!(c.grant.scopes.contains("data:write"));
    assert!(!c.grant.scopes.contains("admin"));
    assert_eq!(
        c.grant
            .rate_limit
            .as_ref()
            .map(|p| p.to_string())
            .as_deref(),
        Some("100/minute")
    );
    // The second verification is a cache hit and says the same.
    let again = valid(&env.verifier, &key).await;
    assert_eq!(again.grant, c.grant);

    // What the admin API shows is what was returned at creation.
    assert_eq!(&env.keys.show(&rec.id).await.unwrap(), rec);
    let listed = env.keys.list(&all_keys()).await.unwrap();
    assert_eq!(listed, vec![rec.clone()]);
    assert!(matches!(
        env.keys.show("key_doesnotexist").await,
        Err(KeyError::NotFound(_))
    ));
}

#[tokio::test]
async fn only_the_hash_of_a_key_reaches_the_database_file() {
    let env = Env::new().await;
    let created = env.create(&spec("data:read")).await;
    let key = created.key.expose().to_owned();
    valid(&env.verifier, &key).await;
    env.verifier.flush_last_used().await;
    // A rotation and a revocation write more rows about the key.
    let replacement = env
        .keys
        .rotate("test", &created.record.id, 60)
        .await
        .unwrap();
    env.keys.revoke("test", &created.record.id).await.unwrap();

    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", env.path.display());
        if let Ok(b) = std::fs::read(&p) {
            bytes.extend_from_slice(&b);
        }
    }
    assert!(bytes.len() > 4096, "the database files were not read");
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);

    for k in [&key, &replacement.key.expose().to_owned()] {
        // Not the key, nor its secret part past the display prefix.
        assert!(
            !contains(k.as_bytes()),
            "the plaintext key is in the database file"
        );
        let secret_tail = &k[created.record.prefix.len()..];
        assert!(
            !contains(secret_tail.as_bytes()),
            "the key's secret part is in the database file"
        );
        // Its SHA-256 is (computed here, not by the library).
        let digest: [u8; 32] = Sha256::digest(k.as_bytes()).into();
        assert!(
            contains(&digest),
            "the key's SHA-256 is not in the database file"
        );
    }
    assert_eq!(
        created.key.hash().0,
        <[u8; 32]>::from(Sha256::digest(key.as_bytes()))
    );
    // The display prefix is stored, for people to recognise the key.
    assert!(contains(created.record.prefix.as_bytes()));
}

#[tokio::test]
async fn expiry_follows_the_injected_clock() {
    let env = Env::new().await;
    let mut s = spec("data:read");
    s.expires_in = Some(3600);
    let created = env.create(&s).await;
    let key = created.key.expose().to_owned();
    assert_eq!(created.record.expires_at, Some(T0 + 3600));

    valid(&env.verifier, &key).await;
    env.clock.advance(3599);
    valid(&env.verifier, &key).await; // cached, checked against the clock
    env.clock.advance(1);
    let r = rejected(&env.verifier, &key).await;
    assert_eq!(r.reason(), "key_expired");
    assert_eq!(
        r,
        KeyRejection::State {
            key_id: created.record.id.as_str().into(),
            state: KeyState::Expired
        }
    );
    assert_eq!(r.key_id(), Some(created.record.id.as_str()));

    // A verifier that never saw the key (cold cache, read from the store)
    // says the same.
    let cold = env.other_verifier().await;
    assert_eq!(reason(&cold, &key).await, "key_expired");
}

#[tokio::test]
async fn disable_enable_and_final_revocation() {
    let env = Env::new().await;
    let created = env.create(&spec("data:read")).await;
    let id = created.record.id.clone();
    let key = created.key.expose().to_owned();
    valid(&env.verifier, &key).await;

    let rec = env.keys.set_disabled("test", &id, true).await.unwrap();
    assert!(rec.disabled);
    assert_eq!(reason(&env.verifier, &key).await, "key_disabled");
    let rec = env.keys.set_disabled("test", &id, false).await.unwrap();
    assert!(!rec.disabled);
    valid(&env.verifier, &key).await;

    env.clock.advance(10);
    let rec = env.keys.revoke("test", &id).await.unwrap();
    assert_eq!(rec.revoked_at, Some(T0 + 10));
    assert_eq!(reason(&env.verifier, &key).await, "key_revoked");

    // Revocation is final.
    assert!(matches!(
        env.keys.set_disabled("test", &id, false).await,
        Err(KeyError::Conflict(_))
    ));
    assert!(matches!(
        env.keys.set_disabled("test", &id, true).await,
        Err(KeyError::Conflict(_))
    ));
    assert!(matches!(
        env.keys.revoke("test", &id).await,
        Err(KeyError::Conflict(_))
    ));
    let rec = env.keys.show(&id).await.unwrap();
    assert_eq!(rec.revoked_at, Some(T0 + 10));
    assert!(!rec.disabled);
    assert_eq!(reason(&env.verifier, &key).await, "key_revoked");

    // A revoked-while-disabled key reports revocation first.
    let other = env.create(&spec("data:read")).await;
    env.keys
        .set_disabled("test", &other.record.id, true)
        .await
        .unwrap();
    env.keys.revoke("test", &other.record.id).await.unwrap();
    assert_eq!(
        reason(&env.verifier, other.key.expose()).await,
        "key_revoked"
    );

    // Revoked keys are hidden from the default listing, shown on request.
    let default = env
        .keys
        .list(&KeyFilter {
            limit: 100,
            ..KeyFilter::default()
        })
        .await
        .unwrap();
    assert!(default.is_empty(), "{default:?}");
    assert_eq!(env.keys.list(&all_keys()).await.unwrap().len(), 2);

    for missing in [
        env.keys.revoke("test", "key_nope").await.err(),
        env.keys.set_disabled("test", "key_nope", true).await.err(),
    ] {
        assert!(
            matches!(missing, Some(KeyError::NotFound(_))),
            "{missing:?}"
        );
    }
}

#[tokio::test]
async fn audit_events_are_written_for_every_change() {
    let env = Env::new().await;
    let created = env.create(&spec("data:read")).await;
    let id = created.record.id.clone();
    env.clock.advance(1);
    env.keys.set_disabled("admin-1", &id, true).await.unwrap();
    env.clock.advance(1);
    env.keys.set_disabled("admin-1", &id, false).await.unwrap();
    env.clock.advance(1);
    let replacement = env.keys.rotate("cli", &id, 300).await.unwrap();
    env.clock.advance(1);
    env.keys.revoke("cli", &id).await.unwrap();
    // A refused change writes nothing.
    assert!(env.keys.revoke("cli", &id).await.is_err());

    let events = env.store.list_audit(None, 100).await.unwrap();
    let got: Vec<(&str, &str, Option<&str>, i64)> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_str(),
                e.target.as_deref(),
                e.at,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("key.revoke", "cli", Some(id.as_str()), T0 + 4),
            ("key.rotate", "cli", Some(id.as_str()), T0 + 3),
            ("key.enable", "admin-1", Some(id.as_str()), T0 + 2),
            ("key.disable", "admin-1", Some(id.as_str()), T0 + 1),
            ("key.create", "test", Some(id.as_str()), T0),
        ]
    );
    // Newest first, strictly ordered ids.
    assert!(events.windows(2).all(|w| w[0].id > w[1].id));
    let rotate = &events[1];
    assert_eq!(rotate.detail["replacement"], replacement.record.id.as_str());
    assert_eq!(rotate.detail["grace_seconds"], 300);
    assert_eq!(events[4].detail["owner"], "alice");

    // Paging.
    let older = env.store.list_audit(Some(events[1].id), 100).await.unwrap();
    assert_eq!(older, events[2..].to_vec());

    // No key material in the trail.
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(created.key.expose()));
    assert!(!all.contains(replacement.key.expose()));
}

#[tokio::test]
async fn last_used_is_written_in_batches_with_the_clock_time() {
    let env = Env::new().await;
    let a = env.create(&spec("data:read")).await;
    let b = env.create(&spec("data:read")).await;
    let (ka, kb) = (a.key.expose().to_owned(), b.key.expose().to_owned());

    env.clock.advance(10);
    valid(&env.verifier, &ka).await;
    // Nothing is written until the flush.
    assert_eq!(
        env.keys.show(&a.record.id).await.unwrap().last_used_at,
        None
    );
    env.verifier.flush_last_used().await;
    assert_eq!(
        env.keys.show(&a.record.id).await.unwrap().last_used_at,
        Some(T0 + 10)
    );
    assert_eq!(
        env.keys.show(&b.record.id).await.unwrap().last_used_at,
        None
    );

    // Many uses between two flushes: the flush writes the latest time.
    for _ in 0..50 {
        env.clock.advance(1);
        valid(&env.verifier, &ka).await;
        valid(&env.verifier, &kb).await;
    }
    env.verifier.flush_last_used().await;
    assert_eq!(
        env.keys.show(&a.record.id).await.unwrap().last_used_at,
        Some(T0 + 60)
    );
    assert_eq!(
        env.keys.show(&b.record.id).await.unwrap().last_used_at,
        Some(T0 + 60)
    );

    // A flush with nothing queued changes nothing; a later use is queued
    // again after a flush.
    env.clock.advance(100);
    env.verifier.flush_last_used().await;
    assert_eq!(
        env.keys.show(&a.record.id).await.unwrap().last_used_at,
        Some(T0 + 60)
    );
    valid(&env.verifier, &ka).await;
    env.verifier.flush_last_used().await;
    assert_eq!(
        env.keys.show(&a.record.id).await.unwrap().last_used_at,
        Some(T0 + 160)
    );

    // A rejected key is not "used".
    env.keys.revoke("test", &b.record.id).await.unwrap();
    env.clock.advance(5);
    assert_eq!(reason(&env.verifier, &kb).await, "key_revoked");
    env.verifier.flush_last_used().await;
    assert_eq!(
        env.keys.show(&b.record.id).await.unwrap().last_used_at,
        Some(T0 + 60)
    );
}

#[tokio::test]
async fn invalid_specs_are_refused_and_write_nothing() {
    let env = Env::new().await;
    let base = spec("data:read");
    let bad: Vec<(&str, KeySpec)> = vec![
        (
            "uses 0",
            KeySpec {
                uses: Some(0),
                ..base.clone()
            },
        ),
        (
            "expires in the past",
            KeySpec {
                expires_in: Some(-1),
                ..base.clone()
            },
        ),
        (
            "expires now",
            KeySpec {
                expires_in: Some(0),
                ..base.clone()
            },
        ),
        (
            "bad env",
            KeySpec {
                env: "LIVE".into(),
                ..base.clone()
            },
        ),
        (
            "empty env",
            KeySpec {
                env: String::new(),
                ..base.clone()
            },
        ),
        (
            "empty owner",
            KeySpec {
                owner: " ".into(),
                ..base.clone()
            },
        ),
        (
            "control char in name",
            KeySpec {
                name: "a\nb".into(),
                ..base.clone()
            },
        ),
        (
            "long name",
            KeySpec {
                name: "n".repeat(129),
                ..base.clone()
            },
        ),
        (
            "bad rate",
            KeySpec {
                rate_limit: Some("10/fortnight".into()),
                ..base.clone()
            },
        ),
        (
            "metadata not an object",
            KeySpec {
                metadata: serde_json::json!([1]),
                ..base.clone()
            },
        ),
        (
            "metadata too large",
            KeySpec {
                metadata: serde_json::json!({"x": "y".repeat(5000)}),
                ..base.clone()
            },
        ),
    ];
    for (what, s) in bad {
        match env.keys.create("test", &s).await {
            Err(KeyError::Invalid(_)) => {}
            // A size in bytes: the admin API answers it 413, not 422.
            Err(KeyError::TooLarge(_)) if what == "metadata too large" => {}
            other => panic!("{what}: expected Invalid, got {other:?}"),
        }
    }
    assert!(env.keys.list(&all_keys()).await.unwrap().is_empty());
    assert!(env.store.list_audit(None, 100).await.unwrap().is_empty());
    assert_eq!(env.raw_count("SELECT COUNT(*) FROM key_changes").await, 0);
}
