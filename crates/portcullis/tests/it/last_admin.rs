//! The last active admin key cannot be revoked or disabled unless the
//! caller says so ([`LastAdmin::Allow`]), and the rule holds under
//! concurrent changes from one process and from several.

use crate::common::*;
use portcullis::admin::{AdminState, router};
use portcullis::auth::guard::Guard;
use portcullis::auth::keys::{KeyError, KeyService};
use portcullis::core::credential::CredentialNames;
use portcullis::static_key::StaticKey;
use portcullis::store::LastAdmin;
use tower::ServiceExt;

fn is_last_admin(r: &Result<portcullis::store::KeyRecord, KeyError>, want: &str) -> bool {
    matches!(r, Err(KeyError::LastAdminKey { action, .. }) if *action == want)
}

#[tokio::test]
async fn the_last_active_admin_key_stays() {
    let env = Env::new().await;
    let admin = env.create(&spec("admin data:read")).await;
    let id = admin.record.id.clone();
    let plain = env.create(&spec("data:read")).await;

    // Neither revoked nor disabled, by default: nothing changed.
    assert!(is_last_admin(&env.keys.revoke("test", &id).await, "revoke"));
    assert!(is_last_admin(
        &env.keys.set_disabled("test", &id, true).await,
        "disable"
    ));
    let rec = env.keys.show(&id).await.unwrap();
    assert!(rec.revoked_at.is_none() && !rec.disabled);
    valid(&env.verifier, admin.key.expose()).await;
    // The message names the key.
    let e = env.keys.revoke("test", &id).await.unwrap_err().to_string();
    assert!(
        e.contains(&id) && e.contains("last active admin key"),
        "{e}"
    );

    // Other keys are not concerned, enabling never is, and rotation
    // makes an admin key in the same transaction.
    env.keys
        .set_disabled("test", &plain.record.id, true)
        .await
        .unwrap();
    env.keys.revoke("test", &plain.record.id).await.unwrap();
    env.keys.set_disabled("test", &id, false).await.unwrap();
    let rotated = env.keys.rotate("test", &id, 0).await.unwrap();
    assert_eq!(rotated.record.scopes, "admin data:read");

    // A second active admin key lets the first go.
    let second = env.create(&spec("admin")).await;
    env.keys.revoke("test", &rotated.record.id).await.unwrap();
    assert!(is_last_admin(
        &env.keys.revoke("test", &second.record.id).await,
        "revoke"
    ));

    // Allow does it, and says so in the audit trail.
    let rec = env
        .keys
        .set_disabled_with("test", &second.record.id, true, LastAdmin::Allow)
        .await
        .unwrap();
    assert!(rec.disabled);
    let events = env.store.list_audit(None, 1).await.unwrap();
    assert_eq!(events[0].action, "key.disable");
    assert_eq!(events[0].detail["force_last_admin"], true);
    // With no active admin key left, a disabled one may be revoked.
    env.keys.revoke("test", &second.record.id).await.unwrap();
}

#[tokio::test]
async fn only_keys_that_open_the_admin_api_count() {
    let env = Env::new().await;
    let admin = env.create(&spec("admin")).await;
    let id = admin.record.id.clone();
    let refused = |env: &Env, id: String| {
        let keys = env.keys.clone();
        async move { is_last_admin(&keys.revoke("test", &id).await, "revoke") }
    };

    // Keys that cannot open the admin API are not a way in.
    let disabled = env.create(&spec("admin")).await;
    env.keys
        .set_disabled_with("test", &disabled.record.id, true, LastAdmin::Allow)
        .await
        .unwrap();
    let mut expiring = spec("admin");
    expiring.expires_in = Some(60);
    env.create(&expiring).await;
    let mut one_use = spec("admin");
    one_use.uses = Some(1);
    let spent = env.create(&one_use).await;
    env.verifier.verify(spent.key.expose()).await.unwrap();
    // A scope that merely contains the word, or differs in case.
    env.create(&spec("admin:read Admin administrator")).await;
    env.clock.advance(61);
    assert!(refused(&env, id.clone()).await);

    // A key rotated away ends with its grace: its replacement counts, it
    // does not.
    let rotated = env.keys.rotate("test", &id, 3600).await.unwrap();
    assert!(refused(&env, rotated.record.id.clone()).await);
    env.keys.revoke("test", &id).await.unwrap();

    // Limited uses with a refill count; an expiry, even far ahead, does
    // not (that key would leave nobody once it ends).
    let mut refilled = spec("admin");
    refilled.uses = Some(1);
    refilled.refill = Some(portcullis::core::quota::RefillPlan {
        every: portcullis::core::quota::Refill::Daily,
        amount: 1,
    });
    let refilled = env.create(&refilled).await;
    env.keys.revoke("test", &rotated.record.id).await.unwrap();
    let mut later = spec("admin");
    later.expires_in = Some(3600);
    env.create(&later).await;
    assert!(refused(&env, refilled.record.id.clone()).await);
    env.create(&spec("admin")).await;
    env.keys.revoke("test", &refilled.record.id).await.unwrap();
}

/// N active admin keys, N concurrent revocations (one per key): exactly
/// one is refused, whatever the order, in one process or several.
#[tokio::test]
async fn concurrent_changes_cannot_remove_every_admin_key() {
    const N: usize = 6;
    for round in 0..4 {
        let env = Env::new().await;
        let mut ids = Vec::new();
        for _ in 0..N {
            ids.push(env.create(&spec("admin")).await.record.id);
        }
        // Half the changes through this process, half through "another"
        // (a separately opened store, as the CLI or a second gateway).
        let other = env.cli().await;
        let mut tasks = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let svc: KeyService = if i % 2 == 0 {
                env.keys.clone()
            } else {
                other.clone()
            };
            let id = id.clone();
            let disable = (i + round) % 3 == 0;
            tasks.push(tokio::spawn(async move {
                if disable {
                    svc.set_disabled("test", &id, true).await
                } else {
                    svc.revoke("test", &id).await
                }
            }));
        }
        let mut ok = 0;
        let mut last = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(KeyError::LastAdminKey { .. }) => last += 1,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!((ok, last), (N - 1, 1), "round {round}");
        let remaining = env
            .raw_count("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL AND disabled = 0")
            .await;
        assert_eq!(remaining, 1, "round {round}");
    }
}

#[tokio::test]
async fn the_admin_api_refuses_with_409_unless_a_static_admin_key_remains() {
    let env = Env::new().await;
    let admin = env.create(&spec("admin")).await;
    let id = admin.record.id.clone();
    let call = |app: axum::Router, method: &str, path: String, key: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-api-key", key)
            .body(axum::body::Body::empty())
            .unwrap();
        async move {
            let r = app.oneshot(req).await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            (
                status,
                ct,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let managed_only = router(AdminState {
        keys: env.keys.clone(),
        guard: Guard::new(env.verifier.clone(), CredentialNames::default()),
        identity: None,
        limiter: None,
    });
    for (method, path) in [
        ("POST", format!("/admin/v1/keys/{id}/revoke")),
        ("DELETE", format!("/admin/v1/keys/{id}")),
        ("POST", format!("/admin/v1/keys/{id}/disable")),
    ] {
        let (status, ct, body) = call(
            managed_only.clone(),
            method,
            path.clone(),
            admin.key.expose(),
        )
        .await;
        assert_eq!(status, 409, "{method} {path}: {body}");
        assert_eq!(ct, "application/problem+json");
        assert_eq!(body["code"], "last_admin_key");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("last active admin key")
                && detail.contains("--force-last-admin")
                && detail.contains(&id),
            "{detail}"
        );
    }

    // With a static admin key in the guard, the API keeps a way in that
    // it cannot take away: the rule is off.
    let static_key = StaticKey::new(portcullis::core::Secret::new(
        "static-admin-key-0123456789".to_owned(),
    ))
    .unwrap()
    .scopes(scopes("admin"));
    let with_static = router(AdminState {
        keys: env.keys.clone(),
        guard: Guard::new(env.verifier.clone(), CredentialNames::default())
            .with_static_keys(vec![static_key]),
        identity: None,
        limiter: None,
    });
    let (status, _, body) = call(
        with_static,
        "POST",
        format!("/admin/v1/keys/{id}/revoke"),
        "static-admin-key-0123456789",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["revoked_at"].is_i64());
}
