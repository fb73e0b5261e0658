//! Rotation: a replacement with the same settings, and a grace period for
//! the old key.

use crate::common::*;
use portcullis::auth::keys::KeyError;
use portcullis::store::KeyFilter;

async fn key_count(env: &Env) -> usize {
    env.keys
        .list(&KeyFilter {
            include_revoked: true,
            limit: 1000,
            ..KeyFilter::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn both_keys_work_during_grace_and_the_old_one_stops_at_its_end() {
    let env = Env::new().await;
    let mut s = spec("data:read data:write");
    s.rate_limit = Some("10/second".into());
    s.metadata = serde_json::json!({"ci": true});
    let old = env.create(&s).await;
    let old_key = old.key.expose().to_owned();
    valid(&env.verifier, &old_key).await; // cached before the rotation

    env.clock.advance(100);
    let new = env.keys.rotate("test", &old.record.id, 3600).await.unwrap();
    let new_key = new.key.expose().to_owned();
    assert_ne!(new_key, old_key);
    assert_ne!(new.record.id, old.record.id);
    assert_eq!(
        new.record.rotated_from.as_deref(),
        Some(old.record.id.as_str())
    );
    assert_eq!(new.record.created_at, T0 + 100);
    // Same settings.
    assert_eq!(new.record.owner, old.record.owner);
    assert_eq!(new.record.name, old.record.name);
    assert_eq!(new.record.scopes, old.record.scopes);
    assert_eq!(new.record.env, old.record.env);
    assert_eq!(new.record.rate_limit, old.record.rate_limit);
    assert_eq!(new.record.metadata, old.record.metadata);
    assert_eq!(new.record.expires_at, None);

    let old_rec = env.keys.show(&old.record.id).await.unwrap();
    assert_eq!(old_rec.rotated_to.as_deref(), Some(new.record.id.as_str()));
    assert_eq!(old_rec.expires_at, Some(T0 + 100 + 3600));

    let a = valid(&env.verifier, &old_key).await;
    let b = valid(&env.verifier, &new_key).await;
    assert_eq!(a.grant.owner, b.grant.owner);
    assert_eq!(a.grant.scopes, b.grant.scopes);
    assert_eq!(b.grant.key_id, new.record.id);

    env.clock.advance(3599);
    valid(&env.verifier, &old_key).await;
    valid(&env.verifier, &new_key).await;
    env.clock.advance(1);
    assert_eq!(reason(&env.verifier, &old_key).await, "key_expired");
    valid(&env.verifier, &new_key).await;

    // Another gateway that never cached the old key agrees.
    let cold = env.other_verifier().await;
    assert_eq!(reason(&cold, &old_key).await, "key_expired");
    valid(&cold, &new_key).await;
}

#[tokio::test]
async fn revoking_the_old_key_during_grace_rejects_it_at_once() {
    let env = Env::new().await;
    let old = env.create(&spec("data:read")).await;
    let old_key = old.key.expose().to_owned();
    let new = env
        .keys
        .rotate("test", &old.record.id, 86_400)
        .await
        .unwrap();
    valid(&env.verifier, &old_key).await;
    env.keys.revoke("test", &old.record.id).await.unwrap();
    assert_eq!(reason(&env.verifier, &old_key).await, "key_revoked");
    valid(&env.verifier, new.key.expose()).await;
}

#[tokio::test]
async fn a_key_is_rotated_once_and_a_revoked_key_not_at_all() {
    let env = Env::new().await;
    let old = env.create(&spec("data:read")).await;
    let first = env.keys.rotate("test", &old.record.id, 600).await.unwrap();
    match env.keys.rotate("test", &old.record.id, 600).await {
        Err(KeyError::Conflict(_)) => {}
        other => panic!("second rotation: {other:?}"),
    }
    // The failed rotation changed nothing.
    let rec = env.keys.show(&old.record.id).await.unwrap();
    assert_eq!(rec.rotated_to.as_deref(), Some(first.record.id.as_str()));
    assert_eq!(rec.expires_at, Some(T0 + 600));
    assert_eq!(key_count(&env).await, 2);
    // The replacement can itself be rotated.
    let second = env.keys.rotate("test", &first.record.id, 0).await.unwrap();
    assert_eq!(
        second.record.rotated_from.as_deref(),
        Some(first.record.id.as_str())
    );
    // grace 0: the replaced key ends now.
    assert_eq!(
        reason(&env.verifier, first.key.expose()).await,
        "key_expired"
    );
    valid(&env.verifier, second.key.expose()).await;

    let revoked = env.create(&spec("data:read")).await;
    env.keys.revoke("test", &revoked.record.id).await.unwrap();
    let before = key_count(&env).await;
    match env.keys.rotate("test", &revoked.record.id, 600).await {
        Err(KeyError::Conflict(_)) => {}
        other => panic!("rotating a revoked key: {other:?}"),
    }
    assert_eq!(key_count(&env).await, before);
    assert_eq!(
        env.keys.show(&revoked.record.id).await.unwrap().rotated_to,
        None
    );

    match env.keys.rotate("test", "key_nope", 600).await {
        Err(KeyError::NotFound(_)) => {}
        other => panic!("rotating an unknown key: {other:?}"),
    }
    match env.keys.rotate("test", &second.record.id, -1).await {
        Err(KeyError::Invalid(_)) => {}
        other => panic!("negative grace: {other:?}"),
    }
}

#[tokio::test]
async fn rotation_keeps_the_end_of_life_and_never_extends_the_old_key() {
    let env = Env::new().await;
    let mut s = spec("data:read");
    s.expires_in = Some(7200);
    s.uses = Some(3);
    let old = env.create(&s).await;
    env.clock.advance(100);

    // Grace longer than the old key has left: the old key keeps its end.
    let new = env
        .keys
        .rotate("test", &old.record.id, 10_000)
        .await
        .unwrap();
    assert_eq!(new.record.expires_at, Some(T0 + 7200));
    assert_eq!(new.record.remaining_uses, Some(3));
    assert_eq!(
        env.keys.show(&old.record.id).await.unwrap().expires_at,
        Some(T0 + 7200)
    );

    // An expired key cannot be rotated.
    env.clock.advance(7100);
    assert_eq!(reason(&env.verifier, new.key.expose()).await, "key_expired");
    match env.keys.rotate("test", &new.record.id, 60).await {
        Err(KeyError::Conflict(_)) => {}
        other => panic!("rotating an expired key: {other:?}"),
    }
}
