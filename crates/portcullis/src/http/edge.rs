//! The browser- and transport-facing checks for an in-process service, in
//! the order the gateway runs them: trusted hosts, the canonical path
//! ([`portcullis_core::path`]: `/d%61ta` is routed as `/data`, `/a;b`
//! or `/a/../b` refused with 400), the HTTPS rule, CORS preflights; then CORS and security headers on the answer. The
//! decisions are the core's ([`portcullis_core::host`],
//! [`portcullis_core::cors`]); the helpers here are shared with the
//! gateway so both answer alike.
//!
//! ```
//! # async fn f(pc: portcullis::Portcullis) {
//! use axum::{Router, routing::get};
//! use portcullis::core::cors::CorsConfig;
//! let cors = CorsConfig {
//!     allow_origins: vec!["https://myapp.example.com".into()],
//!     allow_credentials: true,
//!     ..CorsConfig::default()
//! };
//! let edge = pc.edge()
//!     .trusted_hosts(&["api.example.com".into(), "*.example.com".into()]).unwrap()
//!     .cors(&cors).unwrap()
//!     .https_redirect(true);
//! let router: Router = Router::new()
//!     .route("/", get(|| async { "hi" }))
//!     .layer(pc.layer());
//! // Around the router, not `Router::layer`: the checks must run before
//! // routing, so unknown paths and methods get them too.
//! let app = tower::Layer::layer(&edge, router);
//! # let _ = app;
//! # }
//! ```

use crate::http::rejection::problem_response;
use crate::service::Portcullis;
use axum::body::Body;
use axum::response::Response;
use futures_util::future::BoxFuture;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use portcullis_core::cors::{Cors, CorsConfig, CorsConfigError, CorsRefusal, single_origin};
use portcullis_core::credential::{CredentialNames, Extracted, extract};
use portcullis_core::host::{HostPatternError, TrustedHosts, request_host};
use portcullis_core::path::{self, PathError};
use portcullis_core::{ErrorCode, Problem, Scheme, SchemeSet};
use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Puts a request target's path in canonical form
/// ([`portcullis_core::path`]), keeping the query as sent: routing and
/// everything after it see one spelling of the path.
pub fn canonical_uri(uri: &mut http::Uri) -> Result<(), PathError> {
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
    *uri = http::Uri::from_parts(parts).map_err(|_| PathError::BrokenEscape)?;
    Ok(())
}

/// The 400 `path_not_normalized` answer for a refused path, naming the rule.
pub fn path_problem(e: PathError) -> Problem {
    Problem::new(ErrorCode::PathNotNormalized)
        .detail(e.detail())
        .log_reason(e.log_reason())
}

/// The headers on every answer Portcullis writes itself: nothing in it
/// is for framing, sniffing, caching or referring elsewhere.
pub fn own_headers(h: &mut HeaderMap) {
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

/// Decides a CORS preflight under `cors` (none configured refuses every
/// origin): `Ok` for the 200 `OK` answer, or the 400 `cors_rejected`
/// problem in Starlette's words; either way with the CORS headers to add.
pub fn preflight(cors: Option<&Cors>, req: &HeaderMap) -> (Result<(), Problem>, HeaderMap) {
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
    let result = result.map_err(|r| Problem::new(ErrorCode::CorsRejected).detail(r.to_string()));
    (result, headers)
}

/// The 200 answer to an allowed preflight.
pub fn preflight_ok() -> Response {
    let mut r = Response::new(Body::from("OK"));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether the request carries a credential of any scheme (which must
/// then not be redirected from plain HTTP, but refused: it is exposed).
pub fn carries_credential(
    names: &CredentialNames,
    headers: &HeaderMap,
    query: Option<&str>,
) -> bool {
    let every = SchemeSet::new(&Scheme::ALL);
    extract(&every, names, headers, query) != Extracted::Missing
}

/// The 403 for a credential that came over plain HTTP.
pub fn credential_over_http() -> Problem {
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

/// The settings of an [`EdgeLayer`].
#[derive(Debug, Default)]
struct Settings {
    hosts: Option<TrustedHosts>,
    cors: Option<Cors>,
    redirect: bool,
    redirect_port: Option<u16>,
}

/// Trusted hosts, HTTPS redirect and CORS for a router. Made by
/// [`Portcullis::edge`].
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    pc: Portcullis,
    settings: Arc<Settings>,
}

impl Portcullis {
    /// An [`EdgeLayer`] with nothing switched on.
    pub fn edge(&self) -> EdgeLayer {
        EdgeLayer {
            pc: self.clone(),
            settings: Arc::new(Settings::default()),
        }
    }
}

impl EdgeLayer {
    fn with(self, f: impl FnOnce(&mut Settings)) -> EdgeLayer {
        let mut s = Settings {
            hosts: self.settings.hosts.clone(),
            cors: self.settings.cors.clone(),
            redirect: self.settings.redirect,
            redirect_port: self.settings.redirect_port,
        };
        f(&mut s);
        EdgeLayer {
            pc: self.pc,
            settings: Arc::new(s),
        }
    }

    /// Answers 400 `invalid_host` unless the request's host is one of
    /// `patterns` (`api.example.com`, `*.example.com`).
    pub fn trusted_hosts(self, patterns: &[String]) -> Result<EdgeLayer, HostPatternError> {
        let t = TrustedHosts::parse(patterns)?;
        Ok(self.with(|s| s.hosts = Some(t)))
    }

    /// Answers CORS preflights and sets CORS headers under `config`.
    pub fn cors(self, config: &CorsConfig) -> Result<EdgeLayer, CorsConfigError> {
        let c = Cors::new(config)?;
        Ok(self.with(|s| s.cors = Some(c)))
    }

    /// Plain-HTTP requests: GET and HEAD without a credential get a 308
    /// to HTTPS; anything else gets 403 `https_required`.
    pub fn https_redirect(self, on: bool) -> EdgeLayer {
        self.with(|s| s.redirect = on)
    }

    /// The HTTPS port redirects name (default: 443, left out).
    pub fn https_port(self, port: u16) -> EdgeLayer {
        self.with(|s| s.redirect_port = Some(port))
    }

    /// The answer to a plain-HTTP request when HTTPS is required: a 308
    /// for a GET or HEAD without a credential, else 403.
    fn insecure<B>(&self, req: &Request<B>, host: &str) -> Response {
        if carries_credential(self.pc.names(), req.headers(), req.uri().query()) {
            tracing::warn!(
                exposed = true,
                "a credential was sent over plain HTTP; treat it as exposed and rotate it"
            );
            return problem_response(&credential_over_http(), None);
        }
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Some(r) = https_redirect(host, self.settings.redirect_port, pq) {
                return r;
            }
        }
        problem_response(&Problem::new(ErrorCode::HttpsRequired), None)
    }

    /// Decides what the edge answers itself, before the service.
    fn answer<B>(&self, req: &mut Request<B>) -> Option<Response> {
        let s = &self.settings;
        let any = TrustedHosts::default();
        let rules = s.hosts.as_ref().unwrap_or(&any);
        if let Err(e) = request_host(rules, req.version(), req.uri(), req.headers()) {
            tracing::info!(reason = e.log_reason(), "request refused: host");
            return Some(problem_response(
                &Problem::new(ErrorCode::InvalidHost),
                None,
            ));
        }
        // One spelling of the path from here on, as in the gateway: the
        // router matches what a decoding server would serve.
        if let Err(e) = canonical_uri(req.uri_mut()) {
            tracing::info!(reason = e.log_reason(), "request refused: path");
            return Some(problem_response(&path_problem(e), None));
        }
        if s.redirect
            && !self
                .pc
                .is_https_request(req.uri(), req.headers(), req.extensions())
        {
            // Checked above; read again now that the path is canonical.
            let name = request_host(rules, req.version(), req.uri(), req.headers())
                .map(|h| h.name)
                .unwrap_or_default();
            return Some(self.insecure(req, &name));
        }
        if Cors::is_preflight(req.method(), req.headers()) && s.cors.is_some() {
            let (result, headers) = preflight(s.cors.as_ref(), req.headers());
            let mut r = match result {
                Ok(()) => preflight_ok(),
                Err(p) => problem_response(&p, None),
            };
            for (n, v) in headers.iter() {
                r.headers_mut().append(n.clone(), v.clone());
            }
            return Some(r);
        }
        None
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of an [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    layer: EdgeLayer,
}

impl<S, B> Service<Request<B>> for Edge<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let origin = single_origin(req.headers()).cloned();
            let preflight = Cors::is_preflight(req.method(), req.headers());
            let mut req = req;
            let (mut resp, own) = match layer.answer(&mut req) {
                Some(r) => (r, true),
                None => {
                    let r = inner.call(req).await?;
                    // Problem answers from Portcullis' extractors and
                    // layers are ours too.
                    let own = r.headers().get(CONTENT_TYPE).is_some_and(|v| {
                        v.as_bytes() == portcullis_core::error::PROBLEM_JSON.as_bytes()
                    });
                    (r, own)
                }
            };
            // A preflight's answer already holds its own CORS headers.
            if let Some(c) = &layer.settings.cors
                && !(preflight && own)
            {
                c.apply_origin(origin.as_ref(), resp.headers_mut());
            }
            if own {
                own_headers(resp.headers_mut());
            }
            Ok(resp)
        })
    }
}
