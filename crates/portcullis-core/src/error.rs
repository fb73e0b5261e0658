//! The one table of error codes. Every denial Portcullis answers is drawn
//! from it, so codes, statuses and titles stay stable and documented
//! (docs/errors.md lists the same table).

use std::borrow::Cow;
use std::fmt::Write;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal, $title:literal, $detail:literal), )*) => {
        /// A stable, documented error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as written in bodies, logs and docs.
            pub const fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }
            /// The HTTP status.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
            /// The problem title (the status's reason phrase).
            pub const fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }
            /// The `detail` sent when nothing more specific is said.
            pub const fn default_detail(self) -> &'static str {
                match self { $(ErrorCode::$variant => $detail,)* }
            }
        }
    };
}

error_codes! {
    /// No credential of the route's schemes was presented.
    NotAuthenticated = ("not_authenticated", 401, "Unauthorized", "Not authenticated"),
    /// A credential was presented but is bad, unknown, expired, revoked, disabled or used up.
    InvalidCredentials = ("invalid_credentials", 401, "Unauthorized", "Invalid or expired credentials"),
    /// More than one credential was presented.
    AmbiguousCredentials = ("ambiguous_credentials", 400, "Bad Request", "More than one credential was presented; send exactly one"),
    /// The principal lacks a scope the route requires.
    InsufficientScope = ("insufficient_scope", 403, "Forbidden", "Not enough permissions"),
    /// A cookie-authenticated unsafe request failed the CSRF checks.
    CsrfFailed = ("csrf_failed", 403, "Forbidden", "CSRF check failed"),
    /// Too many failed sign-in attempts for this account or address.
    TooManyAttempts = ("too_many_attempts", 429, "Too Many Requests", "Too many failed attempts; try again later"),
    /// The caller is over a rate limit.
    RateLimited = ("rate_limited", 429, "Too Many Requests", "Rate limit exceeded; retry later"),
    /// A request that is not well-formed.
    BadRequest = ("bad_request", 400, "Bad Request", "Bad request"),
    /// The `Host` (or the request target's authority) is missing, repeated, malformed or not a trusted host.
    InvalidHost = ("invalid_host", 400, "Bad Request", "Invalid host header"),
    /// A CORS preflight asked for an origin, method or header that is not allowed.
    CorsRejected = ("cors_rejected", 400, "Bad Request", "Disallowed CORS origin"),
    /// The request's length is given ambiguously: Content-Length with Transfer-Encoding, or either repeated.
    AmbiguousFraming = ("ambiguous_framing", 400, "Bad Request", "The request's length is given ambiguously; send one Content-Length or Transfer-Encoding: chunked, not both"),
    /// A credential was sent over plain HTTP to a gateway that serves HTTPS.
    HttpsRequired = ("https_required", 403, "Forbidden", "HTTPS required"),
    /// The request body did not arrive in time.
    RequestTimeout = ("request_timeout", 408, "Request Timeout", "The request body was not received in time"),
    /// The request path has a spelling servers read differently (see `path::canonicalize`).
    PathNotNormalized = ("path_not_normalized", 400, "Bad Request", "The request path must not contain dot segments, empty segments, ';', '\\', control characters, invalid UTF-8 or encoded '/', '.' or '%'"),
    /// No route matches the path.
    RouteNotFound = ("not_found", 404, "Not Found", "Not Found"),
    /// A resource of the admin API does not exist.
    ResourceNotFound = ("resource_not_found", 404, "Not Found", "No such resource"),
    /// The path is routed, but not for this method.
    MethodNotAllowed = ("method_not_allowed", 405, "Method Not Allowed", "Method Not Allowed"),
    /// The resource is in a state that forbids the change.
    Conflict = ("conflict", 409, "Conflict", "The resource is in a state that does not allow this change"),
    /// The change would leave no active admin key, locking everyone out of the admin API.
    LastAdminKey = ("last_admin_key", 409, "Conflict", "This is the last active admin key; create another admin key first"),
    /// The request body's framing is broken (a malformed chunk, or fewer bytes than declared).
    MalformedBody = ("malformed_body", 400, "Bad Request", "The request body is malformed: its chunked encoding or length is invalid"),
    /// The body is larger than allowed.
    PayloadTooLarge = ("payload_too_large", 413, "Content Too Large", "The request body is too large"),
    /// The body is not of a supported media type.
    UnsupportedMediaType = ("unsupported_media_type", 415, "Unsupported Media Type", "Send the body as application/json"),
    /// The body parsed but a field is wrong.
    ValidationFailed = ("validation_failed", 422, "Unprocessable Content", "A field of the request is invalid"),
    /// The request's header block is too large.
    HeadersTooLarge = ("headers_too_large", 431, "Request Header Fields Too Large", "The request headers are too large"),
    /// The upstream could not be reached or broke the connection.
    UpstreamUnavailable = ("upstream_unavailable", 502, "Bad Gateway", "The upstream service is unavailable"),
    /// Every connection Portcullis may open to the upstream is in use, and none freed up in time.
    UpstreamBusy = ("upstream_busy", 503, "Service Unavailable", "The upstream service is busy; retry later"),
    /// The upstream did not answer in time.
    UpstreamTimeout = ("upstream_timeout", 504, "Gateway Timeout", "The upstream service did not answer in time"),
    /// The store could not be reached.
    StoreUnavailable = ("store_unavailable", 503, "Service Unavailable", "The credential store is unavailable"),
    /// The key's uses are spent until its next refill.
    QuotaExceeded = ("quota_exceeded", 429, "Too Many Requests", "The key's quota is used up until its next refill"),
    /// The shared rate-limit backend is down and `on_backend_error` is `deny`.
    LimiterUnavailable = ("limiter_unavailable", 503, "Service Unavailable", "The rate limiter is unavailable"),
    /// Something failed inside Portcullis.
    Internal = ("internal_error", 500, "Internal Server Error", "Internal error"),
}

/// A denial: an error code, the `detail` for the client, and the
/// `WWW-Authenticate` challenge where one applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The code.
    pub code: ErrorCode,
    /// What the client is told.
    pub detail: Cow<'static, str>,
    /// `WWW-Authenticate` value, for 401 and 403.
    pub challenge: Option<String>,
    /// The reason written to the log; never sent to the client.
    pub log_reason: &'static str,
    /// `Retry-After`, seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with the code's default detail.
    pub fn new(code: ErrorCode) -> Problem {
        Problem {
            code,
            detail: Cow::Borrowed(code.default_detail()),
            challenge: None,
            log_reason: code.code(),
            retry_after: None,
        }
    }
    /// Replaces the detail.
    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Problem {
        self.detail = detail.into();
        self
    }
    /// Sets the `WWW-Authenticate` challenge.
    pub fn challenge(mut self, challenge: impl Into<String>) -> Problem {
        self.challenge = Some(challenge.into());
        self
    }
    /// Sets `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs);
        self
    }
    /// Sets the reason written to the log.
    pub fn log_reason(mut self, reason: &'static str) -> Problem {
        self.log_reason = reason;
        self
    }
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
    /// The RFC 9457 body, with FastAPI's `detail` member.
    pub fn to_json(&self, request_id: Option<&str>) -> String {
        let mut s = String::with_capacity(192);
        s.push_str("{\"type\":\"https://portcullis.dev/errors/");
        s.push_str(self.code.code());
        s.push_str("\",\"title\":");
        json_string(&mut s, self.code.title());
        let _ = write!(s, ",\"status\":{},\"detail\":", self.code.status());
        json_string(&mut s, &self.detail);
        s.push_str(",\"code\":\"");
        s.push_str(self.code.code());
        s.push('"');
        if let Some(id) = request_id {
            s.push_str(",\"request_id\":");
            json_string(&mut s, id);
        }
        s.push('}');
        s
    }
}

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Appends `v` as a JSON string literal.
pub fn json_string(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_are_unique_and_statuses_are_errors() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            assert!(c.status() >= 400);
        }
    }
    #[test]
    fn body_is_json_with_detail() {
        let p = Problem::new(ErrorCode::NotAuthenticated).detail("a \"q\"\n");
        let s = p.to_json(Some("r1"));
        assert!(s.contains("\"detail\":\"a \\\"q\\\"\\n\""), "{s}");
        assert!(s.contains("\"status\":401"));
    }
}

#[cfg(test)]
mod doc_tests {
    use super::ErrorCode;

    #[test]
    fn docs_list_every_code_with_its_status() {
        let doc = include_str!("../../../docs/errors.md");
        for c in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", c.code(), c.status());
            assert!(doc.contains(&row), "docs/errors.md lacks the row {row}");
        }
    }
}
