//! Browser sessions: `/auth/login`, `/auth/logout` and `/auth/csrf`,
//! answering problem+json; cookies are `HttpOnly`, CSRF-protected.

use super::wire::{body_bytes, json_response, media_type, parse_form};
use super::{Ctx, Outcome};
use crate::auth::guard::{Guard, Head, locked};
use crate::auth::identity::{CSRF_COOKIE, Identity, Refusal, SESSION_COOKIE, SameSite};
use crate::auth::verifier::KeyVerdict;
use crate::http::rejection::problem_response;
use axum::body::Body;
use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use portcullis_core::csrf;
use portcullis_core::{ErrorCode, KeyHash, Problem, Scopes, Secret};

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

pub(super) async fn login(
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

pub(super) async fn logout(
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
        out.credential_id = d.credential_id.map(String::from);
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
pub(super) async fn csrf_endpoint(
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
