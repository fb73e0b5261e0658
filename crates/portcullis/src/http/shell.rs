//! The tower plumbing the library's layers share: a `tower::Layer` that wraps
//! a service in a [`Shelled`] service, which hands each request to the
//! layer's [`Around::around`] with the inner service. The layers
//! ([`super::edge::EdgeLayer`], [`super::require::RequireLayer`]) then
//! hold only their pipeline phase.

use axum::response::Response;
use futures_util::future::BoxFuture;
use http::Request;
use std::future::Future;
use std::task::{Context, Poll};
use tower::Service;

/// What a layer does around the service it wraps.
pub trait Around: Clone + Send + Sync + 'static {
    /// Answers `req`, calling `inner` when the request gets that far.
    fn around<S, B>(
        self,
        inner: S,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response, S::Error>> + Send
    where
        S: Service<Request<B>, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static;
}

/// A service wrapped by a layer `L`.
#[derive(Debug, Clone)]
pub struct Shelled<L, S> {
    inner: S,
    layer: L,
}

/// Wraps `inner` in `layer`.
pub(crate) fn wrap<L, S>(layer: &L, inner: S) -> Shelled<L, S>
where
    L: Clone,
{
    Shelled {
        inner,
        layer: layer.clone(),
    }
}

impl<L, S, B> Service<Request<B>> for Shelled<L, S>
where
    L: Around,
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
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(self.layer.clone().around(inner, req))
    }
}
