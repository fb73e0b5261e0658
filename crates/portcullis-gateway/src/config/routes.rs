//! `[[routes]]`: what is matched, who may pass, and where it goes.

use super::value::dur;
use super::{ConfigError, cerr, cors, ratelimit};
use http::Method;
use portcullis::auth::guard::Policy;
use portcullis::ratelimit::LimitBy;
use portcullis_core::route::PathPattern;
use portcullis_core::{Scheme, SchemeSet, Scopes};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    path: String,
    methods: Option<Vec<String>>,
    upstream: String,
    #[serde(default)]
    auth: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    timeout: Option<String>,
    rate_limit: Option<String>,
    rate_limit_by: Option<String>,
    cost: Option<u32>,
    max_body_bytes: Option<usize>,
    cors: Option<cors::RawCors>,
    #[serde(default)]
    forward_override_headers: bool,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The built-in demo upstream.
    Demo,
    /// An HTTP server: `http://host:port` and an optional base path.
    Http {
        /// `http://host:port`
        origin: String,
        /// Prefix added to the request path, without a trailing `/`.
        base_path: String,
        /// The `Host` the upstream is sent: the origin's authority, made
        /// once here rather than copied on every request.
        host: http::HeaderValue,
    },
}

/// A parsed route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file.
    pub index: usize,
    /// As written.
    pub path: String,
    /// The pattern.
    pub pattern: PathPattern,
    /// `None` = any method.
    pub methods: Option<Vec<Method>>,
    /// Where to.
    pub upstream: Upstream,
    /// Schemes and scopes.
    pub policy: Policy,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// The route's own rate-limit policy (else `rate_limit.default`).
    pub rate_limit: Option<portcullis_core::ratelimit::Policy>,
    /// Whose allowance the route's limit counts.
    pub rate_limit_by: LimitBy,
    /// What one request counts as.
    pub cost: u32,
    /// Largest request body forwarded.
    pub max_body_bytes: usize,
    /// The route's own CORS policy (else the global one).
    pub cors: Option<std::sync::Arc<portcullis_core::cors::Cors>>,
    /// Pass `X-HTTP-Method-Override`, `X-Original-URL` and their kind to
    /// the upstream (removed otherwise: they let a client re-method or
    /// re-route a request past `methods` and `path`).
    pub forward_override_headers: bool,
}

pub(super) fn parse(
    i: usize,
    r: &RawRoute,
    allow_query: bool,
    default_timeout: Duration,
    default_max_body: usize,
) -> Result<Route, ConfigError> {
    let at = |k: &str| format!("routes[{i}].{k}");
    let pattern = PathPattern::parse(&r.path).map_err(|e| cerr(at("path"), e.to_string()))?;
    let methods = match &r.methods {
        None => None,
        Some(ms) if ms.is_empty() => {
            return Err(cerr(
                at("methods"),
                "an empty list allows nothing; leave it out to allow every method",
            ));
        }
        Some(ms) => Some(
            ms.iter()
                .map(|m| {
                    let up = m.to_ascii_uppercase();
                    match up.as_str() {
                        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
                            Method::from_bytes(up.as_bytes())
                                .map_err(|_| cerr(at("methods"), format!("{m:?} is not a method")))
                        }
                        _ => Err(cerr(
                            at("methods"),
                            format!(
                                "{m:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
                            ),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let upstream = if r.upstream == "demo" {
        Upstream::Demo
    } else {
        let u: http::Uri = r
            .upstream
            .parse()
            .map_err(|_| cerr(at("upstream"), format!("{:?} is not a URL", r.upstream)))?;
        if u.scheme_str() != Some("http") {
            return Err(cerr(
                at("upstream"),
                "use http://HOST:PORT (or \"demo\"); https:// upstreams are not supported yet: keep the upstream on loopback or a private network",
            ));
        }
        let Some(auth) = u.authority() else {
            return Err(cerr(at("upstream"), "the URL needs a host"));
        };
        if auth.as_str().contains('@') {
            return Err(cerr(
                at("upstream"),
                "credentials in the upstream URL are not allowed",
            ));
        }
        if u.query().is_some() {
            return Err(cerr(
                at("upstream"),
                "the upstream URL must not have a query",
            ));
        }
        Upstream::Http {
            origin: format!("http://{auth}"),
            base_path: u.path().trim_end_matches('/').to_owned(),
            host: http::HeaderValue::from_str(auth.as_str())
                .map_err(|_| cerr(at("upstream"), "the URL's host cannot be a Host header"))?,
        }
    };
    let mut schemes = Vec::new();
    for (j, a) in r.auth.iter().enumerate() {
        let p = format!("routes[{i}].auth[{j}]");
        let s = Scheme::from_name(a).ok_or_else(|| cerr(&p, format!("{a:?} is not a scheme; use api_key_header, api_key_query, api_key_cookie, bearer, basic or session")))?;
        match s {
            Scheme::ApiKeyQuery if !allow_query => {
                return Err(cerr(
                    &p,
                    "api_key_query is off: keys in URLs end up in access logs, browser history and Referer headers. Set credentials.allow_query_keys = true to accept them anyway",
                ));
            }
            _ => {}
        }
        schemes.push(s);
    }
    let scopes = Scopes::from_iter_checked(r.scopes.iter().map(String::as_str))
        .map_err(|e| cerr(at("scopes"), e.to_string()))?;
    if schemes.is_empty() && !scopes.is_empty() {
        return Err(cerr(
            at("scopes"),
            "a public route (auth = []) cannot require scopes",
        ));
    }
    Ok(Route {
        index: i,
        path: r.path.clone(),
        pattern,
        methods,
        upstream,
        policy: Policy {
            schemes: SchemeSet::new(&schemes),
            scopes,
        },
        max_body_bytes: r.max_body_bytes.unwrap_or(default_max_body),
        cors: cors::parse(&at("cors"), r.cors.as_ref())?,
        forward_override_headers: r.forward_override_headers,
        timeout: dur(&at("timeout"), &r.timeout, default_timeout)?,
        rate_limit: ratelimit::policy(&at("rate_limit"), r.rate_limit.as_deref())?,
        rate_limit_by: match r.rate_limit_by.as_deref() {
            None => LimitBy::Caller,
            Some(o) => o
                .parse()
                .map_err(|e: String| cerr(at("rate_limit_by"), e))?,
        },
        cost: match r.cost {
            None => 1,
            Some(0) => return Err(cerr(at("cost"), "must be at least 1")),
            Some(c) => c,
        },
    })
}

/// Paths are matched without regard to ASCII case (an upstream may route
/// `/ADMIN` to `/admin`): two spellings of one pattern would silently
/// become one, so the later route is refused.
pub(super) fn check_distinct(earlier: &[Route], route: &Route) -> Result<(), ConfigError> {
    if let Some(other) = earlier
        .iter()
        .find(|o| o.pattern != route.pattern && o.pattern.folded() == route.pattern.folded())
    {
        return Err(cerr(
            format!("routes[{}].path", route.index),
            format!(
                "{:?} differs from routes[{}].path {:?} only in letter case or a trailing slash; paths are matched without regard to either, so write one spelling",
                route.path, other.index, other.path
            ),
        ));
    }
    Ok(())
}
