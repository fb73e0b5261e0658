//! The admission pipeline as a service sees it: every decision the
//! layers and extractors make reaches the observer, once, with the status
//! the client got and never the credential itself.

use crate::common::serve;
use axum::Router;
use axum::routing::get;
use portcullis::core::{ErrorCode, Scheme, Secret};
use portcullis::pipeline::{Decision, Entrance, Observer};
use portcullis::schemes::ApiKeyHeader;
use portcullis::static_key::StaticKey;
use portcullis::{Portcullis, Verified};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "correct-horse-battery-staple-pipeline";

/// One observed decision: entrance, reason, status, credential id.
type Seen1 = (Entrance, &'static str, u16, Option<String>);

#[derive(Default)]
struct Seen(Mutex<Vec<Seen1>>);

impl Observer for Seen {
    fn decided(&self, d: &Decision<'_>) {
        self.0.lock().unwrap().push((
            d.entrance,
            d.reason,
            d.status,
            d.credential_id.map(str::to_owned),
        ));
    }
}

/// The status of `GET path`, with the key when `key` is set.
async fn status(addr: SocketAddr, path: &str, key: bool) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = if key {
        format!("X-API-Key: {KEY}\r\n")
    } else {
        String::new()
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn every_layer_and_extractor_decision_reaches_the_observer() {
    let seen = Arc::new(Seen::default());
    let pc = Portcullis::builder()
        .static_key(StaticKey::new(Secret::new(KEY.into())).unwrap())
        .observer(seen.clone())
        .build()
        .await
        .unwrap();
    async fn data(_: Verified<ApiKeyHeader>) -> &'static str {
        "data"
    }
    let app = Router::new()
        .route(
            "/layer",
            get(|| async { "ok" }).route_layer(pc.require([Scheme::ApiKeyHeader])),
        )
        .route("/extractor", get(data))
        .route(
            "/limited",
            get(|| async { "ok" }).route_layer(pc.rate_limit("1/minute").unwrap()),
        )
        .layer(pc.layer());
    let addr = serve(app).await;

    assert_eq!(status(addr, "/layer", false).await, 401);
    assert_eq!(status(addr, "/layer", true).await, 200);
    assert_eq!(status(addr, "/extractor", true).await, 200);
    assert_eq!(status(addr, "/limited", false).await, 200);
    assert_eq!(status(addr, "/limited", false).await, 429);

    let seen = seen.0.lock().unwrap().clone();
    let summary: Vec<(&str, u16, bool)> = seen
        .iter()
        .map(|(e, reason, status, id)| {
            assert_eq!(*e, Entrance::Layer);
            (*reason, *status, id.is_some())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (ErrorCode::NotAuthenticated.code(), 401, false),
            ("allowed", 200, true),
            ("allowed", 200, true),
            ("allowed", 200, false),
            (ErrorCode::RateLimited.code(), 429, false),
        ]
    );
    // The observer sees the credential's public id, never the key.
    assert!(seen.iter().all(|(_, _, _, id)| id.as_deref() != Some(KEY)));
}

#[tokio::test]
async fn an_extractor_under_a_layer_of_its_scheme_spends_one_use() {
    let dir = tempfile::tempdir().unwrap();
    let pc = Portcullis::builder()
        .store(&format!("sqlite://{}", dir.path().join("p.db").display()))
        .build()
        .await
        .unwrap();
    let mut spec = crate::common::spec("");
    spec.uses = Some(2);
    let created = pc.keys().unwrap().create("test", &spec).await.unwrap();
    let key = created.key.expose().to_owned();
    async fn data(_: Verified<ApiKeyHeader>) -> &'static str {
        "data"
    }
    let app = Router::new()
        .route(
            "/both",
            get(data).route_layer(pc.require([Scheme::ApiKeyHeader])),
        )
        .layer(pc.layer());
    let addr = serve(app).await;
    let get = |k: String| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req =
            format!("GET /both HTTP/1.1\r\nHost: t\r\nX-API-Key: {k}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out)
            .split(' ')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    // Two uses, two requests: the layer spends one, the extractor none.
    assert_eq!(get(key.clone()).await, "200");
    assert_eq!(get(key.clone()).await, "200");
    assert_ne!(get(key).await, "200", "the third request has no use left");
}
