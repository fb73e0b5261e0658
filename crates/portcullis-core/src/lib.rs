//! Portcullis core: the decisions, and nothing that does I/O.
//!
//! This crate knows what a credential looks like and where it is read from,
//! the API key format, scopes, route policies, principals, and the table of
//! error codes every denial is drawn from. It never touches a socket, a file,
//! a clock or a database: callers pass in the request parts, the current time
//! and the stored records, and get a decision back. That keeps every rule in
//! one place, shared by the gateway and the library, and testable on its own.
//!
//! `cargo tree -p portcullis-core` shows no tokio, hyper, axum or sqlx; the
//! test suite checks that.

pub mod authority;
pub mod base62;
pub mod basic;
pub mod changes;
pub mod client_bucket;
pub mod cors;
pub mod credential;
pub mod csrf;
pub mod decimal;
pub mod error;
pub mod framing;
pub mod h2frames;
pub mod host;
pub mod key;
pub mod oidc;
pub mod path;
pub mod principal;
pub mod quota;
pub mod ratelimit;
pub mod route;
pub mod scope;
pub mod secret;
pub mod shared_str;
pub mod time;
pub mod token;
pub mod trace;

pub use credential::{Extracted, Presented, Scheme, SchemeSet};
pub use error::{ErrorCode, Problem};
pub use key::{ApiKey, KeyGrant, KeyHash, KeyState};
pub use outcome::Outcome;
pub use principal::{Principal, PrincipalKind};
pub use route::{RouteMatch, RouteTable};
pub use scope::Scopes;
pub use secret::Secret;
pub mod net;
pub mod origin;
pub mod outcome;
