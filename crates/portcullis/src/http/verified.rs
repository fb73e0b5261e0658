//! Verified callers: [`Verified`] checks one scheme's credential in a
//! handler; [`Authenticated`] is the caller a [`crate::http::require::RequireLayer`]
//! admitted; [`SecurityScopes`] is the scopes demanded along the way, as
//! FastAPI's `SecurityScopes` gives them.

use crate::http::rejection::Rejection;
use crate::http::schemes::SecurityScheme;
use crate::pipeline::{Demand, Entrance};
use crate::service::Portcullis;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use portcullis_core::{ErrorCode, Principal, Scheme, Scopes};
use std::marker::PhantomData;
use std::sync::Arc;

/// Scopes named at the type level, for [`Verified`]'s second parameter.
/// Declare with [`crate::scopes!`].
pub trait ScopeList: Send + Sync + 'static {
    /// The scopes, in the order they are demanded.
    const SCOPES: &'static [&'static str];
}

/// No scopes.
impl ScopeList for () {
    const SCOPES: &'static [&'static str] = &[];
}

/// Declares a [`ScopeList`] type.
///
/// ```
/// portcullis::scopes!(pub ReadItems = ["items", "me"]);
/// use portcullis::verified::ScopeList;
/// assert_eq!(ReadItems::SCOPES, &["items", "me"]);
/// ```
#[macro_export]
macro_rules! scopes {
    ($vis:vis $name:ident = [$($s:literal),* $(,)?]) => {
        #[doc = concat!("Scopes: ", $($s, " ",)*)]
        #[derive(Debug, Clone, Copy, Default)]
        $vis struct $name;
        impl $crate::http::verified::ScopeList for $name {
            const SCOPES: &'static [&'static str] = &[$($s),*];
        }
    };
}

/// The scopes demanded on the way to a handler: every enclosing
/// [`crate::http::require::RequireLayer`]'s, outer first, without repeats.
///
/// ```
/// use portcullis::verified::SecurityScopes;
/// async fn handler(s: SecurityScopes) -> String {
///     s.scope_str()
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityScopes {
    scopes: Arc<Vec<String>>,
}

impl SecurityScopes {
    /// The scopes, outer first.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The scopes joined by spaces (FastAPI's `scope_str`).
    pub fn scope_str(&self) -> String {
        self.scopes.join(" ")
    }

    /// These scopes followed by `more`, without repeats.
    pub fn extended<'a>(&self, more: impl IntoIterator<Item = &'a str>) -> SecurityScopes {
        let mut more = more.into_iter().peekable();
        // Most routes add no scopes: share the trail rather than copy it.
        if more.peek().is_none() {
            return self.clone();
        }
        let mut v = (*self.scopes).clone();
        for s in more {
            if !v.iter().any(|x| x == s) {
                v.push(s.to_owned());
            }
        }
        SecurityScopes {
            scopes: Arc::new(v),
        }
    }

    /// As a set the guard can check; errors name a malformed scope.
    pub(crate) fn to_set(&self) -> Result<Scopes, Rejection> {
        if self.scopes.is_empty() {
            return Ok(Scopes::empty());
        }
        Scopes::from_iter_checked(self.scopes.iter().map(String::as_str)).map_err(|e| {
            tracing::error!(error = %e, "a required scope is malformed");
            Rejection::new(ErrorCode::Internal)
        })
    }
}

impl<St: Send + Sync> FromRequestParts<St> for SecurityScopes {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<SecurityScopes>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The caller a [`crate::http::require::RequireLayer`] admitted.
///
/// ```
/// use portcullis::Authenticated;
/// async fn handler(Authenticated(who): Authenticated) -> String {
///     who.subject.into()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// Which scheme an [`Authenticated`] caller came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedBy(pub Scheme);

impl<St: Send + Sync> FromRequestParts<St> for Authenticated {
    type Rejection = Rejection;
    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Rejection> {
        parts.extensions.get::<Authenticated>().cloned().ok_or_else(|| {
            tracing::error!(
                "Authenticated was extracted on a route without a RequireLayer: add `.route_layer(portcullis.require(...))`"
            );
            Rejection::new(ErrorCode::Internal)
        })
    }
}

impl<St: Send + Sync> OptionalFromRequestParts<St> for Authenticated {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        _: &St,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Authenticated>().cloned())
    }
}

/// A credential of scheme `S`, verified, holding scopes `Sc` (and those
/// of enclosing layers): the managed key, static key, JWT, user or
/// session it names, as a [`Principal`]. Taken as `Option`, a request
/// without the credential yields `None`; a bad one is still refused.
///
/// A key with limited uses spends one. A cookie credential on an unsafe
/// method must pass the CSRF checks.
///
/// ```
/// use portcullis::{Verified, schemes::{ApiKeyHeader, HttpBearer}};
/// use portcullis::rejection::Rejection;
///
/// portcullis::scopes!(Me = ["me"]);
///
/// // Bearer or API key, in two lines:
/// async fn both(
///     bearer: Option<Verified<HttpBearer>>,
///     key: Option<Verified<ApiKeyHeader>>,
/// ) -> Result<String, Rejection> {
///     let who = bearer.map(Verified::into_principal)
///         .or(key.map(Verified::into_principal))
///         .ok_or_else(|| Rejection::not_authenticated(Some("Bearer, APIKey")))?;
///     Ok(who.subject.into())
/// }
///
/// async fn me(who: Verified<HttpBearer, Me>) -> String {
///     who.subject.to_string()
/// }
/// ```
pub struct Verified<S, Sc = ()> {
    principal: Principal,
    scopes: SecurityScopes,
    _s: PhantomData<fn() -> (S, Sc)>,
}

impl<S, Sc> std::fmt::Debug for Verified<S, Sc> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl<S, Sc> Verified<S, Sc> {
    /// The verified principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// Takes the principal.
    pub fn into_principal(self) -> Principal {
        self.principal
    }
    /// The scopes demanded: enclosing layers' then `Sc`.
    pub fn security_scopes(&self) -> &SecurityScopes {
        &self.scopes
    }
}

impl<S, Sc> std::ops::Deref for Verified<S, Sc> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<S: SecurityScheme, Sc: ScopeList> Verified<S, Sc> {
    /// Verifies: `Ok(None)` when the credential is absent.
    async fn verify(parts: &Parts) -> Result<Option<Self>, Rejection> {
        let pc = Portcullis::from_parts(parts)?;
        let trail = parts
            .extensions
            .get::<SecurityScopes>()
            .cloned()
            .unwrap_or_default()
            .extended(Sc::SCOPES.iter().copied());
        let required = trail.to_set()?;
        // A layer admitted this caller by this very scheme: the credential
        // was verified and its use spent once; only the scopes remain.
        let outer = match (
            parts.extensions.get::<AuthenticatedBy>(),
            parts.extensions.get::<Authenticated>(),
        ) {
            (Some(AuthenticatedBy(s)), Some(Authenticated(p))) if *s == S::SCHEME => Some(p),
            _ => None,
        };
        let demand = Demand {
            route: super::require::matched_route(parts),
            schemes: pc.single(S::SCHEME),
            scopes: &required,
            rate: None,
            cost: 1,
            admitted: outer,
        };
        let r = pc
            .pipeline()
            .admit(Entrance::Layer, &demand, &pc.view(parts))
            .await;
        match r {
            Ok(g) => match g.principal {
                Some(principal) => Ok(Some(Verified {
                    principal,
                    scopes: trail,
                    _s: PhantomData,
                })),
                None => Err(Rejection::new(ErrorCode::Internal)),
            },
            Err(f) if f.problem.code == ErrorCode::NotAuthenticated => Ok(None),
            Err(f) => Err(Rejection::from(f)),
        }
    }
}

impl<S: SecurityScheme, Sc: ScopeList, St: Send + Sync> FromRequestParts<St> for Verified<S, Sc> {
    type Rejection = Rejection;
    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Rejection> {
        match Self::verify(parts).await? {
            Some(v) => Ok(v),
            None => {
                let pc = Portcullis::from_parts(parts)?;
                Err(crate::http::schemes::missing::<S>(&pc))
            }
        }
    }
}

impl<S: SecurityScheme, Sc: ScopeList, St: Send + Sync> OptionalFromRequestParts<St>
    for Verified<S, Sc>
{
    type Rejection = Rejection;
    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Option<Self>, Rejection> {
        Self::verify(parts).await
    }
}
