//! The token, login and related endpoints ([`crate::oauth::Endpoint`])
//! for an in-process service, mounted wherever it likes: the seeds'
//! `/token` and `/login` are the gateway's `/oauth/token` and
//! `/auth/login`, by the same code.
//!
//! ```
//! # async fn f(pc: portcullis::Portcullis) {
//! use axum::Router;
//! use portcullis::oauth::Endpoint;
//! let app: Router = Router::new()
//!     .route("/token", pc.endpoint(Endpoint::Token))
//!     .route("/login", pc.endpoint(Endpoint::Login))
//!     .layer(pc.layer());
//! # }
//! ```

use crate::oauth::{Ctx, Endpoint, Outcome, answer};
use crate::service::Portcullis;
use axum::body::Body;
use axum::routing::{MethodRouter, get, post};
use http::Request;

impl Portcullis {
    /// A route answering `endpoint` (GET for the JWKS, metadata and CSRF
    /// endpoints, POST for the others). Without users
    /// ([`crate::service::Builder::users`]) it answers 404.
    pub fn endpoint<S: Clone + Send + Sync + 'static>(
        &self,
        endpoint: Endpoint,
    ) -> MethodRouter<S> {
        let pc = self.clone();
        let handler = move |req: Request<Body>| {
            let pc = pc.clone();
            async move { pc.answer_endpoint(endpoint, req).await }
        };
        if endpoint.is_get() {
            get(handler)
        } else {
            post(handler)
        }
    }

    async fn answer_endpoint(
        &self,
        endpoint: Endpoint,
        req: Request<Body>,
    ) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let (client_ip, origin) = (self.client_ip(&parts), self.own_origin(&parts));
        let req = Request::from_parts(parts, body);
        let ctx = Ctx {
            client_ip,
            origin: origin.as_deref(),
            request_id: "",
        };
        let mut out = Outcome::default();
        let mut r = answer(endpoint, self.guard(), req, ctx, &mut out).await;
        tracing::info!(
            target: "portcullis::endpoint",
            endpoint = endpoint.path(),
            reason = out.reason,
            principal = out.principal.as_deref().unwrap_or(""),
            credential_id = out.credential_id.as_deref().unwrap_or(""),
            "endpoint answered"
        );
        crate::pipeline::finish::own_headers(r.headers_mut());
        r
    }
}
