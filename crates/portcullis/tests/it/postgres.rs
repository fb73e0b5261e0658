//! What only the Postgres store does: TLS to the server, the change
//! wake-up (LISTEN/NOTIFY) across store handles, poll-only mode, and a
//! password that never shows. The shared behaviour is the store contract
//! (`store_contract::postgres::*`).

use crate::pg_server::{PG_PASSWORD, PgServer};
use crate::store_contract::{insert, key};
use portcullis::store::{Listen, Store, StoreOptions};
use std::time::Duration;

fn with_query(url: &str, query: &str) -> String {
    format!("{url}?{query}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_connects_and_anything_less_checked_is_refused() {
    let pg = PgServer::start_tls();
    let ca = pg.tls_ca.clone().unwrap();
    let url = pg.fresh_db();

    // verify-full: the server's certificate chains to our CA and names
    // the host. The server refuses TCP without TLS, so this working
    // proves the connection is encrypted.
    let good = with_query(
        &url,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let store = Store::open(&good, true)
        .await
        .expect("verify-full connects");
    insert(&store, &key("tls1", "ann", "read")).await;
    assert_eq!(store.get_key("tls1").await.unwrap().owner, "ann");

    // No TLS: the server refuses, and the error does not carry the
    // password.
    let plain = with_query(&url, "sslmode=disable");
    let e = Store::open(&plain, false).await.unwrap_err().to_string();
    assert!(!e.contains(PG_PASSWORD), "password in error: {e}");

    // A CA that did not sign the server's certificate: refused.
    let other = PgServer::start_tls();
    let wrong_ca = other.tls_ca.clone().unwrap();
    let wrong = with_query(
        &url,
        &format!("sslmode=verify-full&sslrootcert={}", wrong_ca.display()),
    );
    let e = Store::open(&wrong, false).await.unwrap_err().to_string();
    assert!(!e.contains(PG_PASSWORD), "password in error: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_handle_wakes_the_other() {
    let url = PgServer::shared().fresh_db();
    let a = Store::open(&url, true).await.unwrap();
    let b = Store::open(&url, false).await.unwrap();
    let wake = b.changes_wake().expect("Postgres listens by default");
    // The listener wakes once when it (re)connects: wait for that, so the
    // next wake-up is the change's.
    tokio::time::timeout(Duration::from_secs(10), wake.notified())
        .await
        .expect("the listener connects");
    let notified = wake.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    insert(&a, &key("w1", "ann", "read")).await;
    tokio::time::timeout(Duration::from_secs(10), notified)
        .await
        .expect("NOTIFY reaches the other handle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_only_has_no_wake_up_and_still_sees_changes() {
    let url = PgServer::shared().fresh_db();
    let opts = StoreOptions {
        listen: Listen::Off,
        ..StoreOptions::default()
    };
    let a = Store::open_with(&url, true, &opts).await.unwrap();
    assert!(a.changes_wake().is_none());
    let (start, _) = a.changes_since(0).await.unwrap();
    insert(&a, &key("p1", "ann", "read")).await;
    let (_, changed) = a.changes_since(start).await.unwrap();
    assert_eq!(changed, vec![key("p1", "ann", "read").hash]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows() {
    let url = PgServer::shared().fresh_db();
    let store = Store::open(&url, true).await.unwrap();
    let debug = format!("{store:?}");
    assert!(!debug.contains(PG_PASSWORD), "{debug}");
    let opts = StoreOptions {
        listen: Listen::Url(url.clone()),
        ..StoreOptions::default()
    };
    let debug = format!("{opts:?}");
    assert!(!debug.contains(PG_PASSWORD), "{debug}");
    // A refused login names the user, never the password.
    let wrong = url.replace(PG_PASSWORD, "not-the-password");
    let e = Store::open(&wrong, false).await.unwrap_err().to_string();
    assert!(!e.contains("not-the-password"), "{e}");
    // A parameter sqlx does not read (it would log its value) is refused
    // by name, its value not shown; a password in the query is redacted.
    let e = Store::open(&format!("{url}?sslpassword=KeyPass42"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("sslpassword") && !e.contains("KeyPass42"), "{e}");
    assert!(!e.contains(PG_PASSWORD), "{e}");
    let in_query = url.replace(&format!(":{PG_PASSWORD}@"), "@") + "&password=" + PG_PASSWORD;
    let e = Store::open(&(in_query.replacen('&', "?", 1) + "&bogus=1"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains(PG_PASSWORD), "{e}");
    // Nothing listens on this port: an error, quickly, without the URL's
    // password.
    let dead = format!(
        "postgres://portcullis:{PG_PASSWORD}@127.0.0.1:{}/x",
        crate::pg_server::free_port()
    );
    let e = Store::open(&dead, false).await.unwrap_err().to_string();
    assert!(!e.contains(PG_PASSWORD), "{e}");
}

/// A well-formed key no store knows, one per `n`.
fn made_up(n: u32) -> portcullis::core::ApiKey {
    let mut random = [0x3c_u8; 32];
    random[..4].copy_from_slice(&n.to_le_bytes());
    portcullis::core::ApiKey::generate("live", &random).unwrap()
}

/// A flood of made-up keys — each a first-sight store query — on a small
/// pool: some lookups wait or get "busy", but the breaker stays shut, the
/// change-log poll keeps its connection, and a real key still verifies
/// during and after the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_keys_does_not_open_the_breaker() {
    use portcullis::auth::keys::{KeyService, KeySpec};
    use portcullis::auth::verifier::{KeyVerdict, Verifier, VerifierConfig};
    use portcullis::clock::{SharedClock, SystemClock};
    let url = PgServer::shared().fresh_db();
    let opts = StoreOptions {
        pool_size: 4,
        // Long enough for a new connection's SCRAM exchange on a loaded
        // machine: the flood must find the pool busy, not slow to connect.
        connect_timeout: Duration::from_secs(3),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&url, true, &opts).await.unwrap();
    let clock: SharedClock = std::sync::Arc::new(SystemClock);
    let verifier = Verifier::new(
        store.clone(),
        clock.clone(),
        VerifierConfig {
            sync_interval: Duration::from_millis(20),
            ..VerifierConfig::default()
        },
    )
    .await
    .unwrap();
    verifier.spawn_background();
    let keys = KeyService::new(store.clone(), clock, Some(verifier.clone()));
    let real = keys
        .create(
            "cli",
            &KeySpec::new(
                "real",
                "ann",
                portcullis::core::Scopes::parse("read").unwrap(),
            ),
        )
        .await
        .unwrap();
    let flood: Vec<_> = (0..3000)
        .map(|n| {
            let v = verifier.clone();
            tokio::spawn(async move { v.verify(made_up(n).expose()).await })
        })
        .collect();
    let mut busy = 0;
    for f in flood {
        match f.await.unwrap() {
            Ok(_) => {}
            Err(portcullis::store::StoreError::Unavailable(_)) => busy += 1,
            Err(e) => panic!("a made-up key's lookup failed otherwise: {e}"),
        }
    }
    let health = verifier.health();
    assert!(!health.breaker_open, "{health:?} after {busy} busy answers");
    assert!(!health.stale, "{health:?}");
    match verifier.verify(real.key.expose()).await.unwrap() {
        KeyVerdict::Valid(_) => {}
        other => panic!("the real key after the flood: {other:?}"),
    }
}
