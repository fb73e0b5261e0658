//! The answer a library extractor or layer gives when it refuses a
//! request: a [`Problem`] as problem+json, with `WWW-Authenticate` and
//! `Retry-After` where they apply ([`problem_response`], the pipeline's
//! answer to a refusal).

pub use crate::pipeline::problem_response;
use axum::response::{IntoResponse, Response};
use portcullis_core::{ErrorCode, Problem};
use std::borrow::Cow;

/// A refusal, answered as problem+json. Handlers can return it too.
///
/// ```
/// use axum::response::IntoResponse;
/// use portcullis::core::ErrorCode;
/// use portcullis::rejection::Rejection;
///
/// let r = Rejection::new(ErrorCode::InvalidCredentials).detail("Invalid API key");
/// assert_eq!(r.problem().status(), 401);
/// assert_eq!(r.into_response().status(), 401);
/// ```
#[derive(Debug, Clone)]
pub struct Rejection(Box<Inner>);

/// Boxed so `Result<_, Rejection>` stays one word wide on the happy path.
#[derive(Debug, Clone)]
struct Inner {
    problem: Problem,
    extra: Option<http::HeaderMap>,
}

impl Rejection {
    /// A rejection with the code's default detail.
    pub fn new(code: ErrorCode) -> Rejection {
        Rejection::from(Problem::new(code))
    }

    /// FastAPI's 401 `Not authenticated`, challenging with `challenge`.
    ///
    /// ```
    /// # use portcullis::rejection::Rejection;
    /// let r = Rejection::not_authenticated(Some("APIKey"));
    /// assert_eq!(r.problem().detail, "Not authenticated");
    /// ```
    pub fn not_authenticated(challenge: Option<&str>) -> Rejection {
        let mut p = Problem::new(ErrorCode::NotAuthenticated);
        if let Some(c) = challenge {
            p = p.challenge(c);
        }
        Rejection::from(p)
    }

    /// Replaces the detail sent to the client.
    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Rejection {
        self.0.problem = self.0.problem.detail(detail);
        self
    }

    /// Sets the `WWW-Authenticate` challenge.
    pub fn challenge(mut self, challenge: impl Into<String>) -> Rejection {
        self.0.problem = self.0.problem.challenge(challenge);
        self
    }

    /// Adds headers to the answer (rate-limit fields on a 429, say).
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Rejection {
        self.0.extra = Some(headers);
        self
    }

    /// The problem.
    pub fn problem(&self) -> &Problem {
        &self.0.problem
    }
}

impl From<Problem> for Rejection {
    fn from(problem: Problem) -> Rejection {
        Rejection(Box::new(Inner {
            problem,
            extra: None,
        }))
    }
}

impl From<crate::auth::guard::Denied> for Rejection {
    fn from(d: crate::auth::guard::Denied) -> Rejection {
        Rejection::from(d.problem)
    }
}

impl From<crate::pipeline::Refused> for Rejection {
    fn from(r: crate::pipeline::Refused) -> Rejection {
        Rejection::from(r.problem)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.0.problem.code.code(),
            self.0.problem.detail
        )
    }
}

impl std::error::Error for Rejection {}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut r = problem_response(&self.0.problem, None);
        if let Some(extra) = self.0.extra {
            r.headers_mut().extend(extra);
        }
        r
    }
}
