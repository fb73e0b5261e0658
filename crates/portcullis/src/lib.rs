//! Portcullis, the library: the store, the verification cache, the
//! request guard shared by the gateway and in-process services, the axum
//! extractors and tower layers that protect a Rust service the way
//! FastAPI's security classes protect a Python one, and the admin API.
//!
//! The decisions themselves live in [`portcullis_core`]; this crate does
//! the I/O around them.
//!
//! In a service:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use portcullis::{Authenticated, Portcullis, Verified};
//! use portcullis::core::Scheme;
//! use portcullis::schemes::{ApiKeyHeader, HttpBearer};
//! use portcullis::static_key::StaticKey;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pc = Portcullis::builder()
//!     .static_key(StaticKey::from_env("API_KEY")?)   // the seeds' simplest case
//!     .store("sqlite://portcullis.db")               // managed keys
//!     .build()
//!     .await?;
//!
//! async fn data(_: Verified<ApiKeyHeader>) -> &'static str { "secret" }
//! async fn both(bearer: Option<Verified<HttpBearer>>, key: Option<Verified<ApiKeyHeader>>) -> String {
//!     bearer.map(|b| b.subject.to_string()).or(key.map(|k| k.subject.to_string())).unwrap_or_default()
//! }
//! async fn admin(Authenticated(who): Authenticated) -> String { who.subject.into() }
//!
//! let app: Router = Router::new()
//!     .route("/data", get(data))
//!     .route("/both", get(both))
//!     .route("/admin", get(admin).route_layer(pc.require([Scheme::ApiKeyHeader]).scopes(["admin"])?))
//!     .layer(pc.layer());
//! # Ok(()) }
//! ```
//!
//! - [`schemes`]: FastAPI's classes as extractors (read, don't verify);
//! - [`Verified`]: a scheme's credential, verified, with type-level scopes;
//! - [`require`]: the layer for routers and routes (schemes, scopes, rate limits);
//! - [`edge`]: trusted hosts, HTTPS redirect, CORS;
//! - [`endpoints`]: the token and login endpoints, mounted anywhere;
//! - [`openapi`]: security schemes and requirements in utoipa documents.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod clock;
pub mod console;
pub mod http;
pub mod metrics;
pub mod oauth;
pub mod pipeline;
pub mod ratelimit;
pub mod secret_env;
pub mod service;
pub mod store;

pub use portcullis_core as core;
pub use service::Portcullis;

// The paths a service using the library writes, as they were before the
// modules moved into folders (docs/architecture.md has the map).
pub use auth::static_key;
pub use http::rejection::Rejection;
pub use http::verified::{Authenticated, SecurityScopes, Verified};
pub use http::{edge, openapi, rejection, require, schemes, verified};
pub use oauth::endpoints;
