//! The gateway's metrics: the Prometheus recorder (installed once, before
//! anything registers a handle), the per-route request handles the public
//! listener records into, and `GET /metrics` (docs/metrics.md).
//!
//! The hot path records into handles registered once, in `OnceLock`
//! cells filled on a route's first request: its duration histogram, and
//! its counters by method class and status. A request
//! costs a few atomic loads and adds, no lock and no allocation (the
//! exporter's histogram appends the sample to a lock-free block list that
//! the upkeep task drains every second).

use crate::config::{MetricsConfig, Route};
use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use metrics::{Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use portcullis::auth::guard::{Guard, Head, Policy};
use portcullis::auth::verifier::Verifier;
use portcullis::metrics as m;
use portcullis::ratelimit::Limiter;
use portcullis_core::{ErrorCode, Problem, Scheme, SchemeSet, Scopes};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The scope that may read `/metrics` (besides `admin`).
pub const METRICS_SCOPE: &str = "metrics";

/// How often histogram samples are folded into their buckets. The
/// exporter keeps samples in memory until then: at 40,000 requests a
/// second, about a megabyte a second.
const UPKEEP: Duration = Duration::from_secs(1);

/// Installs the Prometheus recorder as the process's `metrics` recorder,
/// with `cfg`'s histogram buckets, and registers the help text, the build
/// info and the upstream error counters. Call before building the
/// verifier, the limiter and the app: they take their handles from it.
pub fn install(cfg: &MetricsConfig) -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&cfg.buckets)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    m::describe();
    m::build_info(env!("CARGO_PKG_VERSION"));
    let _ = UPSTREAM_ERRORS.set(
        UpstreamError::ALL.map(|k| metrics::counter!(m::UPSTREAM_ERRORS, "kind" => k.as_str())),
    );
    Ok(handle)
}

/// Folds histogram samples into buckets every second, for as long as the
/// process runs (nothing else would: `/metrics` is served by us, not by
/// the exporter's own listener).
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

// --- upstream errors -----------------------------------------------------------

/// Why a proxied request got no answer from its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection could not be made.
    Connect,
    /// The connection failed during the request or its answer's head.
    Request,
    /// No answer within the route's timeout.
    Timeout,
    /// The upstream's connection budget was spent (the request waited
    /// `upstream.queue_timeout`).
    Busy,
}

impl UpstreamError {
    const ALL: [UpstreamError; 4] = [
        UpstreamError::Connect,
        UpstreamError::Request,
        UpstreamError::Timeout,
        UpstreamError::Busy,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Request => "request",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Busy => "busy",
        }
    }
}

/// Set once by [`install`]; unset (nothing counted) when metrics are off.
static UPSTREAM_ERRORS: OnceLock<[Counter; 4]> = OnceLock::new();

/// Counts one upstream failure.
pub fn upstream_error(kind: UpstreamError) {
    if let Some(c) = UPSTREAM_ERRORS.get() {
        let i = UpstreamError::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        if let Some(c) = c.get(i) {
            c.increment(1);
        }
    }
}

// --- requests by route -------------------------------------------------------

/// Method classes, in label order; anything else is `other`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

fn method_class(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Statuses held per route and method class before the rare overflow
/// path (a status past these is counted through the registry).
const STATUS_SLOTS: usize = 32;

/// A method class's statuses, each with its counter once seen.
type StatusTable = Box<[OnceLock<(u16, Counter)>]>;

/// One route's (or built-in endpoint's) handles.
struct RouteHandles {
    label: SharedString,
    // Registered on first use, as the others: a route (or built-in
    // endpoint) never asked shows no empty histogram.
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    /// Per method class: the statuses seen, each with its counter.
    statuses: [OnceLock<StatusTable>; 8],
}

impl RouteHandles {
    fn new(label: &str) -> RouteHandles {
        let label = SharedString::from(label.to_owned());
        RouteHandles {
            duration: OnceLock::new(),
            upstream: OnceLock::new(),
            statuses: std::array::from_fn(|_| OnceLock::new()),
            label,
        }
    }

    fn count(&self, method: usize, status: u16) {
        // An upstream may answer any three digits (one that echoes a
        // status the client names would mint a series per number): the
        // registered statuses keep their own label, the rest share one.
        let status = if REGISTERED.contains(&status) {
            status
        } else {
            0
        };
        let Some(table) = self.statuses.get(method) else {
            return;
        };
        let table = table.get_or_init(|| (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect());
        let new = || {
            metrics::counter!(
                m::HTTP_REQUESTS,
                "route" => self.label.clone(),
                "method" => METHODS.get(method).copied().unwrap_or("other"),
                "status" => status_label(status),
            )
        };
        // Open addressing by status; slots fill once and never change.
        let mut i = usize::from(status) % STATUS_SLOTS;
        for _ in 0..STATUS_SLOTS {
            let Some(slot) = table.get(i) else { break };
            let (s, c) = match slot.get() {
                Some(x) => x,
                None => slot.get_or_init(|| (status, new())),
            };
            if *s == status {
                c.increment(1);
                return;
            }
            i = (i + 1) % STATUS_SLOTS;
        }
        // More than STATUS_SLOTS distinct statuses on one route and method:
        // through the registry (a lock), still counted.
        new().increment(1);
    }
}

/// The statuses registered with IANA (RFC 9110 and its successors):
/// each is its own label value; any other is `other`.
const REGISTERED: [u16; 63] = [
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
    416, 417, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506,
    507, 508, 510, 511, 418, 306,
];

/// A status as its label: the three digits, or `other` (0).
fn status_label(s: u16) -> SharedString {
    match s {
        200 => SharedString::const_str("200"),
        0 => SharedString::const_str("other"),
        _ => SharedString::from(s.to_string()),
    }
}

/// The endpoints Portcullis answers itself, each its own route label.
fn builtins() -> impl Iterator<Item = &'static str> {
    ["/healthz", "/readyz", "/auth/verify"]
        .into_iter()
        .chain(portcullis::oauth::PATHS.iter().copied())
}

/// The public listener's request handles: one set per configured route
/// (by its index), then one per built-in endpoint, then `none` for
/// requests that matched nothing.
pub struct RequestMetrics {
    routes: Box<[RouteHandles]>,
    builtin_base: usize,
}

impl RequestMetrics {
    /// Registers the handles of `routes` and the built-in endpoints.
    pub fn new(routes: &[Route]) -> RequestMetrics {
        let mut all: Vec<RouteHandles> =
            routes.iter().map(|r| RouteHandles::new(&r.path)).collect();
        let builtin_base = all.len();
        all.extend(builtins().map(RouteHandles::new));
        all.push(RouteHandles::new(m::NO_ROUTE));
        RequestMetrics {
            routes: all.into(),
            builtin_base,
        }
    }

    /// The labels admission decisions use: every route's pattern and the
    /// pools the token endpoints are limited by.
    pub fn admission(routes: &[Route]) -> m::AdmissionMetrics {
        m::AdmissionMetrics::with_capacity(routes.len() + 4)
            .register(routes.iter().map(|r| r.path.as_str()))
            .register(["/oauth/token", "/auth/login"])
    }

    /// Which handles a request's answer goes to: its route, else the
    /// built-in endpoint at `path`, else `none`. The decision endpoint is
    /// its own label here (the route it decided about is the admission
    /// counter's).
    fn slot(&self, route: Option<&Route>, path: &str) -> usize {
        if path != "/auth/verify"
            && let Some(r) = route
            && r.index < self.builtin_base
        {
            return r.index;
        }
        builtins()
            .position(|b| b == path)
            .map_or(self.routes.len() - 1, |i| self.builtin_base + i)
    }

    /// Counts one answered request and its duration.
    pub fn request(
        &self,
        route: Option<&Route>,
        path: &str,
        method: &Method,
        status: u16,
        took: Duration,
    ) {
        if let Some(h) = self.routes.get(self.slot(route, path)) {
            h.count(method_class(method), status);
            h.duration
                .get_or_init(
                    || metrics::histogram!(m::HTTP_REQUEST_DURATION, "route" => h.label.clone()),
                )
                .record(m::secs(took));
        }
    }

    /// Records how long `route`'s upstream took.
    pub fn upstream(&self, route: &Route, took: Duration) {
        if route.index >= self.builtin_base {
            return;
        }
        if let Some(h) = self.routes.get(route.index) {
            h.upstream
                .get_or_init(
                    || metrics::histogram!(m::UPSTREAM_DURATION, "route" => h.label.clone()),
                )
                .record(m::secs(took));
        }
    }
}

// --- GET /metrics ----------------------------------------------------------------

/// Serves the exposition: the key check, the state read at scrape time,
/// the render.
#[derive(Clone)]
pub struct Scrape {
    handle: PrometheusHandle,
    guard: Guard,
    verifier: Option<Arc<Verifier>>,
    limiter: Arc<Limiter>,
    analytics: Option<Arc<portcullis::analytics::Analytics>>,
    /// Whether a key is needed (always on the admin listener).
    require_key: bool,
}

impl Scrape {
    /// A scrape endpoint reading `handle`, checking keys with `guard`.
    pub fn new(
        handle: PrometheusHandle,
        guard: Guard,
        verifier: Option<Arc<Verifier>>,
        limiter: Arc<Limiter>,
    ) -> Scrape {
        Scrape {
            handle,
            guard,
            verifier,
            limiter,
            analytics: None,
            require_key: true,
        }
    }

    /// Reports the per-key analytics' counts too.
    pub fn with_analytics(mut self, a: Option<Arc<portcullis::analytics::Analytics>>) -> Scrape {
        self.analytics = a;
        self
    }

    /// The same endpoint, answering without a key (`[metrics]
    /// require_key = false` on a loopback listener).
    pub fn without_key(mut self) -> Scrape {
        self.require_key = false;
        self
    }

    /// Answers `GET /metrics` (the only path it serves: others are 404).
    pub async fn answer(self, req: Request<Body>) -> Response<Body> {
        // The head only: a body is not `Sync`, and nothing reads it.
        let (req, _) = req.into_parts();
        if req.uri.path() != "/metrics" {
            return problem(Problem::new(ErrorCode::RouteNotFound));
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            let mut r = problem(Problem::new(ErrorCode::MethodNotAllowed));
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        // Without a key, only this machine reads the listener: a page on
        // a rebound DNS name (`attacker.example` → 127.0.0.1) names its
        // own host, and is refused.
        if !self.require_key && !portcullis::console::local_host_allowed(&req.headers, &[]) {
            return problem(Problem::new(ErrorCode::InvalidHost).detail(
                "this metrics listener answers without a key only to an IP address or localhost in Host",
            ));
        }
        if self.require_key
            && let Err(p) = self.check_key(&req).await
        {
            return problem(p);
        }
        if let Some(v) = &self.verifier {
            m::record_verifier(v);
        }
        m::record_limiter(&self.limiter);
        if let Some(a) = &self.analytics {
            m::record_analytics(a);
        }
        let body = if req.method == Method::HEAD {
            Body::empty()
        } else {
            #[allow(unused_mut)]
            let mut text = self.handle.render();
            #[cfg(feature = "alloc-count")]
            crate::alloc_count::render_into(&mut text);
            Body::from(text)
        };
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        r
    }

    /// An API key (header or bearer) with scope `metrics` or `admin`.
    async fn check_key(&self, req: &http::request::Parts) -> Result<(), Problem> {
        let policy = Policy {
            schemes: SchemeSet::new(&[Scheme::ApiKeyHeader, Scheme::Bearer]),
            scopes: Scopes::empty(),
        };
        let head = Head::new(&req.method, &req.headers, req.uri.query());
        let g = self.guard.check(&policy, &head).await.map_err(|d| {
            tracing::info!(
                target: "portcullis::metrics",
                reason = d.problem.log_reason,
                key_id = d.credential_id.as_deref().unwrap_or(""),
                "metrics scrape denied"
            );
            d.problem
        })?;
        let Some(p) = g.principal else {
            return Err(Problem::new(ErrorCode::NotAuthenticated));
        };
        if p.scopes.contains(METRICS_SCOPE) || p.scopes.contains(portcullis::store::ADMIN_SCOPE) {
            return Ok(());
        }
        tracing::info!(
            target: "portcullis::metrics",
            reason = "insufficient_scope",
            key_id = p.credential_id.as_str(),
            "metrics scrape denied"
        );
        Err(portcullis::auth::guard::insufficient_scope(
            &Scopes::parse(METRICS_SCOPE).unwrap_or_default(),
        ))
    }
}

fn problem(p: Problem) -> Response<Body> {
    portcullis::rejection::problem_response(&p, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_classes_are_bounded() {
        assert_eq!(METHODS[method_class(&Method::GET)], "GET");
        assert_eq!(METHODS[method_class(&Method::OPTIONS)], "OPTIONS");
        let odd = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(METHODS[method_class(&odd)], "other");
        assert_eq!(METHODS[method_class(&Method::CONNECT)], "other");
    }
}
