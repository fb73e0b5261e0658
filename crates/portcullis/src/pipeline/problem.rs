//! A refusal as an HTTP answer: problem+json (RFC 9457), never cached,
//! with `WWW-Authenticate` and `Retry-After` where they apply. Every
//! entrance answers a refusal this way.

use axum::body::Body;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use portcullis_core::Problem;
use portcullis_core::error::PROBLEM_JSON;

/// The problem+json response for `p`.
pub fn problem_response(p: &Problem, request_id: Option<&str>) -> Response {
    let mut r = Response::new(Body::from(p.to_json(request_id)));
    *r.status_mut() = StatusCode::from_u16(p.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = &p.challenge
        && let Ok(v) = HeaderValue::from_str(c)
    {
        h.insert(WWW_AUTHENTICATE, v);
    }
    if let Some(s) = p.retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}
