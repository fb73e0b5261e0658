//! What a handler module gives the router: the state every handler is
//! given ([`AdminState`]) and its table of [`Route`]s. A leaf: the
//! handler modules, the document and the router all depend on it.

use crate::auth::guard::Guard;
use crate::auth::identity::Identity;
use crate::auth::keys::KeyService;
use axum::Router;
use axum::routing::{MethodFilter, MethodRouter};
use http::Method;
use std::sync::Arc;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// Key management.
    pub keys: KeyService,
    /// The guard (admin scope).
    pub guard: Guard,
    /// Users and OAuth2 clients; without it their endpoints answer 404.
    pub identity: Option<Arc<Identity>>,
    /// The rate limiter, for `GET /admin/v1/rate-limit`.
    pub limiter: Option<Arc<crate::ratelimit::Limiter>>,
}

/// One route of the admin API: a method, a path (as routed and as
/// documented, `{id}` for a parameter) and its handler.
///
/// [`crate::admin::router`] is built from the tables of these (one a
/// handler module: keys, status, identity), and the OpenAPI document
/// ([`crate::admin::openapi`]) is tested against the same tables, so a
/// route cannot be served without being documented.
pub(crate) struct Route {
    /// The method.
    pub(crate) method: Method,
    /// The path.
    pub(crate) path: &'static str,
    /// The handler, routed for the method's filter.
    pub(crate) handler: fn(MethodFilter) -> MethodRouter<AdminState>,
}

/// Adds `routes` to `r`.
pub(crate) fn with_routes<'a>(
    r: Router<AdminState>,
    routes: impl IntoIterator<Item = &'a Route>,
) -> Router<AdminState> {
    routes.into_iter().fold(r, |r, route| {
        match MethodFilter::try_from(route.method.clone()) {
            Ok(filter) => r.route(route.path, (route.handler)(filter)),
            Err(_) => {
                // Not reachable with the tables' methods (a unit test
                // routes every one).
                tracing::error!(method = %route.method, path = route.path, "admin route skipped: its method cannot be routed");
                r
            }
        }
    })
}
