//! How often verification reaches the store: never for a malformed key,
//! at most once per negative-cache lifetime for a well-formed unknown key,
//! and once for many concurrent requests with the same key not yet
//! cached (they share one lookup). Counted by `Store::key_lookups`.

use crate::common::*;
use axum::body::Body;
use portcullis::admin::{AdminState, router};
use portcullis::auth::guard::Guard;
use portcullis::auth::verifier::{KeyRejection, KeyVerdict, Verifier, VerifierConfig};
use portcullis::core::ApiKey;
use portcullis::core::credential::CredentialNames;
use portcullis::store::StoreError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Barrier;
use tower::ServiceExt;

/// A well-formed key no store knows, one per `n`.
fn unknown_key(n: u32) -> ApiKey {
    let mut random = [0x5a_u8; 32];
    random[..4].copy_from_slice(&n.to_le_bytes());
    ApiKey::generate("live", &random).unwrap()
}

/// `key` with its last character changed: the right shape, a wrong
/// checksum.
fn bad_checksum(key: &str) -> String {
    let mut s = key.to_owned();
    let last = s.pop().unwrap();
    s.push(if last == 'A' { 'B' } else { 'A' });
    s
}

/// Polls `f` once, with a waker that does nothing: the future gets as far
/// as it can without waiting.
fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// A verification under way.
type Verifying<'a> = Pin<Box<dyn Future<Output = Result<KeyVerdict, StoreError>> + 'a>>;

/// `n` well-formed unknown keys.
fn unknown_keys(n: u32) -> Vec<ApiKey> {
    (1000..1000 + n).map(unknown_key).collect()
}

/// A verification of one of `keys` stopped in the middle of its store
/// lookup, and that key. A lookup can finish within one poll, so the keys
/// are tried in turn until one is still waiting for the store after it.
fn mid_lookup<'a>(v: &'a Verifier, keys: &'a [ApiKey]) -> (&'a ApiKey, Verifying<'a>) {
    for k in keys {
        let mut f: Verifying<'a> = Box::pin(v.verify_unspent(k.expose()));
        if poll_once(f.as_mut()).is_pending() {
            return (k, f);
        }
    }
    panic!("every lookup finished within its first poll");
}

fn is_unknown(v: &KeyVerdict) -> bool {
    matches!(v, KeyVerdict::Rejected(KeyRejection::Unknown))
}

/// `n` tasks verifying `key` at once (released together by a barrier);
/// their verdicts.
async fn concurrently(v: &Arc<Verifier>, key: &str, n: usize) -> Vec<KeyVerdict> {
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (v, barrier, key) = (v.clone(), barrier.clone(), key.to_owned());
            tokio::spawn(async move {
                barrier.wait().await;
                v.verify(&key).await.unwrap()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn checksum_invalid_keys_never_reach_the_store() {
    let env = Env::new().await;
    let real = env.create(&spec("data:read")).await;
    let v = &env.verifier;
    let mut presented = vec![bad_checksum(real.key.expose())];
    presented.extend((1..1000).map(|n| bad_checksum(unknown_key(n).expose())));
    assert_eq!(presented.len(), 1000);
    for key in &presented {
        assert_eq!(reason(v, key).await, "bad_checksum");
    }
    assert_eq!(env.store.key_lookups(), 0);
    assert_eq!(v.store_key_lookups(), 0);
    assert_eq!(v.cache_sizes(), (0, 0), "nothing cached for them either");
}

#[tokio::test]
async fn an_unknown_key_is_looked_up_once() {
    let env = Env::new().await;
    let v = &env.verifier;
    let key = unknown_key(1);
    for _ in 0..100 {
        assert_eq!(reason(v, key.expose()).await, "unknown_key");
    }
    assert_eq!(env.store.key_lookups(), 1);
    assert_eq!(v.cache_sizes(), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_unknown_key_share_one_lookup() {
    let env = Env::new().await;
    let key = unknown_key(2);
    let verdicts = concurrently(&env.verifier, key.expose(), 64).await;
    assert!(verdicts.iter().all(is_unknown), "{verdicts:?}");
    assert_eq!(env.store.key_lookups(), 1);
    // And then it is remembered.
    assert_eq!(reason(&env.verifier, key.expose()).await, "unknown_key");
    assert_eq!(env.store.key_lookups(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_valid_uncached_key_share_one_lookup() {
    let env = Env::new().await;
    let created = env.create(&spec("data:read")).await;
    assert_eq!(env.store.key_lookups(), 0, "creating looks nothing up");
    let verdicts = concurrently(&env.verifier, created.key.expose(), 64).await;
    let mut held = None;
    for verdict in &verdicts {
        let KeyVerdict::Valid(c) = verdict else {
            panic!("expected valid, got {verdict:?}")
        };
        assert_eq!(c.grant.key_id, created.record.id);
        // Every request was answered with the one cached entry.
        let first = held.get_or_insert_with(|| c.clone());
        assert!(Arc::ptr_eq(first, c));
    }
    assert_eq!(env.store.key_lookups(), 1);
    valid(&env.verifier, created.key.expose()).await;
    assert_eq!(env.store.key_lookups(), 1);
}

#[tokio::test]
async fn an_unknown_key_is_looked_up_again_once_the_negative_ttl_has_passed() {
    let env = Env::with_config(VerifierConfig {
        negative_ttl: Duration::from_millis(200),
        ..VerifierConfig::default()
    })
    .await;
    let v = &env.verifier;
    let key = unknown_key(3);
    for _ in 0..10 {
        assert_eq!(reason(v, key.expose()).await, "unknown_key");
    }
    assert_eq!(env.store.key_lookups(), 1);
    // The negative cache runs on real time (moka), not on the test clock:
    // ask until the entry has expired and the key is looked up again
    // (every answer still `unknown_key`), with a generous deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.store.key_lookups() == 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the unknown key was never looked up again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(reason(v, key.expose()).await, "unknown_key");
    }
    // Exactly once, and the new answer is cached again.
    assert_eq!(env.store.key_lookups(), 2);
    for _ in 0..10 {
        assert_eq!(reason(v, key.expose()).await, "unknown_key");
    }
    assert_eq!(env.store.key_lookups(), 2);
}

#[tokio::test]
async fn a_cancelled_lookup_does_not_wedge_the_requests_waiting_for_it() {
    let env = Env::new().await;
    let v = &env.verifier;
    let keys = unknown_keys(100);

    // The first request starts the lookup and is stopped mid-query...
    let (key, leader) = mid_lookup(v, &keys);
    let n = env.store.key_lookups();
    // ...while eight more wait for it (they do not query).
    let mut waiters: Vec<_> = (0..8)
        .map(|_| Box::pin(v.verify_unspent(key.expose())))
        .collect();
    for w in &mut waiters {
        assert!(poll_once(w.as_mut()).is_pending());
    }
    assert_eq!(env.store.key_lookups(), n);

    // Then its request is cancelled. The first waiter asks the store
    // itself; the others find its answer cached.
    drop(leader);
    for w in waiters {
        let verdict = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a waiter of a cancelled lookup hung")
            .unwrap();
        assert!(is_unknown(&verdict), "{verdict:?}");
    }
    assert_eq!(env.store.key_lookups(), n + 1);

    // Cancelled with no one waiting, a lookup leaves nothing behind either.
    let more = unknown_keys(200);
    let (key, lone) = mid_lookup(v, &more[100..]);
    let n = env.store.key_lookups();
    drop(lone);
    let verdict = tokio::time::timeout(Duration::from_secs(10), v.verify_unspent(key.expose()))
        .await
        .expect("a request after a cancelled lookup hung")
        .unwrap();
    assert!(is_unknown(&verdict), "{verdict:?}");
    assert_eq!(env.store.key_lookups(), n + 1);
}

#[tokio::test]
async fn a_store_error_reaches_every_waiter_and_is_not_cached() {
    let env = Env::new().await;
    let v = &env.verifier;
    let keys = unknown_keys(100);
    env.hide_keys_table().await;

    let (key, leader) = mid_lookup(v, &keys);
    let n = env.store.key_lookups();
    let mut waiters: Vec<_> = (0..4)
        .map(|_| Box::pin(v.verify_unspent(key.expose())))
        .collect();
    for w in &mut waiters {
        assert!(poll_once(w.as_mut()).is_pending());
    }
    let first = leader.await.expect_err("the table is hidden");
    for w in waiters {
        let e = w.await.expect_err("the leader's error is everyone's");
        assert!(
            matches!(&e, StoreError::Shared(inner) if matches!(**inner, StoreError::Database(_))),
            "{e:?}"
        );
        assert_eq!(e.to_string(), first.to_string());
    }
    assert_eq!(env.store.key_lookups(), n);
    assert_eq!(v.cache_sizes(), (0, 0));

    // Not remembered: once the store is back, the key is asked about.
    env.restore_keys_table().await;
    assert_eq!(reason(v, key.expose()).await, "unknown_key");
    assert_eq!(env.store.key_lookups(), n + 1);
}

#[tokio::test]
async fn a_request_that_has_seen_a_change_does_not_wait_for_an_older_lookup() {
    let env = Env::new().await;
    let other = env.other_store().await;
    let v = &env.verifier;
    let keys = unknown_keys(100);

    // A lookup starts while the key does not exist...
    let (key, old) = mid_lookup(v, &keys);
    let n = env.store.key_lookups();
    // ...then another process creates it, and the change is applied.
    let (row, audit) = new_key_row(key, "bob", "data:read", T0);
    other.insert_key(&row, &audit).await.unwrap();
    v.sync_changes().await;

    // A request now must not take the old lookup's answer: it asks.
    let mut new = Box::pin(v.verify_unspent(key.expose()));
    let first_poll = poll_once(new.as_mut());
    assert_eq!(env.store.key_lookups(), n + 1);
    let verdict = match first_poll {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => new.await.unwrap(),
    };
    assert!(matches!(verdict, KeyVerdict::Valid(_)), "{verdict:?}");
    // Whatever the old lookup read, it keeps nothing stale.
    let _ = old.await.unwrap();
    let c = valid(v, key.expose()).await;
    assert_eq!(c.grant.key_id, row.id);
}

#[tokio::test]
async fn admin_stats_show_the_caches_and_the_lookups() {
    let env = Env::new().await;
    let admin = env.create(&spec("admin")).await;
    let app = router(AdminState {
        keys: env.keys.clone(),
        guard: Guard::new(env.verifier.clone(), CredentialNames::default()),
        identity: None,
        limiter: None,
    });
    let get = |key: Option<&str>| {
        let mut r = http::Request::get("/admin/v1/stats");
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        app.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    let stats = |r: axum::response::Response| async move {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };

    assert_eq!(get(None).await.unwrap().status(), 401);
    // The admin key's own verification is the first lookup.
    let s = stats(get(Some(admin.key.expose())).await.unwrap()).await;
    assert_eq!(
        s,
        serde_json::json!({"key_cache": {"known": 1, "unknown": 0}, "store_key_lookups": 1})
    );

    reason(&env.verifier, unknown_key(7).expose()).await;
    reason(&env.verifier, &bad_checksum(unknown_key(8).expose())).await;
    let s = stats(get(Some(admin.key.expose())).await.unwrap()).await;
    assert_eq!(
        s,
        serde_json::json!({"key_cache": {"known": 1, "unknown": 1}, "store_key_lookups": 2})
    );
}

#[test]
fn admin_stats_are_documented_as_sent() {
    let doc = serde_json::to_value(portcullis::admin::openapi::document("X-API-Key")).unwrap();
    let resolve = |s: &serde_json::Value| -> serde_json::Value {
        match s["$ref"].as_str() {
            Some(r) => doc.pointer(r.strip_prefix('#').unwrap()).unwrap().clone(),
            None => s.clone(),
        }
    };
    let members = |s: &serde_json::Value| {
        let props: Vec<String> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut req: Vec<String> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        req.sort();
        (props, req)
    };
    let op = &doc["paths"]["/admin/v1/stats"]["get"];
    assert_eq!(op["tags"], serde_json::json!(["stats"]));
    let stats = resolve(&op["responses"]["200"]["content"]["application/json"]["schema"]);
    let both = |names: &[&str]| -> (Vec<String>, Vec<String>) {
        let v: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        (v.clone(), v)
    };
    assert_eq!(members(&stats), both(&["key_cache", "store_key_lookups"]));
    assert_eq!(stats["properties"]["store_key_lookups"]["type"], "integer");
    let cache = resolve(&stats["properties"]["key_cache"]);
    assert_eq!(members(&cache), both(&["known", "unknown"]));
    for m in ["known", "unknown"] {
        assert_eq!(cache["properties"][m]["type"], "integer");
    }
}
