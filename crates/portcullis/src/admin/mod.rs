//! The admin API (`/admin/v1/...`), served on the admin listener only and
//! guarded by an API key with scope `admin`, except its OpenAPI document
//! (`GET /admin/v1/openapi.json`, [`crate::admin::openapi`]).
//!
//! This module builds the router and runs the admin check; the rest is
//! split so that dependencies flow one way, from the top down:
//!
//! - `openapi`: the document, gathered from the handlers' annotations,
//!   and the list of every handler table;
//! - `keys`, `status`, `identity`: the handlers (keys; the audit trail,
//!   rate limiter and key caches; users and OAuth2 clients), each with
//!   its route table;
//! - the leaves they share: `route` ([`AdminState`] and the table rows),
//!   `request` (the actor, JSON bodies), `reply` (JSON, 204, problems),
//!   `schemas` (the shapes the document names) and `rules` (the members'
//!   rules, checked and documented from one place).

mod identity;
mod keys;
pub mod openapi;
mod reply;
mod request;
mod route;
pub(crate) mod rules;
mod schemas;
mod status;
mod usage;

pub use route::AdminState;

use crate::admin::request::Actor;
use crate::admin::route::with_routes;
use crate::auth::guard::{Head, Policy, insufficient_scope};
use crate::http::rejection::problem_response;
use crate::store::ADMIN_SCOPE;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use portcullis_core::{PrincipalKind, Scheme, SchemeSet, Scopes};

/// The admin router. Mount it on the admin listener.
pub fn router(state: AdminState) -> Router {
    with_routes(Router::new(), openapi::handler_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        // Merged after the `route_layer`, so the admin check does not
        // cover it: the OpenAPI document describes the operations and
        // holds no secret (no key, user, client or setting beyond the
        // API-key header's name), and tools need it before they hold a key.
        .merge(Router::new().route(openapi::OPENAPI_PATH, get(openapi::openapi_json)))
        .with_state(state)
}

async fn require_admin(State(st): State<AdminState>, mut req: Request, next: Next) -> Response {
    let policy = Policy {
        schemes: SchemeSet::new(&[Scheme::ApiKeyHeader, Scheme::Bearer]),
        scopes: Scopes::parse(ADMIN_SCOPE).unwrap_or_default(),
    };
    let head = Head::new(req.method(), req.headers(), req.uri().query());
    match st.guard.check(&policy, &head).await {
        // Another identity provider's token, even one carrying an `admin`
        // scope, never administers this gateway: whoever runs that
        // provider (or any app it issues tokens to) is not our operator.
        Ok(g)
            if g.principal
                .as_ref()
                .is_some_and(|p| p.kind == PrincipalKind::External) =>
        {
            tracing::info!(
                target: "portcullis::admin",
                reason = "external_principal",
                "admin request denied"
            );
            problem_response(&insufficient_scope(&policy.scopes), None)
        }
        Ok(g) => {
            let actor = g
                .principal
                .map(|p| String::from(p.credential_id))
                .unwrap_or_default();
            req.extensions_mut().insert(Actor(actor));
            next.run(req).await
        }
        Err(d) => {
            tracing::info!(
                target: "portcullis::admin",
                reason = d.problem.log_reason,
                key_id = d.credential_id.as_deref().unwrap_or(""),
                "admin request denied"
            );
            problem_response(&d.problem, None)
        }
    }
}
