//! Phase three, `finish`: the headers every answer leaves with — CORS for
//! the request's origin, HSTS over HTTPS, and the security headers: all of
//! them on Portcullis's own answers, a configured set on the upstream's.
//! (An admitted request's rate-limit fields come from
//! [`super::Admitted::write_headers`].)

use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_core::cors::{Cors, strip_cors};

/// Whose answer it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    /// Portcullis wrote it (a refusal, a built-in endpoint).
    Own,
    /// Portcullis answered a CORS preflight: it carries its own CORS
    /// headers already.
    Preflight,
    /// The upstream or the service wrote it.
    Upstream,
}

/// The headers to set on an answer.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// The CORS policy that applies; `None`: no CORS header at all.
    pub cors: Option<&'a Cors>,
    /// The request's single `Origin`.
    pub origin: Option<&'a HeaderValue>,
    /// Whose answer it is.
    pub author: Author,
    /// With no policy, remove CORS headers the upstream set: an
    /// upstream's `Access-Control-Allow-Origin: *` would open what
    /// Portcullis keeps closed. (The gateway does; a service's layer
    /// leaves the service's own headers alone.)
    pub strip_upstream_cors: bool,
    /// `Strict-Transport-Security`, set when the request came over HTTPS.
    pub hsts: Option<&'a HeaderValue>,
    /// Security headers for an upstream's answer, and whether they replace
    /// the upstream's own.
    pub upstream_headers: (&'a [(HeaderName, HeaderValue)], bool),
}

/// Sets the headers `f` calls for on `h`.
pub fn finish(h: &mut HeaderMap, f: &Finish<'_>) {
    match f.cors {
        Some(c) if f.author != Author::Preflight => c.apply_origin(f.origin, h),
        None if f.strip_upstream_cors && f.author == Author::Upstream => strip_cors(h),
        _ => {}
    }
    if let Some(v) = f.hsts {
        h.insert(http::header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    if f.author == Author::Upstream {
        let (set, overwrite) = f.upstream_headers;
        for (n, v) in set {
            if overwrite || !h.contains_key(n) {
                h.insert(n.clone(), v.clone());
            }
        }
    } else {
        own_headers(h);
    }
}

/// The headers on every answer Portcullis writes itself: nothing in it
/// is for framing, sniffing, caching or referring elsewhere.
pub(crate) fn own_headers(h: &mut HeaderMap) {
    use http::header::{
        CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
        X_FRAME_OPTIONS,
    };
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
