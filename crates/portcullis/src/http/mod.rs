//! The library's HTTP face for an in-process service: FastAPI's security
//! classes as axum extractors, and the tower layers that run the same
//! decisions the gateway runs.
//!
//! - [`schemes`]: credential readers (read, don't verify);
//! - [`verified`]: a scheme's credential, verified; the admitted caller;
//! - [`require`]: the layer that protects a router or a route;
//! - [`edge`]: trusted hosts, the canonical path, HTTPS redirect, CORS;
//! - [`rejection`]: refusals as problem+json;
//! - [`openapi`]: security schemes and requirements in utoipa documents;
//! - [`shell`]: the tower plumbing the layers share.

pub mod edge;
pub mod openapi;
pub mod rejection;
pub mod require;
pub mod schemes;
pub mod shell;
pub mod verified;
