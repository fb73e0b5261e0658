//! [`RequireLayer`]: protects a whole router or one route, the way
//! FastAPI's `dependencies=[Security(...)]` does, and optionally rate
//! limits it. It runs the gateway's own decision ([`crate::auth::guard::Guard`]):
//! one credential of the listed schemes, the scopes, CSRF for cookies,
//! then the rate limit, then the key's quota.
//!
//! ```no_run
//! use axum::{Router, routing::{get, post}};
//! use portcullis::{Authenticated, Portcullis};
//! use portcullis::core::Scheme;
//!
//! # async fn f(pc: Portcullis) -> Result<(), portcullis::require::LayerError> {
//! async fn reset(Authenticated(who): Authenticated) -> String { who.subject.into() }
//! let app: Router = Router::new()
//!     .route("/public", get(|| async { "open" }))
//!     // one protected route in an otherwise open router
//!     .route(
//!         "/admin/password_reset",
//!         post(reset).route_layer(pc.require([Scheme::ApiKeyHeader]).scopes(["admin"])?),
//!     )
//!     .route("/items", get(|| async { "[]" }).route_layer(pc.rate_limit("100/minute")?))
//!     .layer(pc.layer());
//! # Ok(()) }
//! ```

use crate::http::shell::{self, Around, Shelled};
use crate::http::verified::{Authenticated, AuthenticatedBy, SecurityScopes};
use crate::pipeline::{self, Entrance, RateDemand};
use crate::ratelimit::Pool;
use crate::service::Portcullis;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Request};
use portcullis_core::ratelimit::Policy as RatePolicy;
use portcullis_core::{Scheme, SchemeSet, Scopes};
use std::sync::Arc;
use tower::{Layer, Service};

pub use crate::ratelimit::LimitBy;

/// A layer that cannot be built: a malformed scope or rate limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayerError(String);

/// What a [`RequireLayer`] demands.
#[derive(Debug)]
struct Demand {
    schemes: SchemeSet,
    scopes: Vec<String>,
    rate: Option<(RatePolicy, LimitBy, u32)>,
}

/// A layer demanding a credential, scopes and/or a rate limit. Made by
/// [`Portcullis::require`] or [`Portcullis::rate_limit`].
#[derive(Debug, Clone)]
pub struct RequireLayer {
    pc: Portcullis,
    demand: Arc<Demand>,
}

impl Portcullis {
    /// A layer admitting requests with exactly one credential of
    /// `schemes` (an empty list demands none). Use `.route_layer(...)` so
    /// unmatched paths still answer 404.
    ///
    /// ```
    /// # async fn f(pc: portcullis::Portcullis) {
    /// use portcullis::core::Scheme;
    /// let bearer_or_key = pc.require([Scheme::Bearer, Scheme::ApiKeyHeader]);
    /// # }
    /// ```
    pub fn require(&self, schemes: impl IntoIterator<Item = Scheme>) -> RequireLayer {
        let v: Vec<Scheme> = schemes.into_iter().collect();
        RequireLayer {
            pc: self.clone(),
            demand: Arc::new(Demand {
                schemes: SchemeSet::new(&v),
                scopes: Vec::new(),
                rate: None,
            }),
        }
    }

    /// A layer that only rate limits, by client address, with a slowapi
    /// style policy (`"5/minute"`, `"10/second; 1000/hour"`). Errors
    /// name what is wrong with the policy.
    ///
    /// ```
    /// # async fn f(pc: portcullis::Portcullis) {
    /// let l = pc.rate_limit("100/minute").unwrap();
    /// assert!(pc.rate_limit("lots").is_err());
    /// # }
    /// ```
    pub fn rate_limit(&self, policy: &str) -> Result<RequireLayer, LayerError> {
        self.require([]).limit(policy, LimitBy::Caller)
    }
}

impl RequireLayer {
    /// Also demands `scopes` (added to those of enclosing layers, like
    /// FastAPI's `Security(..., scopes=[...])`).
    pub fn scopes<'a>(
        self,
        scopes: impl IntoIterator<Item = &'a str>,
    ) -> Result<RequireLayer, LayerError> {
        let v: Vec<String> = scopes.into_iter().map(str::to_owned).collect();
        Scopes::from_iter_checked(v.iter().map(String::as_str))
            .map_err(|e| LayerError(e.to_string()))?;
        Ok(self.with(|d| d.scopes = v))
    }

    /// Also rate limits with `policy`, counted `by` caller (a key, user
    /// or client; the address when there is none), owner, address or
    /// route.
    pub fn limit(self, policy: &str, by: LimitBy) -> Result<RequireLayer, LayerError> {
        let p = RatePolicy::parse(policy)
            .map_err(|e| LayerError(format!("rate limit {policy:?}: {e}")))?;
        let pool = self.pc.next_pool();
        Ok(self.with(|d| d.rate = Some((p, by, pool))))
    }

    fn with(self, f: impl FnOnce(&mut Demand)) -> RequireLayer {
        let mut d = Demand {
            schemes: self.demand.schemes.clone(),
            scopes: self.demand.scopes.clone(),
            rate: self.demand.rate.clone(),
        };
        f(&mut d);
        RequireLayer {
            pc: self.pc,
            demand: Arc::new(d),
        }
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = Require<S>;
    fn layer(&self, inner: S) -> Require<S> {
        shell::wrap(self, inner)
    }
}

/// The service of a [`RequireLayer`].
pub type Require<S> = Shelled<RequireLayer, S>;

impl Around for RequireLayer {
    async fn around<S, B>(self, mut inner: S, req: Request<B>) -> Result<Response, S::Error>
    where
        S: Service<Request<B>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        let (mut parts, body) = req.into_parts();
        match self.admit(&mut parts).await {
            Err(r) => Ok(r),
            Ok(extra) => {
                let mut resp = inner.call(Request::from_parts(parts, body)).await?;
                resp.headers_mut().extend(extra);
                Ok(resp)
            }
        }
    }
}

impl RequireLayer {
    /// Decides the request; on admission, records the caller and scopes
    /// in its extensions and returns the rate-limit fields for the answer.
    async fn admit(&self, parts: &mut http::request::Parts) -> Result<HeaderMap, Response> {
        let pc = &self.pc;
        let d = &self.demand;
        let trail = parts
            .extensions
            .get::<SecurityScopes>()
            .cloned()
            .unwrap_or_default()
            .extended(d.scopes.iter().map(String::as_str));
        let required = trail.to_set().map_err(IntoResponse::into_response)?;
        let outer = parts.extensions.get::<Authenticated>().map(|a| a.0.clone());
        let demand = pipeline::Demand {
            route: matched_route(parts),
            schemes: &d.schemes,
            scopes: &required,
            rate: d.rate.as_ref().map(|(policy, by, pool)| RateDemand {
                pool: Pool::Route(*pool),
                policy: Some(policy),
                by: *by,
            }),
            cost: 1,
            admitted: outer.as_ref(),
        };
        let admitted = pc
            .pipeline()
            .admit(Entrance::Layer, &demand, &pc.view(parts))
            .await
            .map_err(|f| f.response(None))?;
        let mut extra = HeaderMap::new();
        admitted.write_headers(&mut extra);
        if let Some(s) = admitted.scheme {
            parts.extensions.insert(AuthenticatedBy(s));
        }
        if let Some(p) = admitted.principal {
            parts.extensions.insert(Authenticated(p));
        }
        parts.extensions.insert(trail);
        Ok(extra)
    }
}

/// Keeps `Body` in the public signature documented: the layer answers
/// with axum's body type.
pub type ResponseBody = Body;

/// The route's label for observers: axum's matched path (a pattern,
/// bounded), or empty outside a router.
pub(crate) fn matched_route(parts: &http::request::Parts) -> &str {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map_or("", |m| m.as_str())
}
