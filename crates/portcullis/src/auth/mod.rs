//! Who is calling: reading nothing from HTTP, these modules check the
//! credentials a request carries and manage what they are checked against.
//!
//! - [`guard`]: the one decision every entrance runs — find the single
//!   credential, verify it, check scopes;
//! - [`verifier`]: API keys — format check, cache, then store;
//! - [`keys`]: creating, rotating, revoking and disabling keys;
//! - [`static_key`]: one fixed key from the environment;
//! - [`jwt`]: signing keys, issuing and verifying access tokens, the JWKS;
//! - [`external`]: trusted issuers (keys by file, URL or OIDC discovery,
//!   cached, refetched, stale-if-error) and their claim mapping;
//! - [`jwks_fetch`]: the small HTTPS client that fetches their keys;
//! - [`identity`]: users, OAuth2 clients and browser sessions;
//! - [`specs`]: what an operator asks for (a key, a user import), read
//!   once for the CLI and the admin API;
//! - [`password`]: Argon2id hashing (bcrypt verified for imports);
//! - [`throttle`]: brute-force protection for password checks.

pub mod external;
pub mod guard;
pub mod identity;
pub mod jwks_fetch;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod specs;
pub mod static_key;
pub mod throttle;
pub mod verifier;
