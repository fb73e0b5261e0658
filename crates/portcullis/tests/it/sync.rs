//! Changes made by another process (the CLI over its own store handle)
//! reach a running gateway's caches through the store's change log.

use crate::common::*;
use portcullis::auth::verifier::{KeyVerdict, VerifierConfig, VerifierHealth};
use portcullis::store::StoreError;
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

/// A change-log row that becomes visible after a higher-numbered one (on
/// Postgres: a transaction that took its number first but committed
/// last) is still applied: the verifier waits for the gap instead of
/// moving past it. Made here by hand: the revocation's row is moved out
/// of sight, a later change is read, and the row is put back.
#[tokio::test]
async fn a_change_committed_out_of_sequence_order_is_not_skipped() {
    let env = Env::new().await;
    let cli = env.cli().await;
    let created = cli.create("cli", &spec("data:read")).await.unwrap();
    let key = created.key.expose().to_owned();
    let a = &env.verifier;
    a.sync_changes().await;
    valid(a, &key).await;
    let before = env.store.last_change().await.unwrap();

    cli.revoke("cli", &created.record.id).await.unwrap();
    env.raw("UPDATE key_changes SET seq = -seq WHERE seq = (SELECT MAX(seq) FROM key_changes)")
        .await;
    cli.create("cli", &spec("data:read")).await.unwrap();
    a.sync_changes().await;
    // The revocation is not visible yet: the cached grant still passes.
    valid(a, &key).await;

    // The late row lands below the number already read.
    env.raw("UPDATE key_changes SET seq = -seq WHERE seq < 0")
        .await;
    // A poller that keeps only the highest number seen misses it...
    let high = env.store.last_change().await.unwrap();
    assert_eq!(high, before + 2);
    let (_, missed) = env.store.changes_since(high).await.unwrap();
    assert!(missed.is_empty());
    // ...this one does not.
    a.sync_changes().await;
    assert_eq!(reason(a, &key).await, "key_revoked");
}

/// Makes every change-log poll fail, from a connection outside the
/// library: the log's table is renamed away.
async fn break_change_log(env: &Env) {
    env.raw("ALTER TABLE key_changes RENAME TO key_changes_hidden")
        .await;
}

async fn mend_change_log(env: &Env) {
    env.raw("ALTER TABLE key_changes_hidden RENAME TO key_changes")
        .await;
}

fn is_unavailable(r: Result<KeyVerdict, StoreError>) -> bool {
    matches!(r, Err(StoreError::Unavailable(_)))
}

/// After a failed poll, a key the caches do not know is answered
/// `Unavailable` (503) without a store query (so a dead database costs one
/// timeout, not one per request), while cached keys keep working; the
/// next successful poll closes the breaker by itself.
#[tokio::test]
async fn a_failed_poll_opens_the_breaker_until_a_poll_succeeds() {
    let env = Env::new().await;
    let a = &env.verifier;
    let known = env.create(&spec("data:read")).await;
    valid(a, known.key.expose()).await;
    assert!(a.health().ready());

    break_change_log(&env).await;
    a.sync_changes().await;
    let h = a.health();
    assert!(h.breaker_open && !h.stale && !h.ready(), "{h:?}");

    let lookups = env.store.key_lookups();
    for seed in 0..50 {
        let unknown = made_up_key(seed);
        assert!(is_unavailable(a.verify(unknown.expose()).await));
    }
    // Not one of them reached the store.
    assert_eq!(env.store.key_lookups(), lookups);
    // Within stale_grace the cached key still verifies.
    env.clock.advance(30);
    valid(a, known.key.expose()).await;
    // The watcher keeps trying; while the log is unreadable, nothing moves.
    a.sync_changes().await;
    assert!(a.health().breaker_open);

    mend_change_log(&env).await;
    a.sync_changes().await;
    assert_eq!(
        a.health(),
        VerifierHealth {
            last_poll_age_secs: 0,
            breaker_open: false,
            stale: false
        }
    );
    assert_eq!(reason(a, made_up_key(1).expose()).await, "unknown_key");
    assert_eq!(env.store.key_lookups(), lookups + 1);
    valid(a, known.key.expose()).await;
}

/// Past `stale_grace` without a successful poll, the instance cannot know
/// about revocations: the caches are dropped and every key, cached or
/// not, is `Unavailable`. When the store is back, the first successful
/// poll applies what changed meanwhile, with no restart.
#[tokio::test]
async fn past_stale_grace_every_key_is_unavailable_until_the_store_is_back() {
    let env = Env::with_config(VerifierConfig {
        stale_grace: Duration::from_secs(10),
        ..VerifierConfig::default()
    })
    .await;
    let a = &env.verifier;
    let cli = env.cli().await;
    let kept = env.create(&spec("data:read")).await;
    let revoked = env.create(&spec("data:read")).await;
    valid(a, kept.key.expose()).await;
    valid(a, revoked.key.expose()).await;
    assert_eq!(reason(a, made_up_key(9).expose()).await, "unknown_key");
    // Revoked elsewhere, just before the outage: not read yet.
    cli.revoke("cli", &revoked.record.id).await.unwrap();

    break_change_log(&env).await;
    a.sync_changes().await;
    env.clock.advance(10);
    // Exactly stale_grace: still served from the caches.
    assert!(!a.health().stale);
    valid(a, kept.key.expose()).await;
    assert_eq!(reason(a, made_up_key(9).expose()).await, "unknown_key");

    env.clock.advance(1);
    let h = a.health();
    assert!(
        h.stale && h.breaker_open && h.last_poll_age_secs == 11,
        "{h:?}"
    );
    let lookups = env.store.key_lookups();
    for key in [
        kept.key.expose(),
        revoked.key.expose(),
        made_up_key(9).expose(),
    ] {
        assert!(is_unavailable(a.verify(key).await), "cached or not, 503");
    }
    // The watcher drops the caches too (the first stale request already
    // did): nothing cached is trusted again.
    a.sync_changes().await;
    assert_eq!(a.cache_sizes(), (0, 0));
    assert_eq!(env.store.key_lookups(), lookups);

    mend_change_log(&env).await;
    a.sync_changes().await;
    assert!(a.health().ready());
    valid(a, kept.key.expose()).await;
    assert_eq!(reason(a, revoked.key.expose()).await, "key_revoked");
    assert_eq!(reason(a, made_up_key(9).expose()).await, "unknown_key");
}

/// The guard turns the breaker's answer into 503 `store_unavailable`,
/// never a 401 or a pass.
#[tokio::test]
async fn the_breaker_is_503_store_unavailable_at_the_guard() {
    use portcullis::auth::guard::{Guard, Head, Policy};
    use portcullis::core::credential::CredentialNames;
    use portcullis::core::{ErrorCode, Scheme, SchemeSet};

    let env = Env::new().await;
    let guard = Guard::new(env.verifier.clone(), CredentialNames::default());
    break_change_log(&env).await;
    env.verifier.sync_changes().await;
    let unknown = made_up_key(5);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", unknown.expose().parse().unwrap());
    let method = http::Method::GET;
    let policy = Policy {
        schemes: SchemeSet::new(&[Scheme::ApiKeyHeader]),
        scopes: scopes(""),
    };
    let denied = guard
        .check(&policy, &Head::new(&method, &headers, None))
        .await
        .expect_err("the breaker is open");
    assert_eq!(denied.problem.status(), 503);
    assert_eq!(denied.problem.code, ErrorCode::StoreUnavailable);
    mend_change_log(&env).await;
}

/// Admin writes while the store cannot be written are a clear 503
/// problem+json `store_unavailable`, not a 500; past `stale_grace` the
/// admin key itself can no longer be checked, which is a 503 too.
#[tokio::test]
async fn admin_writes_during_an_outage_are_503_problems() {
    use axum::body::Body;
    use portcullis::admin::{AdminState, router};
    use portcullis::auth::guard::Guard;
    use portcullis::core::credential::CredentialNames;
    use tower::ServiceExt;

    let env = Env::new().await;
    let admin = env.create(&spec("admin")).await;
    let target = env.create(&spec("data:read")).await;
    let app = router(AdminState {
        keys: env.keys.clone(),
        guard: Guard::new(env.verifier.clone(), CredentialNames::default()),
        identity: None,
        limiter: None,
    });
    let post = |path: String, body: &'static str| {
        let r = http::Request::post(path)
            .header("x-api-key", admin.key.expose())
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        app.clone().oneshot(r)
    };
    let is_503 = |r: axum::response::Response| async move {
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "store_unavailable", "{v}");
    };
    let create = || {
        post(
            "/admin/v1/keys".into(),
            r#"{"name": "svc", "owner": "team-a", "scopes": ["data:read"]}"#,
        )
    };
    let revoke = || post(format!("/admin/v1/keys/{}/revoke", target.record.id), "{}");
    assert_eq!(create().await.unwrap().status(), 201);

    break_change_log(&env).await;
    env.verifier.sync_changes().await;
    // The admin key is cached (within stale_grace); the writes fail in
    // the store.
    is_503(create().await.unwrap()).await;
    is_503(revoke().await.unwrap()).await;
    env.clock.advance(31);
    is_503(create().await.unwrap()).await;

    mend_change_log(&env).await;
    env.verifier.sync_changes().await;
    assert_eq!(revoke().await.unwrap().status(), 200);
}

/// The background watcher finds the outage and the recovery by itself:
/// no request and no restart is needed for the breaker to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_opens_and_closes_the_breaker_by_itself() {
    let env = Env::with_config(VerifierConfig {
        sync_interval: Duration::from_millis(20),
        ..VerifierConfig::default()
    })
    .await;
    let v = &env.verifier;
    v.spawn_background();
    let wait_for = |ready: bool, what: &'static str| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while v.health().ready() != ready {
            assert!(tokio::time::Instant::now() < deadline, "{what} (30 s)");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    break_change_log(&env).await;
    wait_for(false, "the watcher never noticed the outage").await;
    assert!(is_unavailable(v.verify(made_up_key(1).expose()).await));
    mend_change_log(&env).await;
    wait_for(true, "the watcher never noticed the store was back").await;
    assert_eq!(reason(v, made_up_key(1).expose()).await, "unknown_key");
}

/// A burst of changes larger than one page of the change log (10,000
/// rows) is read whole in one poll: the revocation at its end applies at
/// the first sync, not one page later.
#[tokio::test]
async fn one_sync_reads_past_a_full_page_of_changes() {
    let env = Env::new().await;
    let cli = env.cli().await;
    let created = cli.create("cli", &spec("data:read")).await.unwrap();
    let key = created.key.expose().to_owned();
    let a = &env.verifier;
    a.sync_changes().await;
    valid(a, &key).await;

    env.raw(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10050) \
         INSERT INTO key_changes (key_hash, changed_at) SELECT zeroblob(32), 0 FROM n",
    )
    .await;
    cli.revoke("cli", &created.record.id).await.unwrap();
    a.sync_changes().await;
    assert_eq!(reason(a, &key).await, "key_revoked");
}

/// A write that took its change-log number before a gateway started and
/// commits after it (overlapping writers) is applied by that gateway: the
/// numbers just below the newest at start are watched for as gaps. The
/// write in flight is made by hand: its key row and its change row are
/// held out of sight while the verifier starts and caches the key, then
/// "committed" together.
#[tokio::test]
async fn a_write_in_flight_when_the_verifier_starts_is_applied() {
    let env = Env::new().await;
    let cli = env.cli().await;
    let created = cli.create("cli", &spec("data:read")).await.unwrap();
    let key = created.key.expose().to_owned();

    cli.revoke("cli", &created.record.id).await.unwrap();
    env.raw("UPDATE key_changes SET seq = -seq WHERE seq = (SELECT MAX(seq) FROM key_changes)")
        .await;
    env.raw(
        "CREATE TABLE held AS SELECT id, revoked_at FROM api_keys WHERE revoked_at IS NOT NULL",
    )
    .await;
    env.raw("UPDATE api_keys SET revoked_at = NULL WHERE id IN (SELECT id FROM held)")
        .await;
    // Another write commits above it.
    cli.create("cli", &spec("data:read")).await.unwrap();

    let late = env.other_verifier().await;
    valid(&late, &key).await;

    env.raw(
        "UPDATE api_keys SET revoked_at = (SELECT revoked_at FROM held WHERE held.id = api_keys.id) \
         WHERE id IN (SELECT id FROM held)",
    )
    .await;
    env.raw("UPDATE key_changes SET seq = -seq WHERE seq < 0")
        .await;
    late.sync_changes().await;
    assert_eq!(reason(&late, &key).await, "key_revoked");
}
