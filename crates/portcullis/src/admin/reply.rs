//! What a handler answers: JSON that is never cached, an empty 204, or
//! problem details.

use crate::http::rejection::problem_response;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use portcullis_core::{ErrorCode, Problem};

/// A handler's answer: `Err` is a refusal already written, so a handler
/// can stop at the first with `?`.
pub(crate) type Answer = Result<Response, Refused>;

/// A refusal already written, boxed so that a `Result` carrying it stays
/// small. `?` makes one of any [`Response`].
pub(crate) struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(r: Response) -> Refused {
        Refused(Box::new(r))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// `v` as JSON with `status`, `Cache-Control: no-store`.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 204, no body.
pub(crate) fn no_content() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Problem details as sent.
pub(crate) fn problem(p: Problem) -> Response {
    problem_response(&p, None)
}

/// 422 `validation_failed`, `detail` naming the member.
pub(crate) fn invalid(detail: impl Into<String>) -> Response {
    problem(Problem::new(ErrorCode::ValidationFailed).detail(detail.into()))
}
