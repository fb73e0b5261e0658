//! The public listener's request path, in order: built-in endpoints, path
//! check, route match, credential and scopes (the guard), then the
//! upstream or the demo, then the access log.

use crate::body::{self, Cutoff};
use crate::config::{Config, Route, Upstream};
use crate::proxy::{self, Proxy};
use crate::serve::Conn;
use axum::body::Body;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use portcullis::auth::guard::Guard;
use portcullis::pipeline::early::{self, RedirectTo};
use portcullis::pipeline::finish::{Author, Finish, finish};
use portcullis::pipeline::{
    Admitted, Demand, Entrance, Pipeline, RateDemand, Refused, RequestView,
};
use portcullis::ratelimit::{Limiter, MemoryLimiter, Pool, RedisLimiter};
use portcullis::rejection::problem_response;
use portcullis::store::Store;
use portcullis_core::cors::Cors;
use portcullis_core::net::{client_ip, is_trusted};
use portcullis_core::origin::{Arrival, browser_origin, is_https};
use portcullis_core::route::{RouteMatch, RouteTable};
use portcullis_core::shared_str::SharedStr;
use portcullis_core::trace::{TraceContext, tracestate_ok};
use portcullis_core::{ErrorCode, Principal, Problem};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Everything a request needs, built once at start.
pub struct App {
    /// The config.
    pub cfg: Config,
    routes: RouteTable<Arc<Route>>,
    /// The phases every request passes (the guard and the limiter).
    pipeline: Pipeline,
    proxy: Proxy,
    store: Store,
    seq: AtomicU64,
    id_prefix: String,
    /// The rate limiter (shared with the admin API's status).
    pub limiter: Arc<Limiter>,
    // Where JSON access-log lines go directly; `None`: through `tracing`.
    access_sink: Option<crate::logwriter::BatchLog>,
    // Requests by route, method class and status; `None`: metrics off.
    metrics: Option<Arc<crate::metrics::RequestMetrics>>,
}

/// One request's context: where it came from, its id, and what the
/// access log will say about it.
struct Ctx<'c> {
    conn: &'c Conn,
    /// The client's address, as far as it can be trusted.
    client: IpAddr,
    /// How it reached us.
    arrival: Arrival,
    /// Its `X-Request-Id`.
    rid: HeaderValue,
    /// Its span: the client's trace continued, or a new one.
    trace: TraceContext,
    /// Whether the client's `tracestate` is passed on.
    keep_tracestate: bool,
    out: Outcome,
}

impl Ctx<'_> {
    /// The pipeline's view of `req`, as it reached this gateway.
    fn view<'r>(&self, req: &'r Request<Body>) -> RequestView<'r> {
        RequestView {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            client: Some(self.client),
            arrival: self.arrival,
        }
    }
}

/// What the access log says about a request.
#[derive(Default)]
struct Outcome {
    route: Option<Arc<Route>>,
    credential_id: Option<SharedStr>,
    principal: Option<SharedStr>,
    reason: &'static str,
    /// The upstream (or the demo) answered: its headers are its own.
    proxied: bool,
    /// The connection must close after this answer.
    close: bool,
    /// A CORS preflight, answered with its own CORS headers.
    preflight: bool,
}

impl App {
    /// The per-address failure counter, when `[abuse]` is on: the event
    /// loops close a blocked address's new connections at accept.
    pub fn address_block(&self) -> Option<Arc<portcullis::pipeline::AddressBlock>> {
        self.pipeline.address_block().cloned()
    }

    /// Builds the app.
    pub fn new(cfg: Config, guard: Guard, store: Store) -> anyhow::Result<App> {
        let mut routes = RouteTable::new();
        for r in &cfg.routes {
            routes.add(r.pattern.clone(), r.methods.clone(), Arc::new(r.clone()));
        }
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        let mut id_prefix = String::new();
        portcullis_core::base62::encode_fixed(&b, 8, &mut id_prefix);
        let memory = MemoryLimiter::new(
            Arc::new(portcullis::clock::SystemClock),
            cfg.rate_limit.max_counters,
        );
        let limiter = match &cfg.rate_limit.redis {
            None => Limiter::memory(memory),
            Some(s) => Limiter::redis(
                RedisLimiter::new(s.clone())?,
                memory,
                cfg.rate_limit.on_backend_error,
            ),
        };
        let limiter = Arc::new(limiter);
        Ok(App {
            pipeline: Pipeline::new(guard, limiter.clone(), cfg.rate_limit.legacy_headers)
                .with_address_block(crate::config::address_block(
                    &cfg.abuse,
                    &cfg.trusted_proxies,
                    &store,
                )),
            limiter,
            proxy: Proxy::new(
                cfg.connect_timeout,
                cfg.routes.iter().filter_map(|r| match &r.upstream {
                    Upstream::Http { origin, .. } => Some(origin.as_str()),
                    Upstream::Demo => None,
                }),
                cfg.upstream_max_connections,
                cfg.upstream_queue_timeout,
                cfg.threads,
            ),
            cfg,
            routes,
            store,
            seq: AtomicU64::new(0),
            id_prefix,
            access_sink: None,
            metrics: None,
        })
    }

    /// Counts requests and upstream times into `metrics`, and reports
    /// every admission decision to `observer` (see [`crate::metrics`]).
    pub fn with_metrics(
        mut self,
        metrics: Arc<crate::metrics::RequestMetrics>,
        observer: Arc<dyn portcullis::pipeline::Observer>,
    ) -> App {
        self.pipeline = self.pipeline.observed_by(observer);
        self.metrics = Some(metrics);
        self
    }

    /// Reports every admission decision to `observer` too (per-key
    /// analytics: [`portcullis::analytics::Analytics`]).
    pub fn observed_by(mut self, observer: Arc<dyn portcullis::pipeline::Observer>) -> App {
        self.pipeline = self.pipeline.observed_by(observer);
        self
    }

    /// Writes JSON access-log lines straight to `sink` (see
    /// [`crate::access_log`]).
    pub fn with_access_sink(mut self, sink: Option<crate::logwriter::BatchLog>) -> App {
        self.access_sink = sink;
        self
    }

    /// A new request id (see `X-Request-Id`), ready to be a header value
    /// on the response and to the upstream (cloned by a reference count).
    pub fn request_id(&self) -> HeaderValue {
        // A per-process random prefix and a counter: unique, cheap, and
        // reveals nothing but the order of requests. Written by hand on
        // the stack: `format!` is `core::fmt` and a second allocation.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        let p = self.id_prefix.as_bytes();
        let mut len = p.len().min(buf.len() - 17);
        buf[..len].copy_from_slice(&p[..len]);
        buf[len] = b'-';
        len += 1;
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            buf[len] = HEX[((n >> (i * 4)) & 0xf) as usize];
            len += 1;
        }
        // Base62 and hex: always a valid header value; cut to fit.
        crate::proxy::shared_value(&buf[..len.min(crate::proxy::SHARED_MAX)])
            .unwrap_or_else(|| HeaderValue::from_static("-"))
    }

    /// The guard.
    pub fn guard(&self) -> &Guard {
        self.pipeline.guard()
    }

    /// Handles one request from `conn`: the checks on the connection
    /// (framing, head size), the pipeline's `early` phase (host, path,
    /// HTTPS), then [`App::dispatch`], then `finish` and the access log.
    pub async fn handle(self: Arc<Self>, conn: Conn, mut req: Request<Body>) -> Response<Body> {
        let start = Instant::now();
        let method = req.method().clone();
        // A reference-counted copy of the target, for the log line: the
        // canonical one once the path is canonical.
        let mut uri = req.uri().clone();
        let client = client_ip(
            conn.peer.ip(),
            &self.cfg.trusted_proxies,
            self.cfg.forwarded_header,
            req.headers()
                .get_all(self.cfg.forwarded_header.name())
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let arrival = Arrival {
            tls: conn.tls,
            trusted_peer: is_trusted(&self.cfg.trusted_proxies, conn.peer.ip()),
        };
        let parent = TraceContext::from_headers(req.headers());
        let (trace_id, span_id) = crate::trace_ids::fresh();
        let mut cx = Ctx {
            conn: &conn,
            client,
            arrival,
            rid: self.request_id(),
            trace: TraceContext::next(parent.as_ref(), trace_id, span_id),
            keep_tracestate: parent.is_some() && tracestate_ok(req.headers()),
            out: Outcome {
                reason: "allowed",
                ..Outcome::default()
            },
        };
        let origin = portcullis_core::cors::single_origin(req.headers()).cloned();
        let h1 = req.version() < http::Version::HTTP_2;
        // Portcullis never upgrades a connection nor tunnels. After a
        // refused Upgrade or CONNECT hyper would read on, but the framing
        // watcher has stopped following the stream: end it instead.
        cx.out.close =
            req.headers().contains_key(http::header::UPGRADE) || req.method() == Method::CONNECT;
        let admitted = self.early(&req, &mut cx).and_then(|()| {
            // One spelling of the path from here on: routing, the
            // decision, the log and the upstream all see this one.
            early::canonical_path(req.uri_mut())
        });
        if admitted.is_ok() {
            uri = req.uri().clone();
        }
        let mut resp = match admitted {
            Err(p) => self.deny(p, &mut cx),
            Ok(()) if self.cfg.tls.is_some() && !is_https(arrival, req.headers()) => {
                self.plain_http(req, &mut cx).await
            }
            Ok(()) => self.dispatch(req, &mut cx).await,
        };
        self.finish(&mut resp, &cx, origin.as_ref());
        let out = &cx.out;
        if out.close && h1 {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp.headers_mut().insert(proxy::REQUEST_ID, cx.rid.clone());
        if let Some(m) = &self.metrics {
            m.request(
                out.route.as_deref(),
                uri.path(),
                &method,
                resp.status().as_u16(),
                start.elapsed(),
            );
        }
        if self.cfg.access_log {
            let (trace_id, span_id) = (cx.trace.trace_hex(), cx.trace.span_hex());
            crate::access_log::emit(
                self.access_sink.as_ref(),
                &crate::access_log::Line {
                    request_id: rid_str(&cx.rid),
                    method: method.as_str(),
                    path: uri.path(),
                    route: out.route.as_ref().map_or("", |r| r.path.as_str()),
                    status: resp.status().as_u16(),
                    latency_us: start.elapsed().as_micros() as u64,
                    client_ip: client,
                    key_id: out.credential_id.as_deref().unwrap_or(""),
                    principal: out.principal.as_deref().unwrap_or(""),
                    reason: out.reason,
                    tls: conn.tls,
                    trace_id: std::str::from_utf8(&trace_id).unwrap_or_default(),
                    span_id: std::str::from_utf8(&span_id).unwrap_or_default(),
                },
            );
        }
        resp
    }

    /// The checks before anything else: a connection that framed a
    /// request ambiguously, a head over the limit, then the pipeline's
    /// host rule.
    fn early(&self, req: &Request<Body>, cx: &mut Ctx<'_>) -> Result<(), Problem> {
        if let Some(a) = cx.conn.ambiguity() {
            cx.out.close = true;
            return Err(Problem::new(ErrorCode::AmbiguousFraming).log_reason(a.log_reason()));
        }
        if head_size(req) > self.cfg.max_header_bytes {
            cx.out.close = true;
            return Err(Problem::new(ErrorCode::HeadersTooLarge));
        }
        early::host_rule(
            &self.cfg.trusted_hosts,
            cx.arrival,
            req.version(),
            req.uri(),
            req.headers(),
        )
    }

    /// A request on the plain-HTTP listener of a gateway that serves
    /// HTTPS: the pipeline's HTTPS rule.
    async fn plain_http(&self, req: Request<Body>, cx: &mut Ctx<'_>) -> Response<Body> {
        let Some(tls) = &self.cfg.tls else {
            return self.deny(Problem::new(ErrorCode::HttpsRequired), cx);
        };
        // `redirect_host` is the public address as written, its port
        // included when it has one; else the request's host and the port
        // this listener serves HTTPS on.
        let to = match tls.redirect_host.as_deref() {
            Some(host) => RedirectTo {
                host: Some(host),
                port: None,
            },
            None => RedirectTo {
                host: None,
                port: Some(self.cfg.listen.port()),
            },
        };
        let view = cx.view(&req);
        let a = self
            .pipeline
            .plain_http(&view, req.version(), to, Some(rid_str(&cx.rid)))
            .await;
        cx.out.reason = a.reason;
        if a.exposed.is_some() {
            cx.out.credential_id = a.exposed.map(Into::into);
        }
        a.response
    }

    /// The pipeline's `finish` phase for this gateway's settings.
    fn finish(&self, resp: &mut Response<Body>, cx: &Ctx<'_>, origin: Option<&HeaderValue>) {
        let out = &cx.out;
        let author = if out.preflight {
            Author::Preflight
        } else if out.proxied {
            Author::Upstream
        } else {
            Author::Own
        };
        let sh = &self.cfg.security_headers;
        let f = Finish {
            cors: out
                .route
                .as_ref()
                .and_then(|r| r.cors.as_deref())
                .or(self.cfg.cors.as_deref()),
            origin,
            author,
            strip_upstream_cors: true,
            hsts: self
                .cfg
                .tls
                .as_ref()
                .filter(|_| cx.conn.tls)
                .map(|t| &t.hsts),
            upstream_headers: (&sh.proxied, sh.overwrite),
        };
        finish(resp.headers_mut(), &f);
    }

    /// Not ready while a trusted issuer's tokens would get 503: no keys
    /// yet, or keys kept past `stale_for` (a stale set still serving is
    /// ready; the metrics say it is stale).
    fn issuers_ready(&self) -> Result<(), String> {
        let Some(id) = self.pipeline.guard().identity() else {
            return Ok(());
        };
        for h in id.tokens().issuers_health() {
            if h.state == portcullis::auth::jwt::IssuerState::Unusable {
                return Err(format!(
                    "trusted issuer {} has no usable keys (last good fetch: {}; last error: {})",
                    h.issuer,
                    h.last_success_secs
                        .map_or_else(|| "never".to_owned(), |s| format!("{s} s ago")),
                    h.last_error.as_deref().unwrap_or("none")
                ));
            }
        }
        Ok(())
    }

    async fn dispatch(&self, req: Request<Body>, cx: &mut Ctx<'_>) -> Response<Body> {
        if Cors::is_preflight(req.method(), req.headers()) {
            return self.preflight(&req, cx);
        }
        match req.uri().path() {
            "/healthz" => return json(StatusCode::OK, r#"{"status":"ok"}"#),
            "/readyz" => {
                // Not ready while the verifier answers keys 503: its
                // breaker is open (a store query failed, no poll has
                // succeeded since) or its caches are past stale_grace.
                // The ping alone would say "ready" between two failures.
                let health = self.pipeline.guard().verifier().map(|v| v.health());
                let verdict = match health {
                    Some(h) if !h.ready() => Err(format!(
                        "key verification unavailable (breaker open: {}, stale: {}, last change-log poll {} s ago)",
                        h.breaker_open, h.stale, h.last_poll_age_secs
                    )),
                    _ => self.store.ping().await.map_err(|e| e.to_string()),
                };
                return match verdict {
                    // A trusted issuer without usable keys fails its own
                    // tokens (503), not the instance: every instance shares
                    // the provider, so failing readiness would drain them
                    // all and take API keys and sessions down with it. It
                    // is said here and in `portcullis_jwks_state`.
                    Ok(()) => match self.issuers_ready() {
                        Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#),
                        Err(why) => {
                            let body = serde_json::json!({"status": "ready", "degraded": [why]});
                            let mut r = Response::new(Body::from(body.to_string()));
                            r.headers_mut()
                                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                            r
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "store not ready");
                        cx.out.reason = "store_unavailable";
                        problem_response(
                            &Problem::new(ErrorCode::StoreUnavailable),
                            Some(rid_str(&cx.rid)),
                        )
                    }
                };
            }
            "/auth/verify" => {
                let (parts, _body) = req.into_parts();
                return self.decide(&parts, cx).await;
            }
            p if portcullis::oauth::PATHS.contains(&p) => return self.oauth(req, cx).await,
            _ => {}
        }
        let route = match self.route(req.method(), req.uri().path(), false, cx) {
            Ok(r) => r,
            Err(r) => return *r,
        };
        let view = cx.view(&req);
        let admitted = match self.admit(Entrance::Proxy, &route, &view, cx).await {
            Ok(a) => a,
            Err(f) => return f.response(Some(rid_str(&cx.rid))),
        };
        let mut resp = self
            .forward(req, &route, admitted.principal.as_ref(), cx)
            .await;
        // Room for the rate-limit fields, the request id and the headers
        // `finish` sets, in one growth of a map sized for the upstream's.
        let _ = resp.headers_mut().try_reserve(8);
        admitted.write_headers(resp.headers_mut());
        resp
    }

    /// The route for `method` and `path`, noted for the log; or the 404 /
    /// 405 answer (marked for the proxy when it answers the decision
    /// endpoint).
    fn route(
        &self,
        method: &Method,
        path: &str,
        decision: bool,
        cx: &mut Ctx<'_>,
    ) -> Result<Arc<Route>, Box<Response<Body>>> {
        // Boxed: a refusal is the rare path, and keeps the `Ok` small.
        let (problem, allowed) = match self.routes.find(method, path) {
            RouteMatch::Found(r) => {
                cx.out.route = Some(r.clone());
                return Ok(r.clone());
            }
            RouteMatch::NotFound => (Problem::new(ErrorCode::RouteNotFound), None),
            RouteMatch::MethodNotAllowed(allowed) => {
                (Problem::new(ErrorCode::MethodNotAllowed), Some(allowed))
            }
        };
        let mut r = if decision {
            self.decision_denied(problem, cx)
        } else {
            self.deny(problem, cx)
        };
        if let Some(allowed) = allowed {
            set_allow(r.headers_mut(), &allowed);
        }
        Err(Box::new(r))
    }

    /// The pipeline's `admit` phase for `route`, noting the caller (or the
    /// refusal) for the log.
    async fn admit(
        &self,
        entrance: Entrance,
        route: &Route,
        view: &RequestView<'_>,
        cx: &mut Ctx<'_>,
    ) -> Result<Admitted, Refused> {
        let demand = Demand {
            route: &route.path,
            schemes: &route.policy.schemes,
            scopes: &route.policy.scopes,
            rate: Some(RateDemand {
                pool: Pool::Route(u32::try_from(route.index).unwrap_or(u32::MAX)),
                policy: route
                    .rate_limit
                    .as_ref()
                    .or(self.cfg.rate_limit.default.as_ref()),
                by: route.rate_limit_by,
            }),
            cost: route.cost,
            admitted: None,
        };
        let r = self.pipeline.admit(entrance, &demand, view).await;
        match &r {
            Ok(a) => self.note_principal(a.principal.as_ref(), &mut cx.out),
            Err(f) => {
                cx.out.reason = f.reason;
                self.close_if_blocked(cx);
                cx.out.credential_id.clone_from(&f.credential_id);
                cx.out.principal.clone_from(&f.subject);
            }
        }
        r
    }

    /// `/oauth/*` and `/auth/login|logout|csrf`: the token and session
    /// endpoints, with their own brute-force limit.
    async fn oauth(&self, req: Request<Body>, cx: &mut Ctx<'_>) -> Response<Body> {
        let p = req.uri().path();
        // Where passwords and client secrets are tried. Not
        // introspection: resource servers call it for every request.
        if matches!(p, "/oauth/token" | "/auth/login")
            && let Some(policy) = &self.cfg.rate_limit.auth_endpoints
        {
            let demand = Demand {
                route: if p == "/oauth/token" {
                    "/oauth/token"
                } else {
                    "/auth/login"
                },
                schemes: &portcullis_core::SchemeSet::new(&[]),
                scopes: &portcullis_core::Scopes::empty(),
                rate: Some(RateDemand {
                    pool: Pool::Named("auth"),
                    policy: Some(policy),
                    by: portcullis::ratelimit::LimitBy::Ip,
                }),
                cost: 1,
                admitted: None,
            };
            let view = cx.view(&req);
            if let Err(f) = self.pipeline.admit(Entrance::Proxy, &demand, &view).await {
                cx.out.reason = f.reason;
                return f.response(Some(rid_str(&cx.rid)));
            }
        }
        // A blocked address is refused before any credential is checked
        // (a password hashed, a client secret or session looked up); one
        // that failed before holds a place among its waiting checks
        // (docs/security.md, "Floods of bad credentials"). The key set and
        // the metadata check nothing.
        let _place = match p {
            "/oauth/token" | "/oauth/introspect" | "/oauth/revoke" | "/auth/login"
            | "/auth/logout" | "/auth/csrf" => match self.pipeline.address_check(cx.client) {
                Ok(place) => place,
                Err(problem) => return self.deny(problem, cx),
            },
            _ => None,
        };
        let origin = browser_origin(cx.arrival, req.uri(), req.headers());
        let counted = self.counts_toward_block(&req, origin.as_deref());
        let cutoff = Cutoff::default();
        let req = req.map(|b| {
            body::limit(
                b,
                self.cfg.max_body_bytes,
                self.cfg.body_read_timeout,
                &cutoff,
            )
        });
        let ctx = portcullis::oauth::Ctx {
            client_ip: Some(cx.client),
            origin: origin.as_deref(),
            request_id: rid_str(&cx.rid),
        };
        let mut o = portcullis::oauth::Outcome::default();
        if let Some(r) = portcullis::oauth::handle(self.guard(), req, ctx, &mut o).await {
            cx.out.reason = o.reason;
            if counted {
                self.pipeline.address_refused(cx.client, o.reason);
            }
            cx.out.principal = o.principal.map(Into::into);
            cx.out.credential_id = o.credential_id.map(Into::into);
            if let Some(p) = cutoff.problem() {
                cx.out.close = true;
                return self.deny(p, cx);
            }
            return r;
        }
        self.deny(Problem::new(ErrorCode::RouteNotFound), cx)
    }

    /// Whether a failed credential at a token or session endpoint counts
    /// toward its address's block: not when a page of another site may
    /// have sent it on its visitor's behalf (a `no-cors` POST needs no
    /// preflight), or any web page could get its visitors' addresses
    /// blocked. Browsers send `Origin` on every cross-origin POST, so a
    /// request counts when it has none (a server-side client), or its
    /// origin is the gateway's own or one the CORS policy allows; and
    /// never when `Sec-Fetch-Site` says another site sent it and its
    /// origin is not allowed.
    fn counts_toward_block(&self, req: &Request<Body>, own: Option<&str>) -> bool {
        let h = req.headers();
        let allowed = |o: &HeaderValue| {
            own.is_some_and(|own| o.as_bytes().eq_ignore_ascii_case(own.as_bytes()))
                || self
                    .cfg
                    .cors
                    .as_deref()
                    .is_some_and(|c| c.allows_origin(o.as_bytes()))
        };
        let origin_ok = match h.get(http::header::ORIGIN) {
            None => true,
            Some(o) => allowed(o),
        };
        let cross_site = h
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site");
        let origin_allowed = h.get(http::header::ORIGIN).is_some_and(allowed);
        origin_ok && (!cross_site || origin_allowed)
    }

    /// Hands an admitted request to the upstream (or the demo).
    async fn forward(
        &self,
        req: Request<Body>,
        route: &Arc<Route>,
        principal: Option<&Principal>,
        cx: &mut Ctx<'_>,
    ) -> Response<Body> {
        // A declared length over the limit is refused before a byte of the
        // body is read (so `Expect: 100-continue` gets no 100); a chunked
        // one is cut off as it streams.
        if content_length(req.headers()).is_some_and(|n| n > route.max_body_bytes as u64) {
            cx.out.close = true;
            return self.deny(Problem::new(ErrorCode::PayloadTooLarge), cx);
        }
        // A request with no body (most GETs) needs no limit, deadline or
        // cut-off flag around it: an empty body costs no allocation.
        let cutoff = (!http_body::Body::is_end_stream(req.body())).then(Cutoff::default);
        let mut req = match &cutoff {
            None => req.map(|_| Body::empty()),
            Some(c) => {
                req.map(|b| body::limit(b, route.max_body_bytes, self.cfg.body_read_timeout, c))
            }
        };
        let names = self.guard().names();
        let hop = proxy::Hop {
            client: cx.client,
            peer: cx.conn.peer.ip(),
            trusted_peer: cx.arrival.trusted_peer,
            tls: cx.conn.tls,
            request_id: &cx.rid,
            trace: &cx.trace,
            keep_tracestate: cx.keep_tracestate,
        };
        if let Err(p) = proxy::prepare(&mut req, route, names, principal, &hop) {
            return self.deny(p, cx);
        }
        let r = match &route.upstream {
            Upstream::Demo => crate::demo::handle(req).await,
            Upstream::Http { origin, .. } => {
                // No upstream connection for a body that has not begun:
                // a client that promises a body and sends none holds only
                // its own connection, for body_read_timeout.
                let (parts, b) = req.into_parts();
                let b = body::started(b).await;
                if let Some(p) = cutoff.as_ref().and_then(Cutoff::problem) {
                    cx.out.close = true;
                    return self.deny(p, cx);
                }
                let sent = std::time::Instant::now();
                let r = self
                    .proxy
                    .send(Request::from_parts(parts, b), origin, route.timeout)
                    .await;
                if let Some(m) = &self.metrics {
                    m.upstream(route, sent.elapsed());
                }
                r
            }
        };
        // The body's own failure explains an upstream failure better.
        match (r, cutoff.as_ref().and_then(Cutoff::problem)) {
            (_, Some(p)) => {
                cx.out.close = true;
                self.deny(p, cx)
            }
            (Ok(mut r), None) => {
                cx.out.proxied = true;
                proxy::strip_own_set_cookies(r.headers_mut(), self.guard().names());
                r
            }
            (Err(p), None) => self.deny(p, cx),
        }
    }

    /// Answers a CORS preflight from the policy of the route it asks
    /// about (else the global one); never authenticated, never forwarded.
    fn preflight(&self, req: &Request<Body>, cx: &mut Ctx<'_>) -> Response<Body> {
        let asked = req
            .headers()
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        let route = asked.and_then(|m| match self.routes.find(&m, req.uri().path()) {
            RouteMatch::Found(r) => Some(r.clone()),
            _ => None,
        });
        let cors = route
            .as_ref()
            .and_then(|r| r.cors.clone())
            .or(self.cfg.cors.clone());
        cx.out.route = route;
        let (r, reason) = early::preflight(cors.as_deref(), req.headers(), Some(rid_str(&cx.rid)));
        cx.out.reason = reason;
        cx.out.preflight = true;
        r
    }

    fn note_principal(&self, p: Option<&Principal>, out: &mut Outcome) {
        if let Some(p) = p {
            out.credential_id = Some(p.credential_id.clone());
            out.principal = Some(p.subject.clone());
        }
    }

    /// A blocked address's keep-alive connection ends with its 429; once
    /// it ignores them, its new ones are refused at accept
    /// (`serve::Gate::refusing`) until the block is over. Never a trusted
    /// proxy's: it carries other clients.
    fn close_if_blocked(&self, cx: &mut Ctx<'_>) {
        if cx.out.reason == portcullis::pipeline::BLOCKED_REASON
            && !cx.arrival.trusted_peer
            && self.cfg.abuse.enabled
            && self.cfg.abuse.close_connections
        {
            cx.out.close = true;
        }
    }

    fn deny(&self, p: Problem, cx: &mut Ctx<'_>) -> Response<Body> {
        cx.out.reason = p.log_reason;
        self.close_if_blocked(cx);
        problem_response(&p, Some(rid_str(&cx.rid)))
    }

    /// `GET /auth/verify`: the decision for nginx `auth_request`, Traefik
    /// ForwardAuth and Caddy `forward_auth`. The original method and URI
    /// come from `X-Original-*` (nginx) or `X-Forwarded-*` (Traefik,
    /// Caddy), believed only from trusted proxies.
    async fn decide(&self, req: &http::request::Parts, cx: &mut Ctx<'_>) -> Response<Body> {
        let h = &req.headers;
        if h.get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > self.cfg.max_body_bytes)
        {
            return self.deny(Problem::new(ErrorCode::PayloadTooLarge), cx);
        }
        if !cx.arrival.trusted_peer {
            return self.decision_denied(
                Problem::new(ErrorCode::BadRequest)
                    .detail(
                        "the decision endpoint answers only peers listed in server.trusted_proxies",
                    )
                    .log_reason("untrusted_peer"),
                cx,
            );
        }
        let (method, uri) = match original_request(h) {
            Ok(mu) => mu,
            Err(p) => return self.decision_denied(p, cx),
        };
        let route = match self.route(&method, uri.path(), true, cx) {
            Ok(r) => r,
            Err(r) => return *r,
        };
        let view = RequestView {
            method: &method,
            uri: &uri,
            headers: h,
            client: Some(cx.client),
            // The proxy's connection is not the browser's: what the
            // browser used, the proxy says in X-Forwarded-Proto / -Host.
            arrival: Arrival {
                tls: false,
                trusted_peer: true,
            },
        };
        match self.admit(Entrance::Decision, &route, &view, cx).await {
            Ok(a) => {
                let mut r = Response::new(Body::empty());
                a.write_headers(r.headers_mut());
                if let Some(p) = &a.principal {
                    let hm = r.headers_mut();
                    put(hm, proxy::PRINCIPAL, &p.subject);
                    put(hm, proxy::KIND, p.kind.as_str());
                    put(hm, proxy::SCOPES, &p.scopes.to_space_separated());
                    put(hm, proxy::CREDENTIAL, &p.credential_id);
                    if let Some(iss) = &p.issuer {
                        put(hm, proxy::ISSUER, iss);
                    }
                }
                r.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                );
                r
            }
            Err(f) => {
                let mut r = f.response(Some(rid_str(&cx.rid)));
                mark_decision(r.headers_mut(), f.problem.code);
                r
            }
        }
    }

    fn decision_denied(&self, p: Problem, cx: &mut Ctx<'_>) -> Response<Body> {
        let code = p.code;
        let mut r = self.deny(p, cx);
        mark_decision(r.headers_mut(), code);
        r
    }
}

/// The request a proxy asks the decision endpoint about, from
/// `X-Original-*` (nginx) or `X-Forwarded-*` (Traefik, Caddy), its path
/// canonical; or the 400 saying what is wrong.
fn original_request(h: &HeaderMap) -> Result<(Method, http::Uri), Problem> {
    // nginx overwrites X-Original-*; Traefik and Caddy set
    // X-Forwarded-* but pass a client's X-Original-* through. A client
    // behind them could otherwise name a public URI in X-Original-URI
    // while requesting a protected one, so the two families must agree,
    // and each may appear once.
    let (uri, method) = match (
        original(h, "x-original-uri", "x-forwarded-uri"),
        original(h, "x-original-method", "x-forwarded-method"),
    ) {
        (Ok(u), Ok(m)) => (u, m),
        _ => {
            return Err(Problem::new(ErrorCode::BadRequest)
                .detail("the original request is named twice, differently (X-Original-* and X-Forwarded-*, or a header repeated)")
                .log_reason("conflicting_original"));
        }
    };
    let Some(uri) = uri else {
        return Err(Problem::new(ErrorCode::BadRequest)
            .detail("send the original request as X-Original-URI (nginx) or X-Forwarded-Uri (Traefik, Caddy)")
            .log_reason("no_original_uri"));
    };
    let method = method.unwrap_or_else(|| "GET".into());
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(Problem::new(ErrorCode::BadRequest).detail("the original method is not valid"));
    };
    let Ok(mut uri) = uri.parse::<http::Uri>() else {
        return Err(Problem::new(ErrorCode::BadRequest).detail("the original URI is not valid"));
    };
    // The proxy's upstream decodes the same bytes: decide on the
    // canonical form, as the gateway does.
    early::canonical_path(&mut uri)?;
    Ok((method, uri))
}

/// `X-Portcullis-Error` and `X-Portcullis-Status` on a refused decision:
/// nginx's `auth_request` turns every status but 401 and 403 into 500, and
/// these survive in `auth_request_set` for the `error_page` to act on.
fn mark_decision(h: &mut HeaderMap, code: ErrorCode) {
    h.insert(
        HeaderName::from_static("x-portcullis-error"),
        HeaderValue::from_static(code.code()),
    );
    h.insert(
        HeaderName::from_static("x-portcullis-status"),
        HeaderValue::from(code.status()),
    );
}

/// The original request's URI or method from either header family: `Err`
/// when a header repeats or the two families disagree.
fn original(h: &HeaderMap, a: &str, b: &str) -> Result<Option<String>, ()> {
    let one = |n: &str| -> Result<Option<String>, ()> {
        let mut it = h.get_all(n).iter();
        let v = it
            .next()
            .map(|v| v.to_str().map(str::to_owned).map_err(|_| ()))
            .transpose()?;
        if it.next().is_some() {
            return Err(());
        }
        Ok(v)
    };
    match (one(a)?, one(b)?) {
        (Some(x), Some(y)) if x != y => Err(()),
        (Some(x), _) | (None, Some(x)) => Ok(Some(x)),
        (None, None) => Ok(None),
    }
}

fn put(h: &mut HeaderMap, n: HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(n, v);
    }
}

fn set_allow(h: &mut HeaderMap, allowed: &[Method]) {
    let v = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(http::header::ALLOW, v);
    }
}

/// The request head's size as hyper read it, near enough: each field's
/// name and value plus ": " and CRLF.
fn head_size(req: &Request<Body>) -> usize {
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A request id as text: it is made of base62 and hex only.
fn rid_str(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("-")
}
