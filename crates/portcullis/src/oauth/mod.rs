//! The authorization-server and session endpoints on the public listener:
//! `/oauth/token`, `/oauth/revoke`, `/oauth/introspect`, the JWKS and
//! RFC 8414 metadata, and `/auth/login`, `/auth/logout`, `/auth/csrf`.
//!
//! OAuth errors are RFC 6749 §5.2 JSON (`error`, `error_description`), as
//! OAuth client libraries expect; the session endpoints answer
//! problem+json like every other Portcullis denial.

pub mod endpoints;
mod introspect;
mod sessions;
mod token;
mod wire;

use introspect::{introspect, revoke};
use sessions::{csrf_endpoint, login, logout};
use token::token;
use wire::{error_response, json_response, method_not_allowed};

use crate::auth::guard::Guard;
use crate::http::rejection::problem_response;
use axum::body::Body;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use portcullis_core::{ErrorCode, Problem};
use std::net::IpAddr;

/// Largest form or JSON body read by these endpoints.
const MAX_BODY: usize = 16 * 1024;

/// Paths this module answers.
pub const PATHS: &[&str] = &[
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/auth/login",
    "/auth/logout",
    "/auth/csrf",
];

/// What the endpoints need besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The origin the request was sent to.
    pub origin: Option<&'a str>,
    /// The request id, for problem bodies.
    pub request_id: &'a str,
}

/// What happened, for the access log.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The reason (`allowed` or why not).
    pub reason: &'static str,
    /// Who, when known.
    pub principal: Option<String>,
    /// Which credential, when known.
    pub credential_id: Option<String>,
}
/// One of the endpoints this module answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /oauth/token` (RFC 6749 §3.2).
    Token,
    /// `POST /oauth/revoke` (RFC 7009).
    Revoke,
    /// `POST /oauth/introspect` (RFC 7662).
    Introspect,
    /// `GET /.well-known/jwks.json`.
    Jwks,
    /// `GET /.well-known/oauth-authorization-server` (RFC 8414).
    Metadata,
    /// `POST /auth/login`: a session cookie and its CSRF token.
    Login,
    /// `POST /auth/logout`.
    Logout,
    /// `GET /auth/csrf`: a CSRF token for the cookie credential presented.
    Csrf,
}

impl Endpoint {
    /// Every endpoint, in [`PATHS`] order.
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Token,
        Endpoint::Revoke,
        Endpoint::Introspect,
        Endpoint::Jwks,
        Endpoint::Metadata,
        Endpoint::Login,
        Endpoint::Logout,
        Endpoint::Csrf,
    ];

    /// The path the gateway serves it at.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/oauth/token",
            Endpoint::Revoke => "/oauth/revoke",
            Endpoint::Introspect => "/oauth/introspect",
            Endpoint::Jwks => "/.well-known/jwks.json",
            Endpoint::Metadata => "/.well-known/oauth-authorization-server",
            Endpoint::Login => "/auth/login",
            Endpoint::Logout => "/auth/logout",
            Endpoint::Csrf => "/auth/csrf",
        }
    }

    /// The endpoint served at `path`.
    pub(crate) fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Whether it answers GET (and HEAD) rather than POST.
    pub(crate) fn is_get(self) -> bool {
        matches!(self, Endpoint::Jwks | Endpoint::Metadata | Endpoint::Csrf)
    }
}

/// Answers one of [`PATHS`]; `None` when the path is not one of them.
pub async fn handle(
    guard: &Guard,
    req: Request<Body>,
    ctx: Ctx<'_>,
    out: &mut Outcome,
) -> Option<Response<Body>> {
    let endpoint = Endpoint::from_path(req.uri().path())?;
    Some(answer(endpoint, guard, req, ctx, out).await)
}

/// Answers `endpoint`, wherever it is mounted.
pub async fn answer(
    endpoint: Endpoint,
    guard: &Guard,
    req: Request<Body>,
    ctx: Ctx<'_>,
    out: &mut Outcome,
) -> Response<Body> {
    let Some(id) = guard.identity() else {
        out.reason = "not_found";
        return problem_response(
            &Problem::new(ErrorCode::RouteNotFound),
            Some(ctx.request_id),
        );
    };
    let method = req.method();
    if endpoint.is_get() && method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD", ctx.request_id, out);
    }
    if !endpoint.is_get() && method != Method::POST {
        return method_not_allowed("POST", ctx.request_id, out);
    }
    out.reason = "allowed";
    match endpoint {
        Endpoint::Jwks => {
            let mut r = json_response(StatusCode::OK, id.tokens().jwks_json());
            r.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            r.headers_mut().remove(PRAGMA);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            );
            r
        }
        Endpoint::Metadata => {
            let s = id.tokens().settings();
            let base = s.issuer.trim_end_matches('/');
            let body = serde_json::json!({
                "issuer": s.issuer,
                "token_endpoint": format!("{base}/oauth/token"),
                "jwks_uri": format!("{base}/.well-known/jwks.json"),
                "revocation_endpoint": format!("{base}/oauth/revoke"),
                "introspection_endpoint": format!("{base}/oauth/introspect"),
                "grant_types_supported": s.grants.names(),
                "response_types_supported": [],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "token_endpoint_auth_signing_alg_values_supported": [],
            });
            let mut r = json_response(StatusCode::OK, body.to_string());
            r.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r.headers_mut().remove(PRAGMA);
            r
        }
        Endpoint::Token => match token(id, req, ctx).await {
            Ok((r, who)) => {
                out.principal = Some(who);
                r
            }
            Err(e) => error_response(&e, out),
        },
        Endpoint::Revoke => match revoke(id, req).await {
            Ok(r) => r,
            Err(e) => error_response(&e, out),
        },
        Endpoint::Introspect => match introspect(id, req).await {
            Ok(r) => r,
            Err(e) => error_response(&e, out),
        },
        Endpoint::Login => login(id, req, ctx, out).await,
        Endpoint::Logout => logout(guard, id, req, ctx, out).await,
        Endpoint::Csrf => csrf_endpoint(guard, id, req, ctx, out).await,
    }
}
