//! Per-key analytics: the aggregator counts decisions in memory and
//! writes them in one batch per flush; the rows an attacker can make stay
//! bounded; a store failure keeps the counts for the next flush, a
//! bounded number of times; and decisions made by a service's layers
//! reach the store through the pipeline's observer.

use crate::common::{Env, T0, serve};
use axum::Router;
use axum::routing::get;
use portcullis::Portcullis;
use portcullis::analytics::{Analytics, AnalyticsConfig, OVERFLOW_KEY, Span, TopOrder};
use portcullis::core::{Outcome, Scheme};
use portcullis::pipeline::{Decision, Entrance, Observer};
use portcullis::store::Store;
use std::sync::Arc;
use std::time::Duration;

fn config(max_keys: usize) -> AnalyticsConfig {
    AnalyticsConfig {
        // The tests flush by hand.
        flush_interval: Duration::from_secs(3_600),
        max_keys_per_window: max_keys,
        max_retries: 3,
        ..AnalyticsConfig::default()
    }
}

/// A decision as the pipeline reports it.
fn decision<'a>(outcome: Outcome, id: Option<&'a str>, subject: Option<&'a str>) -> Decision<'a> {
    Decision {
        entrance: Entrance::Proxy,
        route: "/r",
        outcome,
        scheme: Some(Scheme::ApiKeyHeader),
        reason: "test",
        status: if outcome.is_refusal() { 401 } else { 200 },
        principal: None,
        credential_id: id,
        subject,
        // The pipeline names a credential's kind once it is recognised:
        // ids of the key form here are keys.
        kind: id
            .filter(|i| i.starts_with("key_"))
            .map(|_| portcullis_core::PrincipalKind::ApiKey),
    }
}

async fn series(store: &Store, key: &str, span: Span) -> Vec<(i64, u64, u64)> {
    store
        .usage_series(key, span, T0 - 86_400, T0 + 86_400)
        .await
        .unwrap()
        .iter()
        .map(|p| (p.start, p.counts.get(Outcome::Valid), p.counts.refused()))
        .collect()
}

#[tokio::test]
async fn decisions_are_counted_per_key_minute_and_outcome() {
    let env = Env::new().await;
    let a = Analytics::new(env.store.clone(), env.clock(), config(1_000));
    for _ in 0..5 {
        a.decided(&decision(Outcome::Valid, Some("key_a"), Some("ann")));
    }
    a.decided(&decision(Outcome::RateLimited, Some("key_a"), Some("ann")));
    a.decided(&decision(Outcome::Revoked, Some("key_b"), None));
    // No credential: not per key.
    a.decided(&decision(Outcome::Missing, None, None));
    env.clock.advance(60);
    a.decided(&decision(Outcome::Valid, Some("key_a"), Some("ann")));

    // Nothing is written before a flush.
    assert!(series(&env.store, "key_a", Span::Minute).await.is_empty());
    let rows = a.flush().await.unwrap();
    // key_a: valid and rate_limited in the first minute, valid in the
    // second; key_b: revoked.
    assert_eq!(rows, 4);
    let m = Span::Minute.start_of(T0);
    assert_eq!(
        series(&env.store, "key_a", Span::Minute).await,
        [(m, 5, 1), (m + 60, 1, 0)]
    );
    assert_eq!(
        series(&env.store, "key_a", Span::Hour)
            .await
            .iter()
            .map(|p| (p.1, p.2))
            .collect::<Vec<_>>(),
        [(6, 1)]
    );
    assert_eq!(series(&env.store, "key_b", Span::Day).await[0].2, 1);
    // Flushed counts are not written twice.
    assert_eq!(a.flush().await.unwrap(), 0);
    a.decided(&decision(Outcome::Valid, Some("key_a"), Some("ann")));
    assert_eq!(a.flush().await.unwrap(), 1);
    assert_eq!(
        series(&env.store, "key_a", Span::Minute).await,
        [(m, 5, 1), (m + 60, 2, 0)]
    );
    let s = a.stats();
    assert_eq!(s.skipped, 1);
    assert_eq!(s.counted, 9);
    assert_eq!(s.flushes, 2);
    assert_eq!(s.dropped, 0);
}

#[tokio::test]
async fn many_requests_are_one_flush() {
    let env = Env::new().await;
    let a = Analytics::new(env.store.clone(), env.clock(), config(1_000));
    // 10,000 decisions of 20 keys from 4 threads.
    let mut threads = Vec::new();
    for t in 0..4 {
        let a = a.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..2_500 {
                let id = format!("key_{}", (i + t) % 20);
                let o = if i % 10 == 0 {
                    Outcome::InsufficientScope
                } else {
                    Outcome::Valid
                };
                a.record(o, true, Some(&id), Some("owner"));
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let rows = a.flush().await.unwrap();
    let s = a.stats();
    assert_eq!(s.counted, 10_000);
    // One write for all of them: one row per (key, outcome) in the minute
    // (20 keys valid; 8 of them also refused for scope).
    assert_eq!(s.flushes, 1);
    assert_eq!(rows, 28);
    let top = env
        .store
        .usage_top(Span::Day, T0 - 60, T0 + 60, TopOrder::Requests, 100)
        .await
        .unwrap();
    assert_eq!(top.len(), 20);
    assert_eq!(top.iter().map(|t| t.counts.total()).sum::<u64>(), 10_000);
    assert!(top.iter().all(|t| t.subject == "owner"));
}

#[tokio::test]
async fn a_flood_of_made_up_keys_stays_bounded() {
    let env = Env::new().await;
    let a = Analytics::new(env.store.clone(), env.clock(), config(50));
    // 20,000 made-up ids (refused as unknown or malformed): one row.
    for i in 0..20_000 {
        let id = format!("key_{i:08}");
        let o = if i % 2 == 0 {
            Outcome::Unknown
        } else {
            Outcome::Malformed
        };
        a.record(o, true, Some(&id), None);
    }
    assert_eq!(a.stats().keys_in_window, 0);
    // 500 distinct keys that verified, over a cap of 50: the rest go to
    // the overflow row, and the counters say so.
    for i in 0..500 {
        a.record(
            Outcome::Valid,
            true,
            Some(&format!("key_real{i}")),
            Some("o"),
        );
    }
    let s = a.stats();
    assert_eq!(s.keys_in_window, 50);
    assert_eq!(s.overflowed, 450);
    assert_eq!(s.unverified, 20_000);
    a.flush().await.unwrap();
    let top = env
        .store
        .usage_top(Span::Minute, T0 - 60, T0 + 60, TopOrder::Requests, 100)
        .await
        .unwrap();
    // 50 keys and the overflow row, however many ids were made up.
    assert_eq!(top.len(), 51);
    let overflow = &top[0];
    assert_eq!(overflow.key_id, OVERFLOW_KEY);
    assert_eq!(overflow.counts.get(Outcome::Unknown), 10_000);
    assert_eq!(overflow.counts.get(Outcome::Malformed), 10_000);
    assert_eq!(overflow.counts.get(Outcome::Valid), 450);
    // The next minute starts with room for new keys again (each shard
    // lets its minute go when it next counts, or at the flush).
    env.clock.advance(60);
    a.flush().await.unwrap();
    assert_eq!(a.stats().keys_in_window, 0);
    a.record(Outcome::Valid, true, Some("key_late"), Some("o"));
    assert_eq!(a.stats().keys_in_window, 1);
}

#[tokio::test]
async fn a_store_failure_keeps_the_counts_and_retries_a_bounded_number_of_times() {
    let env = Env::new().await;
    let a = Analytics::new(env.store.clone(), env.clock(), config(1_000));
    a.record(Outcome::Valid, true, Some("key_k"), Some("o"));
    env.raw("ALTER TABLE usage RENAME TO usage_hidden").await;
    assert!(a.flush().await.is_err());
    a.record(Outcome::Valid, true, Some("key_k"), Some("o"));
    assert!(a.flush().await.is_err());
    env.raw("ALTER TABLE usage_hidden RENAME TO usage").await;
    // Both decisions arrive with the next flush.
    assert_eq!(a.flush().await.unwrap(), 1);
    assert_eq!(series(&env.store, "key_k", Span::Minute).await[0].1, 2);
    assert_eq!(a.stats().flush_failures, 2);

    // With the store down for good, the counts are dropped after
    // `max_retries` (3) failures, and the counter says how many.
    env.raw("ALTER TABLE usage RENAME TO usage_hidden").await;
    for _ in 0..7 {
        a.record(Outcome::Valid, true, Some("key_k"), Some("o"));
    }
    for _ in 0..3 {
        assert!(a.flush().await.is_err());
    }
    assert_eq!(a.stats().dropped, 7);
    env.raw("ALTER TABLE usage_hidden RENAME TO usage").await;
    assert_eq!(a.flush().await.unwrap(), 0);
}

#[tokio::test]
async fn the_flush_task_writes_on_its_own() {
    let env = Env::new().await;
    let a = Analytics::new(
        env.store.clone(),
        env.clock(),
        AnalyticsConfig {
            flush_interval: Duration::from_millis(20),
            ..config(1_000)
        },
    );
    a.spawn();
    a.record(Outcome::Valid, true, Some("key_t"), Some("o"));
    // Waits for the task (no timing asserted: it just has to happen).
    for _ in 0..500 {
        if a.stats().flushes > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(series(&env.store, "key_t", Span::Minute).await[0].1, 1);
}

#[tokio::test]
async fn a_service_s_decisions_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let store = Store::open(&url, true).await.unwrap();
    let analytics = Analytics::new(
        store.clone(),
        Arc::new(portcullis::clock::SystemClock),
        config(1_000),
    );
    let pc = Portcullis::builder()
        .store(&url)
        .observer(analytics.clone())
        .build()
        .await
        .unwrap();
    let keys = pc.keys().unwrap();
    let reader = keys
        .create("test", &crate::common::spec("read"))
        .await
        .unwrap();
    let gone = keys
        .create("test", &crate::common::spec("read"))
        .await
        .unwrap();
    keys.revoke("test", &gone.record.id).await.unwrap();
    let app = Router::new()
        .route(
            "/read",
            get(|| async { "ok" })
                .route_layer(pc.require([Scheme::ApiKeyHeader]).scopes(["read"]).unwrap()),
        )
        .route(
            "/write",
            get(|| async { "ok" }).route_layer(
                pc.require([Scheme::ApiKeyHeader])
                    .scopes(["write"])
                    .unwrap(),
            ),
        )
        .layer(pc.layer());
    let addr = serve(app).await;
    let call = |path: &'static str, key: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
    };
    let reader_key = reader.key.expose().to_owned();
    for _ in 0..3 {
        call("/read", reader_key.clone()).await;
    }
    call("/write", reader_key.clone()).await;
    call("/read", gone.key.expose().to_owned()).await;
    analytics.flush().await.unwrap();
    let now = portcullis::clock::Clock::now(&portcullis::clock::SystemClock);
    let usage = |id: String| {
        let store = store.clone();
        async move {
            let points = store
                .usage_series(&id, Span::Day, now - 86_400, now + 60)
                .await
                .unwrap();
            assert_eq!(points.len(), 1, "{id}");
            points[0].counts
        }
    };
    let r = usage(reader.record.id.clone()).await;
    assert_eq!(r.get(Outcome::Valid), 3);
    assert_eq!(r.get(Outcome::InsufficientScope), 1);
    let g = usage(gone.record.id.clone()).await;
    assert_eq!(g.get(Outcome::Revoked), 1);
    assert_eq!(g.total(), 1);
}
