//! Forwarding to an upstream: the credential removed, hop-by-hop headers
//! dropped, identity headers added, bodies streamed, failures mapped to
//! 502 / 504.

use crate::config::{Route, Upstream};
use axum::body::Body;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_core::credential::{CredentialNames, strip_cookie, strip_query_param};
use portcullis_core::{ErrorCode, Principal, Problem, Scheme};
use std::net::IpAddr;
use std::time::Duration;

/// Identity headers Portcullis sets; any a client sends are dropped.
pub const PRINCIPAL: HeaderName = HeaderName::from_static("x-portcullis-principal");
/// The principal's kind.
pub const KIND: HeaderName = HeaderName::from_static("x-portcullis-kind");
/// The principal's scopes.
pub const SCOPES: HeaderName = HeaderName::from_static("x-portcullis-scopes");
/// The credential's id.
pub const CREDENTIAL: HeaderName = HeaderName::from_static("x-portcullis-credential-id");
/// The request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The pooled upstream client.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
}

impl Proxy {
    /// A client with the given connect timeout.
    pub fn new(connect_timeout: Duration) -> Proxy {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(connect_timeout));
        conn.set_nodelay(true);
        conn.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(conn);
        Proxy { client }
    }

    /// Sends the prepared request; maps failures to problems.
    pub async fn send(
        &self,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Body>, Problem> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(Problem::new(ErrorCode::UpstreamTimeout).log_reason("upstream_timeout")),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, connect = e.is_connect(), "upstream request failed");
                Err(Problem::new(ErrorCode::UpstreamUnavailable).log_reason("upstream_unavailable"))
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, Body::new(body)))
            }
        }
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any named in
/// `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// Rewrites a request for the upstream: credential out, identity in,
/// and the URI pointed at the route's upstream.
pub fn prepare(
    req: &mut Request<Body>,
    route: &Route,
    names: &CredentialNames,
    principal: Option<&Principal>,
    client_ip: IpAddr,
    tls: bool,
    request_id: &str,
) -> Result<(), Problem> {
    let schemes = route.policy.schemes.schemes();
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    for n in [&PRINCIPAL, &KIND, &SCOPES, &CREDENTIAL] {
        h.remove(n);
    }
    if schemes.contains(&Scheme::ApiKeyHeader) {
        h.remove(&names.header);
    }
    if schemes
        .iter()
        .any(|s| matches!(s, Scheme::Bearer | Scheme::Basic))
    {
        h.remove(header::AUTHORIZATION);
    }
    for cookie_name in schemes.iter().filter_map(|s| match s {
        Scheme::ApiKeyCookie => Some(&names.cookie),
        Scheme::Session => Some(&names.session_cookie),
        _ => None,
    }) {
        let joined: Vec<String> = h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        h.remove(header::COOKIE);
        for c in joined {
            if let Some(rest) = strip_cookie(&c, cookie_name)
                && let Ok(v) = HeaderValue::from_str(&rest)
            {
                h.append(header::COOKIE, v);
            }
        }
    }
    if let Some(p) = principal {
        set(h, PRINCIPAL, &p.subject);
        set(h, KIND, p.kind.as_str());
        set(h, SCOPES, &p.scopes.to_space_separated());
        set(h, CREDENTIAL, &p.credential_id);
    }
    set(h, REQUEST_ID, request_id);
    let prior = h
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let xff = match prior {
        Some(p) => format!("{p}, {client_ip}"),
        None => client_ip.to_string(),
    };
    set(h, HeaderName::from_static("x-forwarded-for"), &xff);
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );

    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(|q| {
        if schemes.contains(&Scheme::ApiKeyQuery) {
            strip_query_param(q, &names.query)
        } else {
            Some(q.to_owned())
        }
    });
    let query = query.flatten();
    if let Upstream::Http { origin, base_path } = &route.upstream {
        let mut target = String::with_capacity(
            origin.len() + base_path.len() + path.len() + 1 + query.as_ref().map_or(0, String::len),
        );
        target.push_str(origin);
        target.push_str(base_path);
        target.push_str(&path);
        if let Some(q) = &query {
            target.push('?');
            target.push_str(q);
        }
        let uri: Uri = target.parse().map_err(|_| {
            Problem::new(ErrorCode::BadRequest).detail("the request target cannot be forwarded")
        })?;
        if let Some(a) = uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        *req.uri_mut() = uri;
        // HTTP/2 clients arrive as HTTP/2; the upstream pool speaks HTTP/1.1.
        *req.version_mut() = http::Version::HTTP_11;
    } else {
        let pq = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        *req.uri_mut() = pq
            .parse()
            .map_err(|_| Problem::new(ErrorCode::BadRequest))?;
    }
    Ok(())
}

fn set(h: &mut HeaderMap, name: HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}
