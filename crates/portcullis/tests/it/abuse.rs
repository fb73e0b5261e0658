//! Cheap refusals under attack, as a service sees them: a flood of unknown
//! keys from one address gets that address blocked (429, `Retry-After`,
//! problem+json) before any key lookup, once in the audit log; another
//! address with a valid key is served all along; after the block the
//! address is admitted again. Clients connect from 127.0.0.2 and
//! 127.0.0.3 (Linux routes all of 127/8 to the loopback).

use crate::common::{made_up_key, serve, spec};
use axum::Router;
use axum::routing::get;
use portcullis::Portcullis;
use portcullis::clock::ManualClock;
use portcullis::core::Scheme;
use portcullis::pipeline::AbuseSettings;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// `GET /data` from `from` with `key` (none when empty): the status, the
/// `Retry-After`, and the body.
async fn get_from(addr: SocketAddr, from: &str, key: &str) -> (u16, Option<u64>, String) {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = s.connect(addr).await.unwrap();
    let auth = if key.is_empty() {
        String::new()
    } else {
        format!("X-API-Key: {key}\r\n")
    };
    let req = format!("GET /data HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let retry = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .map(|v| v.trim().parse().unwrap());
    (status, retry, body.to_owned())
}

#[tokio::test]
async fn a_flood_of_unknown_keys_blocks_its_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let pc = Portcullis::builder()
        .store(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .clock(clock.clone())
        .address_block(AbuseSettings {
            threshold: 5,
            block: 30,
            ..AbuseSettings::default()
        })
        .build()
        .await
        .unwrap();
    let valid = pc.keys().unwrap().create("test", &spec("")).await.unwrap();
    let valid = valid.key.expose().to_owned();
    let app = Router::new()
        .route(
            "/data",
            get(|| async { "data" }).route_layer(pc.require([Scheme::ApiKeyHeader])),
        )
        .layer(pc.layer());
    let addr = serve(app).await;
    let lookups = || pc.guard().verifier().unwrap().store_key_lookups();

    // Four unknown keys: refused as such, each one looked up.
    for i in 0..4 {
        let key = made_up_key(i).expose().to_owned();
        assert_eq!(get_from(addr, "127.0.0.2", &key).await.0, 401);
    }
    assert_eq!(get_from(addr, "127.0.0.3", &valid).await.0, 200);
    // The fifth blocks the address.
    let key = made_up_key(4).expose().to_owned();
    assert_eq!(get_from(addr, "127.0.0.2", &key).await.0, 401);
    let before = lookups();
    for i in 5..40 {
        let key = made_up_key(i).expose().to_owned();
        let (status, retry, body) = get_from(addr, "127.0.0.2", &key).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(retry, Some(30));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "too_many_attempts");
        assert!(
            v["detail"].as_str().unwrap().contains("this address"),
            "{v}"
        );
    }
    // Even a valid key from the blocked address waits out the block.
    assert_eq!(get_from(addr, "127.0.0.2", &valid).await.0, 429);
    // No verification work was done for the blocked address.
    assert_eq!(lookups(), before);
    // Another address is served all along.
    assert_eq!(get_from(addr, "127.0.0.3", &valid).await.0, 200);

    // One audit event for the block, not one per refused request.
    let store = pc.keys().unwrap().store().clone();
    let mut blocks = Vec::new();
    for _ in 0..100 {
        blocks = store
            .list_audit(None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "address.block")
            .collect();
        if !blocks.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].target.as_deref(), Some("127.0.0.2"));
    assert_eq!(blocks[0].detail["seconds"], 30);

    // Retry-After counts down; after the block the address is admitted.
    clock.advance(29);
    assert_eq!(get_from(addr, "127.0.0.2", &valid).await.1, Some(1));
    clock.advance(1);
    assert_eq!(get_from(addr, "127.0.0.2", &valid).await.0, 200);
    let stats = pc.pipeline().address_block().unwrap().stats();
    assert_eq!(stats.blocks, 1);
    assert_eq!(stats.failures, 5);
}

#[tokio::test]
async fn requests_without_a_credential_and_revoked_keys_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let pc = Portcullis::builder()
        .store(&format!("sqlite://{}", dir.path().join("b.db").display()))
        .address_block(AbuseSettings {
            threshold: 3,
            ..AbuseSettings::default()
        })
        .build()
        .await
        .unwrap();
    let keys = pc.keys().unwrap();
    let created = keys.create("test", &spec("")).await.unwrap();
    let revoked = created.key.expose().to_owned();
    keys.revoke("test", &created.record.id).await.unwrap();
    let app = Router::new()
        .route(
            "/data",
            get(|| async { "data" }).route_layer(pc.require([Scheme::ApiKeyHeader])),
        )
        .layer(pc.layer());
    let addr = serve(app).await;
    for _ in 0..10 {
        // No credential at all, and a key once genuine, now revoked.
        assert_eq!(get_from(addr, "127.0.0.4", "").await.0, 401);
        assert_eq!(get_from(addr, "127.0.0.4", &revoked).await.0, 401);
    }
    assert_eq!(pc.pipeline().address_block().unwrap().stats().failures, 0);
}

#[tokio::test]
async fn turned_off_it_never_blocks() {
    let pc = Portcullis::builder()
        .static_key(
            portcullis::static_key::StaticKey::new(portcullis::core::Secret::new(
                "correct-horse-battery-staple-abuse".into(),
            ))
            .unwrap(),
        )
        .address_block(AbuseSettings {
            enabled: false,
            threshold: 1,
            ..AbuseSettings::default()
        })
        .build()
        .await
        .unwrap();
    assert!(pc.pipeline().address_block().is_none());
    let app = Router::new()
        .route(
            "/data",
            get(|| async { "data" }).route_layer(pc.require([Scheme::ApiKeyHeader])),
        )
        .layer(pc.layer());
    let addr = serve(app).await;
    for _ in 0..5 {
        assert_eq!(get_from(addr, "127.0.0.5", "not-a-key").await.0, 401);
    }
}
