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
use portcullis::auth::guard::{Guard, Head, Policy};
use portcullis::edge::{canonical_uri, path_problem};
use portcullis::ratelimit::{
    Limiter, MemoryLimiter, Plan, Pool, RedisLimiter, Verdict, write_headers,
};
use portcullis::rejection::problem_response;
use portcullis::store::Store;
use portcullis_core::cors::Cors;
use portcullis_core::host::{HostError, TrustedHosts, check_authority, request_host};
use portcullis_core::net::{client_ip, is_trusted};
use portcullis_core::route::{RouteMatch, RouteTable};
use portcullis_core::{ErrorCode, Principal, Problem};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Everything a request needs, built once at start.
pub struct App {
    /// The config.
    pub cfg: Config,
    routes: RouteTable<Arc<Route>>,
    /// The guard.
    pub guard: Guard,
    proxy: Proxy,
    store: Store,
    seq: AtomicU64,
    id_prefix: String,
    /// The rate limiter (shared with the admin API's status).
    pub limiter: Arc<Limiter>,
    // Where JSON access-log lines go directly; `None`: through `tracing`.
    access_sink: Option<crate::logwriter::BatchLog>,
}

/// What the access log says about a request.
#[derive(Default)]
struct Outcome {
    route: Option<Arc<Route>>,
    credential_id: Option<String>,
    principal: Option<String>,
    reason: &'static str,
    /// The upstream (or the demo) answered: its headers are its own.
    proxied: bool,
    /// The connection must close after this answer.
    close: bool,
    /// A CORS preflight, answered with its own CORS headers.
    preflight: bool,
}

impl App {
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
        Ok(App {
            limiter: Arc::new(limiter),
            proxy: Proxy::new(
                cfg.connect_timeout,
                cfg.routes.iter().filter_map(|r| match &r.upstream {
                    Upstream::Http { origin, .. } => Some(origin.as_str()),
                    Upstream::Demo => None,
                }),
                cfg.upstream_max_connections,
                cfg.upstream_queue_timeout,
            ),
            cfg,
            routes,
            guard,
            store,
            seq: AtomicU64::new(0),
            id_prefix,
            access_sink: None,
        })
    }

    /// Writes JSON access-log lines straight to `sink` (see
    /// [`crate::access_log`]).
    pub fn with_access_sink(mut self, sink: Option<crate::logwriter::BatchLog>) -> App {
        self.access_sink = sink;
        self
    }

    /// A new request id (see `X-Request-Id`).
    pub fn request_id(&self) -> String {
        // A per-process random prefix and a counter: unique, cheap, and
        // reveals nothing but the order of requests.
        format!(
            "{}-{:x}",
            self.id_prefix,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Handles one request from `conn`: the checks every request passes
    /// before routing (framing, head size, host, HTTPS), then
    /// [`App::dispatch`], then the response headers and the access log.
    pub async fn handle(self: Arc<Self>, conn: Conn, mut req: Request<Body>) -> Response<Body> {
        let start = Instant::now();
        let rid = self.request_id();
        let method = req.method().clone();
        // A reference-counted copy of the target, for the log line: the
        // canonical one once the path is canonical.
        let mut uri = req.uri().clone();
        let peer = conn.peer;
        let client = client_ip(
            peer.ip(),
            &self.cfg.trusted_proxies,
            self.cfg.forwarded_header,
            req.headers()
                .get_all(self.cfg.forwarded_header.name())
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let mut out = Outcome {
            reason: "allowed",
            ..Outcome::default()
        };
        let origin = portcullis_core::cors::single_origin(req.headers()).cloned();
        let h1 = req.version() < http::Version::HTTP_2;
        // Portcullis never upgrades a connection nor tunnels. After a
        // refused Upgrade or CONNECT hyper would read on, but the framing
        // watcher has stopped following the stream: end it instead.
        out.close =
            req.headers().contains_key(http::header::UPGRADE) || req.method() == Method::CONNECT;
        let admitted = self.admit(&conn, &req, &mut out).and_then(|()| {
            // One spelling of the path from here on: routing, the
            // decision, the log and the upstream all see this one.
            canonical_uri(req.uri_mut()).map_err(path_problem)
        });
        if admitted.is_ok() {
            uri = req.uri().clone();
        }
        let mut resp = match admitted {
            Err(p) => self.deny(p, &rid, &mut out),
            Ok(()) if self.cfg.tls.is_some() && !conn.tls => {
                self.insecure(req, peer, client, &rid, &mut out).await
            }
            Ok(()) => self.dispatch(req, &conn, client, &rid, &mut out).await,
        };
        self.finish(&mut resp, &conn, origin.as_ref(), &out);
        if out.close && h1 {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Ok(v) = HeaderValue::from_str(&rid) {
            resp.headers_mut().insert(proxy::REQUEST_ID, v);
        }
        if self.cfg.access_log {
            crate::access_log::emit(
                self.access_sink.as_ref(),
                &crate::access_log::Line {
                    request_id: &rid,
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
                },
            );
        }
        resp
    }

    /// The checks before anything else: a connection that framed a
    /// request ambiguously, a head over the limit, and the host.
    fn admit(&self, conn: &Conn, req: &Request<Body>, out: &mut Outcome) -> Result<(), Problem> {
        if let Some(a) = conn.ambiguity() {
            out.close = true;
            return Err(Problem::new(ErrorCode::AmbiguousFraming).log_reason(a.log_reason()));
        }
        if head_size(req) > self.cfg.max_header_bytes {
            out.close = true;
            return Err(Problem::new(ErrorCode::HeadersTooLarge));
        }
        let h = req.headers();
        // Behind a trusted proxy the browser's host is the forwarded one
        // (the proxy may have pointed Host at us); from anyone else the
        // header means nothing. The Host must be well-formed either way.
        let forwarded = if is_trusted(&self.cfg.trusted_proxies, conn.peer.ip()) {
            let mut xfh = h.get_all("x-forwarded-host").iter();
            match (xfh.next(), xfh.next()) {
                (None, _) => None,
                (Some(v), None) => Some(v.to_str().map_err(|_| HostError::Malformed)),
                (Some(_), Some(_)) => Some(Err(HostError::Repeated)),
            }
        } else {
            None
        };
        let checked = match forwarded {
            None => request_host(&self.cfg.trusted_hosts, req.version(), req.uri(), h).map(|_| ()),
            Some(v) => request_host(&TrustedHosts::default(), req.version(), req.uri(), h)
                .and_then(|_| check_authority(&self.cfg.trusted_hosts, v?).map(|_| ())),
        };
        if let Err(e) = checked {
            return Err(Problem::new(ErrorCode::InvalidHost).log_reason(e.log_reason()));
        }
        Ok(())
    }

    /// A request on the plain-HTTP listener of a gateway that serves
    /// HTTPS: browser navigations are sent to HTTPS; anything carrying a
    /// credential is refused, and the credential logged as exposed.
    async fn insecure(
        &self,
        req: Request<Body>,
        peer: SocketAddr,
        client: IpAddr,
        rid: &str,
        out: &mut Outcome,
    ) -> Response<Body> {
        let head = Head {
            client_ip: Some(client),
            ..Head::new(req.method(), req.headers(), req.uri().query())
        };
        if portcullis::edge::carries_credential(
            self.guard.names(),
            req.headers(),
            req.uri().query(),
        ) {
            // Which credential went over cleartext: verify it (without
            // spending a use) only to name its id in the log.
            let any = Policy {
                schemes: portcullis_core::SchemeSet::new(&portcullis_core::Scheme::ALL),
                scopes: portcullis_core::Scopes::empty(),
            };
            let id = match self.guard.authenticate(&any, &head).await {
                Ok(g) => g.principal.map(|p| p.credential_id),
                Err(d) => d.credential_id,
            };
            tracing::warn!(
                request_id = %rid,
                peer = %peer.ip(),
                key_id = id.as_deref().unwrap_or(""),
                exposed = true,
                "a credential was sent over plain HTTP; treat it as exposed and rotate it"
            );
            out.credential_id = id;
            return self.deny(portcullis::edge::credential_over_http(), rid, out);
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return self.deny(Problem::new(ErrorCode::HttpsRequired), rid, out);
        }
        let Some(tls) = &self.cfg.tls else {
            return self.deny(Problem::new(ErrorCode::HttpsRequired), rid, out);
        };
        let host = match &tls.redirect_host {
            Some(h) => h.clone(),
            None => {
                // Checked against trusted_hosts already.
                let name = request_host(
                    &self.cfg.trusted_hosts,
                    req.version(),
                    req.uri(),
                    req.headers(),
                )
                .map(|h| h.name.into_owned())
                .unwrap_or_default();
                match self.cfg.listen.port() {
                    443 => name,
                    p => format!("{name}:{p}"),
                }
            }
        };
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{host}{pq}");
        out.reason = "https_redirect";
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                r.headers_mut().insert(http::header::LOCATION, v);
                r
            }
            Err(_) => self.deny(Problem::new(ErrorCode::HttpsRequired), rid, out),
        }
    }

    /// Headers every answer gets: CORS for its origin, HSTS over TLS, and
    /// the security headers — all of them on Portcullis's own answers,
    /// the configured set on the upstream's.
    fn finish(
        &self,
        resp: &mut Response<Body>,
        conn: &Conn,
        origin: Option<&HeaderValue>,
        out: &Outcome,
    ) {
        let cors = out
            .route
            .as_ref()
            .and_then(|r| r.cors.as_deref())
            .or(self.cfg.cors.as_deref());
        let h = resp.headers_mut();
        match cors {
            Some(c) if !out.preflight => c.apply_origin(origin, h),
            // No policy: no CORS header, the upstream's included (an
            // upstream's `Access-Control-Allow-Origin: *` would open what
            // Portcullis keeps closed).
            None if out.proxied => portcullis_core::cors::strip_cors(h),
            _ => {}
        }
        if conn.tls
            && let Some(t) = &self.cfg.tls
        {
            h.insert(http::header::STRICT_TRANSPORT_SECURITY, t.hsts.clone());
        }
        if out.proxied {
            let sh = &self.cfg.security_headers;
            for (n, v) in &sh.proxied {
                if sh.overwrite || !h.contains_key(n) {
                    h.insert(n.clone(), v.clone());
                }
            }
        } else {
            portcullis::edge::own_headers(h);
        }
    }

    async fn dispatch(
        &self,
        req: Request<Body>,
        conn: &Conn,
        client: IpAddr,
        rid: &str,
        out: &mut Outcome,
    ) -> Response<Body> {
        let peer = conn.peer;
        if Cors::is_preflight(req.method(), req.headers()) {
            return self.preflight(&req, rid, out);
        }
        match req.uri().path() {
            "/healthz" => return json(StatusCode::OK, r#"{"status":"ok"}"#),
            "/readyz" => {
                return match self.store.ping().await {
                    Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#),
                    Err(e) => {
                        tracing::error!(error = %e, "store not ready");
                        out.reason = "store_unavailable";
                        problem_response(&Problem::new(ErrorCode::StoreUnavailable), Some(rid))
                    }
                };
            }
            "/auth/verify" => {
                let (parts, _body) = req.into_parts();
                return self.decide(&parts, peer, client, rid, out).await;
            }
            p if portcullis::oauth::PATHS.contains(&p) => {
                // Where passwords and client secrets are tried. Not
                // introspection: resource servers call it for every request.
                if matches!(p, "/oauth/token" | "/auth/login")
                    && let Some(policy) = &self.cfg.rate_limit.auth_endpoints
                {
                    let plan = Plan::new(
                        Pool::Named("auth"),
                        Some(policy),
                        portcullis::ratelimit::LimitBy::Ip,
                        None,
                        client,
                    );
                    if let Some(r) = self.limit(&plan, 1, false, rid, out).await.err() {
                        return r;
                    }
                }
                let origin = self.own_origin(req.headers(), conn);
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
                    client_ip: Some(client),
                    origin: origin.as_deref(),
                    request_id: rid,
                };
                let mut o = portcullis::oauth::Outcome::default();
                if let Some(r) = portcullis::oauth::handle(&self.guard, req, ctx, &mut o).await {
                    out.reason = o.reason;
                    out.principal = o.principal;
                    out.credential_id = o.credential_id;
                    if let Some(p) = cutoff.problem() {
                        out.close = true;
                        return self.deny(p, rid, out);
                    }
                    return r;
                }
                return self.deny(Problem::new(ErrorCode::RouteNotFound), rid, out);
            }
            _ => {}
        }
        let route = match self.routes.find(req.method(), req.uri().path()) {
            RouteMatch::Found(r) => r.clone(),
            RouteMatch::NotFound => {
                return self.deny(Problem::new(ErrorCode::RouteNotFound), rid, out);
            }
            RouteMatch::MethodNotAllowed(allowed) => {
                let mut r = self.deny(Problem::new(ErrorCode::MethodNotAllowed), rid, out);
                set_allow(r.headers_mut(), &allowed);
                return r;
            }
        };
        out.route = Some(route.clone());
        // Only cookie credentials need the origin (for CSRF); other routes
        // skip building it.
        let origin = route
            .policy
            .uses_cookies()
            .then(|| self.own_origin(req.headers(), conn))
            .flatten();
        let head = Head {
            client_ip: Some(client),
            origin: origin.as_deref(),
            ..Head::new(req.method(), req.headers(), req.uri().query())
        };
        let granted = match self.guard.authenticate(&route.policy, &head).await {
            Ok(g) => g,
            Err(d) => {
                out.credential_id = d.credential_id;
                return self.deny(d.problem, rid, out);
            }
        };
        let principal = granted.principal.as_ref();
        self.note_principal(principal, out);
        let plan = self.plan(&route, principal, client);
        let verdict = match self.limit(&plan, route.cost, false, rid, out).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        // Quota last: a request the rate limiter refused spends none.
        if let Err(d) = self.guard.spend(&granted, route.cost).await {
            return self.deny(d.problem, rid, out);
        }
        let mut resp = self
            .forward(req, &route, principal, conn, client, rid, out)
            .await;
        if let Some(v) = verdict {
            write_headers(
                resp.headers_mut(),
                plan.label(&v),
                &v,
                self.cfg.rate_limit.legacy_headers,
            );
        }
        resp
    }

    /// The counters a request on `route` is checked against.
    fn plan<'a>(
        &'a self,
        route: &'a Route,
        principal: Option<&'a Principal>,
        client: IpAddr,
    ) -> Plan<'a> {
        let policy = route
            .rate_limit
            .as_ref()
            .or(self.cfg.rate_limit.default.as_ref());
        Plan::new(
            Pool::Route(u32::try_from(route.index).unwrap_or(u32::MAX)),
            policy,
            route.rate_limit_by,
            principal,
            client,
        )
    }

    /// Counts the request: `Ok` with the deciding verdict (for the
    /// response's fields) when admitted, or the 429 / 503 answer, marked
    /// for the proxy when it answers the decision endpoint.
    async fn limit(
        &self,
        plan: &Plan<'_>,
        cost: u32,
        decision: bool,
        rid: &str,
        out: &mut Outcome,
    ) -> Result<Option<Verdict>, Response<Body>> {
        let (problem, refused) = match self.limiter.admit(plan.checks(), cost).await {
            Ok(v) => return Ok(v),
            Err(r) => (r.problem, r.verdict),
        };
        out.reason = problem.code.code();
        let mut r = problem_response(&problem, Some(rid));
        if let Some(v) = refused {
            write_headers(
                r.headers_mut(),
                plan.label(&v),
                &v,
                self.cfg.rate_limit.legacy_headers,
            );
        }
        if decision {
            mark_decision(r.headers_mut(), problem.code);
        }
        Err(r)
    }

    /// Hands an admitted request to the upstream (or the demo).
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        req: Request<Body>,
        route: &Arc<Route>,
        principal: Option<&Principal>,
        conn: &Conn,
        client: IpAddr,
        rid: &str,
        out: &mut Outcome,
    ) -> Response<Body> {
        // A declared length over the limit is refused before a byte of the
        // body is read (so `Expect: 100-continue` gets no 100); a chunked
        // one is cut off as it streams.
        if content_length(req.headers()).is_some_and(|n| n > route.max_body_bytes as u64) {
            out.close = true;
            return self.deny(Problem::new(ErrorCode::PayloadTooLarge), rid, out);
        }
        let cutoff = Cutoff::default();
        let mut req =
            req.map(|b| body::limit(b, route.max_body_bytes, self.cfg.body_read_timeout, &cutoff));
        let names = self.guard.names();
        let hop = proxy::Hop {
            client,
            peer: conn.peer.ip(),
            trusted_peer: is_trusted(&self.cfg.trusted_proxies, conn.peer.ip()),
            tls: conn.tls,
            request_id: rid,
        };
        if let Err(p) = proxy::prepare(&mut req, route, names, principal, &hop) {
            return self.deny(p, rid, out);
        }
        let r = match &route.upstream {
            Upstream::Demo => crate::demo::handle(req).await,
            Upstream::Http { origin, .. } => {
                // No upstream connection for a body that has not begun:
                // a client that promises a body and sends none holds only
                // its own connection, for body_read_timeout.
                let (parts, b) = req.into_parts();
                let b = body::started(b).await;
                if let Some(p) = cutoff.problem() {
                    out.close = true;
                    return self.deny(p, rid, out);
                }
                self.proxy
                    .send(Request::from_parts(parts, b), origin, route.timeout)
                    .await
            }
        };
        // The body's own failure explains an upstream failure better.
        match (r, cutoff.problem()) {
            (_, Some(p)) => {
                out.close = true;
                self.deny(p, rid, out)
            }
            (Ok(r), None) => {
                out.proxied = true;
                r
            }
            (Err(p), None) => self.deny(p, rid, out),
        }
    }

    /// Answers a CORS preflight from the policy of the route it asks
    /// about (else the global one); never authenticated, never forwarded.
    fn preflight(&self, req: &Request<Body>, rid: &str, out: &mut Outcome) -> Response<Body> {
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
        out.route = route;
        let (result, headers) = portcullis::edge::preflight(cors.as_deref(), req.headers());
        let mut r = match result {
            Ok(()) => {
                out.reason = "cors_preflight";
                portcullis::edge::preflight_ok()
            }
            Err(p) => self.deny(p, rid, out),
        };
        out.preflight = true;
        for (n, v) in headers.iter() {
            r.headers_mut().append(n.clone(), v.clone());
        }
        r
    }

    /// The origin this request was addressed to, for the CSRF origin
    /// check: the scheme (https only when a trusted proxy says so, until
    /// Portcullis terminates TLS itself) and the Host.
    fn own_origin(&self, h: &HeaderMap, conn: &Conn) -> Option<String> {
        let host = h.get(http::header::HOST)?.to_str().ok()?;
        let https = conn.tls
            || is_trusted(&self.cfg.trusted_proxies, conn.peer.ip())
                && h.get("x-forwarded-proto")
                    .is_some_and(|v| v.as_bytes() == b"https");
        Some(format!("{}://{host}", if https { "https" } else { "http" }))
    }

    fn note_principal(&self, p: Option<&Principal>, out: &mut Outcome) {
        if let Some(p) = p {
            out.credential_id = Some(p.credential_id.clone());
            out.principal = Some(p.subject.clone());
        }
    }

    fn deny(&self, p: Problem, rid: &str, out: &mut Outcome) -> Response<Body> {
        out.reason = p.log_reason;
        problem_response(&p, Some(rid))
    }

    /// `GET /auth/verify`: the decision for nginx `auth_request`, Traefik
    /// ForwardAuth and Caddy `forward_auth`. The original method and URI
    /// come from `X-Original-*` (nginx) or `X-Forwarded-*` (Traefik,
    /// Caddy), believed only from trusted proxies.
    async fn decide(
        &self,
        req: &http::request::Parts,
        peer: SocketAddr,
        client: IpAddr,
        rid: &str,
        out: &mut Outcome,
    ) -> Response<Body> {
        let h = &req.headers;
        if h.get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > self.cfg.max_body_bytes)
        {
            return self.deny(Problem::new(ErrorCode::PayloadTooLarge), rid, out);
        }
        if !is_trusted(&self.cfg.trusted_proxies, peer.ip()) {
            return self.decision_denied(
                Problem::new(ErrorCode::BadRequest)
                    .detail(
                        "the decision endpoint answers only peers listed in server.trusted_proxies",
                    )
                    .log_reason("untrusted_peer"),
                rid,
                out,
            );
        }
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
                return self.decision_denied(
                    Problem::new(ErrorCode::BadRequest)
                        .detail("the original request is named twice, differently (X-Original-* and X-Forwarded-*, or a header repeated)")
                        .log_reason("conflicting_original"),
                    rid,
                    out,
                );
            }
        };
        let Some(uri) = uri else {
            return self.decision_denied(
                Problem::new(ErrorCode::BadRequest).detail("send the original request as X-Original-URI (nginx) or X-Forwarded-Uri (Traefik, Caddy)").log_reason("no_original_uri"),
                rid,
                out,
            );
        };
        let method = method.unwrap_or_else(|| "GET".into());
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return self.decision_denied(
                Problem::new(ErrorCode::BadRequest).detail("the original method is not valid"),
                rid,
                out,
            );
        };
        let Ok(mut uri) = uri.parse::<http::Uri>() else {
            return self.decision_denied(
                Problem::new(ErrorCode::BadRequest).detail("the original URI is not valid"),
                rid,
                out,
            );
        };
        // The proxy's upstream decodes the same bytes: decide on the
        // canonical form, as the gateway does.
        if let Err(e) = canonical_uri(&mut uri) {
            return self.decision_denied(path_problem(e), rid, out);
        }
        let route = match self.routes.find(&method, uri.path()) {
            RouteMatch::Found(r) => r.clone(),
            RouteMatch::NotFound => {
                return self.decision_denied(Problem::new(ErrorCode::RouteNotFound), rid, out);
            }
            RouteMatch::MethodNotAllowed(allowed) => {
                let mut r =
                    self.decision_denied(Problem::new(ErrorCode::MethodNotAllowed), rid, out);
                set_allow(r.headers_mut(), &allowed);
                return r;
            }
        };
        out.route = Some(route.clone());
        // The browser's origin as the proxy saw it.
        let origin = route.policy.uses_cookies().then_some(()).and_then(|()| {
            h.get("x-forwarded-host")
                .or_else(|| h.get(http::header::HOST))
                .and_then(|v| v.to_str().ok())
                .map(|host| {
                    let proto = h
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .filter(|p| *p == "https")
                        .unwrap_or("http");
                    format!("{proto}://{host}")
                })
        });
        let head = Head {
            client_ip: Some(client),
            origin: origin.as_deref(),
            ..Head::new(&method, h, uri.query())
        };
        match self.guard.authenticate(&route.policy, &head).await {
            Ok(g) => {
                self.note_principal(g.principal.as_ref(), out);
                let plan = self.plan(&route, g.principal.as_ref(), client);
                let verdict = match self.limit(&plan, route.cost, true, rid, out).await {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                if let Err(d) = self.guard.spend(&g, route.cost).await {
                    return self.decision_denied(d.problem, rid, out);
                }
                let mut r = Response::new(Body::empty());
                if let Some(v) = verdict {
                    write_headers(
                        r.headers_mut(),
                        plan.label(&v),
                        &v,
                        self.cfg.rate_limit.legacy_headers,
                    );
                }
                if let Some(p) = &g.principal {
                    let hm = r.headers_mut();
                    put(hm, proxy::PRINCIPAL, &p.subject);
                    put(hm, proxy::KIND, p.kind.as_str());
                    put(hm, proxy::SCOPES, &p.scopes.to_space_separated());
                    put(hm, proxy::CREDENTIAL, &p.credential_id);
                }
                r.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                );
                r
            }
            Err(d) => {
                out.credential_id = d.credential_id;
                self.decision_denied(d.problem, rid, out)
            }
        }
    }

    fn decision_denied(&self, p: Problem, rid: &str, out: &mut Outcome) -> Response<Body> {
        let code = p.code;
        let mut r = self.deny(p, rid, out);
        mark_decision(r.headers_mut(), code);
        r
    }
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
