//! The browser- and transport-facing checks for an in-process service, in
//! the order the gateway runs them: trusted hosts, the canonical path
//! ([`portcullis_core::path`]: `/d%61ta` is routed as `/data`, `/a;b`
//! or `/a/../b` refused with 400), the HTTPS rule, CORS preflights; then CORS and security headers on the answer. The
//! decisions are the core's ([`portcullis_core::host`],
//! [`portcullis_core::cors`]), in the pipeline's `early` and `finish`
//! phases ([`crate::pipeline`]) the gateway runs too, so both answer alike.
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
use crate::http::shell::{self, Around, Shelled};
use crate::pipeline::finish::{Author, Finish, finish};
use crate::pipeline::{RequestView, early};
use crate::service::Portcullis;
use axum::response::Response;
use http::Request;
use http::header::CONTENT_TYPE;
use portcullis_core::cors::{Cors, CorsConfig, CorsConfigError, single_origin};
use portcullis_core::host::{HostPatternError, TrustedHosts};
use portcullis_core::origin::is_https;
use std::sync::Arc;
use tower::{Layer, Service};

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

    /// Decides what the edge answers itself, before the service: the
    /// pipeline's `early` phase.
    async fn answer<B>(&self, req: &mut Request<B>) -> Option<Response> {
        let s = &self.settings;
        let any = TrustedHosts::default();
        let rules = s.hosts.as_ref().unwrap_or(&any);
        let arrival = self.pc.arrival(req.uri(), req.extensions());
        if let Err(p) = early::host_rule(rules, arrival, req.version(), req.uri(), req.headers()) {
            tracing::info!(reason = p.log_reason, "request refused: host");
            return Some(problem_response(&p, None));
        }
        // One spelling of the path from here on, as in the gateway: the
        // router matches what a decoding server would serve.
        if let Err(p) = early::canonical_path(req.uri_mut()) {
            tracing::info!(reason = p.log_reason, "request refused: path");
            return Some(problem_response(&p, None));
        }
        if s.redirect && !is_https(arrival, req.headers()) {
            let view = RequestView {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                client: self.pc.client_of(req.headers(), req.extensions()),
                arrival,
            };
            let to = early::RedirectTo {
                host: None,
                port: s.redirect_port,
            };
            let answer = self
                .pc
                .pipeline()
                .plain_http(&view, req.version(), to, None)
                .await;
            return Some(answer.response);
        }
        if Cors::is_preflight(req.method(), req.headers()) && s.cors.is_some() {
            return Some(early::preflight(s.cors.as_ref(), req.headers(), None).0);
        }
        None
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        shell::wrap(self, inner)
    }
}

/// The service of an [`EdgeLayer`].
pub type Edge<S> = Shelled<EdgeLayer, S>;

impl Around for EdgeLayer {
    async fn around<S, B>(self, mut inner: S, req: Request<B>) -> Result<Response, S::Error>
    where
        S: Service<Request<B>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        let layer = self;
        let origin = single_origin(req.headers()).cloned();
        let preflight = Cors::is_preflight(req.method(), req.headers());
        let mut req = req;
        let (mut resp, own) = match layer.answer(&mut req).await {
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
        let author = match (own, preflight) {
            (true, true) => Author::Preflight,
            (true, false) => Author::Own,
            (false, _) => Author::Upstream,
        };
        let f = Finish {
            cors: layer.settings.cors.as_ref(),
            origin: origin.as_ref(),
            author,
            // The service's own CORS headers are its business.
            strip_upstream_cors: false,
            hsts: None,
            upstream_headers: (&[], false),
        };
        finish(resp.headers_mut(), &f);
        Ok(resp)
    }
}
