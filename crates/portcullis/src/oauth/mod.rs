//! The authorization-server and session endpoints on the public listener:
//! `/oauth/token`, `/oauth/revoke`, `/oauth/introspect`, the JWKS and
//! RFC 8414 metadata, and `/auth/login`, `/auth/logout`, `/auth/csrf`.
//!
//! OAuth errors are RFC 6749 §5.2 JSON (`error`, `error_description`), as
//! OAuth client libraries expect; the session endpoints answer
//! problem+json like every other Portcullis denial.

pub mod endpoints;

use crate::auth::guard::{Guard, Head, locked};
use crate::auth::identity::{
    CSRF_COOKIE, Identity, Refusal, SESSION_COOKIE, SameSite, random_token,
};
use crate::auth::verifier::KeyVerdict;
use crate::http::rejection::problem_response;
use crate::store::identity::{ClientAuth, RefreshGrant, RefreshOutcome};
use axum::body::Body;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use portcullis_core::credential::percent_decode;
use portcullis_core::csrf;
use portcullis_core::{ErrorCode, KeyHash, Problem, Scopes, Secret};
use std::collections::HashMap;
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

struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    basic_challenge: bool,
    retry_after: Option<i64>,
}

fn oauth_err(status: u16, error: &'static str, description: &'static str) -> OAuthError {
    OAuthError {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        error,
        description,
        basic_challenge: false,
        retry_after: None,
    }
}

fn invalid_request(d: &'static str) -> OAuthError {
    oauth_err(400, "invalid_request", d)
}

fn invalid_client() -> OAuthError {
    OAuthError {
        basic_challenge: true,
        ..oauth_err(401, "invalid_client", "client authentication failed")
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // RFC 6749 §5.1: token responses must not be cached.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn error_response(e: &OAuthError, out: &mut Outcome) -> Response<Body> {
    out.reason = e.error;
    let body = serde_json::json!({ "error": e.error, "error_description": e.description });
    let mut r = json_response(e.status, body.to_string());
    if e.basic_challenge {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portcullis\""),
        );
    }
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(s.max(1)));
    }
    r
}

fn method_not_allowed(allow: &'static str, rid: &str, out: &mut Outcome) -> Response<Body> {
    out.reason = "method_not_allowed";
    let mut r = problem_response(&Problem::new(ErrorCode::MethodNotAllowed), Some(rid));
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn media_type(h: &HeaderMap) -> Option<String> {
    let v = h.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}

/// Reads the body, capped.
async fn body_bytes(body: Body) -> Result<bytes::Bytes, ()> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ())
}

/// A form where every parameter appears at most once (RFC 6749 §3.2).
/// Empty values count as absent, as FastAPI's form handling does.
fn parse_form(b: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut m = HashMap::new();
    for (k, v) in form_urlencoded::parse(b) {
        if v.is_empty() {
            continue;
        }
        if m.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(invalid_request("a parameter was sent more than once"));
        }
    }
    Ok(m)
}

async fn read_form(req: Request<Body>) -> Result<HashMap<String, String>, OAuthError> {
    if media_type(req.headers()).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(invalid_request(
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    let b = body_bytes(req.into_body())
        .await
        .map_err(|_| invalid_request("the request body is too large"))?;
    parse_form(&b)
}

/// The client's credentials: from HTTP Basic (form-encoded inside, RFC
/// 6749 §2.3.1) or from the form, never both.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Option<(String, Secret<String>, bool)>, OAuthError> {
    let basic = match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") => {
            let c = portcullis_core::basic::parse(&v[6..]).map_err(|_| invalid_client())?;
            let id = percent_decode(&c.username)
                .ok_or_else(invalid_client)?
                .into_owned();
            let secret = percent_decode(c.password.expose())
                .ok_or_else(invalid_client)?
                .into_owned();
            Some((id, Secret::new(secret), true))
        }
        _ => None,
    };
    let posted = form.get("client_secret");
    match (basic, posted) {
        (Some(_), Some(_)) => Err(invalid_request(
            "use one client authentication method: HTTP Basic or client_secret in the form",
        )),
        (Some(b), None) => {
            if form.get("client_id").is_some_and(|id| *id != b.0) {
                return Err(invalid_request(
                    "client_id differs from the authenticated client",
                ));
            }
            Ok(Some(b))
        }
        (None, Some(s)) => {
            let id = form
                .get("client_id")
                .ok_or_else(|| invalid_request("client_secret without client_id"))?;
            Ok(Some((id.clone(), Secret::new(s.clone()), false)))
        }
        (None, None) => {
            if form.contains_key("client_id") {
                // A client id alone authenticates nothing, and every
                // registered client has a secret.
                return Err(invalid_client());
            }
            Ok(None)
        }
    }
}

async fn authenticate_client(
    id: &Identity,
    creds: Option<(String, Secret<String>, bool)>,
) -> Result<Option<ClientAuth>, OAuthError> {
    let Some((client_id, secret, via_basic)) = creds else {
        return Ok(None);
    };
    match id.authenticate_client(&client_id, &secret).await {
        Ok(Some(c)) => Ok(Some(c)),
        Ok(None) => Err(OAuthError {
            basic_challenge: via_basic,
            ..invalid_client()
        }),
        Err(e) => {
            tracing::error!(error = %e, "client authentication failed");
            Err(oauth_err(
                503,
                "temporarily_unavailable",
                "the store is unavailable",
            ))
        }
    }
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
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Whether it answers GET (and HEAD) rather than POST.
    pub fn is_get(self) -> bool {
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

fn requested_scopes(form: &HashMap<String, String>) -> Result<Option<Scopes>, OAuthError> {
    form.get("scope")
        .map(|s| Scopes::parse(s))
        .transpose()
        .map_err(|_| oauth_err(400, "invalid_scope", "the scope parameter is malformed"))
}

/// Granted = requested ∩ allowed (all allowed when none are requested).
fn grant_scopes(requested: Option<&Scopes>, allowed: &[&Scopes]) -> Scopes {
    let base: Vec<&str> = match requested {
        Some(r) => r.iter().collect(),
        None => allowed.first().map_or(Vec::new(), |a| a.iter().collect()),
    };
    let kept = base
        .into_iter()
        .filter(|s| allowed.iter().all(|a| a.contains(s)));
    Scopes::from_iter_checked(kept).unwrap_or_default()
}

fn token_body(access: &str, ttl: i64, scopes: &Scopes, refresh: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": ttl,
        "scope": scopes.to_space_separated(),
    });
    if let (Some(r), Some(m)) = (refresh, v.as_object_mut()) {
        m.insert("refresh_token".into(), r.into());
    }
    v.to_string()
}

fn unavailable<E: std::fmt::Display>(e: E) -> OAuthError {
    tracing::error!(error = %e, "token endpoint failed");
    oauth_err(
        503,
        "temporarily_unavailable",
        "the authorization server is unavailable",
    )
}

async fn token(
    id: &Identity,
    req: Request<Body>,
    ctx: Ctx<'_>,
) -> Result<(Response<Body>, String), OAuthError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| invalid_request("grant_type is required"))?
        .clone();
    let settings = id.tokens().settings().clone();
    if !settings.grants.serves(&grant_type) {
        return Err(oauth_err(
            400,
            "unsupported_grant_type",
            "this grant type is not enabled",
        ));
    }
    let client = authenticate_client(id, client_credentials(&headers, &form)?).await?;
    if let Some(c) = &client
        && !c.allows(&grant_type)
    {
        return Err(oauth_err(
            400,
            "unauthorized_client",
            "the client may not use this grant type",
        ));
    }
    let requested = requested_scopes(&form)?;
    let now = id.now();
    let client_id = client
        .as_ref()
        .map_or("", |c| c.client_id.as_str())
        .to_owned();
    let (subject, scopes, refresh_family) = match grant_type.as_str() {
        "client_credentials" => {
            let c = client.as_ref().ok_or_else(invalid_client)?;
            let scopes = grant_scopes(requested.as_ref(), &[&c.scopes]);
            (c.client_id.clone(), scopes, None)
        }
        "password" => {
            let (Some(user), Some(pw)) = (form.get("username"), form.get("password")) else {
                return Err(invalid_request("username and password are required"));
            };
            let pw = Secret::new(pw.clone());
            let u = match id
                .authenticate_user(user, &pw, ctx.client_ip)
                .await
                .map_err(unavailable)?
            {
                Ok(u) => u,
                Err(Refusal::Invalid(_)) => {
                    return Err(oauth_err(
                        400,
                        "invalid_grant",
                        "invalid username or password",
                    ));
                }
                Err(Refusal::Locked(secs)) => {
                    return Err(OAuthError {
                        retry_after: Some(secs),
                        ..oauth_err(
                            429,
                            "too_many_attempts",
                            "too many failed attempts; try again later",
                        )
                    });
                }
            };
            let mut allowed = vec![&u.scopes];
            if let Some(c) = &client {
                allowed.push(&c.scopes);
            }
            let scopes = grant_scopes(requested.as_ref(), &allowed);
            let refresh = settings.grants.refresh_token
                && client.as_ref().is_none_or(|c| c.allows("refresh_token"));
            let family = if refresh {
                Some(random_token("fam_").map_err(unavailable)?)
            } else {
                None
            };
            (u.username.clone(), scopes, family)
        }
        _ => {
            // refresh_token
            let presented = form
                .get("refresh_token")
                .ok_or_else(|| invalid_request("refresh_token is required"))?;
            let new = random_token("pcr_").map_err(unavailable)?;
            let outcome = id
                .store()
                .rotate_refresh(
                    &KeyHash::of(presented),
                    &KeyHash::of(&new),
                    &client_id,
                    requested.as_ref(),
                    now,
                )
                .await
                .map_err(unavailable)?;
            let g: RefreshGrant = match outcome {
                RefreshOutcome::Rotated(g) => g,
                RefreshOutcome::Reused => {
                    tracing::warn!(
                        target: "portcullis::security",
                        client_id = %client_id,
                        "refresh token reused: its family is revoked"
                    );
                    return Err(oauth_err(
                        400,
                        "invalid_grant",
                        "the refresh token is invalid",
                    ));
                }
                RefreshOutcome::ScopeWidened => {
                    return Err(oauth_err(
                        400,
                        "invalid_scope",
                        "a refresh cannot add scopes",
                    ));
                }
                RefreshOutcome::Invalid => {
                    return Err(oauth_err(
                        400,
                        "invalid_grant",
                        "the refresh token is invalid",
                    ));
                }
            };
            // The user may have lost scopes (or been disabled) since.
            let scopes = if g.kind == "user" {
                match id
                    .store()
                    .user_auth(&g.subject)
                    .await
                    .map_err(unavailable)?
                {
                    Some(u) if !u.disabled => grant_scopes(Some(&g.scopes), &[&u.scopes]),
                    _ => {
                        return Err(oauth_err(
                            400,
                            "invalid_grant",
                            "the refresh token is invalid",
                        ));
                    }
                }
            } else {
                g.scopes.clone()
            };
            let access = id
                .tokens()
                .issue(&g.subject, &scopes, &client_id)
                .map_err(unavailable)?;
            let body = token_body(&access.0, settings.access_ttl, &scopes, Some(&new));
            return Ok((json_response(StatusCode::OK, body), g.subject));
        }
    };
    let (access, _jti) = id
        .tokens()
        .issue(&subject, &scopes, &client_id)
        .map_err(unavailable)?;
    let refresh = match refresh_family {
        Some(family) => {
            let token = random_token("pcr_").map_err(unavailable)?;
            id.store()
                .insert_refresh(
                    &KeyHash::of(&token),
                    &RefreshGrant {
                        family,
                        client_id: client_id.clone(),
                        subject: subject.clone(),
                        kind: "user".into(),
                        scopes: scopes.clone(),
                        created_at: now,
                        expires_at: now + settings.refresh_ttl,
                    },
                )
                .await
                .map_err(unavailable)?;
            Some(token)
        }
        None => None,
    };
    let body = token_body(&access, settings.access_ttl, &scopes, refresh.as_deref());
    Ok((json_response(StatusCode::OK, body), subject))
}

async fn revoke(id: &Identity, req: Request<Body>) -> Result<Response<Body>, OAuthError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    let client = authenticate_client(id, client_credentials(&headers, &form)?).await?;
    let token = form
        .get("token")
        .ok_or_else(|| invalid_request("token is required"))?;
    if token.starts_with("pcr_") {
        let client_id = client.as_ref().map_or("", |c| c.client_id.as_str());
        id.store()
            .revoke_refresh(&KeyHash::of(token), client_id, id.now())
            .await
            .map_err(unavailable)?;
    } else if token.matches('.').count() == 2 && client.is_some() {
        // Access tokens are self-contained and short-lived; revoking one
        // means revoking its client or user (RFC 7009 §2.2.1 lets a server
        // decline this token type).
        return Err(oauth_err(
            400,
            "unsupported_token_type",
            "access tokens expire on their own; revoke the client or disable the user to end them early",
        ));
    }
    // RFC 7009 §2.2: an unknown or invalid token is not an error.
    Ok(json_response(StatusCode::OK, String::new()))
}

async fn introspect(id: &Identity, req: Request<Body>) -> Result<Response<Body>, OAuthError> {
    let headers = req.headers().clone();
    let form = read_form(req).await?;
    let Some(client) = authenticate_client(id, client_credentials(&headers, &form)?).await? else {
        return Err(invalid_client());
    };
    let token = form
        .get("token")
        .ok_or_else(|| invalid_request("token is required"))?;
    let inactive = || json_response(StatusCode::OK, r#"{"active":false}"#.into());
    if token.starts_with("pcr_") {
        let g = id
            .store()
            .refresh_grant(&KeyHash::of(token), id.now())
            .await
            .map_err(unavailable)?;
        return Ok(match g {
            // A refresh token is only described to the client holding it.
            Some(g) if g.client_id == client.client_id => json_response(
                StatusCode::OK,
                serde_json::json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": g.scopes.to_space_separated(),
                    "client_id": g.client_id,
                    "sub": g.subject,
                    "exp": g.expires_at,
                    "iat": g.created_at,
                    "iss": id.tokens().settings().issuer,
                })
                .to_string(),
            ),
            _ => inactive(),
        });
    }
    match id.verify_access_token(token).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Ok(inactive()),
        Err(e) => return Err(unavailable(e)),
    }
    let Ok(g) = id.tokens().verify(token) else {
        return Ok(inactive());
    };
    let aud = if g.ours {
        id.tokens().settings().audience.clone()
    } else {
        String::new()
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "active": true,
            "token_type": "access_token",
            "scope": g.scopes.to_space_separated(),
            "client_id": g.client_id.clone().unwrap_or_default(),
            "sub": g.subject,
            "exp": g.exp,
            "iat": g.iat,
            "iss": g.issuer,
            "aud": aud,
            "jti": g.token_id,
        })
        .to_string(),
    ))
}

// ---- sessions ---------------------------------------------------------

fn cookie(
    name: &str,
    value: &str,
    max_age: i64,
    http_only: bool,
    same_site: SameSite,
) -> HeaderValue {
    let ss = match same_site {
        SameSite::Lax => "Lax",
        SameSite::Strict => "Strict",
    };
    let ho = if http_only { "; HttpOnly" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure{ho}; SameSite={ss}; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn problem(p: Problem, ctx: Ctx<'_>, out: &mut Outcome) -> Response<Body> {
    out.reason = p.log_reason;
    problem_response(&p, Some(ctx.request_id))
}

async fn login(
    id: &Identity,
    req: Request<Body>,
    ctx: Ctx<'_>,
    out: &mut Outcome,
) -> Response<Body> {
    // Login CSRF: another site must not sign a browser in as someone else.
    if let Err(e) = csrf::check_origin(req.headers(), ctx.origin, &id.settings().trusted_origins) {
        return problem(
            Problem::new(ErrorCode::CsrfFailed)
                .detail(e.detail())
                .log_reason(e.reason()),
            ctx,
            out,
        );
    }
    let mt = media_type(req.headers());
    let Ok(body) = body_bytes(req.into_body()).await else {
        return problem(Problem::new(ErrorCode::PayloadTooLarge), ctx, out);
    };
    let (user, pw) = match mt.as_deref() {
        Some("application/json") => {
            #[derive(serde::Deserialize)]
            struct Login {
                username: String,
                password: String,
            }
            match serde_json::from_slice::<Login>(&body) {
                Ok(l) => (l.username, l.password),
                Err(_) => {
                    return problem(
                        Problem::new(ErrorCode::ValidationFailed)
                            .detail("send {\"username\": \"…\", \"password\": \"…\"}"),
                        ctx,
                        out,
                    );
                }
            }
        }
        Some("application/x-www-form-urlencoded") => {
            let f = match parse_form(&body) {
                Ok(f) => f,
                Err(_) => {
                    return problem(
                        Problem::new(ErrorCode::ValidationFailed)
                            .detail("a field was sent more than once"),
                        ctx,
                        out,
                    );
                }
            };
            match (f.get("username"), f.get("password")) {
                (Some(u), Some(p)) => (u.clone(), p.clone()),
                _ => {
                    return problem(
                        Problem::new(ErrorCode::ValidationFailed)
                            .detail("username and password are required"),
                        ctx,
                        out,
                    );
                }
            }
        }
        _ => {
            return problem(
                Problem::new(ErrorCode::UnsupportedMediaType).detail(
                    "send the credentials as application/x-www-form-urlencoded or application/json",
                ),
                ctx,
                out,
            );
        }
    };
    let pw = Secret::new(pw);
    match id.login(&user, &pw, ctx.client_ip).await {
        Ok(Ok(s)) => {
            out.principal = Some(user);
            let body = serde_json::json!({ "csrf_token": s.csrf, "expires_in": s.expires_in });
            let mut r = json_response(StatusCode::OK, body.to_string());
            let ss = id.settings().same_site;
            let h = r.headers_mut();
            h.append(
                http::header::SET_COOKIE,
                cookie(SESSION_COOKIE, s.token.expose(), s.expires_in, true, ss),
            );
            h.append(
                http::header::SET_COOKIE,
                cookie(CSRF_COOKIE, &s.csrf, s.expires_in, false, ss),
            );
            r
        }
        Ok(Err(Refusal::Invalid(reason))) => problem(
            Problem::new(ErrorCode::InvalidCredentials)
                .detail("Incorrect username or password")
                .log_reason(reason),
            ctx,
            out,
        ),
        Ok(Err(Refusal::Locked(secs))) => problem(locked(secs), ctx, out),
        Err(e) => {
            tracing::error!(error = %e, "login failed");
            problem(Problem::new(ErrorCode::StoreUnavailable), ctx, out)
        }
    }
}

fn session_cookie<'a>(guard: &Guard, headers: &'a HeaderMap) -> Option<&'a str> {
    cookie_value(headers, &guard.names().session_cookie)
}

/// The one cookie of that name; none when it is absent or repeated.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    portcullis_core::credential::cookie(headers, name)
        .ok()
        .flatten()
}

async fn logout(
    guard: &Guard,
    id: &Identity,
    req: Request<Body>,
    ctx: Ctx<'_>,
    out: &mut Outcome,
) -> Response<Body> {
    let policy = crate::auth::guard::Policy {
        schemes: portcullis_core::SchemeSet::new(&[portcullis_core::Scheme::Session]),
        scopes: Scopes::empty(),
    };
    let head = Head {
        client_ip: ctx.client_ip,
        origin: ctx.origin,
        ..Head::new(req.method(), req.headers(), None)
    };
    if let Err(d) = guard.check(&policy, &head).await {
        out.credential_id = d.credential_id;
        return problem(d.problem, ctx, out);
    }
    if let Some(c) = session_cookie(guard, req.headers())
        && let Err(e) = id.logout(c).await
    {
        tracing::error!(error = %e, "logout failed");
        return problem(Problem::new(ErrorCode::StoreUnavailable), ctx, out);
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let ss = id.settings().same_site;
    let h = r.headers_mut();
    h.append(
        http::header::SET_COOKIE,
        cookie(SESSION_COOKIE, "", 0, true, ss),
    );
    h.append(
        http::header::SET_COOKIE,
        cookie(CSRF_COOKIE, "", 0, false, ss),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /auth/csrf`: a token bound to the cookie credential presented.
async fn csrf_endpoint(
    guard: &Guard,
    id: &Identity,
    req: Request<Body>,
    ctx: Ctx<'_>,
    out: &mut Outcome,
) -> Response<Body> {
    let h = req.headers();
    let binding = if let Some(s) = session_cookie(guard, h) {
        match id.verify_session(s).await {
            Ok(Ok(_)) => Some(s),
            _ => None,
        }
    } else if let Some(k) = cookie_value(h, &guard.names().cookie) {
        match guard.verifier() {
            _ if guard.static_key(k).is_some() => Some(k),
            Some(v) => match v.verify(k).await {
                Ok(KeyVerdict::Valid(_)) => Some(k),
                _ => None,
            },
            None => None,
        }
    } else {
        None
    };
    let Some(b) = binding else {
        return problem(
            Problem::new(ErrorCode::NotAuthenticated)
                .detail("a CSRF token is issued for a valid session or API key cookie"),
            ctx,
            out,
        );
    };
    let Ok(t) = id.csrf_token(&KeyHash::of(b)) else {
        return problem(Problem::new(ErrorCode::Internal), ctx, out);
    };
    let body = serde_json::json!({ "csrf_token": t });
    let mut r = json_response(StatusCode::OK, body.to_string());
    r.headers_mut().append(
        http::header::SET_COOKIE,
        cookie(
            CSRF_COOKIE,
            &t,
            id.settings().absolute_ttl,
            false,
            id.settings().same_site,
        ),
    );
    r
}
