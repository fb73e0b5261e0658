//! Portcullis, the library: the store, the verification cache, the
//! request guard shared by the gateway and in-process services, and the
//! admin API.
//!
//! The decisions themselves live in [`portcullis_core`]; this crate does
//! the I/O around them.

pub mod admin;
pub mod admin_identity;
pub mod clock;
pub mod edge;
pub mod endpoints;
pub mod guard;
pub mod identity;
pub mod keys;
pub mod oauth;
pub mod openapi;
pub mod password;
pub mod ratelimit;
pub mod rejection;
pub mod require;
pub mod response;
pub mod schemes;
pub mod service;
pub mod static_key;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod verified;
pub mod verify;

pub use portcullis_core as core;
pub use service::Portcullis;
pub use verified::{Authenticated, SecurityScopes, Verified};
