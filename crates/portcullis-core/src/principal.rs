//! Who a verified request acts for.

use crate::scope::Scopes;
use crate::shared_str::SharedStr;

/// The kind of credential a principal was established by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A managed API key.
    ApiKey,
    /// A user (password, session, or a token issued to a user).
    User,
    /// An OAuth2 client (client credentials).
    Client,
    /// A trusted issuer's token (another identity provider): its subject
    /// is that issuer's name for someone, never one of our users or
    /// clients, so it shares nothing with them (rate limits, admin).
    External,
}

impl PrincipalKind {
    /// The value sent upstream in `X-Portcullis-Kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::User => "user",
            PrincipalKind::Client => "client",
            PrincipalKind::External => "external",
        }
    }
}

/// A verified identity: who, how, and with which scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name: a key's owner, a user name, a client id.
    pub subject: SharedStr,
    /// How it was established.
    pub kind: PrincipalKind,
    /// Scopes granted.
    pub scopes: Scopes,
    /// The id of the credential used (`key_…`), safe to log.
    pub credential_id: SharedStr,
    /// The credential's own rate-limit policy (a key's override), which
    /// replaces the route's per-caller limit.
    pub rate_limit: Option<std::sync::Arc<crate::ratelimit::Policy>>,
    /// The trusted issuer (`iss`) of an [`PrincipalKind::External`]
    /// principal; `None` for every other kind.
    pub issuer: Option<String>,
}
