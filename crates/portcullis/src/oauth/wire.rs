//! OAuth's wire format (RFC 6749 §5.2): error answers, JSON answers
//! that must not be cached, form bodies, and client authentication by
//! Basic or by form fields.

use super::{MAX_BODY, Outcome};
use crate::auth::identity::Identity;
use crate::http::rejection::problem_response;
use crate::store::identity::ClientAuth;
use axum::body::Body;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use portcullis_core::credential::percent_decode;
use portcullis_core::{ErrorCode, Problem, Secret};
use std::collections::HashMap;

pub(super) struct OAuthError {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) description: &'static str,
    pub(super) basic_challenge: bool,
    pub(super) retry_after: Option<i64>,
    /// What the log says, when more precise than `error` (never sent).
    pub(super) log_reason: Option<&'static str>,
}

pub(super) fn oauth_err(status: u16, error: &'static str, description: &'static str) -> OAuthError {
    OAuthError {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        error,
        description,
        basic_challenge: false,
        retry_after: None,
        log_reason: None,
    }
}

pub(super) fn invalid_request(d: &'static str) -> OAuthError {
    oauth_err(400, "invalid_request", d)
}

pub(super) fn invalid_client() -> OAuthError {
    OAuthError {
        basic_challenge: true,
        ..oauth_err(401, "invalid_client", "client authentication failed")
    }
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // RFC 6749 §5.1: token responses must not be cached.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub(super) fn error_response(e: &OAuthError, out: &mut Outcome) -> Response<Body> {
    out.reason = e.log_reason.unwrap_or(e.error);
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

pub(super) fn method_not_allowed(
    allow: &'static str,
    rid: &str,
    out: &mut Outcome,
) -> Response<Body> {
    out.reason = "method_not_allowed";
    let mut r = problem_response(&Problem::new(ErrorCode::MethodNotAllowed), Some(rid));
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

pub(super) fn media_type(h: &HeaderMap) -> Option<String> {
    let v = h.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}

/// Reads the body, capped.
pub(super) async fn body_bytes(body: Body) -> Result<bytes::Bytes, ()> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ())
}

/// A form where every parameter appears at most once (RFC 6749 §3.2).
/// Empty values count as absent, as FastAPI's form handling does.
pub(super) fn parse_form(b: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
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

pub(super) async fn read_form(req: Request<Body>) -> Result<HashMap<String, String>, OAuthError> {
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
pub(super) fn client_credentials(
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

pub(super) async fn authenticate_client(
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

pub(super) fn unavailable<E: std::fmt::Display>(e: E) -> OAuthError {
    tracing::error!(error = %e, "token endpoint failed");
    oauth_err(
        503,
        "temporarily_unavailable",
        "the authorization server is unavailable",
    )
}
