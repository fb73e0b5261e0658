//! Phase one, `early`: what is decided before a request is routed — the
//! host rule, the one spelling of the path, the HTTPS rule, and CORS
//! preflights. A request refused here meets no credential check.

use super::problem_response;
use super::{Pipeline, RequestView};
use crate::auth::guard::{Head, Policy};
use axum::body::Body;
use axum::response::Response;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use portcullis_core::cors::{Cors, CorsRefusal};
use portcullis_core::credential::{CredentialNames, Extracted, extract};
use portcullis_core::host::{HostError, RequestHost, TrustedHosts, check_authority, request_host};
use portcullis_core::origin::{Arrival, forwarded_host};
use portcullis_core::path::{self, PathError};
use portcullis_core::{ErrorCode, Problem, Scheme, SchemeSet, Scopes};
use std::borrow::Cow;

/// The host rule: the request must name one well-formed host, and it
/// must be one of `rules`. Behind a trusted proxy the browser's host is
/// the proxy's single `X-Forwarded-Host` (the proxy may have pointed
/// `Host` at us); from anyone else that header means nothing. The `Host`
/// must be well-formed either way.
pub fn host_rule(
    rules: &TrustedHosts,
    arrival: Arrival,
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    browser_request_host(rules, arrival, version, uri, headers)
        .map(|_| ())
        .map_err(|e| Problem::new(ErrorCode::InvalidHost).log_reason(e.log_reason()))
}

/// The host the browser addressed, checked against `rules` as
/// [`host_rule`] checks it.
fn browser_request_host<'a>(
    rules: &TrustedHosts,
    arrival: Arrival,
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<RequestHost<'a>, HostError> {
    match forwarded_host(arrival, headers) {
        None => request_host(rules, version, uri, headers),
        Some(v) => {
            request_host(&TrustedHosts::default(), version, uri, headers)?;
            check_authority(rules, v?)
        }
    }
}

/// Puts a request target's path in canonical form
/// ([`portcullis_core::path`]), keeping the query as sent: routing and
/// everything after it see one spelling of the path.
pub fn canonical_uri(uri: &mut Uri) -> Result<(), PathError> {
    let canonical = match path::canonicalize(uri.path())? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(p) => p,
    };
    let pq = match uri.query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    let mut parts = std::mem::take(uri).into_parts();
    // The canonical path holds only characters a URI may carry, so this
    // parses; were it ever not to, the request is refused, not passed on.
    parts.path_and_query = Some(pq.parse().map_err(|_| PathError::BrokenEscape)?);
    *uri = Uri::from_parts(parts).map_err(|_| PathError::BrokenEscape)?;
    Ok(())
}

/// The 400 `path_not_normalized` answer for a refused path, naming the rule.
pub fn path_problem(e: PathError) -> Problem {
    Problem::new(ErrorCode::PathNotNormalized)
        .detail(e.detail())
        .log_reason(e.log_reason())
}

/// [`canonical_uri`], refusing with [`path_problem`].
pub fn canonical_path(uri: &mut Uri) -> Result<(), Problem> {
    canonical_uri(uri).map_err(path_problem)
}

/// Where a plain-HTTP GET or HEAD is sent: a fixed host, or the request's
/// own; and the HTTPS port (443 is left out of the address).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedirectTo<'a> {
    /// The host to name instead of the request's.
    pub host: Option<&'a str>,
    /// The HTTPS port.
    pub port: Option<u16>,
}

/// The answer to a plain-HTTP request when HTTPS is required.
#[derive(Debug)]
pub struct PlainHttp {
    /// 308 to HTTPS, or 403 `https_required`.
    pub response: Response,
    /// The log's reason.
    pub reason: &'static str,
    /// The id of a credential that came in cleartext, when it verified
    /// far enough to have one: it must be rotated.
    pub exposed: Option<String>,
}

impl Pipeline {
    /// The HTTPS rule for a request that did not come over HTTPS: a
    /// request carrying a credential is refused, the credential logged as
    /// exposed (verified without spending a use, only to name its id);
    /// a GET or HEAD without one is sent to HTTPS (308); anything else is
    /// refused (403).
    pub async fn plain_http(
        &self,
        req: &RequestView<'_>,
        version: Version,
        to: RedirectTo<'_>,
        request_id: Option<&str>,
    ) -> PlainHttp {
        let RequestView {
            method,
            uri,
            headers,
            client,
            ..
        } = *req;
        let refuse = |p: Problem, exposed| PlainHttp {
            reason: p.log_reason,
            response: problem_response(&p, request_id),
            exposed,
        };
        if carries_credential(self.guard.names(), headers, uri.query()) {
            let head = Head {
                client_ip: client,
                ..Head::new(method, headers, uri.query())
            };
            // Which credential went over cleartext: verified (without
            // spending a use) only to name its id in the log. Not a Basic
            // password: hashing it would let any cleartext client make the
            // server run Argon2; its user name says whose it was.
            let cheap = Policy {
                schemes: SchemeSet::new(&EXPOSED_CHECKED),
                scopes: Scopes::empty(),
            };
            // Boxed: this rare path's verification must not grow the future
            // of every request that passes by it.
            let id = match Box::pin(self.guard.authenticate(&cheap, &head)).await {
                Ok(g) => g.principal.map(|p| p.credential_id),
                Err(d) => d.credential_id,
            }
            .or_else(|| basic_user(self.guard.names(), headers).map(Into::into));
            tracing::warn!(
                request_id = request_id.unwrap_or(""),
                peer = %client.map_or_else(String::new, |c| c.to_string()),
                key_id = id.as_deref().unwrap_or(""),
                exposed = true,
                "a credential was sent over plain HTTP; treat it as exposed and rotate it"
            );
            return refuse(credential_over_http(), id.map(String::from));
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            return refuse(Problem::new(ErrorCode::HttpsRequired), None);
        }
        let host = match to.host {
            Some(h) => Cow::Borrowed(h),
            // The host the host rule checked (a trusted proxy's
            // X-Forwarded-Host, else the request's): it has passed, so any
            // rule accepts it again.
            None => {
                browser_request_host(&TrustedHosts::default(), req.arrival, version, uri, headers)
                    .map(|h| h.name)
                    .unwrap_or_default()
            }
        };
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        match https_redirect(&host, to.port, pq) {
            Some(response) => PlainHttp {
                response,
                reason: "https_redirect",
                exposed: None,
            },
            None => refuse(Problem::new(ErrorCode::HttpsRequired), None),
        }
    }
}

/// The schemes a credential sent over cleartext is verified under, to
/// name it in the log: every one but Basic (see [`Pipeline::plain_http`]).
const EXPOSED_CHECKED: [Scheme; 5] = [
    Scheme::ApiKeyHeader,
    Scheme::ApiKeyQuery,
    Scheme::ApiKeyCookie,
    Scheme::Bearer,
    Scheme::Session,
];

/// `basic:<user>` for a Basic credential, read without checking its
/// password.
fn basic_user(names: &CredentialNames, headers: &HeaderMap) -> Option<String> {
    let basic = SchemeSet::new(&[Scheme::Basic]);
    let Extracted::One(p) = extract(&basic, names, headers, None) else {
        return None;
    };
    let creds = portcullis_core::basic::parse(p.value.as_deref()?).ok()?;
    Some(format!("basic:{}", creds.username))
}

/// Whether the request carries a credential of any scheme (which must
/// then not be redirected from plain HTTP, but refused: it is exposed).
pub(crate) fn carries_credential(
    names: &CredentialNames,
    headers: &HeaderMap,
    query: Option<&str>,
) -> bool {
    let every = SchemeSet::new(&Scheme::ALL);
    extract(&every, names, headers, query) != Extracted::Missing
}

/// The 403 for a credential that came over plain HTTP.
pub(crate) fn credential_over_http() -> Problem {
    Problem::new(ErrorCode::HttpsRequired)
        .detail("HTTPS required: this credential was sent in cleartext and should be rotated")
        .log_reason("credential_over_http")
}

/// The 308 to the HTTPS address of a plain-HTTP GET or HEAD.
pub fn https_redirect(host: &str, port: Option<u16>, path_and_query: &str) -> Option<Response> {
    let location = match port {
        None | Some(443) => format!("https://{host}{path_and_query}"),
        Some(p) => format!("https://{host}:{p}{path_and_query}"),
    };
    let v = HeaderValue::from_str(&location).ok()?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut().insert(LOCATION, v);
    Some(r)
}

/// The answer to a CORS preflight under `cors` (none configured refuses
/// every origin): 200 `OK`, or 400 `cors_rejected` in Starlette's words;
/// either way with its CORS headers. Returns the log's reason too.
pub fn preflight(
    cors: Option<&Cors>,
    req: &HeaderMap,
    request_id: Option<&str>,
) -> (Response, &'static str) {
    let mut headers = HeaderMap::new();
    let result = match cors {
        Some(c) => c.preflight(req, &mut headers),
        None => Err(CorsRefusal {
            origin: true,
            method: false,
            headers: false,
            private_network: false,
        }),
    };
    let (mut r, reason) = match result {
        Ok(()) => {
            let mut r = Response::new(Body::from("OK"));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            (r, "cors_preflight")
        }
        Err(refusal) => {
            let p = Problem::new(ErrorCode::CorsRejected).detail(refusal.to_string());
            (problem_response(&p, request_id), p.log_reason)
        }
    };
    for (n, v) in headers.iter() {
        r.headers_mut().append(n.clone(), v.clone());
    }
    (r, reason)
}
