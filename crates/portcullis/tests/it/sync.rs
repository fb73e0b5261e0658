//! Changes made by another process (the CLI over its own store handle)
//! reach a running gateway's caches through the store's change log.

use crate::common::*;
use portcullis::auth::verifier::{KeyVerdict, VerifierConfig};
use std::time::Duration;

#[tokio::test]
async fn revocation_by_another_process_applies_after_sync() {
    let env = Env::new().await;
    let cli = env.cli().await;
    let created = cli.create("cli", &spec("data:read")).await.unwrap();
    let key = created.key.expose().to_owned();
    let a = &env.verifier;

    valid(a, &key).await; // now in A's positive cache
    cli.revoke("cli", &created.record.id).await.unwrap();
    // Until A reads the change log it still serves its cached grant: this
    // is the window the sync interval bounds.
    valid(a, &key).await;
    a.sync_changes().await;
    assert_eq!(reason(a, &key).await, "key_revoked");
    // Syncing again with nothing new changes nothing.
    a.sync_changes().await;
    assert_eq!(reason(a, &key).await, "key_revoked");
}

#[tokio::test]
async fn disable_and_rotation_by_another_process_apply_after_sync() {
    let env = Env::new().await;
    let cli = env.cli().await;
    let created = cli.create("cli", &spec("data:read")).await.unwrap();
    let key = created.key.expose().to_owned();
    let a = &env.verifier;
    valid(a, &key).await;

    cli.set_disabled("cli", &created.record.id, true)
        .await
        .unwrap();
    a.sync_changes().await;
    assert_eq!(reason(a, &key).await, "key_disabled");
    cli.set_disabled("cli", &created.record.id, false)
        .await
        .unwrap();
    a.sync_changes().await;
    valid(a, &key).await;

    let new = cli.rotate("cli", &created.record.id, 60).await.unwrap();
    a.sync_changes().await;
    valid(a, &key).await;
    valid(a, new.key.expose()).await;
    env.clock.advance(60);
    assert_eq!(reason(a, &key).await, "key_expired");
    valid(a, new.key.expose()).await;
}

#[tokio::test]
async fn a_key_created_elsewhere_after_a_negative_cache_hit_becomes_valid_after_sync() {
    let env = Env::new().await;
    let other = env.other_store().await;
    let a = &env.verifier;
    let key = made_up_key(42);
    assert_eq!(reason(a, key.expose()).await, "unknown_key"); // negatively cached

    let (row, audit) = new_key_row(&key, "bob", "data:read", T0);
    other.insert_key(&row, &audit).await.unwrap();
    // Still remembered as unknown until the change log is read.
    assert_eq!(reason(a, key.expose()).await, "unknown_key");
    a.sync_changes().await;
    let c = valid(a, key.expose()).await;
    assert_eq!(c.grant.owner, "bob");
    assert_eq!(c.grant.key_id, row.id);
}

#[tokio::test]
async fn a_verifier_started_after_changes_does_not_need_them() {
    let env = Env::new().await;
    let cli = env.cli().await;
    let created = cli.create("cli", &spec("data:read")).await.unwrap();
    cli.revoke("cli", &created.record.id).await.unwrap();
    let late = env.other_verifier().await;
    assert_eq!(reason(&late, created.key.expose()).await, "key_revoked");
    late.sync_changes().await;
    assert_eq!(reason(&late, created.key.expose()).await, "key_revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_watcher_applies_changes_by_itself() {
    let env = Env::with_config(VerifierConfig {
        sync_interval: Duration::from_millis(20),
        touch_interval: Duration::from_millis(20),
        ..VerifierConfig::default()
    })
    .await;
    env.verifier.spawn_background();
    let cli = env.cli().await;
    let created = cli.create("cli", &spec("data:read")).await.unwrap();
    let key = created.key.expose().to_owned();
    valid(&env.verifier, &key).await;
    cli.revoke("cli", &created.record.id).await.unwrap();

    // Poll (bounded) until the watcher has dropped the cached grant.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match env.verifier.verify(&key).await.unwrap() {
            KeyVerdict::Rejected(r) => {
                assert_eq!(r.reason(), "key_revoked");
                break;
            }
            KeyVerdict::Valid(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the watcher never applied the revocation (30 s)"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    // The last-used writer runs by itself too.
    let other = cli.create("cli", &spec("data:read")).await.unwrap();
    env.clock.advance(7);
    valid(&env.verifier, other.key.expose()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rec = cli.show(&other.record.id).await.unwrap();
        if rec.last_used_at == Some(T0 + 7) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last-used writer never ran (30 s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A verification that read the store just before a revocation committed
/// must not put the stale grant into the cache after the revocation's sync
/// has run: otherwise the revoked key stays valid for as long as it is used
/// (the positive cache expires on idleness) and no later sync removes it.
///
/// The verification's future is polled by hand, a few steps at a time, so
/// the revocation and the sync land between two of its steps; the store
/// answers on its own worker thread meanwhile. Where exactly the split
/// falls depends on that thread's timing, so each split point is tried many
/// times with a fresh key.
#[tokio::test]
async fn a_lookup_in_flight_during_a_revocation_does_not_resurrect_the_key() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    let env = Env::new().await;
    let cli = env.cli().await;
    let a = &env.verifier;
    for attempt in 0..60 {
        for steps in 1..=3 {
            let created = cli.create("cli", &spec("data:read")).await.unwrap();
            let key = created.key.expose().to_owned();
            let mut lookup = pin!(a.verify(&key));
            let mut early = None;
            for _ in 0..steps {
                let p = std::future::poll_fn(|cx| Poll::Ready(lookup.as_mut().poll(cx))).await;
                if let Poll::Ready(r) = p {
                    early = Some(r);
                    break;
                }
                // Let the store's worker thread answer; the lookup itself
                // is not polled meanwhile.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            cli.revoke("cli", &created.record.id).await.unwrap();
            a.sync_changes().await;
            let first = match early {
                Some(r) => r,
                None => lookup.await,
            };
            // The in-flight lookup may answer either way: it raced the
            // change.
            first.unwrap();
            // But once the revocation has been synced, the key is refused.
            a.sync_changes().await;
            match a.verify(&key).await.unwrap() {
                KeyVerdict::Rejected(r) => assert_eq!(r.reason(), "key_revoked"),
                KeyVerdict::Valid(_) => panic!(
                    "attempt {attempt}: a lookup split after {steps} poll(s) cached a grant \
                     read before the revocation; the revoked key is still valid after a \
                     later sync"
                ),
            }
        }
    }
}
