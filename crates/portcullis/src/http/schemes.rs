//! Credential readers named and behaving like FastAPI's security classes:
//! [`ApiKeyHeader`], [`ApiKeyQuery`], [`ApiKeyCookie`], [`HttpBearer`],
//! [`HttpBasic`] and [`OAuth2PasswordBearer`].
//!
//! Each is an axum extractor. Taken as `T`, a request without the
//! credential gets FastAPI's 401 `Not authenticated` with the scheme's
//! `WWW-Authenticate`; taken as `Option<T>` it yields `None` instead
//! (FastAPI's `auto_error=False`). They *read* the credential and do not
//! verify it: wrap one in [`crate::Verified`] to check it against the
//! store, the static keys, the token signer or the users. The values are
//! [`Secret`]s, so they never reach a log by accident.
//!
//! They read where the gateway reads, through the same code
//! ([`portcullis_core::credential::extract`]): the same header, query and
//! cookie names (set on the [`crate::service::Builder`]), and the same
//! refusal of a credential sent twice (400 `ambiguous_credentials`, where
//! FastAPI silently picks one; see docs/fastapi-compat.md).

use crate::http::rejection::Rejection;
use crate::service::Portcullis;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use portcullis_core::credential::{Extracted, extract};
use portcullis_core::{ErrorCode, Problem, Scheme, Secret};

/// A credential reader: which scheme it reads and what it yields.
pub trait SecurityScheme: Sized + Send + Sync + 'static {
    /// The scheme.
    const SCHEME: Scheme;
    /// Its name in OpenAPI's `components.securitySchemes` (FastAPI's
    /// class name).
    const NAME: &'static str;
    /// Builds the value from the credential found.
    fn from_value(scheme_text: &str, value: &str) -> Result<Self, Rejection>;
}

/// The 401 for a credential that is present but unreadable.
pub(crate) fn invalid(scheme: Scheme, reason: &'static str) -> Rejection {
    Rejection::from(
        Problem::new(ErrorCode::InvalidCredentials)
            .challenge(crate::auth::guard::invalid_challenge(scheme))
            .log_reason(reason),
    )
}

/// Reads `S` from the request: `Ok(None)` when absent.
pub async fn read<S: SecurityScheme>(parts: &Parts) -> Result<Option<S>, Rejection> {
    let pc = Portcullis::from_parts(parts)?;
    read_with::<S>(&pc, parts)
}

/// [`read`] with the handle already at hand.
pub fn read_with<S: SecurityScheme>(
    pc: &Portcullis,
    parts: &Parts,
) -> Result<Option<S>, Rejection> {
    let set = pc.single(S::SCHEME);
    match extract(set, pc.names(), &parts.headers, parts.uri.query()) {
        Extracted::Missing => Ok(None),
        Extracted::Ambiguous(why) => Err(Rejection::from(
            Problem::new(ErrorCode::AmbiguousCredentials).detail(why),
        )),
        Extracted::One(p) => {
            let Some(v) = p.value.as_deref() else {
                return Err(invalid(S::SCHEME, "unreadable_credential"));
            };
            // The scheme as sent, for `HttpAuthorizationCredentials`.
            let scheme_text = match S::SCHEME {
                Scheme::Bearer | Scheme::Basic => parts
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| h.trim_start().split(' ').next())
                    .unwrap_or(""),
                _ => "",
            };
            S::from_value(scheme_text, v).map(Some)
        }
    }
}

/// The 401 for a missing credential of `S`.
pub fn missing<S: SecurityScheme>(pc: &Portcullis) -> Rejection {
    Rejection::not_authenticated(pc.single(S::SCHEME).challenge())
}

macro_rules! extractor {
    ($t:ty) => {
        impl<St: Send + Sync> FromRequestParts<St> for $t {
            type Rejection = Rejection;
            async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Rejection> {
                let pc = Portcullis::from_parts(parts)?;
                read_with::<$t>(&pc, parts)?.ok_or_else(|| missing::<$t>(&pc))
            }
        }
        impl<St: Send + Sync> OptionalFromRequestParts<St> for $t {
            type Rejection = Rejection;
            async fn from_request_parts(
                parts: &mut Parts,
                _: &St,
            ) -> Result<Option<Self>, Rejection> {
                read::<$t>(parts).await
            }
        }
    };
}

/// An API key in a header (`X-API-Key` unless renamed): FastAPI's
/// `APIKeyHeader`.
///
/// ```
/// use portcullis::schemes::ApiKeyHeader;
/// async fn handler(ApiKeyHeader(key): ApiKeyHeader) -> String {
///     // `key` is a Secret; `key.expose()` is the string.
///     format!("{} bytes", key.expose().len())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ApiKeyHeader(pub Secret<String>);

impl SecurityScheme for ApiKeyHeader {
    const SCHEME: Scheme = Scheme::ApiKeyHeader;
    const NAME: &'static str = "APIKeyHeader";
    fn from_value(_: &str, v: &str) -> Result<Self, Rejection> {
        Ok(ApiKeyHeader(Secret::new(v.to_owned())))
    }
}
extractor!(ApiKeyHeader);

/// An API key in a query parameter (`api_key` unless renamed): FastAPI's
/// `APIKeyQuery`. Query strings end up in logs and browser history;
/// prefer the header.
///
/// ```
/// use portcullis::schemes::ApiKeyQuery;
/// async fn export(key: Option<ApiKeyQuery>) -> &'static str {
///     if key.is_some() { "key given" } else { "no key" }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ApiKeyQuery(pub Secret<String>);

impl SecurityScheme for ApiKeyQuery {
    const SCHEME: Scheme = Scheme::ApiKeyQuery;
    const NAME: &'static str = "APIKeyQuery";
    fn from_value(_: &str, v: &str) -> Result<Self, Rejection> {
        Ok(ApiKeyQuery(Secret::new(v.to_owned())))
    }
}
extractor!(ApiKeyQuery);

/// An API key in a cookie (`api_key` unless renamed): FastAPI's
/// `APIKeyCookie`.
///
/// ```
/// use portcullis::schemes::ApiKeyCookie;
/// async fn me(ApiKeyCookie(key): ApiKeyCookie) -> String {
///     format!("{:?}", key) // prints [REDACTED]
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ApiKeyCookie(pub Secret<String>);

impl SecurityScheme for ApiKeyCookie {
    const SCHEME: Scheme = Scheme::ApiKeyCookie;
    const NAME: &'static str = "APIKeyCookie";
    fn from_value(_: &str, v: &str) -> Result<Self, Rejection> {
        Ok(ApiKeyCookie(Secret::new(v.to_owned())))
    }
}
extractor!(ApiKeyCookie);

/// `Authorization: <scheme> <credentials>`: FastAPI's
/// `HTTPAuthorizationCredentials`.
#[derive(Debug, Clone)]
pub struct HttpAuthorizationCredentials {
    /// The scheme as sent (`Bearer`, `bearer`).
    pub scheme: String,
    /// The credentials after it, trimmed.
    pub credentials: Secret<String>,
}

/// `Authorization: Bearer …`: FastAPI's `HTTPBearer`.
///
/// ```
/// use portcullis::schemes::HttpBearer;
/// async fn handler(HttpBearer(c): HttpBearer) -> String {
///     c.scheme // "Bearer"
/// }
/// ```
#[derive(Debug, Clone)]
pub struct HttpBearer(pub HttpAuthorizationCredentials);

impl SecurityScheme for HttpBearer {
    const SCHEME: Scheme = Scheme::Bearer;
    const NAME: &'static str = "HTTPBearer";
    fn from_value(scheme: &str, v: &str) -> Result<Self, Rejection> {
        Ok(HttpBearer(HttpAuthorizationCredentials {
            scheme: scheme.to_owned(),
            credentials: Secret::new(v.to_owned()),
        }))
    }
}
extractor!(HttpBearer);

/// A user name and password: FastAPI's `HTTPBasicCredentials`.
#[derive(Debug, Clone)]
pub struct HttpBasicCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret<String>,
}

/// `Authorization: Basic …`: FastAPI's `HTTPBasic`. Malformed credentials
/// (bad base64, no colon, not UTF-8, an empty name) are refused with 401
/// even when taken as `Option`, as FastAPI does.
///
/// ```
/// use portcullis::schemes::HttpBasic;
/// async fn handler(HttpBasic(c): HttpBasic) -> String {
///     c.username
/// }
/// ```
#[derive(Debug, Clone)]
pub struct HttpBasic(pub HttpBasicCredentials);

impl SecurityScheme for HttpBasic {
    const SCHEME: Scheme = Scheme::Basic;
    const NAME: &'static str = "HTTPBasic";
    fn from_value(_: &str, v: &str) -> Result<Self, Rejection> {
        let c = portcullis_core::basic::parse(v).map_err(|e| invalid(Scheme::Basic, e.reason()))?;
        Ok(HttpBasic(HttpBasicCredentials {
            username: c.username,
            password: c.password,
        }))
    }
}
extractor!(HttpBasic);

/// The bearer token of the OAuth2 password flow: FastAPI's
/// `OAuth2PasswordBearer`. Reads what [`HttpBearer`] reads, yields just
/// the token, and is documented in OpenAPI as an `oauth2` password flow
/// (with the token URL and scopes given to
/// [`crate::service::Builder::token_url`]).
///
/// ```
/// use portcullis::schemes::OAuth2PasswordBearer;
/// async fn handler(OAuth2PasswordBearer(token): OAuth2PasswordBearer) -> usize {
///     token.expose().len()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct OAuth2PasswordBearer(pub Secret<String>);

impl SecurityScheme for OAuth2PasswordBearer {
    const SCHEME: Scheme = Scheme::Bearer;
    const NAME: &'static str = "OAuth2PasswordBearer";
    fn from_value(_: &str, v: &str) -> Result<Self, Rejection> {
        Ok(OAuth2PasswordBearer(Secret::new(v.to_owned())))
    }
}
extractor!(OAuth2PasswordBearer);

/// A session cookie from the login endpoint (no FastAPI counterpart:
/// FastAPI has no sessions). Unsafe methods also need the CSRF token.
///
/// ```
/// use portcullis::{Verified, schemes::Session};
/// async fn orders(who: Verified<Session>) -> String {
///     who.subject.to_string()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Session(pub Secret<String>);

impl SecurityScheme for Session {
    const SCHEME: Scheme = Scheme::Session;
    const NAME: &'static str = "SessionCookie";
    fn from_value(_: &str, v: &str) -> Result<Self, Rejection> {
        Ok(Session(Secret::new(v.to_owned())))
    }
}
extractor!(Session);
